"""The console under ``/ui``: a playground for decisions, the live traffic, the decision log and
the routes, served by ``semroute serve`` (``server.ui: false`` turns it off).

Server-rendered HTML (Jinja2, autoescaped) with a little JavaScript of its own, no build step
and nothing fetched from another site; see :mod:`semroute.server.console.app` for its routes.
"""

from semroute.server.console.app import console_routes

__all__ = ["console_routes"]
