"""Retrievers: one module per method. Importing this package registers their pipeline names."""

from retrievo.retrieve.bm25 import BM25, METHODS

__all__ = ["BM25", "METHODS"]
