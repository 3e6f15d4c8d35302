"""pyllamacy's version, in a module of its own so that the package's modules (backends.py, the
server) can read it without importing the package's __init__ (no import cycle)."""
__version__ = "0.1.0"
