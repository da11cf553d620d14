"""What the first-stage retrievers share, so each of them states only what is its own.

``bm25``, ``bm25f``, ``dense``, ``splade``, ``maxsim`` and ``muvera`` are stages with the
same frame around different scoring: they take their index from the stage options or the
pipeline context, check their numeric options with the same messages, search a batch on
``threads`` threads, turn a top-k kernel's ``[queries, k]`` output into
:class:`~retrievo.types.Rankings`, score only the candidates when given rankings (an id
the index lacks is an :class:`~retrievo.errors.UnknownIdError`; order: score descending,
ties by ascending id rank, as a retrieval), copy themselves for a cut-off without
rebuilding their search state, and print the same kind of spec. The stages that encode
documents (``dense``, ``splade``, ``maxsim``, ``muvera``) also load their encoder the same
way: the model named, else the one their already-encoded index records.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np

from retrievo.errors import ConfigError, UnknownIdError
from retrievo.pipeline import Retriever, spec_call
from retrievo.resources import is_memory_name, resource_name
from retrievo.types import Queries, RankedList, Rankings

#: results per query of every first stage unless ``k`` (or a cut-off ``% k``) says otherwise
DEFAULT_K = 1000


def default_threads() -> int:
    """The cores this process may run on, at most 64: a stage's threads when it names none."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(n, 64))


def check_at_least(low: int, optional: tuple[str, ...] = (), **options: int | None) -> None:
    """A :class:`ConfigError` for the first of ``options`` (name=value, in order) below
    ``low``, or left unset (None) unless its name is in ``optional`` (e.g. ``threads``,
    where None means "every core")."""
    for name, value in options.items():
        if value is None:
            if name in optional:
                continue
            raise ConfigError(f"{name} must be an integer >= {low}, got None")
        if value < low:
            raise ConfigError(f"{name} must be >= {low}, got {value}")


def context_index(ctx: Mapping[str, Any], index: Any, stage: str, suggest_build: bool = False) -> Any:
    """The index a registry factory builds its stage on: the one named in the options, else
    the pipeline context's; neither is a :class:`ConfigError` saying how to give one
    (``suggest_build``: also that ``retrievo index`` builds one)."""
    index = index if index is not None else ctx.get("index")
    if index is None:
        ways = f"name one ({stage}(index='sf.idx'))"
        ways += ", build one with `retrievo index`, or" if suggest_build else " or"
        raise ConfigError(f"the {stage} stage needs an index: {ways} pass ctx={{'index': ...}}")
    return index


def no_rankings(queries: Queries) -> Rankings:
    """The rankings of an empty batch of queries."""
    return Rankings(queries, np.empty(0, object), np.empty(0, np.float32), np.zeros(1, np.int64))


def top_k_rankings(queries: Queries, ids: np.ndarray, docs: np.ndarray, scores: np.ndarray,
                   counts: np.ndarray) -> Rankings:
    """Rankings from a top-k kernel's output: document numbers and scores ``[queries, k]``
    of which the first ``counts[q]`` are query ``q``'s results, ``ids`` the document id of
    each number."""
    k = docs.shape[1]
    if len(queries) == 1:
        n = int(counts[0])
        flat, flat_scores = docs[0, :n], scores[0, :n]
    elif (counts == k).all():  # every list is full: no compaction needed
        flat, flat_scores = docs.reshape(-1), scores.reshape(-1)
    else:
        mask = np.arange(k)[None, :] < counts[:, None]
        flat, flat_scores = docs[mask], scores[mask]
    offsets = np.zeros(len(queries) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return Rankings(queries, ids[flat], flat_scores, offsets)


def candidate_numbers(id_map: Mapping[str, int], ranked: RankedList, stage: str, where: str = "the index",
                      keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(doc ids, document numbers)`` of a ranked list's candidates in its order, only
    those ``keep`` (a mask by document number, e.g. a filter's) keeps when given. A
    candidate missing from ``id_map`` (``where``, for the message) is an
    :class:`UnknownIdError`."""
    doc_ids = ranked.doc_ids
    ids = doc_ids.tolist()
    try:
        numbers = np.fromiter((id_map[d] for d in ids), dtype=np.int64, count=len(ids))
    except KeyError as exc:
        raise UnknownIdError(f"{stage} cannot score candidate {exc.args[0]!r} of query {ranked.qid!r}: "
                             f"it is not in {where}") from None
    if keep is not None:  # a filtered stage passes on only the candidates the filter keeps
        kept = keep[numbers]
        doc_ids, numbers = doc_ids[kept], numbers[kept]
    return doc_ids, numbers


def rank_candidates(rankings: Rankings, id_map: Mapping[str, int], id_rank: np.ndarray, stage: str,
                    score: Callable[[int, np.ndarray], np.ndarray], where: str = "the index",
                    keep: np.ndarray | None = None) -> Rankings:
    """Each query's candidates (see :func:`candidate_numbers`) scored by ``score(query
    position, document numbers)`` and sorted like a retrieval: score descending, ties by
    ascending id rank (``id_rank``, by document number)."""
    lists = []
    for qi, ranked in enumerate(rankings):
        doc_ids, numbers = candidate_numbers(id_map, ranked, stage, where, keep)
        scores = score(qi, numbers)
        order = np.lexsort((id_rank[numbers], -scores))
        lists.append((doc_ids[order], scores[order]))
    return Rankings.from_lists(rankings.queries, lists)


class FirstStage(Retriever):
    """Base of the first-stage retrievers: a stage with an ``index``, a depth ``k``,
    optionally ``threads``, and the search state it builds from the index in ``_state``."""

    def _index_key(self) -> tuple[int, Any]:
        """The searched index's generation: search state built for another key is stale."""
        return (id(self.index), getattr(self.index, "version", 0))

    def _threads_for(self, n_queries: int) -> int:
        """Threads for a batch of ``n_queries``: the stage's (default: every core), at most
        one per query."""
        return max(1, min(self.threads or default_threads(), n_queries))

    def with_cutoff(self, k: int) -> "FirstStage | None":
        if k >= self.k:
            return self
        clone = copy.copy(self)  # shares _state: nothing is computed, encoded or loaded again
        clone.k = k
        return clone

    def _finish_spec(self, params: dict[str, Any], resources: bool, cut_off: bool = True) -> str:
        """``name(params..., index=...)`` (the index only with ``resources``), then ``% k``
        when ``k`` is not the default (``cut_off=False``: ``params`` carries ``k`` itself)."""
        if resources:
            params["index"] = resource_name(self.index, "index")
        spec = spec_call(self.name, params)
        return spec if self.k == DEFAULT_K or not cut_off else f"{spec} % {self.k}"

    def resources(self) -> dict[str, Any]:
        name = resource_name(self.index, "index")
        return {name: self.index} if is_memory_name(name) else {}


class EncodingStage(FirstStage):
    """A first stage that encodes queries (and, on a lexical index, the stored documents)
    with a model: it searches an index of type :attr:`encoded_index` as it is, or a
    lexical :class:`~retrievo.index.InvertedIndex` whose documents it encodes once."""

    #: the kind of index holding documents this stage's encoder already encoded
    encoded_index: ClassVar[type]
    #: the stage options handed to the encoder loader when they are set
    encoder_options: ClassVar[tuple[str, ...]]

    def _check_index_type(self) -> None:
        from retrievo.index.inverted import InvertedIndex

        if not isinstance(self.index, (self.encoded_index, InvertedIndex)):
            kind = self.encoded_index.__name__
            article = "an" if kind[0] in "AEIOU" else "a"
            raise ConfigError(f"{self.name} needs {article} {kind} or an InvertedIndex with stored documents, "
                              f"got {type(self.index).__name__}")

    def _load_encoder(self, model: str | None, **options: Any) -> Any:
        """Load the encoder ``model`` (None: the default one) with ``options``."""
        raise NotImplementedError

    def encoder(self):
        """The shared encoder this stage uses (loaded on first use): the model named, else
        the one the searched index records."""
        if "encoder" not in self._state:
            options = {k: getattr(self, k) for k in self.encoder_options if getattr(self, k) is not None}
            model = self.model
            if model is None and isinstance(self.index, self.encoded_index) and self.index.model_spec:
                model = self.index.model_spec
            self._state["encoder"] = self._load_encoder(model, **options)
        return self._state["encoder"]

    def _encoded_documents(self, encode_lexical: Callable[..., Any]) -> Any:
        """The encoded documents this stage searches: its own index when it is one (which
        must record this stage's model, else a ModelMismatchError), else the lexical
        index's stored documents as ``encode_lexical(index, encoder, progress=...)``
        encodes and caches them. (``splade`` checks an impact index's vocabulary instead,
        on its own index and on the cache alike.)"""
        encoder = self.encoder()
        if isinstance(self.index, self.encoded_index):
            self.index.check_model(encoder.identity())
            return self.index
        return encode_lexical(self.index, encoder, progress=self.progress)

    @property
    def models(self) -> list[str]:
        """Model identities (for protocols)."""
        return [self.encoder().identity()]


__all__ = ["DEFAULT_K", "EncodingStage", "FirstStage", "candidate_numbers", "check_at_least", "context_index",
           "default_threads", "no_rankings", "rank_candidates", "top_k_rankings"]
