"""BM25 top-k over document ranges, with block-max bounds for exact pruning (numba).

Hand-written because it is the hot loop of lexical retrieval at scale, and because the
two things that make it fast are about memory, which numpy cannot express: a query adds
hundreds of thousands of impacts into per-document sums at random places, and then has to
find the documents it touched. Done over the whole collection (:mod:`retrievo.retrieve.topk`)
almost every add misses the cache. Here the documents are cut into ranges of
:data:`RANGE_DOCS` consecutive numbers (never across a segment) and each posting list
into its runs per range, recorded by :func:`range_table` (where the run starts, the
largest impact in it); a query

1. adds up, per range, ``weight x largest impact`` of its runs: an upper bound of the
   score of every document in the range (the block-max idea of Ding & Suel, 2011, with
   blocks aligned on document numbers, so every list's blocks line up, as in Mackenzie
   et al.'s range-based "anytime" ranking, 2021), and groups its runs by range, in
   query-term order;
2. scores one range at a time, term at a time, into an accumulator of one range's size
   that stays in the L1/L2 cache. A document's first posting is found without a branch:
   when every product ``weight * impact`` is > 0 in float32 (checked on the smallest
   impact), a sum that is still 0 means "new" (the add reads it anyway), otherwise a byte
   mark per document is kept;
3. keeps the keys of the documents whose score reaches the best k-th score seen so far in
   a buffer, cut back to the k best when it fills (no per-document heap work);
4. with pruning, scores the few ranges of largest bound first (a high k-th score early),
   then the rest in document order, skipping every range whose bound cannot reach the
   current k-th score. Without pruning every range is scored.

Exactness (same ids, same scores, same tie-breaks with and without pruning, and as
:mod:`retrievo.retrieve.topk`):

* a document's score is its float32 products ``weight * impact`` added in query-term order
  into a float64, then rounded to float32 (Lucene sums term scores in double precision),
  whatever order the ranges are visited in, since a document lives in one range;
* keys sort by float32 score descending, then by the precomputed rank of the document id;
* a range is skipped only when its bound, inflated by a relative margin far above the
  float64 rounding of a sum taken in another order and rounded like a score, is
  *strictly* below the k-th score: each of its documents then scores strictly less than
  k others (an equal score could still win on the tie-break);
* bounds are float32 and ``float32(weight * max)`` is at least every product a posting of
  the run gives (rounding is monotonic), so they only bound for non-negative weights and
  impacts; other queries are never pruned (:func:`prunable`).

What pruning can skip depends on the data. On the synthetic corpus of
``bench/bm25_scale.py`` (words drawn independently, so a top document matches two or
three query terms and every range holds postings of the frequent query terms near their
maxima) almost no range can be skipped: ranges of 64 documents would still leave three
quarters of the postings to read at k=10 with the final threshold known in advance, and
MaxScore inside each range (the runs of smallest bounds read only for candidates) was
measured slower than scoring whole ranges, since nearly every document an essential run
touches stays a candidate. Hence pruning stays cheap here (one pass over the query's
per-range bounds) rather than clever (BENCHMARKS.md, "BM25 at scale"). Finer methods were
bounded before being written: with the final threshold known in advance and the best split
chosen in hindsight, term-at-a-time scoring with candidate completion under global or
block-max bounds reads at least 37 % of that corpus's postings (a 2.7x ceiling), and on a
corpus whose documents have topics, 14-54 % depending on what reading block maxima costs
(``bench/bm25_pruning_oracle.py``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from retrievo.retrieve.openmp import torch_threads_kept
from retrievo.retrieve.topk import _key_score, _order_key, _top_k_sorted

RANGE_DOCS = 4096  # documents per range: a float64 accumulator of 32 KB stays in L1/L2
_BUFFER = 4096  # key buffer beyond 2k: one cut to the k best per this many qualifying documents
_SEED = 4  # ranges of largest bound scored first when pruning
_MARGIN = 1e-9  # relative; float64 sums of float32 terms differ by < 1e-13 between orders


class RangeTable(NamedTuple):
    """Runs of the posting lists per document range (see :func:`range_table`)."""

    range_lo: np.ndarray  # int64 [R + 1]: first global document of each range (and the end)
    ent_ptr: np.ndarray  # int64 [S, V + 1]: list (s, t) owns runs ent_ptr[s, t]:ent_ptr[s, t + 1]
    ent_range: np.ndarray  # int32 [E]: the range of each run
    ent_start: np.ndarray  # int64 [E]: first posting of each run (it ends where the next run of its list starts)
    ent_max: np.ndarray  # float32 [E]: largest impact of each run
    range_docs: int  # documents per range (the last range of a segment may hold fewer)

    @property
    def n_ranges(self) -> int:
        return len(self.range_lo) - 1

    @property
    def nbytes(self) -> int:
        return sum(np.asarray(a).nbytes for a in self)


def document_ranges(bases: np.ndarray, range_docs: int = RANGE_DOCS) -> np.ndarray:
    """First global document of each range, segment by segment (ranges never cross a
    segment), followed by the total: ``bases`` holds each segment's first document and
    the total."""
    los = [np.arange(int(bases[s]), int(bases[s + 1]), range_docs, dtype=np.int64) for s in range(len(bases) - 1)]
    return np.concatenate(los + [np.asarray(bases[-1:], dtype=np.int64)])


@njit(cache=True, nogil=True)
def _count_runs(indptr, docs, range_lo, seg_first_range, counts):
    n_seg, v1 = indptr.shape
    for s in range(n_seg):
        base_r = seg_first_range[s]
        for t in range(v1 - 1):
            r = base_r
            last = -1
            c = 0
            for p in range(indptr[s, t], indptr[s, t + 1]):
                d = docs[p]
                while range_lo[r + 1] <= d:
                    r += 1
                if r != last:
                    c += 1
                    last = r
            counts[s * (v1 - 1) + t] = c


@njit(cache=True, nogil=True)
def _fill_runs(indptr, docs, imps, range_lo, seg_first_range, ent_flat, ent_range, ent_start, ent_max):
    n_seg, v1 = indptr.shape
    for s in range(n_seg):
        base_r = seg_first_range[s]
        for t in range(v1 - 1):
            e = ent_flat[s * (v1 - 1) + t] - 1
            r = base_r
            last = -1
            for p in range(indptr[s, t], indptr[s, t + 1]):
                d = docs[p]
                while range_lo[r + 1] <= d:
                    r += 1
                if r != last:
                    e += 1
                    ent_range[e] = r
                    ent_start[e] = p
                    ent_max[e] = imps[p]
                    last = r
                elif imps[p] > ent_max[e]:
                    ent_max[e] = imps[p]


def range_table(indptr: np.ndarray, docs: np.ndarray, imps: np.ndarray, bases: np.ndarray,
                range_docs: int = RANGE_DOCS) -> RangeTable:
    """Per list ``(s, t)`` of ``indptr`` (segments x vocab+1, global document numbers in
    ``docs``, ``bases`` each segment's first document and the total), its runs per range
    of ``range_docs`` documents: range, first posting and largest impact. One pass over
    the postings, O(runs) memory beside them."""
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    bases = np.asarray(bases, dtype=np.int64)
    if len(bases) != indptr.shape[0] + 1:  # one segment: its base is 0
        bases = np.array([0, int(bases[-1])], dtype=np.int64)
    range_lo = document_ranges(bases, range_docs)
    seg_first_range = np.searchsorted(range_lo, bases[:-1]).astype(np.int64)
    n_seg, v1 = indptr.shape
    counts = np.zeros(n_seg * (v1 - 1), dtype=np.int64)
    _count_runs(indptr, docs, range_lo, seg_first_range, counts)
    flat = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=flat[1:])
    n = int(flat[-1])
    ent_range = np.empty(n, dtype=np.int32)
    ent_start = np.empty(n, dtype=np.int64)
    ent_max = np.empty(n, dtype=np.float32)
    _fill_runs(indptr, docs, imps, range_lo, seg_first_range, flat, ent_range, ent_start, ent_max)
    ent_ptr = np.empty((n_seg, v1), dtype=np.int64)
    ent_ptr[:, :-1] = flat[:-1].reshape(n_seg, v1 - 1)
    ent_ptr[:, -1] = flat[np.arange(1, n_seg + 1) * (v1 - 1)]
    return RangeTable(range_lo, ent_ptr, ent_range, ent_start, ent_max, int(range_docs))


@njit(cache=True, nogil=True, inline="always")
def _below(bound, kth):
    # the bound, inflated past any reordering error and rounded like a score, loses to kth
    return np.float32(bound * (1.0 + _MARGIN)) < kth


@njit(cache=True, nogil=True)
def _query(qt, qw, indptr, docs, imps, range_lo, ent_ptr, ent_range, ent_start, ent_max, live, use_live, id_rank,
           by_rank, k, prune, min_imp, ub, cnt, rlist, acc, mark, touched, keys, tmp, hist, out_docs,
           out_scores):
    m = qt.shape[0]
    n_seg = indptr.shape[0]
    if k == 0 or m == 0:
        return 0
    # "a sum still 0 is a new document" needs every product weight * impact > 0 in
    # float32 (no underflow): it is enough for the smallest impact
    positive = min_imp > 0
    for j in range(m):
        if not np.float32(qw[j] * min_imp) > 0:
            positive = False
    # 1. bounds per range, and the query's runs grouped by range in query-term order
    n_r = 0
    n_e = 0
    for j in range(m):
        t = qt[j]
        w = qw[j]
        for s in range(n_seg):
            for e in range(ent_ptr[s, t], ent_ptr[s, t + 1]):
                r = ent_range[e]
                rlist[n_r] = r
                n_r += cnt[r] == 0
                cnt[r] += 1
                ub[r] += np.float32(w * ent_max[e])
                n_e += 1
    ranges = rlist[:n_r].copy()
    ranges.sort()
    if prune and n_r > _SEED:
        # the _SEED ranges of largest bound first (a high k-th score early), then the rest
        # in document order (postings read forward): a pruned range is skipped anywhere
        best = np.argsort(-ub[ranges], kind="quicksort")[:_SEED]
        seed = ranges[best]
        pos = 0
        for i in range(n_r):
            r = ranges[i]
            is_seed = False
            for y in range(_SEED):
                if seed[y] == r:
                    is_seed = True
            if not is_seed:
                rlist[pos] = r
                pos += 1
        ranges[:_SEED] = seed
        ranges[_SEED:] = rlist[:pos]
    group = np.empty(n_r + 1, dtype=np.int64)  # runs of ranges[i]: group[i]:group[i + 1]
    group[0] = 0
    for i in range(n_r):
        r = ranges[i]
        group[i + 1] = group[i] + cnt[r]
        cnt[r] = group[i]  # now the next free slot of the range's group
    g_w = np.empty(n_e, dtype=np.float32)
    g_a = np.empty(n_e, dtype=np.int64)
    g_b = np.empty(n_e, dtype=np.int64)
    for j in range(m):
        t = qt[j]
        w = qw[j]
        for s in range(n_seg):
            last = ent_ptr[s, t + 1] - 1
            for e in range(ent_ptr[s, t], ent_ptr[s, t + 1]):
                r = ent_range[e]
                x = cnt[r]
                cnt[r] = x + 1
                g_w[x] = w
                g_a[x] = ent_start[e]
                g_b[x] = ent_start[e + 1] if e < last else indptr[s, t + 1]
    # 2-4. score range by range. Keys of scores that reach the k-th best known so far are
    # appended to keys[:c]; when the buffer fills (and, pruning, after the seed ranges) it
    # is cut to its k best, whose last gives the new k-th score
    c = 0
    kth = np.float32(-np.inf)
    cap = keys.shape[0]
    for i in range(n_r):
        r = ranges[i]
        if prune and _below(ub[r], kth):
            continue
        lo = range_lo[r]
        # the range's first run holds first postings only: no need to look at the marks
        x0 = group[i]
        w = g_w[x0]
        n_touched = 0
        for p in range(g_a[x0], g_b[x0]):
            d = docs[p] - lo
            touched[n_touched] = d
            n_touched += 1
            mark[d] = 1
            acc[d] += w * imps[p]
        if positive:
            # every contribution is > 0: a document is new while its sum is still 0, which
            # the add reads anyway (no mark to load and store)
            for x in range(x0 + 1, group[i + 1]):
                w = g_w[x]
                for p in range(g_a[x], g_b[x]):
                    d = docs[p] - lo
                    v = acc[d]
                    touched[n_touched] = d
                    n_touched += v == 0.0
                    acc[d] = v + w * imps[p]
        else:
            for x in range(x0 + 1, group[i + 1]):
                w = g_w[x]
                for p in range(g_a[x], g_b[x]):
                    d = docs[p] - lo
                    touched[n_touched] = d  # branch-free append at a document's first posting
                    n_touched += 1 - mark[d]
                    mark[d] = 1
                    acc[d] += w * imps[p]
        for y in range(n_touched):
            d = touched[y]
            v = acc[d]
            acc[d] = 0.0
            mark[d] = 0
            if np.float32(v) >= kth:
                g = lo + d
                if use_live and not live[g]:
                    continue
                if c == cap:
                    c = _top_k_sorted(keys, c, k, tmp, hist)
                    kth = _key_score(keys[k - 1])
                keys[c] = _order_key(v, id_rank[g])
                c += 1
        if prune and i == _SEED - 1 and c > k:
            c = _top_k_sorted(keys, c, k, tmp, hist)
            kth = _key_score(keys[k - 1])
    n = _top_k_sorted(keys, c, k, tmp, hist)
    for i in range(n_r):  # reset the per-range buffers this query used
        r = ranges[i]
        ub[r] = 0.0
        cnt[r] = 0
    for i in range(n):
        key = keys[i]
        out_docs[i] = by_rank[np.int64(key & np.uint64(0xFFFFFFFF))]
        out_scores[i] = _key_score(key)
    return n


@njit(cache=True, nogil=True)
def _run_chunk(lo, hi, q_ptr, q_terms, q_weights, indptr, docs, imps, range_lo, ent_ptr, ent_range, ent_start,
               ent_max, live, use_live, id_rank, by_rank, k, prune, min_imp, ub, cnt, rlist, acc, mark, touched, keys,
               tmp, hist, out_docs, out_scores, counts):
    for q in range(lo, hi):
        a = q_ptr[q]
        b = q_ptr[q + 1]
        counts[q] = _query(q_terms[a:b], q_weights[a:b], indptr, docs, imps, range_lo, ent_ptr, ent_range,
                           ent_start, ent_max, live, use_live, id_rank, by_rank, k, prune[q], min_imp, ub, cnt, rlist,
                           acc, mark, touched, keys, tmp, hist, out_docs[q], out_scores[q])


@njit(cache=True, parallel=True, nogil=True)
def _run_parallel(n_chunks, q_ptr, q_terms, q_weights, indptr, docs, imps, range_lo, ent_ptr, ent_range, ent_start,
                  ent_max, live, use_live, id_rank, by_rank, k, prune, min_imp, ub, cnt, rlist, acc, mark, touched,
                  keys, tmp, hist, out_docs, out_scores, counts):
    n_q = q_ptr.shape[0] - 1
    step = (n_q + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        lo = c * step
        hi = min(n_q, lo + step)
        if lo < hi:
            _run_chunk(lo, hi, q_ptr, q_terms, q_weights, indptr, docs, imps, range_lo, ent_ptr, ent_range,
                       ent_start, ent_max, live, use_live, id_rank, by_rank, k, prune, min_imp, ub[c], cnt[c],
                       rlist[c], acc[c], mark[c], touched[c], keys[c], tmp[c], hist[c], out_docs, out_scores, counts)


class RangeWorkspace:
    """Per-thread scratch buffers: one range's accumulator, per-range bounds and counts,
    the k-key heap. Reset sparsely by the kernel; not shared between Python threads."""

    def __init__(self, n_ranges: int, range_docs: int, k: int, threads: int = 1):
        self.n_ranges, self.range_docs, self.k, self.threads = n_ranges, range_docs, k, threads
        self.ub = np.zeros((threads, n_ranges), dtype=np.float64)
        self.cnt = np.zeros((threads, n_ranges), dtype=np.int64)
        self.rlist = np.empty((threads, n_ranges + 1), dtype=np.int32)
        self.acc = np.zeros((threads, range_docs), dtype=np.float64)
        self.mark = np.zeros((threads, range_docs), dtype=np.uint8)
        self.touched = np.empty((threads, range_docs + 1), dtype=np.int32)
        cap = 2 * k + _BUFFER  # keys above the k-th best, cut back to k when full
        self.keys = np.empty((threads, cap), dtype=np.uint64)
        self.tmp = np.empty((threads, cap), dtype=np.uint64)
        self.hist = np.zeros((threads, 2048), dtype=np.int64)

    def fits(self, n_ranges: int, range_docs: int, k: int, threads: int) -> bool:
        return (self.n_ranges == n_ranges and self.range_docs == range_docs and self.k >= k
                and self.threads >= threads)


def search_ranges(q_ptr: np.ndarray, q_terms: np.ndarray, q_weights: np.ndarray, indptr: np.ndarray,
                  docs: np.ndarray, imps: np.ndarray, table: RangeTable, live: np.ndarray | None,
                  id_rank: np.ndarray, by_rank: np.ndarray, k: int, prune: np.ndarray, work: RangeWorkspace,
                  threads: int = 1, min_imp: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``k`` documents per query, exactly as :func:`retrievo.retrieve.topk.search_postings`
    returns them (same arguments, plus the :func:`range_table` of the same postings and
    ``prune``, one bool per query: skip ranges that cannot reach the top k). Pruned
    queries need non-negative weights and impacts (see :func:`prunable`). ``min_imp``: the
    smallest impact; when it is > 0 and no weight times it rounds to 0, a document's first
    posting is detected by its sum still being 0, a cheaper test (0: never)."""
    n_q = len(q_ptr) - 1
    out_docs = np.empty((n_q, k), dtype=np.int32)
    out_scores = np.empty((n_q, k), dtype=np.float32)
    counts = np.zeros(n_q, dtype=np.int64)
    use_live = live is not None
    live_arr = live if use_live else np.ones(1, dtype=np.bool_)
    args = (q_ptr, q_terms, q_weights, indptr, docs, imps, table.range_lo, table.ent_ptr, table.ent_range,
            table.ent_start, table.ent_max, live_arr, use_live, id_rank, by_rank, k,
            np.ascontiguousarray(prune, dtype=np.bool_), np.float32(min_imp))
    threads = min(threads, work.threads, n_q)
    if threads <= 1:
        _run_chunk(0, n_q, *args, work.ub[0], work.cnt[0], work.rlist[0], work.acc[0], work.mark[0],
                   work.touched[0], work.keys[0], work.tmp[0], work.hist[0], out_docs, out_scores, counts)
    else:
        with torch_threads_kept():
            _run_parallel(threads, *args, work.ub, work.cnt, work.rlist, work.acc, work.mark, work.touched,
                          work.keys, work.tmp, work.hist, out_docs, out_scores, counts)
    return out_docs, out_scores, counts


def prunable(q_weights: np.ndarray, imps: np.ndarray) -> bool:
    """Whether pruning is exact for these weights and impacts: bounds must bound, so no
    contribution may be negative."""
    return bool((np.asarray(q_weights) >= 0).all()) and (len(imps) == 0 or float(np.min(imps)) >= 0)


__all__ = ["RANGE_DOCS", "RangeTable", "RangeWorkspace", "document_ranges", "prunable", "range_table",
           "search_ranges"]
