"""Rerankers: rankings in, rankings over the same candidates out (one method per module)."""
