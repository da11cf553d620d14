"""Hybrid BM25 + dense retrieval with defaults chosen on SciFact *train* queries.

``hybrid`` is a named shorthand for a fusion of two first stages, each cut at ``depth``::

    hybrid                 = sum(bm25 % 1000, dense % 1000, weights=0.5/0.5, normalize=minmax)
    hybrid(method=rrf)     = rrf(bm25 % 1000, dense % 1000, k=1)
    hybrid(weight=0.7)     = sum(bm25 % 1000, dense % 1000, weights=0.7/0.3, normalize=minmax)

It builds exactly that pipeline (its spec prints expanded, so a protocol records what
ran), nothing of its own: the point is the defaults. They were chosen with
``bench/hybrid_sweep.py`` on SciFact's 809 *train* queries (all-MiniLM-L6-v2, Lucene
BM25), never on test: min-max normalised interpolation with equal weights at depth 1000
was best on train (nDCG@10 0.7369; weights 0.4–0.6 within 0.006), and for RRF the
constant k=1 (train 0.7294; k=5 0.7256, the usual k=60 0.7138). Interpolation beats RRF on
train, so it is the default method. Test then gave 0.7320 (sum) and 0.7132 (rrf k=1),
against BM25 0.6789 and dense 0.6451.

Why min-max interpolation wins here: BM25 and cosine scores live on different scales, and
per-query min-max puts both in [0, 1] while keeping how far apart the candidates are;
RRF keeps only ranks, so a document that one retriever scores far above the rest gets no
more credit than a narrow winner.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from retrievo.errors import ConfigError

#: defaults chosen on SciFact train (see the module docstring)
METHOD = "sum"
WEIGHT = 0.5
RRF_K = 1
DEPTH = 1000


def hybrid_spec(method: str = METHOD, weight: float = WEIGHT, k: int = RRF_K, depth: int = DEPTH,
                model: str | None = None, threads: int | None = None) -> str:
    """The fusion spec ``hybrid`` stands for (index left to the context)."""
    if method not in ("sum", "rrf"):
        raise ConfigError(f"hybrid method must be sum or rrf, got {method!r}")
    if not 0.0 <= weight <= 1.0:
        raise ConfigError(f"hybrid weight (of BM25) must lie in [0, 1], got {weight}")
    if depth < 1:
        raise ConfigError(f"hybrid depth must be >= 1, got {depth}")
    bm25 = f"bm25(threads={threads})" if threads is not None else "bm25"
    dense_opts = ([f"model={model!r}"] if model is not None else []) + ([f"threads={threads}"] if threads else [])
    dense = f"dense({', '.join(dense_opts)})" if dense_opts else "dense"
    branches = f"{bm25} % {depth}, {dense} % {depth}"
    if method == "rrf":
        return f"rrf({branches}, k={k})"
    return f"sum({branches}, weights={weight:g}/{1 - weight:g}, normalize=minmax)"


def hybrid_factory(ctx: Mapping[str, Any], index: Any = None, **options: Any):
    """Registry factory: the fusion pipeline of :func:`hybrid_spec` on ``index`` (or the
    context's index)."""
    from retrievo.pipeline import parse

    # only the index is needed: copying the whole context would also make a lazily
    # built default index that a named index replaces
    context = {"index": index if index is not None else ctx.get("index")}
    return parse(hybrid_spec(**options), context)


__all__ = ["DEPTH", "METHOD", "RRF_K", "WEIGHT", "hybrid_factory", "hybrid_spec"]
