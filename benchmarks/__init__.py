"""Benchmarks that print figures (see README.md here); a package so that tests can import them."""
