"""BEIR-layout datasets: ``corpus.jsonl[.gz]``, ``queries.jsonl``, ``qrels/<split>.tsv``.

The corpus is streamed and validated line by line (ids, fields, duplicates), so a broken
line is reported with its file and line number instead of surfacing later as a wrong
score. Only the ids seen so far are kept in memory, never the documents.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from retrievo.data.collection import BatchingMixin
from retrievo.data.jsonl import atomic_writer, count_lines, dumps_line, iter_jsonl, iter_lines
from retrievo.errors import DataFormatError, DuplicateIdError, MissingFieldError, UnknownIdError
from retrievo.types import Document, Qrels, Queries

CORPUS_FILES = ("corpus.jsonl", "corpus.jsonl.gz")
DOC_ID_FIELDS = ("_id", "id", "doc_id", "docno")
DOC_TEXT_FIELDS = ("text", "contents", "body")
QUERY_ID_FIELDS = ("_id", "id", "query_id", "qid")
QUERY_TEXT_FIELDS = ("text", "query", "question")
QRELS_HEADER_SCORES = frozenset({"score", "relevance", "label", "rel"})


# --------------------------------------------------------------------------------------
# Record validation
# --------------------------------------------------------------------------------------


def _record_id(record: Mapping[str, Any], fields: tuple[str, ...], what: str,
               path: str | Path, line: int) -> tuple[str, str]:
    """The record's id and the field it came from; ints are accepted and stringified."""
    for name in fields:
        if name in record:
            value = record[name]
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise DataFormatError(f"{what} id field {name!r} must be a string or an integer, "
                                      f"got {type(value).__name__}", path, line)
            value = str(value)
            if not value:
                raise DataFormatError(f"{what} id field {name!r} is empty", path, line)
            return value, name
    names = ", ".join(repr(f) for f in fields)
    raise MissingFieldError(f"{what} has no id field (expected one of {names})", path, line)


def _optional_text(record: Mapping[str, Any], name: str, path: str | Path, line: int) -> str | None:
    value = record.get(name)
    if value is None or isinstance(value, str):
        return value
    raise DataFormatError(f"field {name!r} must be a string, got {type(value).__name__}", path, line)


_NO_META: Mapping[str, Any] = MappingProxyType({})


def _meta(record: Mapping[str, Any], used: Iterable[str]) -> Mapping[str, Any]:
    used = set(used)
    extra = {k: v for k, v in record.items() if k not in used}
    return MappingProxyType(extra) if extra else _NO_META


def document_from_record(record: Mapping[str, Any], path: str | Path, line: int) -> Document:
    """A :class:`Document` from one corpus line; fields other than id/title/text go to
    ``meta`` (e.g. BEIR's ``metadata`` or extra keys of converted collections)."""
    doc_id, id_field = _record_id(record, DOC_ID_FIELDS, "document", path, line)
    title = _optional_text(record, "title", path, line)
    text, text_field = None, "text"
    for text_field in DOC_TEXT_FIELDS:
        text = _optional_text(record, text_field, path, line)
        if text is not None:
            break
    if title is None and text is None:
        raise MissingFieldError(f"document {doc_id!r} has neither 'title' nor 'text'", path, line)
    meta = _meta(record, (id_field, "title", text_field))
    return Document(doc_id, text or "", title or "", meta)


def query_from_record(record: Mapping[str, Any], path: str | Path, line: int) -> tuple[str, str, Mapping[str, Any]]:
    """``(qid, text, meta)`` from one queries.jsonl line."""
    qid, id_field = _record_id(record, QUERY_ID_FIELDS, "query", path, line)
    for text_field in QUERY_TEXT_FIELDS:
        text = _optional_text(record, text_field, path, line)
        if text is not None:
            return qid, text, _meta(record, (id_field, text_field))
    raise MissingFieldError(f"query {qid!r} has no 'text'", path, line)


# --------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------


def _is_readable_file(path: Path) -> bool:
    """A file or anything else that streams (a named pipe), but not a folder."""
    return path.exists() and not path.is_dir()


class JsonlCorpus(BatchingMixin):
    """A corpus in one JSONL(.gz) file: one document per line with an id (``_id``, ``id``,
    ``doc_id`` or ``docno``), ``text`` (or ``contents``/``body``) and optional ``title``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not _is_readable_file(self.path):
            raise DataFormatError("no such corpus file", self.path)

    def __repr__(self) -> str:
        return f"JsonlCorpus({str(self.path)!r})"

    def iter_documents(self) -> Iterator[Document]:
        """Stream validated documents; raises :class:`DuplicateIdError` naming both lines
        when an id repeats."""
        first_line: dict[str, int] = {}
        for line, record in iter_jsonl(self.path):
            doc = document_from_record(record, self.path, line)
            seen = first_line.setdefault(doc.doc_id, line)
            if seen != line:
                raise DuplicateIdError(f"document id {doc.doc_id!r} already appeared on line {seen}",
                                       self.path, line)
            yield doc

    def num_documents(self) -> int:
        """Counts non-blank lines without parsing JSON."""
        return count_lines(self.path)


def read_queries_jsonl(path: str | Path) -> Queries:
    """All queries of a queries.jsonl file, in file order, extra fields in ``meta``."""
    ids, texts, metas = [], [], []
    first_line: dict[str, int] = {}
    for line, record in iter_jsonl(path):
        qid, text, meta = query_from_record(record, path, line)
        seen = first_line.setdefault(qid, line)
        if seen != line:
            raise DuplicateIdError(f"query id {qid!r} already appeared on line {seen}", path, line)
        ids.append(qid), texts.append(text), metas.append(meta)
    return Queries(ids, texts, metas if any(metas) else None)


def _parse_score(value: str, path: Path, line: int) -> int:
    try:
        score = int(value)
    except ValueError:
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not number.is_integer():
            raise DataFormatError(f"relevance score {value!r} is not an integer", path, line) from None
        score = int(number)
    if not -2**31 <= score < 2**31:  # judgments are stored as int64 and summed in gains
        raise DataFormatError(f"relevance score {value!r} is out of range (|score| < 2**31)", path, line)
    return score


def read_beir_qrels(path: str | Path) -> Qrels:
    """A BEIR qrels file: ``query-id<TAB>corpus-id<TAB>score``, header optional."""
    path = Path(path)
    qids, docs, scores = [], [], []
    first_line: dict[tuple[str, str], int] = {}
    for n, (line, text) in enumerate(iter_lines(path)):
        fields = text.split("\t")
        if len(fields) == 1:
            fields = text.split()
        fields = [f.strip() for f in fields]
        if n == 0 and len(fields) == 3 and fields[2].lower() in QRELS_HEADER_SCORES:
            continue  # the optional header row
        if len(fields) != 3:
            hint = (" (this looks like a TREC qrels row 'qid iter docno rel'; "
                    "read it with retrievo.data.trec.read_qrels)") if len(fields) == 4 else ""
            raise DataFormatError(f"expected 3 tab-separated columns query-id, corpus-id, score; "
                                  f"got {len(fields)}{hint}", path, line)
        qid, doc_id, score = fields
        if not qid or not doc_id:
            raise DataFormatError("empty query-id or corpus-id", path, line)
        seen = first_line.setdefault((qid, doc_id), line)
        if seen != line:
            raise DuplicateIdError(f"pair ({qid!r}, {doc_id!r}) already judged on line {seen}", path, line)
        qids.append(qid), docs.append(doc_id), scores.append(_parse_score(score, path, line))
    return Qrels(qids, docs, scores)


def _corpus_file(folder: Path) -> Path | None:
    return next((folder / name for name in CORPUS_FILES if _is_readable_file(folder / name)), None)


def is_beir_dir(path: str | Path) -> bool:
    """True for a folder holding ``corpus.jsonl`` or ``corpus.jsonl.gz``."""
    path = Path(path)
    return path.is_dir() and _corpus_file(path) is not None


class BeirDataset(BatchingMixin):
    """A BEIR folder: streamed corpus, queries and per-split qrels.

    >>> ds = BeirDataset("../shared/data/scifact")          # doctest: +SKIP
    >>> ds.splits(), len(ds.queries("test"))                 # doctest: +SKIP
    (['test', 'train'], 300)
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise DataFormatError("no such folder", self.path)
        corpus = _corpus_file(self.path) if self.path.is_dir() else None
        if corpus is None:
            raise DataFormatError("not a BEIR folder: expected corpus.jsonl or corpus.jsonl.gz inside", self.path)
        self.corpus = JsonlCorpus(corpus)

    def __repr__(self) -> str:
        return f"BeirDataset({str(self.path)!r})"

    # documents ----------------------------------------------------------------------
    def iter_documents(self) -> Iterator[Document]:
        return self.corpus.iter_documents()

    def num_documents(self) -> int:
        return self.corpus.num_documents()

    # queries and judgments ------------------------------------------------------------
    def splits(self) -> list[str]:
        """Names of the qrels splits present (``qrels/<split>.tsv``), sorted."""
        folder = self.path / "qrels"
        if not folder.is_dir():
            return []
        names = {p.name.removesuffix(".gz").removesuffix(".tsv") for p in folder.iterdir()
                 if p.is_file() and p.name.endswith((".tsv", ".tsv.gz"))}
        return sorted(names)

    def _qrels_file(self, split: str) -> Path:
        for name in (f"{split}.tsv", f"{split}.tsv.gz"):
            candidate = self.path / "qrels" / name
            if candidate.is_file():
                return candidate
        available = ", ".join(self.splits()) or "none"
        raise UnknownIdError(f"{self.path}: no qrels split {split!r}; available splits: {available}")

    def qrels(self, split: str) -> Qrels:
        """Judgments of one split, rows in file order (score-0 rows kept)."""
        return read_beir_qrels(self._qrels_file(split))

    def queries(self, split: str | None = None) -> Queries:
        """All queries, or with ``split`` only those judged in it; queries.jsonl order."""
        path = self.path / "queries.jsonl"
        if not path.is_file():
            raise DataFormatError("this BEIR folder has no queries.jsonl", self.path)
        queries = read_queries_jsonl(path)
        if split is None:
            return queries
        judged = set(self.qrels(split).qids.tolist())
        return queries.subset(q for q in queries.ids if q in judged)


# --------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------


def _document_record(doc: Document) -> dict[str, Any]:
    return {"_id": doc.doc_id, "title": doc.title, "text": doc.text, **dict(doc.meta)}


def write_beir(path: str | Path, documents: Iterable[Document], queries: Queries | Any = None,
               qrels_by_split: Mapping[str, Qrels] | None = None, compress: bool = False) -> Path:
    """Write a BEIR folder (created if needed); every file is replaced atomically.

    ``documents`` is streamed once; ``compress=True`` writes ``corpus.jsonl.gz``.
    ``queries`` takes anything :meth:`Queries.of` accepts. Returns the folder path.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    corpus_name = "corpus.jsonl.gz" if compress else "corpus.jsonl"
    stale = folder / ("corpus.jsonl" if compress else "corpus.jsonl.gz")
    with atomic_writer(folder / corpus_name) as f:
        for doc in documents:
            f.write(dumps_line(_document_record(doc)))
    stale.unlink(missing_ok=True)  # two corpora in one folder would be ambiguous
    if queries is not None:
        with atomic_writer(folder / "queries.jsonl") as f:
            for q in Queries.of(queries):
                f.write(dumps_line({"_id": q.qid, "text": q.text, **dict(q.meta)}))
    if qrels_by_split:
        (folder / "qrels").mkdir(exist_ok=True)
        for split, qrels in qrels_by_split.items():
            with atomic_writer(folder / "qrels" / f"{split}.tsv") as f:
                f.write(b"query-id\tcorpus-id\tscore\n")
                for q, d, r in zip(qrels.qids.tolist(), qrels.doc_ids.tolist(), qrels.relevance.tolist()):
                    f.write(f"{q}\t{d}\t{r}\n".encode("utf-8"))
    return folder


__all__ = [
    "BeirDataset",
    "JsonlCorpus",
    "document_from_record",
    "is_beir_dir",
    "query_from_record",
    "read_beir_qrels",
    "read_queries_jsonl",
    "write_beir",
]
