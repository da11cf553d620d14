"""Score accumulation and top-k selection over impact-ordered postings (numba).

Hand-written because it is the hot loop of lexical retrieval: for every query, add each
query term's precomputed per-posting impacts into a dense accumulator, remember which
documents were touched (without a branch: whether a posting is a document's first is
unpredictable), then select the top ``k`` touched documents. Selection packs (score, id
rank) into one uint64 per document; for small ``k`` one pass keeps the best ``k`` keys in
a heap, keying a document only when its score reaches the current k-th; otherwise it
finds the top ``k`` with a histogram over the keys' leading bits and radix-sorts only
those (numba's comparison sort was the slowest step). Unlike a full
``argpartition`` over the whole collection, the work is proportional to the postings read
plus the documents touched, and buffers are reset sparsely, so a query costs the same on
a 5k or a 5M document index with the same postings. Ties are broken by a precomputed rank
of the document ids, which makes results deterministic and independent of index order.
Batches run one chunk of queries per thread with ``prange``; numba releases the GIL.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from retrievo.retrieve.openmp import torch_threads_kept

_HEAP_RATIO = 16  # select with a heap when k is at most 1/16 of the touched documents


@njit(cache=True, nogil=True, inline="always")
def _order_key(score, rank):
    # one uint64 that sorts ascending by (score descending, id rank ascending): the float's
    # bits made monotonic (flip all bits of negatives, set the sign bit of positives),
    # inverted for descending order, above the 32-bit id rank
    bits = np.uint64(np.float32(score).view(np.uint32))
    if bits & np.uint64(0x80000000):
        bits = bits ^ np.uint64(0xFFFFFFFF)
    else:
        bits = bits | np.uint64(0x80000000)
    return ((np.uint64(0xFFFFFFFF) - bits) << np.uint64(32)) | np.uint64(rank)


@njit(cache=True, nogil=True, inline="always")
def _key_score(key):
    bits = np.uint64(0xFFFFFFFF) - (key >> np.uint64(32))
    if bits & np.uint64(0x80000000):
        bits = bits ^ np.uint64(0x80000000)
    else:
        bits = bits ^ np.uint64(0xFFFFFFFF)
    return np.uint32(bits).view(np.float32)


@njit(cache=True, nogil=True)
def _radix_sort(keys, tmp):
    """LSD radix sort of uint64 ``keys`` in place (8-bit digits, uniform digits skipped)."""
    n = keys.shape[0]
    if n < 2:
        return
    counts = np.empty(256, dtype=np.int64)
    src = keys
    dst = tmp[:n]
    for shift in range(0, 64, 8):
        counts[:] = 0
        s = np.uint64(shift)
        for i in range(n):
            counts[np.int64((src[i] >> s) & np.uint64(0xFF))] += 1
        skip = False
        for b in range(256):
            if counts[b] == n:
                skip = True
                break
            if counts[b] != 0:
                break
        if skip:
            continue
        total = 0
        for b in range(256):
            c = counts[b]
            counts[b] = total
            total += c
        for i in range(n):
            b = np.int64((src[i] >> s) & np.uint64(0xFF))
            dst[counts[b]] = src[i]
            counts[b] += 1
        src, dst = dst, src
    if src is not keys:  # odd number of scatter passes: copy back
        keys[:] = src

@njit(cache=True, nogil=True)
def _top_k_sorted(keys, c, k, tmp, hist):
    """Sort the ``k`` smallest of ``keys[:c]`` into ``keys[:m]``; returns ``min(k, c)``."""
    if c <= k:
        _radix_sort(keys[:c], tmp)
        return c
    lo = keys[0]
    hi = keys[0]
    for i in range(1, c):
        x = keys[i]
        if x < lo:
            lo = x
        if x > hi:
            hi = x
    span = hi - lo
    shift = np.uint64(0)
    nb = hist.shape[0]
    while (span >> shift) >= np.uint64(nb):
        shift += np.uint64(1)
    hist[:] = 0
    for i in range(c):
        hist[np.int64((keys[i] - lo) >> shift)] += 1
    total = 0
    tb = 0
    for b in range(nb):
        total += hist[b]
        if total >= k:
            tb = b
            break
    m = 0
    for i in range(c):
        x = keys[i]
        if np.int64((x - lo) >> shift) <= tb:
            keys[m] = x
            m += 1
    _radix_sort(keys[:m], tmp)
    return k


@njit(cache=True, nogil=True)
def _heap_down(heap, n):
    # max-heap of keys (the worst kept result on top)
    x = heap[0]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and heap[c + 1] > heap[c]:
            c += 1
        if heap[c] <= x:
            break
        heap[i] = heap[c]
        i = c
    heap[i] = x


@njit(cache=True, nogil=True)
def _heap_up(heap, n):
    i = n
    x = heap[i]
    while i > 0:
        up = (i - 1) // 2
        if heap[up] >= x:
            break
        heap[i] = heap[up]
        i = up
    heap[i] = x


@njit(cache=True, nogil=True)
def _query(qt, qw, indptr, docs, imps, live, use_live, id_rank, by_rank, k, acc, mark, touched, keys, tmp, hist,
           out_docs, out_scores):
    n_seg = indptr.shape[0]
    # accumulate; a document is appended to `touched` at its first posting without a
    # branch (the slot is overwritten until the count moves), since whether a posting is
    # a document's first is unpredictable
    n_touched = 0
    for j in range(qt.shape[0]):
        t = qt[j]
        w = qw[j]
        for s in range(n_seg):
            for p in range(indptr[s, t], indptr[s, t + 1]):
                d = docs[p]
                touched[n_touched] = d
                n_touched += 1 - mark[d]
                mark[d] = 1
                acc[d] += w * imps[p]
    if 0 < k and k * _HEAP_RATIO <= n_touched:
        # small k: one pass keeping the k best keys in a heap; a document is keyed only
        # when its float32 score reaches the current k-th (mostly not: a predictable branch)
        n = 0
        thr = np.float32(-np.inf)
        for i in range(n_touched):
            d = touched[i]
            v = acc[d]
            acc[d] = 0.0
            mark[d] = 0
            if use_live and not live[d]:
                continue
            if n < k:
                keys[n] = _order_key(v, id_rank[d])
                _heap_up(keys, n)
                n += 1
                if n == k:
                    thr = _key_score(keys[0])
            elif np.float32(v) >= thr:
                key = _order_key(v, id_rank[d])
                if key < keys[0]:
                    keys[0] = key
                    _heap_down(keys, n)
                    thr = _key_score(keys[0])
        if n == 0:
            return 0
        _radix_sort(keys[:n], tmp)
    else:
        c = 0
        for i in range(n_touched):
            d = touched[i]
            if (not use_live) or live[d]:
                # Lucene sums a document's term scores in double precision, returns a float
                keys[c] = _order_key(acc[d], id_rank[d])
                c += 1
            acc[d] = 0.0
            mark[d] = 0
        if k == 0 or c == 0:
            return 0
        n = _top_k_sorted(keys, c, k, tmp, hist)
    for i in range(n):
        key = keys[i]
        out_docs[i] = by_rank[np.int64(key & np.uint64(0xFFFFFFFF))]
        out_scores[i] = _key_score(key)
    return n


@njit(cache=True, nogil=True)
def _run_chunk(lo, hi, q_ptr, q_terms, q_weights, indptr, docs, imps, live, use_live, id_rank, by_rank, k,
               acc, mark, touched, keys, tmp, hist, out_docs, out_scores, counts):
    for q in range(lo, hi):
        a = q_ptr[q]
        b = q_ptr[q + 1]
        counts[q] = _query(q_terms[a:b], q_weights[a:b], indptr, docs, imps, live, use_live, id_rank, by_rank, k,
                           acc, mark, touched, keys, tmp, hist, out_docs[q], out_scores[q])


@njit(cache=True, parallel=True, nogil=True)
def _run_parallel(n_chunks, q_ptr, q_terms, q_weights, indptr, docs, imps, live, use_live, id_rank, by_rank, k,
                  acc, mark, touched, keys, tmp, hist, out_docs, out_scores, counts):
    n_q = q_ptr.shape[0] - 1
    step = (n_q + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        lo = c * step
        hi = min(n_q, lo + step)
        if lo < hi:
            _run_chunk(lo, hi, q_ptr, q_terms, q_weights, indptr, docs, imps, live, use_live, id_rank, by_rank, k,
                       acc[c], mark[c], touched[c], keys[c], tmp[c], hist[c], out_docs, out_scores, counts)


class Workspace:
    """Per-thread scratch buffers sized to the collection, allocated once and reset
    sparsely by the kernel, so a query never pays for zeroing a collection-sized array.
    Not shared between Python threads (each caller thread gets its own, see BM25)."""

    def __init__(self, n_docs: int, threads: int = 1):
        self.n_docs, self.threads = n_docs, threads
        self.acc = np.zeros((threads, n_docs), dtype=np.float64)
        self.mark = np.zeros((threads, n_docs), dtype=np.uint8)
        # one spare slot: the branch-free append writes one past the last touched document
        self.touched = np.empty((threads, n_docs + 1), dtype=np.int32)
        self.keys = np.empty((threads, n_docs), dtype=np.uint64)
        self.tmp = np.empty((threads, n_docs), dtype=np.uint64)
        self.hist = np.zeros((threads, 2048), dtype=np.int64)


def search_postings(q_ptr: np.ndarray, q_terms: np.ndarray, q_weights: np.ndarray, indptr: np.ndarray,
                    docs: np.ndarray, imps: np.ndarray, live: np.ndarray | None, id_rank: np.ndarray,
                    by_rank: np.ndarray, k: int, work: Workspace,
                    threads: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``k`` documents for each query.

    Query ``q`` is the terms ``q_terms[q_ptr[q]:q_ptr[q+1]]`` with weights ``q_weights``.
    ``indptr`` is ``(segments, vocab+1)``: term ``t`` of segment ``s`` has postings
    ``docs/imps[indptr[s,t]:indptr[s,t+1]]`` (global doc numbers). ``id_rank`` gives each
    document's tie-break rank and ``by_rank`` is its inverse. Queries are split over
    ``threads`` threads (at most ``work.threads``, the buffers' count). Returns ``(doc numbers [Q,k], scores [Q,k], counts [Q])``.
    """
    n_q = len(q_ptr) - 1
    out_docs = np.empty((n_q, k), dtype=np.int32)
    out_scores = np.empty((n_q, k), dtype=np.float32)
    counts = np.zeros(n_q, dtype=np.int64)
    use_live = live is not None
    live_arr = live if use_live else np.ones(1, dtype=np.bool_)
    args = (q_ptr, q_terms, q_weights, indptr, docs, imps, live_arr, use_live, id_rank, by_rank, k)
    threads = min(threads, work.threads, n_q)
    if threads <= 1:
        _run_chunk(0, n_q, *args, work.acc[0], work.mark[0], work.touched[0], work.keys[0], work.tmp[0],
                   work.hist[0], out_docs, out_scores, counts)
    else:
        with torch_threads_kept():
            _run_parallel(threads, *args, work.acc, work.mark, work.touched, work.keys, work.tmp,
                          work.hist, out_docs, out_scores, counts)
    return out_docs, out_scores, counts


def kernels_cached(parallel: bool = False) -> bool | None:
    """Whether the search kernels will run without compiling first.

    The first search after installing (or after this file changes) makes numba compile
    the kernels, 5-20 s of silence that looks like a hang; the CLI announces it when this
    returns False. True: compiled in this process already, or numba's on-disk cache (the
    ``prune.*.nbi`` index next to BM25's range kernel, or numba's user cache) holds a fresh
    entry for every kernel a BM25 search uses (``parallel``: batches run on several threads
    too; this module's plain kernel, used by selective filters and SPLADE, is not
    announced). The check reads numba's small cache index files, so it costs well under a
    millisecond on warm runs. None: this numba version's cache layout is unknown, so nothing is claimed.
    """
    from retrievo.retrieve import prune  # BM25's range kernel (it imports this module)

    kernels = [prune._run_chunk, prune._run_parallel] if parallel else [prune._run_chunk]
    try:
        for kernel in kernels:
            if kernel.signatures:  # already compiled in this process
                continue
            if not kernel._cache._cache_file._load_index():  # empty when missing or stale
                return False
        return True
    except Exception:  # noqa: BLE001 - numba internals moved: make no claim rather than fail a search
        return None
