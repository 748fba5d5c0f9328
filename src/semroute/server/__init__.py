"""The OpenAI-compatible gateway (``semroute serve``): one Router and one Dispatcher over HTTP."""
