"""The version of semroute (read by the build backend and written into every index)."""

__version__ = "0.1.0"
