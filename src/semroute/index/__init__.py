"""Vectors and manifest on disk: the typed manifest, the vector store, loading and recovery."""
