"""Turning documents into postings, in batches, on one core or several.

Analysis (tokenising, stemming) is pure Python and dominates indexing time, so it runs in
worker processes when ``workers > 1``: the parent reads and validates the stream, ships
batches of raw documents out, and gets back compact results — each batch's local
vocabulary plus numpy arrays of local term ids — which it maps onto the index-wide
vocabulary with one vectorised gather. At most ``2 × workers`` batches are in flight, so a
corpus of any size streams through in bounded memory.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrievo.index.columns import Columns, flatten_meta
from retrievo.text import Analyzer
from retrievo.types import Document, indexed_text

DocTuple = tuple[str, str, str, "dict[str, Any] | None"]


@dataclass
class AnalysedBatch:
    doc_ids: list[str]
    terms: list[str]  # this batch's vocabulary, in first-seen order
    term_ids: np.ndarray  # int32, every document's terms as indices into ``terms``
    lengths: np.ndarray  # int64, terms per document
    stored: bytes | None  # JSON lines of the stored documents
    stored_lengths: np.ndarray | None
    metas: list[dict[str, Any]] | None = None  # flattened scalar metadata (columns), None when no document has any
    field_ids: list[np.ndarray] | None = None  # per named field: its terms as indices into ``terms``
    field_lengths: list[np.ndarray] | None = None  # per named field: terms per document


def field_text(name: str, title: str, text: str, meta: dict[str, Any] | None) -> str:
    """The text of one named field: ``title``, ``text``, or a text-valued metadata field
    (a list of strings is joined with spaces); empty when the document lacks it."""
    if name == "title":
        return title
    if name == "text":
        return text
    value = (meta or {}).get(name)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return " ".join(value)
    return ""


try:  # orjson is several times faster than json for the document store
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency, this is a fallback
    orjson = None


def _dumps(obj: Any) -> bytes:
    if orjson is not None:
        try:
            return orjson.dumps(obj)
        except TypeError:  # e.g. non-string keys in user metadata: let json coerce them
            pass
    return json.dumps(obj, ensure_ascii=False, default=str).encode("utf-8")

_ANALYZERS: dict[str, Analyzer] = {}


def _analyzer(config: dict[str, Any]) -> Analyzer:
    key = json.dumps(config, sort_keys=True)
    if key not in _ANALYZERS:
        _ANALYZERS[key] = Analyzer.from_config(config)
    return _ANALYZERS[key]


def analyse_batch(analyzer: Analyzer | dict[str, Any], docs: list[DocTuple], store: bool,
                  fields: tuple[str, ...] = ()) -> AnalysedBatch:
    """Analyse ``(doc_id, title, text, meta)`` tuples; indexed text is ``title + " " + text``.
    Each of ``fields`` is also analysed on its own (separate postings for BM25F)."""
    if not isinstance(analyzer, Analyzer):
        analyzer = _analyzer(analyzer)
    local: defaultdict[str, int] = defaultdict(itertools.count().__next__)
    lookup = local.__getitem__
    field_flat: list[list[int]] = [[] for _ in fields]
    field_lengths = [np.empty(len(docs), dtype=np.int64) for _ in fields]
    # the batch's texts go through the analyzer together: its new words are stemmed in one call
    texts = (indexed_text(title, text) for _, title, text, _ in docs)
    if fields:
        # per document, each field's terms before the document's own: the ids' first-seen order
        analysed = analyzer.analyze_many(texts)
        field_terms = [analyzer.analyze_many(field_text(name, title, text, meta) for _, title, text, meta in docs)
                       for name in fields]
        flat: list[int] = []
        lengths = np.empty(len(docs), dtype=np.int64)
        for i, terms in enumerate(analysed):
            for j in range(len(fields)):
                fterms = field_terms[j][i]
                field_flat[j].extend(map(lookup, fterms))
                field_lengths[j][i] = len(fterms)
            flat.extend(map(lookup, terms))
            lengths[i] = len(terms)
        term_ids = np.array(flat, dtype=np.int32)
        vocab = list(local)
    else:
        # the whole batch in one list (stop words as ""), mapped to local ids in one pass
        # with "" as id 0 (local is still empty), which is then dropped: no list per document
        all_terms, counts = analyzer.analyze_flat(texts)
        lookup("")
        ids = np.fromiter(map(lookup, all_terms), dtype=np.int32, count=len(all_terms))
        keep = ids != 0
        kept = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(keep, out=kept[1:])
        ends = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum(counts, out=ends[1:])
        lengths = kept[ends[1:]] - kept[ends[:-1]]
        term_ids = ids[keep] - 1
        vocab = list(local)[1:]  # without the stop-word marker ""
    stored: list[bytes] = []
    metas: list[dict[str, Any]] = []
    for _, title, text, meta in docs:
        metas.append(flatten_meta(meta))
        if store:
            rec: dict[str, Any] = {"title": title, "text": text}
            if meta:
                rec["meta"] = dict(meta)
            stored.append(_dumps(rec) + b"\n")
    return AnalysedBatch(
        [d[0] for d in docs], vocab, term_ids, lengths,
        b"".join(stored) if store else None,
        np.fromiter(map(len, stored), dtype=np.int64, count=len(stored)) if store else None,
        metas if any(metas) else None,
        [np.array(f, dtype=np.int32) for f in field_flat] if fields else None, field_lengths if fields else None)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)  # the indexing process died: do not linger


def _worker_init(parent: int) -> None:
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def default_workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 8))


def analysed_batches(docs: Iterable[DocTuple], analyzer: Analyzer, store: bool, workers: int,
                     batch_docs: int = 500, fields: tuple[str, ...] = ()) -> Iterator[AnalysedBatch]:
    """Analysed batches in input order, computed by ``workers`` processes (1: in-process).

    A stream that ends within the first few batches is analysed in-process: starting
    workers costs more than it saves on a small collection.
    """
    stream = iter(docs)
    batches = iter(lambda: list(itertools.islice(stream, batch_docs)), [])
    head = list(itertools.islice(batches, 2 * workers))
    if workers <= 1 or len(head) < 2 * workers:
        for batch in itertools.chain(head, batches):
            yield analyse_batch(analyzer, batch, store, fields)
        return
    config = analyzer.config()
    # fork: workers inherit the imported modules, so they start in milliseconds
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(os.getpid(),)) as pool:
        pending: deque = deque()
        for batch in itertools.chain(head, batches):
            pending.append(pool.submit(analyse_batch, config, batch, store, fields))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class SegmentBuilder:
    """Accumulates analysed batches until :meth:`build` turns them into a segment.

    ``vocab`` is the index-wide vocabulary (term -> id, ids in insertion order), a
    ``defaultdict`` that hands out the next id to a new term, so ids are stable across
    segments and the mapping of a batch's vocabulary is one C-level ``map``.
    """

    def __init__(self, vocab: defaultdict, store: bool = True, fields: tuple[str, ...] = ()):
        self.vocab, self.store, self.fields = vocab, store, fields
        self._field_ids: list[list[np.ndarray]] = [[] for _ in fields]
        self._field_lengths: list[list[np.ndarray]] = [[] for _ in fields]
        self._ids: list[str] = []
        self._term_ids: list[np.ndarray] = []
        self._lengths: list[np.ndarray] = []
        self._stored: list[bytes] = []
        self._stored_lengths: list[np.ndarray] = []
        self._metas: list[dict[str, Any] | None] = []

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, batch: AnalysedBatch) -> None:
        global_ids = np.fromiter(map(self.vocab.__getitem__, batch.terms), dtype=np.int64, count=len(batch.terms))
        self._ids.extend(batch.doc_ids)
        self._term_ids.append(global_ids[batch.term_ids] if len(batch.term_ids) else np.empty(0, np.int64))
        for j in range(len(self.fields)):
            ids = batch.field_ids[j]
            self._field_ids[j].append(global_ids[ids] if len(ids) else np.empty(0, np.int64))
            self._field_lengths[j].append(batch.field_lengths[j])
        self._lengths.append(batch.lengths)
        self._metas.extend(batch.metas if batch.metas is not None else [None] * len(batch.doc_ids))
        if self.store:
            self._stored.append(batch.stored)
            self._stored_lengths.append(batch.stored_lengths)

    def _segment(self, seg_name: str, term_parts: list[np.ndarray], length_parts: list[np.ndarray]):
        from retrievo.index.segment import Segment

        n = len(self._ids)
        lengths = np.concatenate(length_parts) if length_parts else np.empty(0, np.int64)
        flat = np.concatenate(term_parts) if term_parts else np.empty(0, np.int64)
        doc_of = np.repeat(np.arange(n, dtype=np.int64), lengths)
        vocab_size = len(self.vocab)
        keys, tfs = np.unique(flat * max(n, 1) + doc_of, return_counts=True)  # sorted by (term, doc)
        indptr = np.zeros(vocab_size + 1, dtype=np.int64)
        np.cumsum(np.bincount(keys // max(n, 1), minlength=vocab_size), out=indptr[1:])
        return Segment(seg_name, lengths.astype(np.int32), indptr, (keys % max(n, 1)).astype(np.int32),
                       tfs.astype(np.int32))

    def build(self, name: str):
        """The segment, the document-store part and the field segments (one per named
        field, empty without fields) of everything added, named ``seg-<name>``,
        ``part-<name>`` and ``seg-<name>.f<i>`` so the pieces of one unit pair up on disk."""
        from retrievo.index.docstore import DocPart

        n = len(self._ids)
        segment = self._segment(f"seg-{name}", self._term_ids, self._lengths)
        fields = [self._segment(f"seg-{name}.f{j}", self._field_ids[j], self._field_lengths[j])
                  for j in range(len(self.fields))]
        ids = np.empty(n, dtype=object)
        ids[:] = self._ids
        blob, offsets = None, None
        if self.store:
            offsets = np.zeros(n + 1, dtype=np.int64)
            if n:
                np.cumsum(np.concatenate(self._stored_lengths), out=offsets[1:])
            blob = b"".join(self._stored)
        columns = Columns.build(self._metas) if any(self._metas) else None
        return segment, DocPart(f"part-{name}", ids, blob, offsets, columns=columns), fields


def growing_vocab(vocab: dict[str, int]) -> defaultdict:
    grown: defaultdict = defaultdict(itertools.count(len(vocab)).__next__)
    grown.update(vocab)
    return grown


def _plain(value: Any, doc_id: str) -> Any:
    """A metadata value as JSON stores it faithfully: sets become sorted lists, numpy
    scalars and arrays their Python values. Anything else JSON cannot hold is refused
    rather than silently stored as its ``str()``."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v, doc_id) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, doc_id) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [_plain(v, doc_id) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=repr)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return _plain(value.tolist(), doc_id)
    from retrievo.errors import DataFormatError

    raise DataFormatError(f"document {doc_id!r}: metadata value of type {type(value).__name__} cannot be stored "
                          "(use strings, numbers, booleans, lists or dicts)")


def document_tuples(documents: Iterable[Document], seen: set[str]) -> Iterator[DocTuple]:
    """Validate the stream (types, ids) in the parent and flatten documents for shipping."""
    from retrievo.errors import DuplicateIdError

    for doc in documents:
        if not isinstance(doc, Document):
            raise TypeError(f"expected retrievo.Document, got {type(doc).__name__}")
        if doc.doc_id in seen:
            raise DuplicateIdError(f"document id {doc.doc_id!r} is indexed twice")
        if not doc.doc_id or "\n" in doc.doc_id:
            raise ValueError(f"document id {doc.doc_id!r} must be non-empty and contain no newline")
        seen.add(doc.doc_id)
        yield doc.doc_id, doc.title, doc.text, (_plain(dict(doc.meta), doc.doc_id) if doc.meta else None)
