"""An in-memory notes server speaking the Model Context Protocol."""

__version__ = "0.3.1"
