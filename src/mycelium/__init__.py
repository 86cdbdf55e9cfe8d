"""Mycelium: a service mesh you can read."""

__version__ = "0.1.0"
