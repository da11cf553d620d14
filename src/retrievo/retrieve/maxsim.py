"""Late interaction (ColBERT's MaxSim): exhaustive search, or reranking of candidates.

The score of document ``d`` for query ``q`` is ``Σ_i max_j <q_i, d_j>`` over the query's
token vectors ``q_i`` and the document's ``d_j`` (Khattab & Zaharia, 2020).

Why our own kernel rather than PyLate's or a padded tensor product: documents have very
different token counts, and padding every document to the longest one (what a batched
``einsum`` needs) multiplies the work and memory by the ratio of the longest to the mean
length (~3x on SciFact). Here the token matrix stays flat (see
:mod:`retrievo.index.multivectors`): one BLAS product of all query tokens with a block of
whole documents' tokens, then ``np.maximum.reduceat`` over the documents' row ranges gives
every (query token, document) maximum without padding, and a sum over query tokens the
scores. Exhaustive search feeds those block scores to the same fused top-k selection as
exact dense search (:func:`retrievo.retrieve.exact.search_blocks`), so ties, deletions
and ordering behave exactly as in every other retriever (score descending, ascending id).

``maxsim`` works on a :class:`~retrievo.index.multivectors.MultiVectorIndex` as it is, or
on a lexical index, whose stored documents are encoded once and cached beside it
(``<index>.multivector/<model key>/``, or under ``$RETRIEVO_CACHE_DIR/multivector/``) —
the same cache ``muvera`` reads. Given queries it searches every document (for corpora
small enough to scan: cost grows with the total number of tokens); given rankings it
reranks the candidates only.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrievo.errors import EmptyQueryError
from retrievo.index.multivectors import MultiVectorIndex
from retrievo.pipeline import charge
from retrievo.retrieve.dense import _live_numbers, _StoreTexts
from retrievo.retrieve.encoded import content_hashes, plan_sync
from retrievo.retrieve.exact import blas_threads, search_blocks
from retrievo.retrieve.first_stage import (DEFAULT_K, EncodingStage, candidate_numbers, check_at_least, context_index,
                                           no_rankings, top_k_rankings)
from retrievo.retrieve.splade import cache_folder, stored_texts
from retrievo.types import Queries, Rankings

BLOCK_TOKENS = 16384  # document tokens per BLAS product in exhaustive search
RESCORE_ROWS = 2048  # token rows per product when re-scoring candidates (the buffer stays in cache)
QUERY_ROWS = 2048  # query token rows per product (bounds the score block at 128 MB)
_MEMORY: dict[tuple[str, str], MultiVectorIndex] = {}
_LOCK = threading.Lock()


def maxsim_flat(queries: np.ndarray, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """MaxSim scores ``[n queries, n docs]`` of queries ``[n, L, dim]`` against documents
    whose token vectors are consecutive rows of ``tokens`` (``lengths[i]`` rows each).
    A document without tokens scores 0."""
    queries = np.asarray(queries, dtype=np.float32)
    n_q, n_l, dim = queries.shape
    lengths = np.asarray(lengths, dtype=np.int64)
    out = np.zeros((n_q, len(lengths)), dtype=np.float32)
    has = lengths > 0
    if not len(lengths) or not has.any() or n_q == 0:
        return out
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])[has]
    tok = np.asarray(tokens, dtype=np.float32)
    flat = queries.reshape(n_q * n_l, dim)
    step = max(1, QUERY_ROWS // max(n_l, 1))
    for g in range(0, n_q, step):
        sims = flat[g * n_l:(g + step) * n_l] @ tok.T  # [rows, tokens]
        best = np.maximum.reduceat(sims, starts, axis=1)  # [rows, docs with tokens]
        out[g:g + step, has] = best.reshape(-1, n_l, best.shape[1]).sum(axis=1)
    return out


class _DocBlocks:
    """A part's documents as something :func:`search_blocks` can slice by document:
    ``view[a:b]`` is ``(tokens, lengths)`` of documents ``a..b``."""

    def __init__(self, part):
        self.part = part
        self.shape = (part.n_docs,)

    def __getitem__(self, sl: slice):
        a, b = sl.start or 0, min(sl.stop, self.part.n_docs)
        off = self.part.offsets
        return self.part.tokens[off[a]:off[b]], np.diff(off[a:b + 1])


def _score_block(queries: np.ndarray, block) -> np.ndarray:
    tokens, lengths = block
    return maxsim_flat(queries, tokens, lengths)


def search_maxsim(queries: np.ndarray, mindex: MultiVectorIndex, k: int, threads: int = 1
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exhaustive MaxSim top ``k`` (same return shape as ``search_blocks``)."""
    mean = max(1.0, mindex.n_tokens / max(mindex.total_docs, 1))
    block_docs = max(1, int(BLOCK_TOKENS / mean))
    blocks = [(base, _DocBlocks(part)) for base, part in mindex.blocks()]
    return search_blocks(queries, blocks, mindex.total_docs, mindex.live, mindex.id_rank, mindex.by_rank, k,
                         threads, block_docs=block_docs, scorer=_score_block)


def rescore(queries: np.ndarray, mindex: MultiVectorIndex, candidates: list[np.ndarray]) -> list[np.ndarray]:
    """Exact MaxSim of each query with its candidate global document numbers.

    Re-scoring is bound by reading the candidates' token vectors, not by the product: a
    gather into one array and then a float16 → float32 conversion of it cost two passes
    over ~100 k tokens × dim per query, about twice the BLAS product itself (500 SciFact
    candidates: 0.19 s against 0.06 s, one thread). So each query's candidates are visited
    in ascending storage order (the memory map is read forwards), their token rows are
    converted straight into a reused float32 buffer of :data:`RESCORE_ROWS` rows (small
    enough to stay in cache), each filled block is scored at once and the per-document
    maxima taken with ``reduceat``; the scores come back in the order given (0.12 s/query
    there).
    """
    queries = np.asarray(queries, dtype=np.float32)
    dim = queries.shape[2]
    bases = np.asarray(mindex.bases, dtype=np.int64)
    parts = mindex.parts
    buf = np.empty((RESCORE_ROWS, dim), dtype=np.float32)
    out = []
    for qi, numbers in enumerate(candidates):
        numbers = np.asarray(numbers, dtype=np.int64)
        scores = np.zeros(len(numbers), dtype=np.float32)
        if not len(numbers):
            out.append(scores)
            continue
        order = np.argsort(numbers, kind="stable")
        which = np.searchsorted(bases, numbers[order], side="right") - 1
        local = numbers[order] - bases[which]
        starts = np.empty(len(numbers), dtype=np.int64)
        ends = np.empty(len(numbers), dtype=np.int64)
        for p in np.unique(which).tolist():
            sel = which == p
            offsets = parts[p].offsets
            starts[sel], ends[sel] = offsets[local[sel]], offsets[local[sel] + 1]
        lengths = ends - starts
        q = queries[qi]
        i, n = 0, len(numbers)
        while i < n:
            # whole documents up to RESCORE_ROWS rows (a longer document gets its own array)
            j, rows = i, 0
            while j < n and (j == i or rows + lengths[j] <= RESCORE_ROWS):
                rows += int(lengths[j])
                j += 1
            block = buf if rows <= RESCORE_ROWS else np.empty((rows, dim), dtype=np.float32)
            pos, firsts, has = 0, [], []
            for t in range(i, j):
                length = int(lengths[t])
                if length:
                    block[pos:pos + length] = parts[which[t]].tokens[starts[t]:ends[t]]
                    firsts.append(pos)
                    has.append(t)
                pos += length
            if has:
                sims = q @ block[:rows].T  # [query tokens, rows]
                best = np.maximum.reduceat(sims, np.asarray(firsts, dtype=np.int64), axis=1)
                scores[order[np.asarray(has)]] = best.sum(axis=0)
            i = j
        out.append(scores)
    return out


# ------------------------------------------------------------------ encoding a lexical index
def multivectors_for(lexical: Any, encoder: Any, progress: bool = True, dtype: str = "float16") -> MultiVectorIndex:
    """The multi-vector index of ``lexical``'s live documents under ``encoder``: built
    once, then reused (and brought up to date when the lexical index changed)."""
    identity = encoder.identity()
    folder = cache_folder(lexical, f"{identity}|{dtype}", "multivector")

    def encode(numbers):
        texts, keep = stored_texts(lexical, numbers, "multi-vector")  # no text: no token vectors (score 0)
        hashes = content_hashes(texts)
        before = encoder.truncated
        lengths = np.zeros(len(texts), dtype=np.int64)
        if not keep:
            return np.empty((0, encoder.dim), np.float32), lengths, 0, hashes
        tokens, kept_lengths = encoder.encode_documents([texts[i] for i in keep], progress=progress)
        lengths[keep] = kept_lengths
        return tokens, lengths, encoder.truncated - before, hashes

    meta = dict(model=identity, model_spec=str(encoder.spec), source=str(lexical.identity), dtype=dtype)
    if folder is None:
        key = (str(lexical.identity), f"{identity}|{dtype}")
        with _LOCK:
            hit = _MEMORY.get(key)
        if hit is None:
            numbers = _live_numbers(lexical)
            tokens, lengths, cut, hashes = encode(numbers)
            hit = MultiVectorIndex.build(lexical.doc_ids[numbers].tolist(), tokens, lengths, truncated=cut,
                                         metadata=hashes, **meta)
            with _LOCK:
                hit = _MEMORY.setdefault(key, hit)
        return hit
    from retrievo.index import lifecycle

    if lifecycle.is_index(folder):
        mindex = MultiVectorIndex.open(folder)
        mindex.check_model(identity)
        if mindex.source != str(lexical.identity):
            # new documents, and documents whose text changed under the same id (an upsert:
            # see retrievo.retrieve.encoded), are encoded and replaced in one upsert
            numbers = _live_numbers(lexical)
            lex_ids = lexical.doc_ids[numbers].tolist()
            todo, gone = plan_sync(mindex, lex_ids, _StoreTexts(lexical.docstore, numbers).__getitem__)
            if todo:
                tokens, lengths, cut, hashes = encode(numbers[todo])
                mindex.upsert([lex_ids[i] for i in todo], tokens, lengths, truncated=cut, metadata=hashes,
                              source=None if gone else str(lexical.identity))
            mindex.delete(gone, source=str(lexical.identity))
        return mindex
    numbers = _live_numbers(lexical)
    tokens, lengths, cut, hashes = encode(numbers)
    try:
        return MultiVectorIndex.build(lexical.doc_ids[numbers].tolist(), tokens, lengths, folder, truncated=cut,
                                      metadata=hashes, **meta)
    except FileExistsError:  # another process published it first
        return MultiVectorIndex.open(folder)


class LateInteraction(EncodingStage):
    """What ``maxsim`` and ``muvera`` share: the encoder, the multi-vector index (its own,
    or a lexical index's documents encoded once), query encoding, and exact MaxSim of
    given candidates."""

    encoded_index = MultiVectorIndex
    encoder_options = ("dim", "query_length", "max_length", "batch_size")

    def _setup_checks(self) -> None:
        check_at_least(1, ("threads",), k=self.k, threads=self.threads)
        check_at_least(0, ("query_length",), query_length=self.query_length)
        self._check_index_type()

    @classmethod
    def from_options(cls, ctx: Mapping[str, Any], index: Any = None, **options: Any) -> "LateInteraction":
        return cls(context_index(ctx, index, cls.name), **options)

    def _load_encoder(self, model: str | None, **options: Any) -> Any:
        from retrievo.models.multivector import load_multivector

        return load_multivector(model, **options)

    def multivectors(self) -> MultiVectorIndex:
        key = self._index_key()
        if self._state.get("mkey") != key:
            self._state.update(mkey=key, mindex=self._encoded_documents(multivectors_for))
        return self._state["mindex"]

    def query_tokens(self, queries: Queries) -> np.ndarray:
        for qid, text in zip(queries.ids, queries.texts):
            if not text or not text.strip():
                raise EmptyQueryError(f"query {qid!r} is empty; give it some text")
        encoder = self.encoder()
        charge(calls=1, forward_passes=-(-len(queries) // encoder.batch_size))
        return encoder.encode_queries(list(queries.texts))

    def _candidates(self, rankings: Rankings) -> list[np.ndarray]:
        id_map = self.multivectors().docstore.id_map()
        return [candidate_numbers(id_map, ranked, self.name, "the multi-vector index")[1] for ranked in rankings]

    def _ranked(self, queries: Queries, numbers: list[np.ndarray], scores: list[np.ndarray]) -> Rankings:
        mindex = self.multivectors()
        id_rank, ids = mindex.id_rank, mindex.doc_ids
        lists = []
        for nums, sc in zip(numbers, scores):
            order = np.lexsort((id_rank[nums], -sc))[: self.k]
            lists.append((ids[nums[order]], sc[order]))
        return Rankings.from_lists(queries, lists)

    def transform(self, inp: Queries | Rankings) -> Rankings:
        queries = inp.queries if isinstance(inp, Rankings) else inp
        if not len(queries):
            return no_rankings(queries)
        mindex = self.multivectors()
        qv = self.query_tokens(queries)
        threads = self._threads_for(len(queries))
        if isinstance(inp, Rankings):  # exact MaxSim of the given candidates
            return self._rescored(queries, mindex, qv, self._candidates(inp), threads)
        return self._search(queries, mindex, qv, threads)

    def _search(self, queries: Queries, mindex: MultiVectorIndex, qv: np.ndarray, threads: int) -> Rankings:
        """The top ``k`` of every document for query token vectors ``qv``."""
        raise NotImplementedError

    def _rescored(self, queries: Queries, mindex: MultiVectorIndex, qv: np.ndarray, numbers: list[np.ndarray],
                  threads: int) -> Rankings:
        """Each query's candidates (global numbers) ranked by exact MaxSim, top ``k`` kept."""
        with blas_threads(threads):
            scores = rescore(qv, mindex, numbers)
        return self._ranked(queries, numbers, scores)

    def _common_spec(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in ("model", "dim", "query_length", "max_length", "batch_size",
                                                    "threads") if getattr(self, key) is not None}


@dataclass(eq=False)
class MaxSim(LateInteraction):
    """Exact late interaction: exhaustive MaxSim search given queries, MaxSim reranking
    of the candidates given rankings."""

    index: Any
    model: str | None = None
    dim: int | None = None
    query_length: int | None = None
    max_length: int | None = None
    batch_size: int | None = None
    k: int = DEFAULT_K
    threads: int | None = None
    progress: bool = True
    _state: dict[str, Any] = field(default_factory=dict, repr=False)
    name = "maxsim"
    takes = (Queries, Rankings)

    def __post_init__(self):
        self._setup_checks()
        self.multivectors()  # encode (or open the cache) now: the first batch's timing is only search

    def _search(self, queries: Queries, mindex: MultiVectorIndex, qv: np.ndarray, threads: int) -> Rankings:
        docs, scores, counts = search_maxsim(qv, mindex, self.k, threads)
        return top_k_rankings(queries, mindex.doc_ids, docs, scores, counts)

    def spec(self, resources: bool = True) -> str:
        return self._finish_spec(self._common_spec(), resources)


__all__ = ["DEFAULT_K", "LateInteraction", "MaxSim", "maxsim_flat", "multivectors_for", "rescore", "search_maxsim"]
