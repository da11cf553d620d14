"""Exact dynamic pruning for small top-k: term-at-a-time MaxScore with block-max probing (numba).

Hand-written because it is the point: the exhaustive kernel (:mod:`retrievo.retrieve.topk`)
reads every posting of every query term, while for a top-10 most documents cannot enter
the result once ten good ones are known. The method is MaxScore (Turtle & Flood, 1995)
run term at a time, so that the lists it does read keep the exhaustive kernel's tight
accumulation loop:

1. every query term gets an upper bound, ``weight x`` the largest impact of its list
   (:func:`list_bounds`, per segment); terms are taken by descending bound;
2. whole lists are accumulated, largest bound first, while a min-heap keeps the k best
   partial scores (distinct documents); as soon as the bounds of the remaining terms add
   up to less than the heap's smallest value, no document unseen so far can enter the
   top k, so the remaining — long, low-idf — lists are never scanned;
3. the heap's documents are scored exactly, which raises the threshold to a real k-th
   score; the candidates are the seen documents whose partial score plus the remaining
   bounds can still reach it;
4. the remaining lists are read only for the candidates, largest bound first, dropping
   candidates that can no longer make it after each list: merged with the sorted
   candidates when these are dense, else probed one by one, the candidate's block bound
   first (blocks of :data:`BLOCK` postings with their largest impact and last document,
   the block-max idea of Ding & Suel, 2011), then a galloping search inside the block;
5. the finalists are scored exactly and sorted like the exhaustive kernel sorts.

Exactness (same ids, same scores, same tie-breaks as the exhaustive kernel):

* a finalist's score is summed exactly as the exhaustive kernel sums it — the float32
  products ``weight * impact`` added in query-term order into a float64, then rounded to
  float32 — and keyed by the same ``(score, id rank)``, so ties break identically;
* the threshold is a lower bound of the final k-th score: k distinct live documents whose
  partial (then exact) scores reach it, lowered by a relative margin far above the
  float64 rounding of a sum taken in another order, then rounded to float32;
* a document is dropped only when its bound, inflated by that margin and rounded to
  float32, is *strictly* below the threshold — so its float32 score is strictly below k
  others' (an equal score could still win on the id tie-break);
* bounds are ``float32(weight * max impact)``: rounding is monotonic, so each is at least
  the product a posting gives. Partial scores are lower bounds only if no contribution
  is negative, so queries with a negative weight (or impacts below 0) are never pruned
  (:func:`prunable`).

How much is skipped depends on the data: on the synthetic corpus of
``bench/bm25_scale.py`` (words drawn independently, so a top-10 document matches only two
or three query terms), a quarter of a query's postings are essential even at the final
threshold; the pruned kernel wins about 1.3x on queries of up to 5 terms and loses on
longer ones, hence the automatic choice in :class:`~retrievo.retrieve.bm25.BM25`
(BENCHMARKS.md).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from retrievo.retrieve.topk import Workspace, _key_score, _order_key, _radix_sort

BLOCK = 64  # postings per block: tight bounds, yet a block bound is 1/64 of a list to search
_MERGE_RATIO = 16  # read a list by merging when candidates are at least 1/16 of its length
_MARGIN = 1e-9  # relative; float64 sums of float32 terms differ by < 1e-13 between orders


def list_bounds(indptr: np.ndarray, docs: np.ndarray, imps: np.ndarray,
                block: int = BLOCK) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Upper bounds of the postings lists laid out by ``indptr`` (segments x vocab+1).

    Returns ``(term_max [S, V] float32, block_ptr [S, V+1] int64, block_max float32,
    block_last int32)``: list ``(s, t)`` owns blocks ``block_ptr[s, t]:block_ptr[s, t+1]``,
    block ``i`` covering ``block`` consecutive postings with largest impact
    ``block_max[i]`` and last document ``block_last[i]``. Lists must be contiguous and laid
    out in (segment, term) order, as :class:`~retrievo.retrieve.bm25.BM25` lays them out.
    """
    indptr = np.asarray(indptr, dtype=np.int64)
    n_seg, v1 = indptr.shape
    starts = indptr[:, :-1].reshape(-1)
    lengths = np.diff(indptr, axis=1).reshape(-1)
    n_blocks = (lengths + block - 1) // block
    block_ptr = np.zeros(n_seg * (v1 - 1) + 1, dtype=np.int64)
    np.cumsum(n_blocks, out=block_ptr[1:])
    total = int(block_ptr[-1])
    owner = np.repeat(np.arange(len(lengths), dtype=np.int64), n_blocks)
    within = np.arange(total, dtype=np.int64) - block_ptr[:-1][owner]
    bstart = starts[owner] + within * block
    if total:
        block_max = np.maximum.reduceat(np.asarray(imps), bstart).astype(np.float32)
        bend = np.empty(total, dtype=np.int64)
        bend[:-1] = bstart[1:]
        bend[-1] = int(starts[owner[-1]] + lengths[owner[-1]])
        block_last = np.asarray(docs)[bend - 1].astype(np.int32)
    else:
        block_max = np.empty(0, np.float32)
        block_last = np.empty(0, np.int32)
    term_max = np.zeros(len(lengths), dtype=np.float32)
    nonempty = n_blocks > 0
    if total:
        term_max[nonempty] = np.maximum.reduceat(block_max, block_ptr[:-1][nonempty])
    # per segment row: block_ptr[s, t] for t in 0..V (global block numbers)
    bp = np.empty((n_seg, v1), dtype=np.int64)
    bp[:, :-1] = block_ptr[:-1].reshape(n_seg, v1 - 1)
    bp[:, -1] = block_ptr[np.arange(1, n_seg + 1) * (v1 - 1)]
    return term_max.reshape(n_seg, v1 - 1), bp, block_max, block_last


@njit(cache=True, nogil=True, inline="always")
def _below(bound, thr):
    # the bound, inflated past any reordering error and rounded like a score, loses to thr
    return np.float32(bound * (1.0 + _MARGIN)) < thr


@njit(cache=True, nogil=True, inline="always")
def _gallop(arr, pos, end, target):
    """First position in ``arr[pos:end]`` holding a value >= ``target`` (``end`` if none)."""
    if pos >= end or arr[pos] >= target:
        return pos
    step = 1
    lo = pos
    hi = pos + 1
    while hi < end and arr[hi] < target:
        lo = hi
        step *= 2
        hi = pos + step
    if hi > end:
        hi = end
    lo += 1  # arr[lo - 1] < target; the answer lies in [lo, hi]
    while lo < hi:
        mid = (lo + hi) >> 1
        if arr[mid] < target:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True)
def _lower_threshold(kth):
    # a float32 no larger than any score whose reordered float64 sum is >= kth
    return np.float32(kth * (1.0 - _MARGIN))


@njit(cache=True, nogil=True)
def _heap_push(hv, hd, n, v, d):
    i = n
    while i > 0:
        up = (i - 1) // 2
        if hv[up] <= v:
            break
        hv[i] = hv[up]
        hd[i] = hd[up]
        i = up
    hv[i] = v
    hd[i] = d


@njit(cache=True, nogil=True)
def _heap_down(hv, hd, n):
    _heap_down_at(hv, hd, n, 0)


@njit(cache=True, nogil=True)
def _heap_down_at(hv, hd, n, i):
    v = hv[i]
    d = hd[i]
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and hv[c + 1] < hv[c]:
            c += 1
        if hv[c] >= v:
            break
        hv[i] = hv[c]
        hd[i] = hd[c]
        i = c
    hv[i] = v
    hd[i] = d


@njit(cache=True, nogil=True)
def _exact(d, qt, qw, indptr, bases, docs, imps):
    """Document ``d``'s score summed in query order, as the exhaustive kernel sums it."""
    n_seg = indptr.shape[0]
    s = 0
    while s + 1 < n_seg and d >= bases[s + 1]:
        s += 1
    score = 0.0
    for j in range(qt.shape[0]):
        t = qt[j]
        a = indptr[s, t]
        e = indptr[s, t + 1]
        if a < e:
            p = np.searchsorted(docs[a:e], d) + a
            if p < e and docs[p] == d:
                score += qw[j] * imps[p]
    return score


@njit(cache=True, nogil=True)
def _query(qt, qw, indptr, bases, docs, imps, term_max, block_ptr, block_max, block_last, live, use_live, id_rank,
           by_rank, k, acc, mark, touched, keys, tmp, out_docs, out_scores):
    m = qt.shape[0]
    n_seg = indptr.shape[0]
    if k == 0 or m == 0:
        return 0
    # 1. global term bounds, terms by descending bound, suffix sums of the bounds
    ub = np.zeros(m, dtype=np.float64)
    for j in range(m):
        if qw[j] > 0:
            best = np.float32(0.0)
            for s in range(n_seg):
                if term_max[s, qt[j]] > best:
                    best = term_max[s, qt[j]]
            ub[j] = np.float32(qw[j] * best)
    order = np.argsort(-ub)
    rem = np.zeros(m + 1, dtype=np.float64)
    for i in range(m - 1, -1, -1):
        rem[i] = rem[i + 1] + ub[order[i]]
    # 2. whole lists, largest bound first, until the rest cannot lift an unseen document
    #    to the threshold: the smallest value in a min-heap of k distinct documents'
    #    partial scores, a lower bound of the final k-th score.
    n_touched = 0
    thr = np.float32(-np.inf)
    hv = np.empty(k, dtype=np.float64)  # heap values
    hd = np.empty(k, dtype=np.int64)  # heap documents (mark 2 while inside)
    n_heap = 0
    i0 = 0
    while i0 < m:
        if n_heap == k:
            thr = _lower_threshold(hv[0])
        if _below(rem[i0], thr):
            break
        j = order[i0]
        t = qt[j]
        w = qw[j]
        for s in range(n_seg):
            for p in range(indptr[s, t], indptr[s, t + 1]):
                d = docs[p]
                touched[n_touched] = d  # branch-free append at a document's first posting
                first = mark[d] == 0
                n_touched += first
                mark[d] += first
                v = acc[d] + w * imps[p]
                acc[d] = v
                if mark[d] == 2:  # already in the heap: raise its value there
                    for h in range(n_heap):
                        if hd[h] == d:
                            hv[h] = v
                            _heap_down_at(hv, hd, n_heap, h)
                            break
                elif (n_heap < k or v > hv[0]) and ((not use_live) or live[d]):
                    mark[d] = 2
                    if n_heap < k:
                        _heap_push(hv, hd, n_heap, v, d)
                        n_heap += 1
                    else:
                        mark[hd[0]] = 1
                        hv[0] = v
                        hd[0] = d
                        _heap_down(hv, hd, n_heap)
        i0 += 1
    if n_heap == k:
        thr = _lower_threshold(hv[0])
    # 3. a better threshold: the exact scores of the heap's documents are real scores, so
    #    their k-th is a lower bound of the final k-th
    if n_heap == k:
        for x in range(k):
            hv[x] = _exact(hd[x], qt, qw, indptr, bases, docs, imps)
        thr2 = _lower_threshold(np.min(hv))
        if thr2 > thr:
            thr = thr2
    # candidates that can still reach the threshold, in document order, found in the same
    # pass that resets the buffers (one random access per touched document): each is
    # keyed (document << 32 | its slot) and its partial score kept in the slot
    slot = np.empty(n_touched, dtype=np.float64)
    n_c = 0
    for x in range(n_touched):
        d = touched[x]
        v = acc[d]
        acc[d] = 0.0
        mark[d] = 0
        if ((not use_live) or live[d]) and not _below(v + rem[i0], thr):
            keys[n_c] = (np.uint64(d) << np.uint64(32)) | np.uint64(n_c)
            slot[n_c] = v
            n_c += 1
    _radix_sort(keys[:n_c], tmp)
    cand = np.empty(n_c, dtype=np.int64)
    part = np.empty(n_c, dtype=np.float64)
    for x in range(n_c):
        key = keys[x]
        cand[x] = np.int64(key >> np.uint64(32))
        part[x] = slot[np.int64(key & np.uint64(0xFFFFFFFF))]
    # 4. the remaining lists are read for the candidates only: merged with the candidate
    #    list when it is dense, else probed per candidate, a block's bound first (its last
    #    document says which block could hold the candidate), then the block
    for i in range(i0, m):
        j = order[i]
        t = qt[j]
        w = qw[j]
        length = 0
        for s in range(n_seg):
            length += indptr[s, t + 1] - indptr[s, t]
        kept = 0
        if n_c * _MERGE_RATIO >= length:
            s = 0
            p = indptr[0, t]
            e = indptr[0, t + 1]
            for x in range(n_c):
                d = cand[x]
                while s + 1 < n_seg and d >= bases[s + 1]:
                    s += 1
                    p = indptr[s, t]
                    e = indptr[s, t + 1]
                while p < e and docs[p] < d:
                    p += 1
                if p < e and docs[p] == d:
                    part[x] += w * imps[p]
                if not _below(part[x] + rem[i + 1], thr):
                    cand[kept] = d
                    part[kept] = part[x]
                    kept += 1
        else:
            s = -1
            b = np.int64(0)
            b_end = np.int64(0)
            pos = np.int64(0)
            for x in range(n_c):
                d = cand[x]
                while s + 1 < n_seg and d >= bases[s + 1]:
                    s += 1
                    b = block_ptr[s, t]
                    b_end = block_ptr[s, t + 1]
                    pos = indptr[s, t]
                if s >= 0 and b < b_end:
                    b = _gallop(block_last, b, b_end, d)
                    if b < b_end and not _below(part[x] + np.float32(w * block_max[b]) + rem[i + 1], thr):
                        lo = indptr[s, t] + (b - block_ptr[s, t]) * BLOCK
                        if lo < pos:
                            lo = pos
                        hi = min(indptr[s, t] + (b - block_ptr[s, t] + 1) * BLOCK, indptr[s, t + 1])
                        pos = _gallop(docs, lo, hi, d)
                        if pos < hi and docs[pos] == d:
                            part[x] += w * imps[pos]
                if not _below(part[x] + rem[i + 1], thr):
                    cand[kept] = d
                    part[kept] = part[x]
                    kept += 1
        n_c = kept
    # 5. exact scores of the finalists, summed in query order as the exhaustive kernel does
    for x in range(n_c):
        keys[x] = _order_key(_exact(cand[x], qt, qw, indptr, bases, docs, imps), id_rank[cand[x]])
    final = np.sort(keys[:n_c])
    n = min(k, n_c)
    for x in range(n):
        key = final[x]
        out_docs[x] = by_rank[np.int64(key & np.uint64(0xFFFFFFFF))]
        out_scores[x] = _key_score(key)
    return n


@njit(cache=True, nogil=True)
def _run_chunk(lo, hi, q_ptr, q_terms, q_weights, indptr, bases, docs, imps, term_max, block_ptr, block_max,
               block_last, live, use_live, id_rank, by_rank, k, acc, mark, touched, keys, tmp, out_docs,
               out_scores, counts):
    for q in range(lo, hi):
        a = q_ptr[q]
        b = q_ptr[q + 1]
        counts[q] = _query(q_terms[a:b], q_weights[a:b], indptr, bases, docs, imps, term_max, block_ptr, block_max,
                           block_last, live, use_live, id_rank, by_rank, k, acc, mark, touched, keys, tmp,
                           out_docs[q], out_scores[q])


@njit(cache=True, parallel=True, nogil=True)
def _run_parallel(n_chunks, q_ptr, q_terms, q_weights, indptr, bases, docs, imps, term_max, block_ptr, block_max,
                  block_last, live, use_live, id_rank, by_rank, k, acc, mark, touched, keys, tmp, out_docs,
                  out_scores, counts):
    n_q = q_ptr.shape[0] - 1
    step = (n_q + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        lo = c * step
        hi = min(n_q, lo + step)
        if lo < hi:
            _run_chunk(lo, hi, q_ptr, q_terms, q_weights, indptr, bases, docs, imps, term_max, block_ptr,
                       block_max, block_last, live, use_live, id_rank, by_rank, k, acc[c], mark[c], touched[c],
                       keys[c], tmp[c], out_docs, out_scores, counts)


def search_pruned(q_ptr: np.ndarray, q_terms: np.ndarray, q_weights: np.ndarray, indptr: np.ndarray,
                  bases: np.ndarray, docs: np.ndarray, imps: np.ndarray,
                  bounds: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], live: np.ndarray | None,
                  id_rank: np.ndarray, by_rank: np.ndarray, k: int, work: Workspace,
                  threads: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``k`` documents per query, exactly as
    :func:`retrievo.retrieve.topk.search_postings` returns them (same arguments, plus
    ``bases``, each segment's first global document number, and the ``bounds`` of
    :func:`list_bounds` over the same ``indptr``/``docs``/``imps``). Weights and impacts
    must be >= 0 (see :func:`prunable`)."""
    n_q = len(q_ptr) - 1
    out_docs = np.empty((n_q, k), dtype=np.int32)
    out_scores = np.empty((n_q, k), dtype=np.float32)
    counts = np.zeros(n_q, dtype=np.int64)
    use_live = live is not None
    live_arr = live if use_live else np.ones(1, dtype=np.bool_)
    term_max, block_ptr, block_max, block_last = bounds
    args = (q_ptr, q_terms, q_weights, indptr, np.asarray(bases, dtype=np.int64), docs, imps, term_max, block_ptr,
            block_max, block_last, live_arr, use_live, id_rank, by_rank, k)
    threads = min(threads, work.threads, n_q)
    if threads <= 1:
        _run_chunk(0, n_q, *args, work.acc[0], work.mark[0], work.touched[0], work.keys[0],
                   work.tmp[0], out_docs, out_scores, counts)
    else:
        _run_parallel(threads, *args, work.acc, work.mark, work.touched, work.keys, work.tmp, out_docs,
                      out_scores, counts)
    return out_docs, out_scores, counts


def prunable(q_weights: np.ndarray, imps: np.ndarray) -> bool:
    """Whether pruning is exact for these weights and impacts: a partial score must be a
    lower bound of the full score, so no contribution may be negative."""
    return bool((np.asarray(q_weights) >= 0).all()) and (len(imps) == 0 or float(np.min(imps)) >= 0)


__all__ = ["BLOCK", "list_bounds", "prunable", "search_pruned"]
