"""Learned sparse retrieval (SPLADE): sparse query vectors against an impact index.

``splade`` works on either kind of index, like ``dense``:

* an :class:`~retrievo.index.impacts.ImpactIndex` — searched as it is: built by the
  SPLADE encoder (whose identity it records; searching it with another document encoder
  is a :class:`~retrievo.errors.ModelMismatchError`) or imported from JSONL vectors (then
  the query encoder's vocabulary must cover the index's terms, else
  :class:`~retrievo.errors.VocabularyMismatchError`);
* a lexical :class:`~retrievo.index.InvertedIndex` with stored documents (the pipeline's
  default index, so ``retrievo eval DATA --pipeline splade`` needs no extra step) — its
  documents are encoded once into an impact index cached beside it
  (``<index>.splade/<model key>/``) or, for an in-memory index, under
  ``$RETRIEVO_CACHE_DIR/splade/`` keyed by its content identity; when the lexical index
  changes, new documents are encoded and added and deleted ones tombstoned.

Scoring is the BM25 path with other numbers: each posting's impact ``q / scale``
(float32) times the query term's weight, summed in float64 by the numba kernel of
:mod:`retrievo.retrieve.topk`, top ``k`` selected with ties broken by ascending id. No
second kernel: what differs from BM25 is only where the per-posting numbers come from.
Given rankings, ``splade`` scores only the candidates, with exactly the scores a full
retrieval gives them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrievo.errors import ConfigError, ModelMismatchError, VocabularyMismatchError
from retrievo.index.impacts import DEFAULT_SCALE, ImpactIndex
from retrievo.pipeline import charge
from retrievo.retrieve.dense import _StoreTexts, _live_numbers, cache_root, model_key
from retrievo.retrieve.encoded import content_hashes, plan_sync
from retrievo.retrieve.first_stage import (DEFAULT_K, EncodingStage, check_at_least, context_index, no_rankings,
                                           rank_candidates, top_k_rankings)
from retrievo.retrieve.postings import postings_scorer, stacked_indptr, thread_workspace
from retrievo.retrieve.topk import Workspace, search_postings
from retrievo.types import Queries, Rankings

#: share of an imported index's terms the query encoder's vocabulary must contain
MIN_VOCAB_COVERAGE = 0.9
_MEMORY: dict[tuple[str, str], ImpactIndex] = {}
_LOCK = threading.Lock()


def cache_folder(lexical: Any, identity: str, kind: str) -> Path | None:
    """Where ``lexical``'s documents encoded by ``identity`` are cached for a method
    ``kind`` (``splade``, ``multivector``): beside an on-disk index, else under the cache
    root keyed by the index's content identity (None: no disk cache)."""
    if getattr(lexical, "path", None) is not None:
        path = Path(lexical.path)
        return path.parent / f"{path.name}.{kind}" / model_key(identity)
    root = cache_root()
    return None if root is None else root / kind / str(lexical.identity)[:24] / model_key(identity)


def stored_texts(lexical: Any, numbers: np.ndarray, method: str) -> tuple[list[str], list[int]]:
    """The stored texts of ``numbers`` and the positions of those with text. A lexical
    index may hold documents without text (Cranfield has two); an encoder refuses them
    (:class:`~retrievo.errors.EmptyDocumentError`), so a stage encoding the index's
    documents leaves them out of the encoder — they get no terms / no token vectors and
    can never match, as in BM25 — and says so in a warning."""
    import warnings

    store = _StoreTexts(lexical.docstore, numbers)
    texts = [store[i] for i in range(len(store))]
    keep = [i for i, t in enumerate(texts) if t and t.strip()]
    if len(keep) < len(texts):
        empty = [str(lexical.doc_ids[numbers[i]]) for i, t in enumerate(texts) if not (t and t.strip())]
        warnings.warn(f"{method}: {len(empty)} stored document(s) have no text ({', '.join(empty[:5])}); they are "
                      "indexed without terms and can never match", stacklevel=3)
    return texts, keep


def _encode_store(lexical: Any, numbers: np.ndarray, encoder: Any, progress: bool):
    from scipy.sparse import csr_matrix

    texts, keep = stored_texts(lexical, numbers, "splade")
    hashes = content_hashes(texts)
    before = encoder.truncated
    if not keep:
        return csr_matrix((len(texts), encoder.vocab_size), dtype=np.float32), 0, hashes
    vectors = encoder.encode_documents([texts[i] for i in keep], progress=progress)
    if len(keep) < len(texts):  # empty rows for the documents without text
        counts = np.zeros(len(texts), dtype=np.int64)
        counts[keep] = np.diff(vectors.indptr)
        indptr = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        vectors = csr_matrix((vectors.data, vectors.indices, indptr), shape=(len(texts), vectors.shape[1]))
    return vectors, encoder.truncated - before, hashes


def impacts_for(lexical: Any, encoder: Any, scale: float = DEFAULT_SCALE, progress: bool = True) -> ImpactIndex:
    """The impact index of ``lexical``'s live documents under ``encoder``: built,
    reused, or brought up to date (see the module docstring)."""
    identity = encoder.identity()
    folder = cache_folder(lexical, f"{identity}|scale={scale:g}", "splade")
    meta = dict(model=identity, model_spec=str(encoder.spec), vocab_sha=encoder.vocab_sha(),
                source=str(lexical.identity))
    if folder is None:
        key = (str(lexical.identity), f"{identity}|{scale:g}")
        with _LOCK:
            hit = _MEMORY.get(key)
        if hit is None:
            numbers = _live_numbers(lexical)
            vectors, cut, hashes = _encode_store(lexical, numbers, encoder, progress)
            hit = ImpactIndex.from_vectors(lexical.doc_ids[numbers].tolist(), vectors, encoder.terms(), scale=scale,
                                           truncated=cut, metadata=hashes, **meta)
            with _LOCK:
                hit = _MEMORY.setdefault(key, hit)
        return hit
    from retrievo.index import lifecycle

    if lifecycle.is_index(folder):
        index = ImpactIndex.open(folder)
        if index.model != identity:
            raise ModelMismatchError(f"{folder} holds impacts of {index.model}, not {identity}")
        if index.source != str(lexical.identity):
            _sync(index, lexical, encoder, progress)
        return index
    numbers = _live_numbers(lexical)
    vectors, cut, hashes = _encode_store(lexical, numbers, encoder, progress)
    try:
        return ImpactIndex.from_vectors(lexical.doc_ids[numbers].tolist(), vectors, encoder.terms(), folder,
                                        scale=scale, truncated=cut, metadata=hashes, **meta)
    except FileExistsError:  # another process published it first: use theirs
        return ImpactIndex.open(folder)


def _sync(index: ImpactIndex, lexical: Any, encoder: Any, progress: bool) -> None:
    """Make the cached impacts hold exactly ``lexical``'s live documents: encode the new
    ones and those whose text changed under the same id (see
    :mod:`retrievo.retrieve.encoded`), replace them in one upsert, delete the removed ones."""
    numbers = _live_numbers(lexical)
    lex_ids = lexical.doc_ids[numbers].tolist()
    store = _StoreTexts(lexical.docstore, numbers)
    todo, gone = plan_sync(index, lex_ids, store.__getitem__)
    if todo:
        vectors, cut, hashes = _encode_store(lexical, numbers[todo], encoder, progress)
        index.upsert_vectors([lex_ids[i] for i in todo], vectors, encoder.terms(), truncated=cut, metadata=hashes)
    if gone:
        index.delete(gone)
    index.set_source(str(lexical.identity))


def check_vocabulary(index: ImpactIndex, encoder: Any) -> None:
    """Refuse a query encoder whose terms would not match the index's (see the module
    docstring): the recorded document encoder must be this one, and the vocabulary the
    same (or, for imported vectors, cover at least :data:`MIN_VOCAB_COVERAGE`)."""
    where = index.path if index.path is not None else "this impact index"
    if index.model and index.model != encoder.identity():
        raise ModelMismatchError(f"{where} was encoded with {index.model_spec or index.model}, not "
                                 f"{encoder.identity()}; search it with the same model and options "
                                 "(a separate query encoder goes in query_model=...)")
    if index.vocab_sha:
        if index.vocab_sha != encoder.vocab_sha():
            raise VocabularyMismatchError(f"{where} was built over another vocabulary than {encoder.spec}'s")
        return
    known = set(encoder.terms())
    terms = index.terms
    covered = sum(t in known for t in terms) / max(len(terms), 1)
    if covered < MIN_VOCAB_COVERAGE:
        raise VocabularyMismatchError(
            f"only {covered:.0%} of the {len(terms):,} terms of {where} are in the vocabulary of {encoder.spec} "
            f"(at least {MIN_VOCAB_COVERAGE:.0%} needed): its vectors were made with another tokenizer; "
            "name the matching query encoder with model=...")


@dataclass(eq=False)
class Splade(EncodingStage):
    """SPLADE retrieval over an impact index (or a lexical index's stored documents,
    encoded once). Takes queries (retrieval) or rankings (scores the candidates only)."""

    index: Any
    model: str | None = None
    query: str | None = None
    query_model: str | None = None
    doc_top_k: int | None = None
    query_top_k: int | None = None
    max_length: int | None = None
    scale: float = DEFAULT_SCALE
    overflow: str | None = None
    batch_size: int | None = None
    k: int = DEFAULT_K
    threads: int | None = None
    progress: bool = True
    _state: dict[str, Any] = field(default_factory=dict, repr=False)
    name = "splade"
    takes = (Queries, Rankings)
    encoded_index = ImpactIndex
    encoder_options = ("query", "query_model", "doc_top_k", "query_top_k", "max_length", "overflow", "batch_size")

    def __post_init__(self):
        check_at_least(1, ("threads",), k=self.k, threads=self.threads)
        if not self.scale > 0:
            raise ConfigError(f"scale must be > 0, got {self.scale}")
        if self.query not in (None, "encoder", "tokens"):
            raise ConfigError(f"query must be encoder or tokens, got {self.query!r}")
        if self.overflow not in (None, "truncate", "error"):
            raise ConfigError(f"overflow must be truncate or error, got {self.overflow!r}")
        self._check_index_type()
        self._arrays()  # encode (or open the cache) now, so the first batch's timing is only search

    @classmethod
    def from_options(cls, ctx: Mapping[str, Any], index: Any = None, **options: Any) -> "Splade":
        return cls(context_index(ctx, index, "splade"), **options)

    # resources ---------------------------------------------------------------------------
    def _load_encoder(self, model: str | None, **options: Any) -> Any:
        from retrievo.models.splade import load_splade

        return load_splade(model, **options)

    def impacts(self) -> ImpactIndex:
        return self._arrays()["impacts"]

    def _arrays(self) -> dict[str, Any]:
        key = self._index_key()
        if self._state.get("key") == key:
            return self._state
        encoder = self.encoder()
        if isinstance(self.index, ImpactIndex):
            impacts = self.index
        else:
            impacts = impacts_for(self.index, encoder, self.scale, progress=self.progress)
        check_vocabulary(impacts, encoder)
        segs = impacts.segments
        indptr = stacked_indptr(segs, impacts.vocab_size)
        docs_parts, imp_parts = [], []
        inv_scale = np.float32(1.0 / impacts.scale)
        for seg, base in zip(segs, impacts.bases[:-1]):
            docs_parts.append((np.asarray(seg.docs) + int(base)).astype(np.int32))
            imp_parts.append(np.asarray(seg.tfs).astype(np.float32) * inv_scale)
        # encoder column -> index term id (-1: a vocabulary entry no document uses)
        columns = np.full(encoder.vocab_size, -1, dtype=np.int64)
        vocab = impacts.vocab
        for c, term in enumerate(encoder.terms()):
            tid = vocab.get(term)
            if tid is not None:
                columns[c] = tid
        self._state.update(
            key=key, impacts=impacts, indptr=indptr,
            docs=np.concatenate(docs_parts) if docs_parts else np.empty(0, np.int32),
            imps=np.concatenate(imp_parts) if imp_parts else np.empty(0, np.float32),
            columns=columns, live=impacts.live, id_rank=impacts.id_rank, by_rank=impacts.by_rank,
            ids=impacts.doc_ids, n_docs=impacts.total_docs)
        return self._state

    # search --------------------------------------------------------------------------------
    def query_arrays(self, queries: Queries) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flat (index term ids, weights, per-query offsets) of the encoded queries."""
        st = self._arrays()
        encoder = self.encoder()
        from retrievo.errors import EmptyQueryError

        for qid, text in zip(queries.ids, queries.texts):
            if not text or not text.strip():
                raise EmptyQueryError(f"query {qid!r} is empty; give it some text")
        vectors = encoder.encode_queries(list(queries.texts))
        if encoder.query_mode == "encoder":
            charge(calls=1, forward_passes=-(-len(queries) // encoder.batch_size))
        terms = st["columns"][vectors.indices]
        keep = terms >= 0
        rows = np.repeat(np.arange(len(queries)), np.diff(vectors.indptr))
        counts = np.bincount(rows[keep], minlength=len(queries)).astype(np.int64)
        q_ptr = np.zeros(len(queries) + 1, dtype=np.int64)
        np.cumsum(counts, out=q_ptr[1:])
        return q_ptr, terms[keep].astype(np.int64), vectors.data[keep].astype(np.float32)

    def transform(self, inp: Queries | Rankings) -> Rankings:
        if isinstance(inp, Rankings):
            return self._score_candidates(inp)
        queries = inp
        st = self._arrays()
        if not len(queries):
            return no_rankings(queries)
        q_ptr, q_terms, q_weights = self.query_arrays(queries)
        threads = self._threads_for(len(queries))
        k = min(self.k, st["n_docs"])
        out_docs, out_scores, counts = search_postings(
            q_ptr, q_terms, q_weights, st["indptr"], st["docs"], st["imps"], st["live"], st["id_rank"],
            st["by_rank"], k, self._workspace(threads), threads)
        return top_k_rankings(queries, st["ids"], out_docs, out_scores, counts)

    def _score_candidates(self, rankings: Rankings) -> Rankings:
        """Scores of each query's candidates, summed as the kernel sums them (query terms
        in order, float32 products into float64), sorted like a retrieval."""
        st = self._arrays()
        queries = rankings.queries
        if not len(queries):
            return no_rankings(queries)
        q_ptr, q_terms, q_weights = self.query_arrays(queries)
        id_map = st["impacts"]._ids_to_global()
        score = postings_scorer(q_ptr, q_terms, q_weights, st["indptr"], st["docs"], st["imps"])
        return rank_candidates(rankings, id_map, st["id_rank"], "splade", score)

    def _workspace(self, threads: int) -> Workspace:
        return thread_workspace(self._state, threads)

    # identity ----------------------------------------------------------------------------
    def spec(self, resources: bool = True) -> str:
        params: dict[str, Any] = {}
        for key in ("model", "query", "query_model", "doc_top_k", "query_top_k", "max_length", "overflow",
                    "batch_size", "threads"):
            if getattr(self, key) is not None:
                params[key] = getattr(self, key)
        if self.scale != DEFAULT_SCALE:
            params["scale"] = self.scale
        return self._finish_spec(params, resources)


__all__ = ["DEFAULT_K", "MIN_VOCAB_COVERAGE", "Splade", "cache_folder", "check_vocabulary", "impacts_for"]
