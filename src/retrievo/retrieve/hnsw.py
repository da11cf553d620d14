"""Approximate dense search through HNSW graphs (usearch), rescored exactly.

Each vector part has its own graph (a derived unit, see :mod:`retrievo.index.derived`),
built once with parameters ``m`` (links per node, usearch's ``connectivity``) and
``ef_construction`` (candidate list while linking), searched with ``ef`` (candidate list
while searching; usearch never uses less than the number of results asked for).

Why per part and why filtered rather than rebuilt: parts are immutable, so ``add`` only
builds a graph over the new rows and nothing is relinked; ``delete`` writes tombstones
and the graph keeps deleted rows as waypoints (removing nodes from an HNSW graph degrades
its links). A part with ``d`` deleted rows is asked for ``k + d`` neighbours and the
deleted ones are dropped, so a deleted document is never returned and ``k`` live ones
still come back; ``merge`` compacts the index and rebuilds one graph without them.

Filters. usearch's Python binding has no predicate search (its C++ ``filtered_search``
is not exposed), so a filtered search takes one of two exact-by-construction routes,
chosen by how many documents the filter keeps (``m`` of ``n`` live ones): when the filter
is selective (``m <= EXACT_MAX_DOCS`` or ``m / n <= EXACT_MAX_FRACTION``) the kept
documents are scored exactly (brute force over ``m`` vectors costs less than walking a
graph whose neighbourhoods are mostly filtered out, and it is exact); otherwise each part's
graph is asked for ``(k + deleted) × OVERSAMPLE / fraction`` neighbours (``ef`` raised to
match), the excluded ones dropped, and any query left with fewer than ``min(k, m)``
results is answered by the exact route. So ``min(k, m)`` results always come back, and
recall against exact filtered search stays at the unfiltered graph's level.

The candidates are then scored by the exact inner product with the float vectors and
ordered like every retriever here (score descending, ties by ascending id), so HNSW
results differ from exact search only in which documents are found, never in their
scores or tie order. Graphs are built with one thread, which makes them — and therefore
the results — deterministic.
"""

from __future__ import annotations

import numpy as np

from retrievo.errors import ConfigError

RESCORE_GROUP = 16  # queries whose candidate vectors are gathered at once (bounded memory)
EXACT_MAX_DOCS = 16384  # a filter keeping at most this many documents is searched exactly
EXACT_MAX_FRACTION = 0.05  # ... or at most this fraction of the live documents
OVERSAMPLE = 2.0  # graph neighbours asked for, times k / (fraction the filter keeps)


def _exact_subset(queries: np.ndarray, vindex, allowed: np.ndarray, k: int, threads: int):
    from retrievo.retrieve.exact import search_blocks

    return search_blocks(queries, vindex.blocks(), vindex.total_docs, allowed, vindex.id_rank, vindex.by_rank, k,
                         threads)


def search_hnsw(graphs, queries: np.ndarray, vindex, k: int, ef: int, threads: int = 1,
                allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top ``k`` of each query from the graphs of ``vindex``'s parts (one per part, in
    order). Same return shape as :func:`retrievo.retrieve.exact.search_blocks`.
    ``allowed`` (one bool per document number, deleted ones already cleared) restricts
    the search to a filter's documents, see the module docstring."""
    if ef < 1:
        raise ConfigError(f"ef must be >= 1, got {ef}")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if allowed is None:
        return _search_graphs(graphs, queries, vindex, k, ef, threads, None, 1.0)
    allowed = np.asarray(allowed, dtype=bool)
    m = int(np.count_nonzero(allowed))
    n_live = len(vindex)
    if m <= EXACT_MAX_DOCS or m <= EXACT_MAX_FRACTION * n_live:
        return _exact_subset(queries, vindex, allowed, k, threads)
    docs, scores, counts = _search_graphs(graphs, queries, vindex, k, ef, threads, allowed, m / max(n_live, 1))
    short = np.flatnonzero(counts < min(k, m))
    if len(short):  # the graph's neighbourhoods were filtered out: answer those queries exactly
        d2, s2, c2 = _exact_subset(queries[short], vindex, allowed, k, threads)
        width = docs.shape[1]
        docs[short], scores[short], counts[short] = d2[:, :width], s2[:, :width], c2
    return docs, scores, counts


def _search_graphs(graphs, queries: np.ndarray, vindex, k: int, ef: int, threads: int,
                   allowed: np.ndarray | None, fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_q = len(queries)
    k = max(0, min(int(k), len(vindex)))
    bases = vindex.bases
    found: list[np.ndarray] = []
    for p, graph in enumerate(graphs):
        part = vindex.parts[p]
        if part.n_docs == 0 or n_q == 0 or k == 0:
            continue
        lv = vindex.lives[p]
        dead = 0 if lv is None else int(part.n_docs - np.count_nonzero(lv))
        if allowed is None:
            count = min(part.n_docs, k + dead)
            graph.expansion_search = int(ef)
        else:
            count = min(part.n_docs, int(np.ceil((k + dead) * OVERSAMPLE / fraction)))
            graph.expansion_search = int(max(ef, count))
        matches = graph.search(queries, count, threads=threads)
        keys = np.asarray(matches.keys, dtype=np.int64).reshape(n_q, -1)
        # usearch answers one query with a ``Matches`` (only its found keys, no ``counts``)
        # and a batch with ``BatchMatches``
        found_counts = matches.counts if hasattr(matches, "counts") else [keys.shape[1]]
        valid = np.arange(keys.shape[1])[None, :] < np.asarray(found_counts).reshape(n_q, 1)
        if allowed is not None:
            lo = int(bases[p])
            valid &= allowed[lo:lo + part.n_docs][np.where(valid, keys, 0)]
        elif lv is not None:
            valid &= np.asarray(lv, bool)[np.where(valid, keys, 0)]
        found.append(np.where(valid, keys + int(bases[p]), -1))
    width = sum(f.shape[1] for f in found)
    out_docs = np.zeros((n_q, k), dtype=np.int32)
    out_scores = np.zeros((n_q, k), dtype=np.float32)
    counts = np.zeros(n_q, dtype=np.int64)
    if width == 0 or k == 0:
        return out_docs, out_scores, counts
    cand = np.concatenate(found, axis=1)
    id_rank = vindex.id_rank
    for g0 in range(0, n_q, RESCORE_GROUP):
        c = cand[g0:g0 + RESCORE_GROUP]
        ok = c >= 0
        safe = np.where(ok, c, 0)
        vecs = vindex.vectors_of(safe.ravel()).reshape(c.shape[0], c.shape[1], -1)
        scores = np.einsum("qd,qcd->qc", queries[g0:g0 + RESCORE_GROUP], vecs).astype(np.float32)
        scores[~ok] = -np.inf
        ties = np.where(ok, id_rank[safe], np.iinfo(np.int32).max)
        order = np.lexsort((ties, -scores), axis=-1)[:, :k]
        rows = np.arange(c.shape[0])[:, None]
        n_ok = np.minimum(ok.sum(axis=1), k)
        out_docs[g0:g0 + len(c)] = safe[rows, order]
        out_scores[g0:g0 + len(c)] = scores[rows, order]
        counts[g0:g0 + len(c)] = n_ok
    return out_docs, out_scores, counts


__all__ = ["search_hnsw"]
