"""Core data model: queries, documents, ranked lists, qrels and cost records.

Everything is columnar and immutable. A batch of rankings is three flat numpy arrays
(document ids, scores, per-query offsets) plus the queries it answers, so stages pass
results along without pandas copies and a per-query view is a zero-copy slice. Arrays are
marked read-only: a stage that wants different results builds a new object, so two
branches of an experiment can safely share one input.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from retrievo.errors import DuplicateIdError, UnknownIdError

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _pandas():
    try:
        import pandas
    except ImportError as exc:
        from retrievo.errors import MissingExtraError

        raise MissingExtraError("pandas interop needs pandas: pip install 'retrievo[pandas]'") from exc
    return pandas


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _object_array(values: Iterable[str]) -> np.ndarray:
    values = list(values)
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


# --------------------------------------------------------------------------------------
# Queries and documents
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    qid: str
    text: str
    meta: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, compare=False)

    def __reduce__(self):  # read-only mapping proxies do not pickle; their contents do
        return (Query, (self.qid, self.text, dict(self.meta)))


def indexed_text(title: str, text: str) -> str:
    """Title and text joined the way Pyserini's BEIR "flat" indexes do."""
    return f"{title} {text}" if title else text


@dataclass(frozen=True, slots=True)
class Document:
    doc_id: str
    text: str
    title: str = ""
    meta: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, compare=False)

    @property
    def contents(self) -> str:
        """The text that gets indexed (see :func:`indexed_text`)."""
        return indexed_text(self.title, self.text)

    def __reduce__(self):
        return (Document, (self.doc_id, self.text, self.title, dict(self.meta)))


class Queries(Sequence[Query]):
    """An ordered batch of queries with unique ids.

    Besides its text, a query may carry **weighted terms** (``terms``): analysed terms
    mapped to weights, which is what a query rewriter such as RM3 produces and what a
    lexical retriever then scores with instead of analysing the text again. ``costs``
    holds the cost records of the stages that produced this batch (a rewriter's output
    carries the first-stage retrieval's costs forward).
    """

    __slots__ = ("_ids", "_texts", "_meta", "_pos", "_terms", "costs")

    def __init__(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        meta: Sequence[Mapping[str, Any]] | None = None,
        *,
        terms: Sequence[Mapping[str, float] | None] | None = None,
        costs: Sequence["Cost"] = (),
    ):
        ids = tuple(str(i) for i in ids)
        texts = tuple(texts)
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} query ids but {len(texts)} texts")
        if meta is not None:
            meta = tuple(MappingProxyType(dict(m)) for m in meta)
            if len(meta) != len(ids):
                raise ValueError(f"{len(ids)} query ids but {len(meta)} meta records")
        if terms is not None:
            terms = tuple(None if t is None else MappingProxyType({str(k): float(v) for k, v in t.items()})
                          for t in terms)
            if len(terms) != len(ids):
                raise ValueError(f"{len(ids)} query ids but {len(terms)} weighted-term records")
            if all(t is None for t in terms):
                terms = None
        pos = {qid: i for i, qid in enumerate(ids)}
        if len(pos) != len(ids):
            seen: set[str] = set()
            dup = next(q for q in ids if q in seen or seen.add(q))
            raise DuplicateIdError(f"query id {dup!r} appears more than once")
        self._ids, self._texts, self._meta, self._pos = ids, texts, meta, pos
        self._terms = terms
        self.costs = tuple(costs)

    # construction -------------------------------------------------------------------
    @classmethod
    def of(cls, queries: "Queries | Mapping[str, str] | Iterable[Query | tuple[str, str] | str] | str") -> "Queries":
        """Accept the shapes users naturally have: a string, a list of strings, a
        ``{qid: text}`` dict, ``(qid, text)`` pairs or :class:`Query` objects."""
        if isinstance(queries, Queries):
            return queries
        if isinstance(queries, str):
            return cls(["q1"], [queries])
        if isinstance(queries, Mapping):
            return cls(list(queries.keys()), list(queries.values()))
        ids: list[str] = []
        texts: list[str] = []
        metas: list[Mapping[str, Any]] = []
        for i, q in enumerate(queries, start=1):
            if isinstance(q, Query):
                ids.append(q.qid), texts.append(q.text), metas.append(q.meta)
            elif isinstance(q, str):
                ids.append(f"q{i}"), texts.append(q), metas.append(_EMPTY)
            else:
                qid, text = q
                ids.append(str(qid)), texts.append(text), metas.append(_EMPTY)
        has_meta = any(metas)
        return cls(ids, texts, metas if has_meta else None)

    # access -------------------------------------------------------------------------
    @property
    def ids(self) -> tuple[str, ...]:
        return self._ids

    @property
    def texts(self) -> tuple[str, ...]:
        return self._texts

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def terms(self) -> tuple[Mapping[str, float] | None, ...] | None:
        """Per query, its weighted terms (``{term: weight}``) or None; None when no query
        of the batch has any."""
        return self._terms

    def term_weights(self, i: int) -> Mapping[str, float] | None:
        """Weighted terms of the ``i``-th query, or None when it has only text."""
        return None if self._terms is None else self._terms[i]

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            meta = self._meta[i] if self._meta is not None else None
            terms = self._terms[i] if self._terms is not None else None
            return Queries(self._ids[i], self._texts[i], meta, terms=terms, costs=self.costs)
        m = self._meta[i] if self._meta is not None else _EMPTY
        return Query(self._ids[i], self._texts[i], m)

    def __iter__(self) -> Iterator[Query]:
        meta = self._meta or (_EMPTY,) * len(self._ids)
        return (Query(q, t, m) for q, t, m in zip(self._ids, self._texts, meta))

    def __contains__(self, qid: object) -> bool:  # type: ignore[override]
        return qid in self._pos

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Queries) and self._ids == other._ids and self._texts == other._texts
                and self._terms_dicts() == other._terms_dicts())

    def _terms_dicts(self):
        return None if self._terms is None else [None if t is None else dict(t) for t in self._terms]

    def __hash__(self) -> int:
        return hash((self._ids, self._texts))

    def __repr__(self) -> str:
        head = ", ".join(f"{q}: {t[:30]!r}" for q, t in zip(self._ids[:3], self._texts[:3]))
        more = f", … +{len(self) - 3}" if len(self) > 3 else ""
        weighted = ", weighted terms" if self._terms is not None else ""
        return f"Queries({len(self)}{weighted}: {head}{more})"

    def position(self, qid: str) -> int:
        try:
            return self._pos[qid]
        except KeyError:
            raise UnknownIdError(f"unknown query id {qid!r}") from None

    def get(self, qid: str) -> Query:
        return self[self.position(qid)]

    def text(self, qid: str) -> str:
        return self._texts[self.position(qid)]

    def subset(self, qids: Iterable[str]) -> "Queries":
        idx = [self.position(q) for q in qids]
        meta = [self._meta[i] for i in idx] if self._meta is not None else None
        terms = [self._terms[i] for i in idx] if self._terms is not None else None
        return Queries([self._ids[i] for i in idx], [self._texts[i] for i in idx], meta, terms=terms,
                       costs=self.costs)

    def with_texts(self, texts: Sequence[str]) -> "Queries":
        """Same ids, new texts (weighted terms dropped): what a text rewriter returns."""
        return Queries(self._ids, texts, self._meta, costs=self.costs)

    def with_terms(self, terms: Sequence[Mapping[str, float] | None]) -> "Queries":
        """Same ids and texts, with weighted terms: what a term-weighting rewriter returns."""
        return Queries(self._ids, self._texts, self._meta, terms=terms, costs=self.costs)

    def with_costs(self, costs: Sequence["Cost"]) -> "Queries":
        out = object.__new__(Queries)
        out._ids, out._texts, out._meta, out._pos, out._terms = self._ids, self._texts, self._meta, self._pos, self._terms
        out.costs = tuple(costs)
        return out

    def __reduce__(self):
        terms = None if self._terms is None else [None if t is None else dict(t) for t in self._terms]
        meta = None if self._meta is None else [dict(m) for m in self._meta]
        return (_rebuild_queries, (self._ids, self._texts, meta, terms, self.costs))

    # interop ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, str]:
        return dict(zip(self._ids, self._texts))

    def to_pandas(self):
        pd = _pandas()

        return pd.DataFrame({"qid": list(self._ids), "query": list(self._texts)})

    @classmethod
    def from_pandas(cls, frame, qid: str = "qid", text: str = "query") -> "Queries":
        return cls(frame[qid].astype(str).tolist(), frame[text].astype(str).tolist())


def _rebuild_queries(ids, texts, meta, terms, costs) -> Queries:
    return Queries(ids, texts, meta, terms=terms, costs=costs)


# --------------------------------------------------------------------------------------
# Cost records
# --------------------------------------------------------------------------------------

#: the counters every cost record has besides its stage name (summed by :func:`cost_summary`)
COST_FIELDS = ("seconds", "queries", "calls", "prompt_tokens", "completion_tokens", "forward_passes")


@dataclass(frozen=True, slots=True)
class Cost:
    """What one stage spent on one batch; pipelines concatenate these records.

    ``calls`` counts model or service calls (LLM generations, HTTP requests),
    ``prompt_tokens``/``completion_tokens`` what an LLM read and wrote, and
    ``forward_passes`` model forward passes (a listwise reranker may need one per window,
    FIRST one per list). ``extra`` holds anything method-specific (named counters).
    """

    stage: str
    seconds: float
    queries: int = 0
    calls: int = 0
    extra: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    forward_passes: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = {"stage": self.stage, **{f: getattr(self, f) for f in COST_FIELDS}}
        out.update(dict(self.extra))
        return out

    def __reduce__(self):
        return (Cost, (self.stage, self.seconds, self.queries, self.calls, dict(self.extra), self.prompt_tokens,
                       self.completion_tokens, self.forward_passes))

    def __add__(self, other: "Cost") -> "Cost":
        extra = dict(self.extra)
        for k, v in other.extra.items():
            extra[k] = extra.get(k, 0) + v
        return Cost(self.stage, self.seconds + other.seconds, self.queries + other.queries,
                    self.calls + other.calls, MappingProxyType(extra) if extra else _EMPTY,
                    self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens,
                    self.forward_passes + other.forward_passes)


def cost_summary(costs: Iterable[Cost]) -> dict[str, Cost]:
    """Sum cost records per stage name, in first-seen order (what a report prints)."""
    out: dict[str, Cost] = {}
    for c in costs:
        out[c.stage] = out[c.stage] + c if c.stage in out else c
    return out


def cost_table(costs: Iterable[Cost], per_query: int | None = None) -> str:
    """A small markdown table of :func:`cost_summary` (seconds per query when
    ``per_query`` gives the number of queries). Counters that are zero everywhere are left out."""
    summary = cost_summary(costs)
    if not summary:
        return "(no cost records)"
    fields = [f for f in COST_FIELDS[2:] if any(getattr(c, f) for c in summary.values())]
    extras = sorted({k for c in summary.values() for k in c.extra})
    head = ["stage", "seconds"] + (["s/query"] if per_query else []) + fields + extras
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([" --- "] + [" ---: "] * (len(head) - 1)) + "|"]
    for c in summary.values():
        cells = [c.stage, f"{c.seconds:.4g}"]
        if per_query:
            cells.append(f"{c.seconds / per_query:.4g}")
        cells += [f"{getattr(c, f):,}" for f in fields]
        cells += [f"{c.extra.get(k, 0):g}" for k in extras]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Ranked lists
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RankedList:
    """One query's results in rank order (read-only numpy views)."""

    qid: str
    doc_ids: np.ndarray  # object array of str
    scores: np.ndarray  # float, same length, non-increasing

    def __len__(self) -> int:
        return len(self.doc_ids)

    def __iter__(self) -> Iterator[tuple[str, float]]:
        return zip(self.doc_ids.tolist(), self.scores.tolist())

    def top(self, k: int) -> "RankedList":
        return RankedList(self.qid, self.doc_ids[:k], self.scores[:k])

    def __repr__(self) -> str:
        head = ", ".join(f"{d}: {s:.4g}" for d, s in zip(self.doc_ids[:3].tolist(), self.scores[:3].tolist()))
        more = f", … +{len(self) - 3}" if len(self) > 3 else ""
        return f"RankedList({self.qid!r}, {len(self)} results: {head}{more})"


class Rankings(Sequence[RankedList]):
    """Ranked lists for a batch of queries, stored flat.

    ``doc_ids[offsets[i]:offsets[i+1]]`` are the results of ``queries[i]`` in rank order.
    """

    __slots__ = ("queries", "doc_ids", "scores", "offsets", "costs")

    def __init__(
        self,
        queries: Queries,
        doc_ids: np.ndarray,
        scores: np.ndarray,
        offsets: np.ndarray,
        costs: Sequence[Cost] = (),
    ):
        doc_ids = np.asarray(doc_ids, dtype=object)
        scores = np.asarray(scores)
        if scores.dtype.kind != "f":
            scores = scores.astype(np.float64)
        offsets = np.asarray(offsets, dtype=np.int64)
        if len(offsets) != len(queries) + 1 or offsets[0] != 0 or offsets[-1] != len(doc_ids):
            raise ValueError("offsets must have len(queries)+1 entries, start at 0 and end at len(doc_ids)")
        if len(doc_ids) != len(scores):
            raise ValueError(f"{len(doc_ids)} doc ids but {len(scores)} scores")
        self.queries = queries
        self.doc_ids = _frozen(doc_ids)
        self.scores = _frozen(scores)
        self.offsets = _frozen(offsets)
        self.costs = tuple(costs)

    # construction -------------------------------------------------------------------
    @classmethod
    def from_lists(
        cls,
        queries: Queries,
        lists: Sequence[tuple[Sequence[str] | np.ndarray, Sequence[float] | np.ndarray]],
        costs: Sequence[Cost] = (),
        sort: bool = False,
    ) -> "Rankings":
        """Build from one ``(doc_ids, scores)`` pair per query, in ``queries`` order.

        With ``sort=True`` each list is ordered by descending score, ties by doc id.
        """
        if len(lists) != len(queries):
            raise ValueError(f"{len(lists)} result lists for {len(queries)} queries")
        ids_parts, score_parts, lengths = [], [], []
        for docs, scores in lists:
            docs = np.asarray(docs, dtype=object) if not isinstance(docs, np.ndarray) else docs
            scores = np.asarray(scores, dtype=np.float64) if not isinstance(scores, np.ndarray) else scores
            if sort and len(docs):
                order = np.lexsort((docs.astype(str), -scores))
                docs, scores = docs[order], scores[order]
            ids_parts.append(docs)
            score_parts.append(scores)
            lengths.append(len(docs))
        offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        doc_ids = np.concatenate(ids_parts).astype(object) if ids_parts else np.empty(0, dtype=object)
        scores = np.concatenate(score_parts) if score_parts else np.empty(0)
        return cls(queries, doc_ids, scores, offsets, costs)

    @classmethod
    def from_dict(cls, run: Mapping[str, Mapping[str, float]], queries: Queries | None = None) -> "Rankings":
        """From ``{qid: {doc_id: score}}`` (the ir_measures / pytrec_eval shape)."""
        if queries is None:
            queries = Queries(list(run.keys()), [""] * len(run))
        lists = [(list(run.get(q, {}).keys()), list(run.get(q, {}).values())) for q in queries.ids]
        return cls.from_lists(queries, lists, sort=True)

    # access -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.queries)

    def _at(self, i: int) -> RankedList:
        a, b = self.offsets[i], self.offsets[i + 1]
        return RankedList(self.queries.ids[i], self.doc_ids[a:b], self.scores[a:b])

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            return self._at(self.queries.position(key))
        if isinstance(key, slice):
            idx = range(*key.indices(len(self)))
            return self.subset([self.queries.ids[i] for i in idx])
        if key < 0:
            key += len(self)
        if not 0 <= key < len(self):
            raise IndexError(key)
        return self._at(key)

    def __iter__(self) -> Iterator[RankedList]:
        return (self._at(i) for i in range(len(self)))

    def __repr__(self) -> str:
        return f"Rankings({len(self)} queries, {len(self.doc_ids)} results)"

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def query_positions(self) -> np.ndarray:
        """For every result row, the position of its query (handy for vectorised work)."""
        return np.repeat(np.arange(len(self)), self.lengths)

    # transformations (all return new objects) ----------------------------------------
    def _select(self, keep: np.ndarray) -> "Rankings":
        counts = np.add.reduceat(keep.astype(np.int64), self.offsets[:-1]) if len(keep) else np.zeros(len(self), np.int64)
        counts[self.lengths == 0] = 0
        offsets = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return Rankings(self.queries, self.doc_ids[keep], self.scores[keep], offsets, self.costs)

    def cut(self, k: int) -> "Rankings":
        """Keep the top ``k`` of every list."""
        if k < 0:
            raise ValueError("cut-off k must be >= 0")
        rank = np.arange(len(self.doc_ids)) - np.repeat(self.offsets[:-1], self.lengths)
        return self._select(rank < k)

    def drop_self_hits(self) -> "Rankings":
        """BEIR convention: a document whose id equals the query id is not a result."""
        qids = np.asarray(self.queries.ids, dtype=object)[self.query_positions] if len(self.doc_ids) else self.doc_ids
        keep = self.doc_ids != qids
        return self if keep.all() else self._select(np.asarray(keep, dtype=bool))

    def subset(self, qids: Iterable[str]) -> "Rankings":
        qids = list(qids)
        lists = []
        for q in qids:
            r = self[q]
            lists.append((r.doc_ids, r.scores))
        return Rankings.from_lists(self.queries.subset(qids), lists, self.costs)

    def with_costs(self, costs: Sequence[Cost]) -> "Rankings":
        # same (already validated, read-only) arrays: skip the constructor's checks
        out = object.__new__(Rankings)
        out.queries, out.doc_ids, out.scores, out.offsets = self.queries, self.doc_ids, self.scores, self.offsets
        out.costs = tuple(costs)
        return out

    def __reduce__(self):
        return (Rankings, (self.queries, self.doc_ids, self.scores, self.offsets, self.costs))

    def with_queries(self, queries: Queries) -> "Rankings":
        """Same results under another batch of queries with the same ids (e.g. original
        texts restored after a rewrite stage)."""
        if queries.ids != self.queries.ids:
            raise ValueError("with_queries needs the same query ids in the same order")
        return Rankings(queries, self.doc_ids, self.scores, self.offsets, self.costs)

    # interop ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, dict[str, float]]:
        """``{qid: {doc_id: score}}`` — the shape ir_measures and pytrec_eval take."""
        out: dict[str, dict[str, float]] = {}
        ids, scores = self.doc_ids.tolist(), self.scores.tolist()
        for i, qid in enumerate(self.queries.ids):
            a, b = int(self.offsets[i]), int(self.offsets[i + 1])
            out[qid] = dict(zip(ids[a:b], scores[a:b]))
        return out

    def to_pandas(self):
        """Long format with PyTerrier's column names: qid, query, docno, rank, score."""
        pd = _pandas()

        qpos = self.query_positions
        ranks = np.arange(len(self.doc_ids)) - np.repeat(self.offsets[:-1], self.lengths)
        return pd.DataFrame(
            {
                "qid": np.asarray(self.queries.ids, dtype=object)[qpos] if len(qpos) else np.empty(0, object),
                "query": np.asarray(self.queries.texts, dtype=object)[qpos] if len(qpos) else np.empty(0, object),
                "docno": self.doc_ids.copy(),
                "rank": ranks,
                "score": self.scores.copy(),
            }
        )

    @classmethod
    def from_pandas(cls, frame, queries: Queries | None = None) -> "Rankings":
        """From a frame with ``qid``, ``docno`` and ``score`` columns (``query`` optional)."""
        frame = frame.copy()
        frame["qid"] = frame["qid"].astype(str)
        if queries is None:
            first = frame.drop_duplicates("qid")
            texts = first["query"].astype(str).tolist() if "query" in frame else [""] * len(first)
            queries = Queries(first["qid"].tolist(), texts)
        groups = {q: g for q, g in frame.groupby("qid", sort=False)}
        lists = []
        for q in queries.ids:
            g = groups.get(q)
            if g is None:
                lists.append(([], []))
            else:
                lists.append((g["docno"].astype(str).to_numpy(dtype=object), g["score"].to_numpy(dtype=np.float64)))
        return cls.from_lists(queries, lists, sort=True)


# --------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """One query's answer: its text, the ids of the documents it cites (in citation
    order) and the ranked list the reader saw (None when it read nothing)."""

    qid: str
    text: str
    citations: tuple[str, ...]
    context: RankedList | None = None

    def __repr__(self) -> str:
        text = self.text if len(self.text) <= 60 else self.text[:57] + "..."
        return f"Answer({self.qid!r}, {text!r}, cites {list(self.citations)})"


class Answers(Sequence[Answer]):
    """Answers for a batch of queries, columnar like :class:`Rankings`.

    Per query an answer text; cited document ids stored flat (``citations[offsets[i]:
    offsets[i+1]]`` are those of ``queries[i]``); the :class:`Rankings` the reader saw
    (``contexts``, same queries, or None for a closed-book reader); and the cost records
    of every stage that led here.
    """

    __slots__ = ("queries", "texts", "citations", "offsets", "contexts", "costs")

    def __init__(self, queries: Queries, texts: Sequence[str], citations: np.ndarray | Sequence[str],
                 offsets: np.ndarray | Sequence[int], contexts: Rankings | None = None,
                 costs: Sequence[Cost] = ()):
        texts = tuple(str(t) for t in texts)
        citations = np.asarray(citations, dtype=object) if len(citations) else np.empty(0, dtype=object)
        offsets = np.asarray(offsets, dtype=np.int64)
        if len(texts) != len(queries):
            raise ValueError(f"{len(texts)} answer texts for {len(queries)} queries")
        if len(offsets) != len(queries) + 1 or offsets[0] != 0 or offsets[-1] != len(citations) \
                or (np.diff(offsets) < 0).any():
            raise ValueError("offsets must have len(queries)+1 non-decreasing entries from 0 to len(citations)")
        if contexts is not None and contexts.queries.ids != queries.ids:
            raise ValueError("the contexts must answer the same queries in the same order")
        self.queries, self.texts, self.contexts = queries, texts, contexts
        self.citations = _frozen(citations)
        self.offsets = _frozen(offsets)
        self.costs = tuple(costs)

    @classmethod
    def from_lists(cls, queries: Queries, texts: Sequence[str], citations: Sequence[Sequence[str]],
                   contexts: Rankings | None = None, costs: Sequence[Cost] = ()) -> "Answers":
        """From one text and one list of cited ids per query, in ``queries`` order."""
        if len(citations) != len(queries):
            raise ValueError(f"{len(citations)} citation lists for {len(queries)} queries")
        offsets = np.zeros(len(queries) + 1, dtype=np.int64)
        np.cumsum([len(c) for c in citations], out=offsets[1:])
        flat = _object_array(str(d) for c in citations for d in c)
        return cls(queries, texts, flat, offsets, contexts, costs)

    def __len__(self) -> int:
        return len(self.queries)

    def _at(self, i: int) -> Answer:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        ctx = self.contexts._at(i) if self.contexts is not None else None
        return Answer(self.queries.ids[i], self.texts[i], tuple(self.citations[a:b].tolist()), ctx)

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            return self._at(self.queries.position(key))
        if isinstance(key, slice):
            raise TypeError("slice Answers by query ids with .subset()")
        if key < 0:
            key += len(self)
        if not 0 <= key < len(self):
            raise IndexError(key)
        return self._at(key)

    def __iter__(self) -> Iterator[Answer]:
        return (self._at(i) for i in range(len(self)))

    def __repr__(self) -> str:
        return f"Answers({len(self)} queries, {len(self.citations)} citations)"

    def subset(self, qids: Iterable[str]) -> "Answers":
        qids = list(qids)
        picked = [self[q] for q in qids]
        ctx = self.contexts.subset(qids) if self.contexts is not None else None
        return Answers.from_lists(self.queries.subset(qids), [a.text for a in picked],
                                  [a.citations for a in picked], ctx, self.costs)

    def with_costs(self, costs: Sequence[Cost]) -> "Answers":
        out = object.__new__(Answers)
        out.queries, out.texts, out.citations, out.offsets = self.queries, self.texts, self.citations, self.offsets
        out.contexts = self.contexts
        out.costs = tuple(costs)
        return out

    def __reduce__(self):
        return (Answers, (self.queries, self.texts, self.citations, self.offsets, self.contexts, self.costs))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{qid: {"answer": text, "citations": [doc ids]}}``."""
        return {a.qid: {"answer": a.text, "citations": list(a.citations)} for a in self}

    def to_pandas(self):
        """One row per query: qid, query, answer, citations (a list of doc ids)."""
        pd = _pandas()

        return pd.DataFrame({"qid": list(self.queries.ids), "query": list(self.queries.texts),
                             "answer": list(self.texts), "citations": [list(a.citations) for a in self]})


# --------------------------------------------------------------------------------------
# Relevance judgments
# --------------------------------------------------------------------------------------


class Qrels:
    """Relevance judgments, columnar: ``(qid, doc_id, relevance)`` rows."""

    __slots__ = ("qids", "doc_ids", "relevance")

    def __init__(self, qids: Sequence[str] | np.ndarray, doc_ids: Sequence[str] | np.ndarray,
                 relevance: Sequence[int] | np.ndarray):
        self.qids = _frozen(np.asarray(qids, dtype=object) if len(qids) else np.empty(0, dtype=object))
        self.doc_ids = _frozen(np.asarray(doc_ids, dtype=object) if len(doc_ids) else np.empty(0, dtype=object))
        self.relevance = _frozen(np.asarray(relevance, dtype=np.int64))
        if not (len(self.qids) == len(self.doc_ids) == len(self.relevance)):
            raise ValueError("qids, doc_ids and relevance must have the same length")

    @classmethod
    def from_dict(cls, qrels: Mapping[str, Mapping[str, int]]) -> "Qrels":
        q, d, r = [], [], []
        for qid, docs in qrels.items():
            for doc, rel in docs.items():
                q.append(str(qid)), d.append(str(doc)), r.append(int(rel))
        return cls(q, d, r)

    def __len__(self) -> int:
        return len(self.qids)

    def __repr__(self) -> str:
        return f"Qrels({len(self)} judgments, {len(self.query_ids)} queries)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Qrels) and self.to_dict() == other.to_dict()

    @property
    def query_ids(self) -> list[str]:
        """Judged query ids in first-seen order."""
        return list(dict.fromkeys(self.qids.tolist()))

    def to_dict(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for q, d, r in zip(self.qids.tolist(), self.doc_ids.tolist(), self.relevance.tolist()):
            out.setdefault(q, {})[d] = r
        return out

    def for_query(self, qid: str) -> dict[str, int]:
        mask = self.qids == qid
        return dict(zip(self.doc_ids[mask].tolist(), self.relevance[mask].tolist()))

    def subset(self, qids: Iterable[str]) -> "Qrels":
        keep = np.isin(self.qids.astype(str), np.asarray(list(qids), dtype=str))
        return Qrels(self.qids[keep], self.doc_ids[keep], self.relevance[keep])

    def to_pandas(self):
        pd = _pandas()

        return pd.DataFrame({"qid": self.qids.copy(), "docno": self.doc_ids.copy(), "label": self.relevance.copy()})

    @classmethod
    def from_pandas(cls, frame, qid: str = "qid", docno: str = "docno", label: str = "label") -> "Qrels":
        return cls(frame[qid].astype(str).tolist(), frame[docno].astype(str).tolist(),
                   frame[label].astype(int).tolist())


__all__ = ["Query", "Document", "Queries", "Cost", "COST_FIELDS", "cost_summary", "cost_table", "RankedList",
           "Rankings", "Answer", "Answers", "Qrels"]
