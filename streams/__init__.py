"""shopcast: real-time next-action prediction for online shops (serving side)."""

__version__ = "0.1.0"
