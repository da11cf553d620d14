"""retrievo: one toolkit for LLM-era search — rewrite, retrieve, rerank, read, evaluate.

The core types import eagerly; the heavier entry points (index, retrievers, evaluation)
load on first use, so ``import retrievo`` stays cheap.
"""

from importlib import import_module

from retrievo.types import Cost, Document, Qrels, Queries, Query, RankedList, Rankings

__version__ = "0.1.0"

_LAZY = {
    "InvertedIndex": "retrievo.index",
    "open_index": "retrievo.index",
    "RM3": "retrievo.rewrite.rm3",
    "ModelSpec": "retrievo.models",
    "Answers": "retrievo.types",
    "BM25": "retrievo.retrieve",
    "BeirDataset": "retrievo.data",
    "open_collection": "retrievo.data",
    "read_queries": "retrievo.data",
    "read_judgments": "retrievo.data",
    "evaluate": "retrievo.evaluate",  # the callable module itself; see retrievo/evaluate/__init__.py
    "evaluate_run": "retrievo.evaluate",
    "Experiment": "retrievo.evaluate",
    "parse": "retrievo.pipeline",
    "fuse": "retrievo.pipeline",
    "Stage": "retrievo.pipeline",
    "parse_spec": "retrievo.spec",
    "Analyzer": "retrievo.text",
}


def __getattr__(name: str):
    if name == "evaluate":
        # The name is also a subpackage, which the import system binds here as soon as it is
        # imported by any route; so ``retrievo.evaluate`` is always the module, made callable
        # as the evaluate() function (see retrievo/evaluate/__init__.py).
        value = import_module("retrievo.evaluate")
        globals()[name] = value
        return value
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'retrievo' has no attribute {name!r}")


__all__ = ["Cost", "Document", "Qrels", "Queries", "Query", "RankedList", "Rankings", "__version__", *_LAZY]
