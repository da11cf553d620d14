"""Exact inner-product search over a :class:`~retrievo.index.vectors.VectorIndex`.

Scores come block by block from one BLAS matrix product (queries × a block of
documents), and a numba kernel selects the top ``k`` of each block into a running
per-query heap while the block is still in cache — the "fused" selection: no
collection-sized score array is ever materialised, so memory stays at one block per
query group however large the index, and a memory-mapped index streams from disk once
per query group.

Ordering is deterministic and identical to BM25's: by score (float32) descending, ties by
ascending document id (the precomputed id rank packed below the score bits in one
uint64 key, see :func:`retrievo.retrieve.topk._order_key`), so results do not depend on
block size, thread count or the order documents were added in.

Threads: the kernel splits each group of queries into ``threads`` chunks (``prange``);
the BLAS product uses its own thread pool, limited to ``threads`` too when
``threadpoolctl`` is installed (it comes with the ``dense`` extra). No process-wide
setting is changed.
"""

from __future__ import annotations

import contextlib

import numpy as np
from numba import njit, prange

from retrievo.retrieve.openmp import torch_threads_kept
from retrievo.retrieve.topk import _key_score, _order_key

BLOCK_DOCS = 16384  # documents per matrix product: a 300-query block of 384-d fp32 stays ~20 MB
QUERY_GROUP = 512


@njit(cache=True, nogil=True, inline="always")
def _sift_down(heap, n, i):
    while True:
        left = 2 * i + 1
        if left >= n:
            return
        m = left
        right = left + 1
        if right < n and heap[right] > heap[left]:
            m = right
        if heap[m] > heap[i]:
            tmp = heap[i]
            heap[i] = heap[m]
            heap[m] = tmp
            i = m
        else:
            return


@njit(cache=True, nogil=True)
def _select_rows(lo, hi, scores, base, live, use_live, id_rank, k, heaps, counts):
    """Merge rows ``lo..hi`` of a score block into each query's max-heap of keys (the
    largest key, i.e. the worst kept result, at the root)."""
    nb = scores.shape[1]
    for q in range(lo, hi):
        heap = heaps[q]
        c = counts[q]
        row = scores[q]
        worst = np.float32(-np.inf)
        if c == k:
            worst = _key_score(heap[0])
        for j in range(nb):
            s = row[j]
            if c == k and s < worst:
                continue
            g = base + j
            if use_live and not live[g]:
                continue
            key = _order_key(s, id_rank[g])
            if c < k:
                i = c
                heap[i] = key
                c += 1
                while i > 0:  # sift up
                    p = (i - 1) // 2
                    if heap[p] < heap[i]:
                        tmp = heap[p]
                        heap[p] = heap[i]
                        heap[i] = tmp
                        i = p
                    else:
                        break
                if c == k:
                    worst = _key_score(heap[0])
            elif key < heap[0]:
                heap[0] = key
                _sift_down(heap, k, 0)
                worst = _key_score(heap[0])
        counts[q] = c


@njit(cache=True, nogil=True, parallel=True)
def _select_parallel(n_chunks, scores, base, live, use_live, id_rank, k, heaps, counts):
    n_q = scores.shape[0]
    step = (n_q + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        lo = c * step
        hi = min(n_q, lo + step)
        if lo < hi:
            _select_rows(lo, hi, scores, base, live, use_live, id_rank, k, heaps, counts)


@njit(cache=True, nogil=True)
def _finish(heaps, counts, by_rank, out_docs, out_scores):
    for q in range(heaps.shape[0]):
        c = counts[q]
        keys = np.sort(heaps[q, :c])
        for i in range(c):
            key = keys[i]
            out_docs[q, i] = by_rank[np.int64(key & np.uint64(0xFFFFFFFF))]
            out_scores[q, i] = _key_score(key)


def blas_threads(threads: int | None):
    """A context that limits BLAS to ``threads`` (no-op when None or threadpoolctl is absent)."""
    if threads is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")


def inner_product(queries: np.ndarray, block: np.ndarray) -> np.ndarray:
    return queries @ block.T


def search_blocks(queries: np.ndarray, blocks, n_docs: int, live: np.ndarray | None, id_rank: np.ndarray,
                  by_rank: np.ndarray, k: int, threads: int = 1, block_docs: int = BLOCK_DOCS,
                  scorer=inner_product) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``k`` by inner product for each query row.

    ``blocks`` yields ``(first global number, float32 vectors)``; ``live`` masks deleted
    documents; ``id_rank``/``by_rank`` give the tie-break order. Returns ``(doc numbers
    [Q,k], scores [Q,k], counts [Q])`` — fewer than ``k`` when the index holds fewer live
    documents. ``scorer(queries, block)`` gives the float32 ``[Q, block]`` scores (higher
    is better): the inner product by default; compressed codes bring their own (see
    :mod:`retrievo.retrieve.quantized`), and the queries are then in the codes' form. A
    block may also be ``(base, data, scorer, queries)``: its own scorer and queries in its
    own form (codes of parts quantised with different scales).
    """
    queries = np.ascontiguousarray(queries)
    n_q = queries.shape[0]
    k = max(0, min(int(k), n_docs))
    out_docs = np.zeros((n_q, k), dtype=np.int32)
    out_scores = np.zeros((n_q, k), dtype=np.float32)
    counts = np.zeros(n_q, dtype=np.int64)
    if n_q == 0 or k == 0:
        return out_docs, out_scores, counts
    use_live = live is not None
    live_arr = np.ascontiguousarray(live, dtype=np.bool_) if use_live else np.ones(1, dtype=np.bool_)
    id_rank = np.ascontiguousarray(id_rank, dtype=np.int32)
    blocks = list(blocks)
    with blas_threads(threads), torch_threads_kept():  # one guard for every parallel selection below
        for g0 in range(0, n_q, QUERY_GROUP):
            qg = queries[g0:g0 + QUERY_GROUP]
            heaps = np.empty((len(qg), k), dtype=np.uint64)
            cnt = np.zeros(len(qg), dtype=np.int64)
            chunks = max(1, min(threads, len(qg)))
            for item in blocks:
                base, vectors = item[0], item[1]
                score, qb = (item[2], item[3][g0:g0 + QUERY_GROUP]) if len(item) > 2 else (scorer, qg)
                for b0 in range(0, vectors.shape[0], block_docs):
                    block = vectors[b0:b0 + block_docs]
                    scores = np.ascontiguousarray(score(qb, block), dtype=np.float32)
                    if chunks > 1:
                        _select_parallel(chunks, scores, base + b0, live_arr, use_live, id_rank, k, heaps, cnt)
                    else:
                        _select_rows(0, len(qg), scores, base + b0, live_arr, use_live, id_rank, k, heaps, cnt)
            _finish(heaps, cnt, by_rank, out_docs[g0:g0 + len(qg)], out_scores[g0:g0 + len(qg)])
            counts[g0:g0 + len(qg)] = cnt
    return out_docs, out_scores, counts


def score_numbers(query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Inner products of one query with given document vectors (float32)."""
    if not len(vectors):
        return np.empty(0, dtype=np.float32)
    return (np.asarray(query, dtype=np.float32)[None, :] @ np.asarray(vectors, dtype=np.float32).T)[0]


__all__ = ["BLOCK_DOCS", "blas_threads", "inner_product", "score_numbers", "search_blocks"]
