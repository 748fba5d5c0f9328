"""Decision and request in, answer out: LiteLLM, fallback chains, streams, the decision log."""
