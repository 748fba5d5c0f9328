"""What users' tests need, going through semroute's real seams.

- :class:`FakeEncoder`: a deterministic bag-of-words encoder, so an index can be built and routed
  with no model (``build_index(routes, out, encoder=FakeEncoder())``);
- :class:`FakeProvider`: a real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions API,
  told per model to answer, fail, hang or break a stream.

semroute's own code never imports this package.
"""

from semroute.encoders.hashing import FakeEncoder
from semroute.testing.fake_provider import FakeProvider

__all__ = ["FakeEncoder", "FakeProvider"]
