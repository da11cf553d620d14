"""retrievo: one toolkit for LLM-era search — rewrite, retrieve, rerank, read, evaluate."""

from retrievo.types import Cost, Document, Qrels, Queries, Query, RankedList, Rankings

__version__ = "0.1.0"

__all__ = ["Cost", "Document", "Qrels", "Queries", "Query", "RankedList", "Rankings", "__version__"]
