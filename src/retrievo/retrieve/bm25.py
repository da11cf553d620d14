"""BM25 retrieval, Lucene-exact by default.

``method="lucene"`` reproduces Lucene's ``BM25Similarity`` as Anserini/Pyserini run it:
idf ``log(1 + (N - df + 0.5) / (df + 0.5))`` over documents that have the field, document
lengths quantised to one byte with ``SmallFloat.intToByte4`` (so two documents of nearby
lengths share a norm), the tf part rewritten as ``w - w / (1 + tf / norm)`` and every
step done in 32-bit floats in Lucene's order; query terms repeated in the query weigh
once per occurrence (Anserini's bag-of-words query); score ties are broken by ascending
document id as Anserini does. The other methods follow Kamphuis et al. (ECIR 2020),
"Which BM25 do you mean?", with exact document lengths: ``robertson`` (idf clamped at 0
like bm25s), ``atire``, and Lv & Zhai's lower-bounded ``bm25l`` and ``bm25+``, whose
``delta`` applies to the query terms a document contains (bm25s also credits absent terms
with their tf=0 value, which shifts rankings; we keep the papers' definition).

Scores depend on collection statistics, so per-posting impacts are computed from the
index's raw term frequencies when the retriever is created (vectorised numpy, O(postings),
per segment in bounded steps) and summed range of documents by range by the numba kernel
of :mod:`retrievo.retrieve.prune`, which skips the ranges whose block-max bound cannot
reach the top k (``pruning="auto"``/``"on"``; ``"off"`` scores every range): both return
the same rankings, bit for bit. A selective filter searches its own compacted postings
with the plain kernel of :mod:`retrievo.retrieve.topk`.

``filter="year >= 2015 and source in ('pubmed', 'pmc')"`` restricts the search to the
documents whose metadata match (see :mod:`retrievo.index.filters`): the compiled bitmap
joins the live bitmap that both kernels test before a document enters the top k, so the
result is exactly the unfiltered ranking restricted to those documents, ``min(k,
matching)`` long. The statistics (idf, average length) stay those of the whole live
collection, as with a filter clause in Lucene: a filter selects documents, it does not
redefine the corpus, so a document's score is the same with or without it.

Queries with weighted terms (:attr:`Queries.terms`, e.g. from RM3) are scored as Lucene
scores a ``BooleanQuery`` of ``BoostQuery(TermQuery)`` clauses: each term's impact times
its weight, summed in double precision. Given rankings instead of queries, BM25 scores
only those candidates (as a reranker would; see :mod:`retrievo.pipeline`), with exactly
the scores a full retrieval gives them; a candidate that matches no query term scores 0.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrievo.errors import ConfigError, EmptyQueryError
from retrievo.index import scorecache
from retrievo.index.inverted import InvertedIndex
from retrievo.registry import BM25_METHODS
from retrievo.retrieve import prune
from retrievo.retrieve.first_stage import (DEFAULT_K, FirstStage, check_at_least, context_index, rank_candidates,
                                           top_k_rankings)
from retrievo.retrieve.postings import postings_scorer, stacked_indptr, thread_workspace
from retrievo.retrieve.prune import RangeTable, RangeWorkspace, prunable, range_table, search_ranges
from retrievo.retrieve.topk import Workspace, search_postings
from retrievo.types import Queries, Rankings

METHODS = BM25_METHODS  # the registry's option schema and the retriever share one list
PRUNING = ("auto", "on", "off")  # the registry's bm25 "pruning" choices
# "auto" prunes every query whose weights are >= 0 (over non-negative impacts): the only
# cost of pruning is one pass over the query terms' per-range bounds (a few hundred runs
# per term at 1M documents), which measured within noise of the unpruned kernel at k=10
# and k=1000 on the 1M-document synthetic corpus of bench/bm25_scale.py (BENCHMARKS.md,
# "BM25 at scale"), where little can be skipped; where ranges can be skipped it only wins.
# A filter that keeps at most this fraction of the documents is searched over postings
# compacted to its documents (built once per filter and index version, kept for the
# FILTER_CACHE most recent filters): a 1% filter then reads ~1% of each query term's
# postings instead of all of them. Above it, the kernels read every posting and skip the
# excluded documents at selection, which costs what an unfiltered search costs.
FILTER_COMPACT_FRACTION = 0.125
# An on-disk index with at least this many postings caches its impacts and block-max table
# per generation and parameter set in its folder (retrievo.index.scorecache), so the next
# open maps them instead of recomputing them; smaller ones compute them in milliseconds.
PERSIST_MIN_POSTINGS = 1 << 20
_CACHE_WRITTEN: dict[str, str] = {}  # index folder -> identity this process cached (see _store_cached)
_TABLE_FIELDS = ("range_lo", "ent_ptr", "ent_range", "ent_start", "ent_max")
FILTER_CACHE = 8


# ---------------------------------------------------------------------------- Lucene norms
def _int4_to_long(i: int) -> int:
    bits = i & 0x07
    shift = (i >> 3) - 1
    return bits if shift == -1 else (bits | 0x08) << shift


def _long_to_int4(i: int) -> int:
    num_bits = i.bit_length()
    if num_bits < 4:
        return i
    shift = num_bits - 4
    encoded = (i >> shift) & 0x07
    return encoded | ((shift + 1) << 3)


_NUM_FREE_VALUES = 255 - _long_to_int4(2**31 - 1)


def lucene_length_table() -> np.ndarray:
    """Lucene's ``LENGTH_TABLE``: the document length each norm byte decodes to."""
    out = np.empty(256, dtype=np.float32)
    for i in range(256):
        out[i] = i if i < _NUM_FREE_VALUES else _NUM_FREE_VALUES + _int4_to_long(i - _NUM_FREE_VALUES)
    return out


def lucene_encode_lengths(lengths: np.ndarray) -> np.ndarray:
    """``SmallFloat.intToByte4`` for an array of document lengths (as unsigned bytes)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    out = lengths.copy()
    big = lengths >= _NUM_FREE_VALUES
    if big.any():
        rest = lengths[big] - _NUM_FREE_VALUES
        num_bits = np.frexp(rest.astype(np.float64))[1].astype(np.int64)  # == int.bit_length()
        shift = np.maximum(num_bits - 4, 0)
        enc = np.where(num_bits < 4, rest, ((rest >> shift) & 0x07) | ((shift + 1) << 3))
        out[big] = _NUM_FREE_VALUES + enc
    return out.astype(np.uint8)


# ---------------------------------------------------------------------------- impacts
@dataclass(frozen=True)
class BM25Params:
    k1: float = 0.9
    b: float = 0.4
    method: str = "lucene"
    delta: float | None = None  # bm25l: 0.5, bm25+: 1.0 by default

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"unknown BM25 method {self.method!r}; choose from {', '.join(METHODS)}")
        if not self.k1 >= 0:
            raise ConfigError(f"k1 must be >= 0, got {self.k1}")
        if not 0 <= self.b <= 1:
            raise ConfigError(f"b must be in [0, 1], got {self.b}")

    @property
    def effective_delta(self) -> float:
        if self.delta is not None:
            return self.delta
        return {"bm25l": 0.5, "bm25+": 1.0}.get(self.method, 0.0)


def idf_weights(df: np.ndarray, n: int, method: str) -> np.ndarray:
    df = df.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if method == "lucene":
            idf = np.log(1 + (n - df + 0.5) / (df + 0.5))
        elif method == "robertson":  # clamped at 0 for terms in more than half the documents, as bm25s
            idf = np.log(np.maximum((n - df + 0.5) / (df + 0.5), 1.0))
        elif method == "atire":
            idf = np.log(n / df)
        elif method == "bm25l":
            idf = np.log((n + 1) / (df + 0.5))
        else:  # bm25+
            idf = np.log((n + 1) / df)
    idf[df == 0] = 0.0
    return idf.astype(np.float32)


IMPACT_CHUNK = 1 << 22  # postings per step: temporaries stay ~100 MB whatever the segment size


def segment_impacts(index: InvertedIndex, params: BM25Params,
                    out: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """Per-posting BM25 contributions (float32) for every segment of ``index``, written
    into ``out`` (one float32 array per segment, e.g. slices of one buffer) when given.

    Computed per segment in steps of :data:`IMPACT_CHUNK` postings read from the
    memory-mapped segment, so the temporaries stay bounded at any index size; the values
    do not depend on the step (every operation is element-wise)."""
    stats = index.collection_stats()
    n = stats["doc_count"]
    avgdl = np.float32(stats["sum_doc_len"] / n) if n else np.float32(1.0)
    idf = idf_weights(index.document_frequencies(), n, params.method)
    k1, b = np.float32(params.k1), np.float32(params.b)
    if params.method == "lucene":
        table = lucene_length_table()
        cache = (np.float32(1) / (k1 * ((np.float32(1) - b) + b * table / avgdl))).astype(np.float32)
    results = []
    for s, seg in enumerate(index.segments):
        dest = np.empty(seg.n_postings, dtype=np.float32) if out is None else out[s]
        indptr = np.asarray(seg.indptr, dtype=np.int64)
        if params.method == "lucene":
            doc_inv_norm = cache[lucene_encode_lengths(np.asarray(seg.doclen))]
        else:
            doc_len = np.asarray(seg.doclen).astype(np.float64)
        for lo in range(0, seg.n_postings, IMPACT_CHUNK):
            hi = min(lo + IMPACT_CHUNK, seg.n_postings)
            # term ids of postings lo..hi: the terms whose ranges overlap it, repeated
            t_lo = int(np.searchsorted(indptr, lo, side="right")) - 1
            t_hi = int(np.searchsorted(indptr, hi - 1, side="right")) - 1
            spans = np.diff(np.clip(indptr[t_lo:t_hi + 2], lo, hi))
            term = np.repeat(np.arange(t_lo, t_hi + 1, dtype=np.int64), spans)
            tf = np.asarray(seg.tfs[lo:hi]).astype(np.float32)
            w = idf[term]
            docs = np.asarray(seg.docs[lo:hi])
            if params.method == "lucene":
                inv_norm = doc_inv_norm[docs]
                imp = w - w / (np.float32(1) + tf * inv_norm)
            else:
                dl = doc_len[docs]
                lnorm = 1 - params.b + params.b * dl / float(avgdl)
                tf64 = tf.astype(np.float64)
                delta = params.effective_delta
                if params.method == "bm25l":
                    c = tf64 / lnorm
                    part = (params.k1 + 1) * (c + delta) / (params.k1 + c + delta)
                elif params.method == "bm25+":
                    part = (params.k1 + 1) * tf64 / (params.k1 * lnorm + tf64) + delta
                elif params.method == "atire":
                    part = tf64 * (params.k1 + 1) / (tf64 + params.k1 * lnorm)
                else:  # robertson
                    part = tf64 / (tf64 + params.k1 * lnorm)
                imp = w.astype(np.float64) * part
            dest[lo:hi] = imp
        results.append(dest)
    return results


# ---------------------------------------------------------------------------- the stage
@dataclass(eq=False)
class BM25(FirstStage):
    """BM25 over an :class:`InvertedIndex`. ``BM25(index)`` is Pyserini's default
    (Lucene, k1=0.9, b=0.4, top 1000). Takes queries (retrieval) or rankings (scores
    the candidates only)."""

    index: InvertedIndex
    k1: float = 0.9
    b: float = 0.4
    method: str = "lucene"
    k: int = DEFAULT_K
    delta: float | None = None
    threads: int | None = None
    pruning: str = "auto"
    filter: str | None = None
    _state: dict[str, Any] = field(default_factory=dict, repr=False)
    name = "bm25"
    takes = (Queries, Rankings)

    def __post_init__(self):
        if not isinstance(self.index, InvertedIndex):
            raise ConfigError(f"bm25 needs an InvertedIndex, got {type(self.index).__name__}")
        if getattr(self.index, "FORMAT", None) == "retrievo-impacts":
            raise ConfigError("bm25 cannot score an impact index: its postings hold learned (SPLADE) weights, not "
                              "term frequencies, so BM25 scores over them are meaningless; search it with the "
                              "splade stage")
        self.params = BM25Params(float(self.k1), float(self.b), self.method, self.delta)
        check_at_least(0, k=self.k)
        check_at_least(1, ("threads",), threads=self.threads)
        if self.pruning not in PRUNING:
            raise ConfigError(f"pruning must be one of {', '.join(PRUNING)}, got {self.pruning!r}")
        if self.filter is not None:
            self.index.filter_mask(self.filter)  # a bad filter fails here, before the impacts are computed
        self._arrays()  # impacts now, so the first batch's timing is only search

    @classmethod
    def from_options(cls, ctx: Mapping[str, Any], index: InvertedIndex | None = None, **options: Any) -> "BM25":
        """Registry factory: ``bm25(index='sf.idx', k1=...)``, or the context's index."""
        return cls(context_index(ctx, index, "bm25", suggest_build=True), **options)

    # search-time arrays are built once per index generation
    def _arrays(self):
        key = self._index_key()
        if self._state.get("key") != key:
            index = self.index
            v = index.vocab_size
            single = len(index.segments) == 1 and index.segments[0].vocab_size == v
            bases = np.asarray(index.bases, dtype=np.int64)
            if single:
                indptr = np.asarray(index.segments[0].indptr, dtype=np.int64)[None, :]
            else:
                indptr = stacked_indptr(index.segments, v)
            cached = self._load_cached(index)
            if cached is not None:
                imps, table = cached["imps"], RangeTable(*(cached[f] for f in _TABLE_FIELDS), prune.RANGE_DOCS)
                docs = np.asarray(index.segments[0].docs) if single else cached["docs"]
                prunable_imps = bool(cached["extra"].get("prunable"))
                min_imp = float(cached["extra"].get("min_imp", 0.0))
            else:
                docs, imps = self._impacts(index, single)
                table = range_table(indptr, docs, imps, bases, prune.RANGE_DOCS)
                prunable_imps = prunable(np.empty(0, np.float32), imps)
                min_imp = float(np.min(imps)) if len(imps) else 0.0
                self._store_cached(index, single, docs, imps, table, {"prunable": prunable_imps, "min_imp": min_imp})
            self._state.pop("compacted", None)  # postings compacted to the previous generation's filters
            self._state.update(key=key, indptr=np.ascontiguousarray(indptr, dtype=np.int64),
                               docs=docs, imps=imps, table=table, prunable_imps=prunable_imps,
                               min_imp=min_imp,
                               live=index.live, id_rank=index.id_rank, by_rank=index.by_rank,
                               ids=index.doc_ids, n_docs=index.total_docs, vocab=index.vocab, bases=bases)
        return self._state

    def _impacts(self, index: InvertedIndex, single: bool) -> tuple[np.ndarray, np.ndarray]:
        """Global document numbers and impacts of every posting, segment after segment."""
        if single:
            return np.asarray(index.segments[0].docs), segment_impacts(index, self.params)[0]
        # one buffer each for documents and impacts, filled segment by segment (no
        # per-segment copies concatenated afterwards)
        total = sum(seg.n_postings for seg in index.segments)
        docs = np.empty(total, dtype=np.int32)
        imps = np.empty(total, dtype=np.float32)
        views, base_post = [], 0
        for seg, base in zip(index.segments, index.bases[:-1]):
            for lo in range(0, seg.n_postings, IMPACT_CHUNK):
                hi = min(lo + IMPACT_CHUNK, seg.n_postings)
                np.add(seg.docs[lo:hi], np.int32(base), out=docs[base_post + lo:base_post + hi],
                       dtype=np.int32, casting="unsafe")
            views.append(imps[base_post:base_post + seg.n_postings])
            base_post += seg.n_postings
        segment_impacts(index, self.params, out=views)
        return docs, imps

    def _cache_params(self) -> dict[str, Any]:
        p = self.params
        return {"k1": p.k1, "b": p.b, "method": p.method, "delta": p.effective_delta, "range_docs": prune.RANGE_DOCS}

    def _cache_wanted(self, index: InvertedIndex) -> bool:
        return index.path is not None and sum(seg.n_postings for seg in index.segments) >= PERSIST_MIN_POSTINGS

    def _load_cached(self, index: InvertedIndex) -> dict[str, Any] | None:
        if not self._cache_wanted(index):
            return None
        return scorecache.load(index.path, "bm25", index.identity, self._cache_params())

    def _store_cached(self, index: InvertedIndex, single: bool, docs: np.ndarray, imps: np.ndarray,
                      table: RangeTable, extra: dict[str, Any]) -> None:
        if not self._cache_wanted(index):
            return
        # one entry per index folder and process: a process that sees the index change
        # under it (live updates, a commit every fraction of a second) would otherwise
        # write ~6 bytes per posting per commit; the next process to open it writes one
        folder = str(index.path)
        if _CACHE_WRITTEN.get(folder, index.identity) != index.identity:
            return
        _CACHE_WRITTEN[folder] = index.identity
        arrays = {"imps": imps, **{f: getattr(table, f) for f in _TABLE_FIELDS}}
        if not single:
            arrays["docs"] = docs  # the global document numbers, so a reopen builds no buffer
        scorecache.store(index.path, "bm25", index.identity, self._cache_params(), arrays, extra)

    def _compacted(self, st: dict[str, Any], allowed: np.ndarray) -> dict[str, np.ndarray] | None:
        """Postings restricted to the filter's live documents (same impacts, same global
        numbers, so the exhaustive kernel ranks them exactly as over the full lists), or
        None when the filter keeps more than :data:`FILTER_COMPACT_FRACTION`."""
        if np.count_nonzero(allowed) > FILTER_COMPACT_FRACTION * max(st["n_docs"], 1):
            return None
        from retrievo.index.filters import canonical

        cache = st.setdefault("compacted", {})
        key = canonical(self.filter)
        if key not in cache:
            keep = allowed[st["docs"]]
            cum = np.zeros(len(keep) + 1, dtype=np.int64)
            np.cumsum(keep, out=cum[1:])
            if len(cache) >= FILTER_CACHE:
                cache.pop(next(iter(cache)))
            cache[key] = {"indptr": np.ascontiguousarray(cum[st["indptr"]]),
                          "docs": np.ascontiguousarray(st["docs"][keep]),
                          "imps": np.ascontiguousarray(st["imps"][keep])}
        return cache[key]

    def uses_pruning(self, k: int | None = None) -> bool:
        """Whether queries asking for ``k`` results (default: this stage's k) may skip
        document ranges: always with ``pruning="on"``, never with ``"off"``, for any k > 0
        with ``"auto"`` (see :data:`PRUNING`'s note above). A query with a negative weight
        (or an index with negative impacts) is never pruned. Both paths return the same
        rankings."""
        k = self.k if k is None else k
        if self.pruning != "auto":
            return self.pruning == "on"
        return k > 0

    def _pruned_queries(self, q_ptr: np.ndarray, q_weights: np.ndarray, k: int, st: dict[str, Any]) -> np.ndarray:
        """Which queries of a batch may skip ranges (see :meth:`uses_pruning`): bounds only
        bound when no contribution is negative."""
        n_q = len(q_ptr) - 1
        if not self.uses_pruning(k):
            return np.zeros(n_q, dtype=bool)
        if not st["prunable_imps"]:
            return np.zeros(n_q, dtype=bool)
        negatives = np.concatenate([[0], np.cumsum(q_weights < 0)])
        return negatives[q_ptr[1:]] == negatives[q_ptr[:-1]]

    def query_terms(self, text: str) -> Counter[str]:
        """Analysed query terms with their counts (Anserini's bag-of-words boosts)."""
        return Counter(self.index.analyzer(text))

    def _query_terms(self, queries: Queries, vocab: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flat (term ids, weights, per-query offsets): analysed text with counts as
        weights (Anserini's bag of words), or the query's weighted terms when it has them."""
        q_terms: list[int] = []
        q_weights: list[float] = []
        q_ptr = np.zeros(len(queries) + 1, dtype=np.int64)
        analyzer = self.index.analyzer
        for i, (qid, text) in enumerate(zip(queries.ids, queries.texts)):
            weighted = queries.term_weights(i)
            if weighted is None:
                if not text or not text.strip():
                    raise EmptyQueryError(f"query {qid!r} is empty; give it some text")
                weighted = Counter(analyzer(text))
            elif not weighted:
                raise EmptyQueryError(f"query {qid!r} has an empty weighted-term list")
            for term, weight in weighted.items():
                tid = vocab.get(term)
                if tid is not None:
                    q_terms.append(tid)
                    q_weights.append(weight)
            q_ptr[i + 1] = len(q_terms)
        return q_ptr, np.asarray(q_terms, dtype=np.int64), np.asarray(q_weights, dtype=np.float32)

    def transform(self, inp: Queries | Rankings) -> Rankings:
        if isinstance(inp, Rankings):
            return self._score_candidates(inp)
        queries = inp
        st = self._arrays()
        q_ptr, q_terms, q_weights = self._query_terms(queries, st["vocab"])
        # the kernel splits a batch into `threads` chunks (prange): no process-wide thread
        # setting is changed, so concurrent callers and other numba code are unaffected
        threads = self._threads_for(len(queries))
        k = min(self.k, st["n_docs"])
        pruned = self._pruned_queries(q_ptr, q_weights, k, st)
        # the filter joins the live bitmap: both kernels skip excluded documents before
        # they can enter the top k, so min(k, matching) results come back, exactly ranked
        live = st["live"] if self.filter is None else self.index.allowed(self.filter)
        compact = self._compacted(st, live) if self.filter is not None else None
        if compact is not None:  # a selective filter: its own postings, every one allowed
            st = {**st, **compact}
            live = None
            pruned = np.zeros(len(queries), dtype=bool)
        if compact is not None:
            out_docs, out_scores, counts = search_postings(
                q_ptr, q_terms, q_weights, st["indptr"], st["docs"], st["imps"], live, st["id_rank"], st["by_rank"],
                k, self._workspace(threads), threads)
        else:
            out_docs, out_scores, counts = search_ranges(
                q_ptr, q_terms, q_weights, st["indptr"], st["docs"], st["imps"], st["table"], live,
                st["id_rank"], st["by_rank"], k, pruned, self._range_workspace(st, k, threads), threads,
                st["min_imp"])
        return top_k_rankings(queries, st["ids"], out_docs, out_scores, counts)

    def _score_candidates(self, rankings: Rankings) -> Rankings:
        """BM25 scores of each query's candidates, in the kernel's order of summation (query
        terms in order, float32 term contributions summed in float64), so a candidate's
        score equals the one a full retrieval gives it; sorted like the kernel sorts."""
        st = self._arrays()
        queries = rankings.queries
        q_ptr, q_terms, q_weights = self._query_terms(queries, st["vocab"])
        id_map = self.index._ids_to_global()
        keep = None if self.filter is None else self.index.filter_mask(self.filter)
        score = postings_scorer(q_ptr, q_terms, q_weights, st["indptr"], st["docs"], st["imps"])
        return rank_candidates(rankings, id_map, st["id_rank"], "bm25", score, keep=keep)

    def _workspace(self, threads: int) -> Workspace:
        return thread_workspace(self._state, threads)

    def _range_workspace(self, st: dict[str, Any], k: int, threads: int) -> RangeWorkspace:
        # one per calling Python thread, like the exhaustive kernel's workspace
        local = self._state.setdefault("local", threading.local())
        work = getattr(local, "ranges", None)
        table = st["table"]
        if work is None or not work.fits(table.n_ranges, table.range_docs, k, threads):
            work = local.ranges = RangeWorkspace(table.n_ranges, table.range_docs, k, threads)
        return work

    def spec(self, resources: bool = True) -> str:
        params: dict[str, Any] = {}
        defaults = {"k1": 0.9, "b": 0.4, "method": "lucene", "delta": None, "threads": None, "pruning": "auto",
                    "filter": None}
        for key, default in defaults.items():
            if getattr(self, key) != default:
                params[key] = getattr(self, key)
        return self._finish_spec(params, resources)

__all__ = ["BM25", "BM25Params", "METHODS", "lucene_length_table", "lucene_encode_lengths", "segment_impacts"]
