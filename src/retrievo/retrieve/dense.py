"""Dense retrieval: encode queries, exact inner-product search over a vector index.

``dense`` works on either kind of index:

* a :class:`~retrievo.index.vectors.VectorIndex` — searched as it is, with the model it
  records (naming another model is a :class:`~retrievo.errors.ModelMismatchError`);
* a lexical :class:`~retrievo.index.InvertedIndex` (the pipeline's default index) — its
  stored documents are encoded once and the vectors cached, so ``retrievo eval DATA
  --pipeline dense`` needs no extra step. The cache is a vector index beside the lexical
  one (``<index>.dense/<model key>/``), or, for an index built in memory, under
  ``$RETRIEVO_CACHE_DIR`` (default ``~/.cache/retrievo``; ``none`` turns it off) keyed by
  the lexical index's content identity. The key is a hash of the encoder's identity
  (weights and every output option), so a bf16 and an fp32 run never share vectors.
  Encoding is resumable: an interrupted run continues from its last finished chunk.
  When the lexical index changes (documents added or deleted), the cache follows it: the
  new documents are encoded and added, the deleted ones tombstoned.

``codes=int8`` or ``codes=binary`` generate candidates from compressed codes kept in RAM
and rescore the top ``k × rescore`` with the full (memory-mapped) vectors, see
:mod:`retrievo.retrieve.quantized`; ``rescore=0`` ranks by the codes alone. The codes are
files of the vector index (written once, then read by every later process);
``bigranular=true`` reads the candidates' vectors with plain reads instead of the memory
map, so the resident set stays at the codes (corpora larger than RAM).

``search=hnsw`` (with ``m``, ``ef_construction``, ``ef``) finds candidates in HNSW graphs
stored with the vector index and scores them exactly, see :mod:`retrievo.retrieve.hnsw`.

Given rankings instead of queries, ``dense`` scores only the candidates (as BM25 does,
see :mod:`retrievo.pipeline`): ``bm25 % 100 >> dense`` reranks BM25's top 100 by cosine.
Ties are broken by ascending document id, as in every retriever here.

``filter="year >= 2015"`` restricts every route (exact, codes, HNSW) to the documents
whose metadata match, before top-k selection (see :mod:`retrievo.index.filters`):
``min(k, matching)`` results, exact for exact search.

A query may bring its own vector in ``Query.meta["vector"]`` (with the encoder identity
in ``meta["vector_model"]``), which is how a feedback rewriter such as Rocchio hands a
moved query vector to ``dense``; a vector from another model is refused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrievo.errors import ConfigError, EmptyQueryError, ModelMismatchError
from retrievo.index.vectors import VectorIndex
from retrievo.pipeline import charge
from retrievo.retrieve.encoded import content_hashes, plan_sync
from retrievo.retrieve.exact import score_numbers, search_blocks
from retrievo.retrieve.first_stage import (DEFAULT_K, EncodingStage, check_at_least, context_index, no_rankings,
                                           rank_candidates, top_k_rankings)
from retrievo.retrieve.quantized import CODES, search_codes
from retrievo.types import Queries, Rankings

CACHE_ENV = "RETRIEVO_CACHE_DIR"
# exact search with a filter keeping at most this fraction of the documents scores only
# their vectors (gathered once per filter and index version, FILTER_CACHE filters kept)
# instead of every vector with the excluded ones skipped at selection
FILTER_SUBSET_FRACTION = 0.125
FILTER_CACHE = 8
VECTOR_META = "vector"
VECTOR_MODEL_META = "vector_model"


def model_key(identity: str) -> str:
    """Folder name of a model's cached vectors: short, filesystem-safe, identity-derived."""
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def cache_root() -> Path | None:
    """Where vectors of in-memory lexical indexes are cached (None: not cached on disk)."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "none", "off") else Path(value)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "retrievo"


def cache_folder(lexical: Any, identity: str) -> Path | None:
    """The vector-index folder caching ``lexical``'s documents encoded by ``identity``."""
    if getattr(lexical, "path", None) is not None:
        path = Path(lexical.path)
        return path.parent / f"{path.name}.dense" / model_key(identity)
    root = cache_root()
    if root is None:
        return None
    return root / "dense" / str(lexical.identity)[:24] / model_key(identity)


class _StoreTexts(Sequence):
    """Texts of given global document numbers, read from a document store on demand, so
    a large collection is never held in memory while it is encoded."""

    def __init__(self, store, numbers: np.ndarray):
        self.store, self.numbers = store, numbers

    def __len__(self) -> int:
        return len(self.numbers)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.store.document_at(int(self.numbers[i])).contents


def _live_numbers(index: Any) -> np.ndarray:
    live = index.live
    return np.arange(index.total_docs, dtype=np.int64) if live is None else np.flatnonzero(live)


_MEMORY: dict[tuple[str, str], VectorIndex] = {}
_LOCK = threading.Lock()


def vectors_for(lexical: Any, encoder: Any, progress: bool = True) -> VectorIndex:
    """The vector index of ``lexical``'s live documents under ``encoder``, built, reused
    or brought up to date (see the module docstring)."""
    identity = encoder.identity()
    folder = cache_folder(lexical, identity)
    if folder is None:
        key = (str(lexical.identity), identity)
        with _LOCK:
            hit = _MEMORY.get(key)
        if hit is None:
            numbers = _live_numbers(lexical)
            texts = _StoreTexts(lexical.docstore, numbers)
            all_texts = [texts[i] for i in range(len(texts))]
            vectors = encoder.encode_documents(all_texts, progress=progress)
            hit = VectorIndex.build(lexical.doc_ids[numbers].tolist(), vectors, model=identity,
                                    model_spec=encoder_spec(encoder), source=str(lexical.identity),
                                    metadata=content_hashes(all_texts))
            with _LOCK:
                _MEMORY[key] = hit
        return hit
    from retrievo.index import lifecycle

    if lifecycle.is_index(folder):
        vindex = VectorIndex.open(folder)
        vindex.check_model(identity)
        if vindex.source != str(lexical.identity):
            _sync(vindex, lexical, encoder, progress)
        return vindex
    numbers = _live_numbers(lexical)
    work = folder.with_name(folder.name + ".encoding")
    texts = _StoreTexts(lexical.docstore, numbers)
    vectors = encoder.encode_to_file(texts, work, progress=progress)
    try:
        vindex = VectorIndex.build(lexical.doc_ids[numbers].tolist(), vectors, folder, model=identity,
                                   model_spec=encoder_spec(encoder), source=str(lexical.identity),
                                   metadata=content_hashes([texts[i] for i in range(len(texts))]))
    except OSError:
        if not lifecycle.is_index(folder):  # another process published it first: use theirs
            raise
        vindex = VectorIndex.open(folder)
        vindex.check_model(identity)
    del vectors
    shutil.rmtree(work, ignore_errors=True)
    return vindex


def _sync(vindex: VectorIndex, lexical: Any, encoder: Any, progress: bool) -> None:
    """Make ``vindex`` hold exactly ``lexical``'s live documents: encode the new ones and
    those whose text changed under the same id (an upsert; see
    :mod:`retrievo.retrieve.encoded`), replace them in one upsert, tombstone the removed
    ones, and record the lexical identity it now matches."""
    numbers = _live_numbers(lexical)
    lex_ids = lexical.doc_ids[numbers].tolist()
    texts = _StoreTexts(lexical.docstore, numbers)
    todo, gone = plan_sync(vindex, lex_ids, texts.__getitem__)
    source = str(lexical.identity)
    if todo:
        changed = [texts[i] for i in todo]
        vectors = encoder.encode_documents(changed, progress=progress)
        vindex.upsert([lex_ids[i] for i in todo], vectors, source=source if not gone else None,
                      metadata=content_hashes(changed))
    vindex.delete(gone, source=source)


def encoder_spec(encoder: Any) -> str:
    """A model spec that loads the same encoder again (name, revision, resolved options)."""
    from retrievo.models import ModelSpec

    options = {k: v for k, v in encoder.output_options().items() if v != ""}
    return str(ModelSpec(encoder.spec.name, encoder.spec.revision, options))


@dataclass(eq=False)
class Dense(EncodingStage):
    """Exact dense retrieval (inner product; cosine for normalised encoders such as the
    default all-MiniLM-L6-v2). Takes queries (retrieval) or rankings (scores the
    candidates only)."""

    index: Any
    model: str | None = None
    dtype: str | None = None
    k: int = DEFAULT_K
    threads: int | None = None
    batch_size: int | None = None
    codes: str | None = None
    rescore: int = 10
    bigranular: bool = False
    search: str = "exact"
    m: int = 16
    ef_construction: int = 128
    ef: int = 64
    progress: bool = True
    filter: str | None = None
    _state: dict[str, Any] = field(default_factory=dict, repr=False)
    name = "dense"
    takes = (Queries, Rankings)
    encoded_index = VectorIndex
    encoder_options = ("dtype", "batch_size")

    def __post_init__(self):
        check_at_least(1, ("threads", "batch_size"), k=self.k, threads=self.threads, batch_size=self.batch_size)
        if self.codes == "none":
            self.codes = None
        if self.codes is not None and self.codes not in CODES:
            raise ConfigError(f"codes must be none or one of {', '.join(CODES)}, got {self.codes!r}")
        check_at_least(0, rescore=self.rescore)
        if self.bigranular and self.codes is None:
            raise ConfigError("bigranular=true needs compact codes in RAM: add codes=binary or codes=int8")
        if self.search not in ("exact", "hnsw"):
            raise ConfigError(f"search must be exact or hnsw, got {self.search!r}")
        if self.search == "hnsw" and self.codes is not None:
            raise ConfigError("search=hnsw and codes are two different candidate generators; choose one")
        check_at_least(1, m=self.m, ef_construction=self.ef_construction, ef=self.ef)
        self._check_index_type()
        if self.filter is not None:
            self.index.filter_mask(self.filter)  # a bad filter fails here, before anything is encoded
        self._vectors()  # encode (or open the cache) now, so the first batch's timing is only search

    @classmethod
    def from_options(cls, ctx: Mapping[str, Any], index: Any = None, **options: Any) -> "Dense":
        """Registry factory: ``dense(index='sf.idx', model=...)``, or the context's index."""
        return cls(context_index(ctx, index, "dense", suggest_build=True), **options)

    # resources ---------------------------------------------------------------------------
    def _load_encoder(self, model: str | None, **options: Any) -> Any:
        from retrievo.models.encoder import load_encoder

        return load_encoder(model, **options)

    def _vectors(self) -> VectorIndex:
        key = self._index_key()
        if self._state.get("key") != key:
            vindex = self._encoded_documents(vectors_for)
            vindex.check_dim(self.encoder().dim)
            self._state.update(key=key, vindex=vindex, codes=None, graphs=None)
            if self.codes is not None:  # stored with the index: computed once, then read
                self._state["codes"] = [u.value() for u in self._derived(vindex, self.codes)]
            if self.search == "hnsw":
                from retrievo.index.derived import hnsw_kind

                kind = hnsw_kind(self.m, self.ef_construction)
                self._state["graphs"] = [u.value() for u in self._derived(vindex, kind)]
        return self._state["vindex"]

    def _allowed(self, vindex: VectorIndex) -> np.ndarray | None:
        """The filter's documents in ``vindex``'s numbering, live ones only (None: no
        filter). On a lexical index the filter is compiled there (its documents carry the
        metadata) and carried over to the cached vector index by id."""
        if self.filter is None:
            return vindex.live
        if vindex is self.index:
            return vindex.allowed(self.filter)
        key = ("allowed", self.filter, self._state.get("key"), vindex.version)
        if self._state.get("allowed_key") != key:
            lexical = self.index
            chosen = lexical.allowed(self.filter)
            numbers = np.arange(lexical.total_docs) if chosen is None else np.flatnonzero(chosen)
            id_map = vindex.docstore.id_map()
            mask = np.zeros(vindex.total_docs, dtype=bool)
            rows = [id_map[d] for d in lexical.doc_ids[numbers].tolist() if d in id_map]
            mask[np.asarray(rows, dtype=np.int64)] = True
            self._state.update(allowed_key=key, allowed=mask)
        return self._state["allowed"]

    def _subset(self, vindex: VectorIndex, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(document numbers, their vectors, rank -> position) of a selective filter's
        live documents, or None above :data:`FILTER_SUBSET_FRACTION`. Ties still break by
        the index-wide id rank, so the order is the one the full search gives."""
        numbers = np.flatnonzero(allowed)
        if len(numbers) > FILTER_SUBSET_FRACTION * max(vindex.total_docs, 1):
            return None
        cache = self._state.setdefault("subsets", {})
        key = (self.filter, self._state.get("key"), vindex.version)
        if key not in cache:
            if len(cache) >= FILTER_CACHE:
                cache.pop(next(iter(cache)))
            by_rank = np.full(max(vindex.total_docs, 1), -1, dtype=np.int32)
            by_rank[vindex.id_rank[numbers]] = np.arange(len(numbers), dtype=np.int32)
            cache[key] = (numbers, np.ascontiguousarray(vindex.vectors_of(numbers), dtype=np.float32), by_rank)
        return cache[key]

    @staticmethod
    def _derived(vindex: VectorIndex, kind: str) -> list:
        """The index's ``kind`` units, built and published on first use; an index folder
        this process may not write gets them in memory only (nothing is lost but time)."""
        from retrievo.errors import IndexLockedError

        try:
            return vindex.ensure_derived(kind)
        except (PermissionError, IndexLockedError):
            from retrievo.index.derived import Unit, build_arrays

            return [d[kind] if kind in d else Unit.in_memory(kind, p.n_docs, build_arrays(kind, np.asarray(p.vectors)))
                    for p, d in zip(vindex.parts, vindex.derived)]

    # search --------------------------------------------------------------------------------
    def query_vectors(self, queries: Queries) -> np.ndarray:
        """One vector per query: the vector a rewriter attached (``meta["vector"]``), else
        the encoded text."""
        encoder = self.encoder()
        out = np.empty((len(queries), encoder.dim), dtype=np.float32)
        to_encode: list[int] = []
        for i, q in enumerate(queries):
            vec = q.meta.get(VECTOR_META) if q.meta else None
            if vec is not None:
                model = q.meta.get(VECTOR_MODEL_META)
                if model is not None and model != encoder.identity():
                    raise ModelMismatchError(f"query {q.qid!r} carries a vector from model {model}, but dense "
                                             f"searches with {encoder.identity()}")
                vec = np.asarray(vec, dtype=np.float32)
                self._vectors().check_dim(vec.shape[-1])
                out[i] = vec
            else:
                if not q.text or not q.text.strip():
                    raise EmptyQueryError(f"query {q.qid!r} is empty; give it some text")
                to_encode.append(i)
        if to_encode:
            out[to_encode] = encoder.encode_queries([queries.texts[i] for i in to_encode])
            charge(calls=1, forward_passes=-(-len(to_encode) // encoder.batch_size))
        return out

    def transform(self, inp: Queries | Rankings) -> Rankings:
        if isinstance(inp, Rankings):
            return self._score_candidates(inp)
        queries = inp
        vindex = self._vectors()
        if not len(queries):
            return no_rankings(queries)
        qv = self.query_vectors(queries)
        threads = self._threads_for(len(queries))
        allowed = self._allowed(vindex)  # the filter joins the live bitmap, applied before top-k
        if self.codes is not None:
            docs, scores, counts = search_codes(self._state["codes"], qv, vindex, self.k, self.rescore, threads,
                                                read="pread" if self.bigranular else "mmap", allowed=allowed)
        elif self.search == "hnsw":
            from retrievo.retrieve.hnsw import search_hnsw

            docs, scores, counts = search_hnsw(self._state["graphs"], qv, vindex, self.k, self.ef, threads,
                                               allowed=None if self.filter is None else allowed)
        elif self.filter is not None and (subset := self._subset(vindex, allowed)) is not None:
            numbers, vectors, by_rank = subset  # the filter's vectors only, ordered as the full search
            docs, scores, counts = search_blocks(qv, [(0, vectors)], len(numbers), None,
                                                 vindex.id_rank[numbers], by_rank, self.k, threads)
            docs = numbers[docs]
        else:
            docs, scores, counts = search_blocks(qv, vindex.blocks(), vindex.total_docs, allowed,
                                                 vindex.id_rank, vindex.by_rank, self.k, threads)
        return top_k_rankings(queries, vindex.doc_ids, docs, scores, counts)

    def _score_candidates(self, rankings: Rankings) -> Rankings:
        """Inner products of each query with its candidates, sorted like a retrieval
        (score descending, ties by ascending id)."""
        vindex = self._vectors()
        queries = rankings.queries
        if not len(queries):
            return no_rankings(queries)
        qv = self.query_vectors(queries)
        id_map = vindex.docstore.id_map()
        keep = None if self.filter is None else self._allowed(vindex)
        return rank_candidates(rankings, id_map, vindex.id_rank, "dense",
                               lambda qi, numbers: score_numbers(qv[qi], vindex.vectors_of(numbers)),
                               where="the vector index", keep=keep)

    # identity ----------------------------------------------------------------------------
    def with_cutoff(self, k: int) -> "Dense | None":
        if self.codes is not None or self.search == "hnsw":
            # the candidate depth is k x rescore (or the k graph neighbours): pushing a
            # cut-off in would change the candidates, so (s % k)(q) would differ from s(q).cut(k)
            return None
        return super().with_cutoff(k)

    def spec(self, resources: bool = True) -> str:
        params: dict[str, Any] = {}
        for key in ("model", "dtype", "threads", "batch_size", "codes"):
            if getattr(self, key) is not None:
                params[key] = getattr(self, key)
        if self.codes is not None and self.rescore != 10:
            params["rescore"] = self.rescore
        if self.bigranular:
            params["bigranular"] = True
        if self.search == "hnsw":
            params["search"] = "hnsw"
            for key, default in (("m", 16), ("ef_construction", 128), ("ef", 64)):
                if getattr(self, key) != default:
                    params[key] = getattr(self, key)
        if self.filter is not None:
            params["filter"] = self.filter
        approximate = self.codes is not None or self.search == "hnsw"
        if approximate and self.k != DEFAULT_K:
            params["k"] = self.k  # not a cut-off: it sets the candidate depth (see with_cutoff)
        return self._finish_spec(params, resources, cut_off=not approximate)


__all__ = ["DEFAULT_K", "Dense", "cache_folder", "cache_root", "encoder_spec", "model_key", "vectors_for"]
