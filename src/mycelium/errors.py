"""The root of every error Mycelium raises on purpose.

Each subsystem derives its own family from `MeshError` in its `errors.py`. A message is
a sentence for the operator: what went wrong and what to check next.
"""


class MeshError(Exception):
    """Base of all Mycelium errors."""


class ConfigError(MeshError):
    """Configuration given by the user is invalid."""
