"""Untrusted YAML in, frozen specs out: route files, LiteLLM deployments, credentials."""
