"""The ``semroute`` command: click commands and their rich rendering."""

from semroute.cli.main import main

__all__ = ["main"]
