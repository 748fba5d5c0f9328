"""Deprecated: :class:`FakeProvider` lives in :mod:`semroute.testing` (``from semroute.testing
import FakeProvider``)."""

from __future__ import annotations

import warnings

from semroute.testing.fake_provider import FakeProvider

__all__ = ["FakeProvider"]

warnings.warn(
    "semroute.fake_provider is deprecated; use `from semroute.testing import FakeProvider`",
    DeprecationWarning,
    stacklevel=2,
)
