"""Command-line entry points of the model side; one module per subcommand."""
