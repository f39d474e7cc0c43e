"""The release's version (its own module, so that anything may import it without importing the package's public names)."""

__version__ = "0.1.0"
