"""What the stages scoring postings with :func:`~retrievo.retrieve.topk.search_postings` share.

``bm25`` (term-frequency impacts) and ``splade`` (learned impacts) differ only in where the
per-posting numbers come from: both lay out their index's segments as one postings array
with a ``(segments, vocab + 1)`` pointer table, give each calling Python thread its own
kernel workspace, and score given candidates exactly as the kernel would score them.
Those three steps live here, outside the numba kernel module (whose on-disk compile cache
any edit of that file invalidates).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from retrievo.retrieve.topk import Workspace


def stacked_indptr(segments: Sequence[Any], vocab_size: int) -> np.ndarray:
    """The ``(segments, vocab_size + 1)`` int64 pointer table of ``segments``' postings laid
    end to end: term ``t`` of segment ``s`` is at ``indptr[s, t]:indptr[s, t + 1]`` (a term
    a segment's smaller vocabulary lacks has no postings there)."""
    indptr = np.zeros((max(len(segments), 1), vocab_size + 1), dtype=np.int64)
    base_post = 0
    for s, seg in enumerate(segments):
        ip = np.asarray(seg.indptr)
        indptr[s, : len(ip)] = ip + base_post
        indptr[s, len(ip):] = ip[-1] + base_post
        base_post += seg.n_postings
    return indptr


def thread_workspace(state: dict[str, Any], threads: int) -> Workspace:
    """The calling Python thread's kernel workspace for a stage's search ``state`` (sized
    to ``state["n_docs"]``, kept in ``state["local"]``), so concurrent callers never share
    buffers."""
    local = state.setdefault("local", threading.local())
    work = getattr(local, "work", None)
    n_docs = state["n_docs"]
    if work is None or work.n_docs != n_docs or work.threads < threads:
        work = local.work = Workspace(n_docs, threads)
    return work


def postings_scorer(q_ptr: np.ndarray, q_terms: np.ndarray, q_weights: np.ndarray, indptr: np.ndarray,
                    docs: np.ndarray, imps: np.ndarray) -> Callable[[int, np.ndarray], np.ndarray]:
    """``score(q, cands)``: float32 scores of documents ``cands`` (global numbers) for
    query ``q`` of a batch, given as to :func:`~retrievo.retrieve.topk.search_postings`
    and summed in its order (query terms in order, float32 products summed in float64),
    so a candidate scores what a full retrieval gives it; one no term matches scores 0."""

    def score(q: int, cands: np.ndarray) -> np.ndarray:
        acc = np.zeros(len(cands), dtype=np.float64)
        for j in range(q_ptr[q], q_ptr[q + 1]):
            t, w = q_terms[j], q_weights[j]
            for s in range(indptr.shape[0]):
                a, b = indptr[s, t], indptr[s, t + 1]
                if a == b:
                    continue
                seg_docs = docs[a:b]
                pos = np.searchsorted(seg_docs, cands)
                pos[pos >= len(seg_docs)] = 0
                hit = seg_docs[pos] == cands
                acc[hit] += (w * imps[a:b][pos[hit]]).astype(np.float64)
        return acc.astype(np.float32)

    return score


__all__ = ["postings_scorer", "stacked_indptr", "thread_workspace"]
