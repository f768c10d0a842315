"""Command-line entry points of the serving side; one module per subcommand."""
