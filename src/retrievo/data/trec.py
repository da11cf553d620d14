"""TREC formats: runs, qrels, SGML-style topics, and ``qid<TAB>text`` query files.

These are the files trec_eval and every shared task exchange, so reading follows
trec_eval's rules (not the file's own rank column) and every rejected line is reported
with its file and line number.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from retrievo.data.jsonl import atomic_writer, iter_lines, open_binary
from retrievo.errors import (ConfigError, DataFormatError, DuplicateIdError, MissingFieldError,
                             UnknownIdError)
from retrievo.types import Qrels, Queries, Rankings

TOPIC_FIELDS = ("title", "desc", "narr", "title+desc")
TSV_QUERY_HEADERS = frozenset({"qid", "query_id", "query-id", "id", "_id"})


# --------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------


def read_run(path: str | Path, queries: Queries | None = None, sort: bool = True) -> Rankings:
    """Read a run file ``qid Q0 docno rank score tag`` (whitespace-separated).

    With ``sort=True`` (default) each query's results are ordered the way trec_eval
    evaluates them: by score descending, ties by docno *descending* (byte order), ignoring
    the rank column. ``sort=False`` keeps the file order. Queries appear in first-seen
    order, or in the order of ``queries`` when given (which then supplies the texts;
    a run query missing from it raises :class:`UnknownIdError`).
    """
    path = Path(path)
    per_query: dict[str, tuple[list[str], list[float]]] = {}
    first_line: dict[tuple[str, str], int] = {}
    for line, text in iter_lines(path):
        fields = text.split()
        if len(fields) != 6:
            raise DataFormatError(f"expected 6 columns 'qid Q0 docno rank score tag', got {len(fields)}",
                                  path, line)
        qid, _, docno, rank, score_text, _ = fields
        try:
            int(rank)
            score = float(score_text)
        except ValueError:
            raise DataFormatError(f"rank {rank!r} must be an integer and score {score_text!r} a number",
                                  path, line) from None
        if math.isnan(score):
            raise DataFormatError("score is NaN", path, line)
        seen = first_line.setdefault((qid, docno), line)
        if seen != line:
            raise DuplicateIdError(f"document {docno!r} already ranked for query {qid!r} on line {seen}",
                                   path, line)
        if queries is not None and qid not in queries:
            raise UnknownIdError(f"{path}:{line}: query {qid!r} is not among the given queries")
        docs, scores = per_query.setdefault(qid, ([], []))
        docs.append(docno), scores.append(score)

    if queries is None:
        queries = Queries(list(per_query), [""] * len(per_query))
    lists = []
    for qid in queries.ids:
        docs, scores = per_query.get(qid, ([], []))
        order = list(range(len(docs)))
        if sort:
            order.sort(key=docs.__getitem__, reverse=True)
            order.sort(key=scores.__getitem__, reverse=True)  # stable: keeps docno-descending ties
        lists.append((np.array([docs[i] for i in order], dtype=object),
                      np.array([scores[i] for i in order], dtype=np.float64)))
    return Rankings.from_lists(queries, lists)


def _check_token(value: str, what: str, path: Path) -> str:
    if not value or any(c.isspace() for c in value):
        raise DataFormatError(f"{what} {value!r} is empty or contains whitespace; "
                              "TREC files are whitespace-separated", path)
    return value


def write_run(path: str | Path, rankings: Rankings, tag: str = "retrievo") -> Path:
    """Write ``rankings`` as a TREC run (ranks from 1 in list order, scores exact)."""
    path = Path(path)
    _check_token(tag, "run tag", path)
    with atomic_writer(path) as f:
        for ranked in rankings:
            qid = _check_token(ranked.qid, "query id", path)
            for rank, (docno, score) in enumerate(ranked, start=1):
                _check_token(docno, "document id", path)
                f.write(f"{qid} Q0 {docno} {rank} {score!r} {tag}\n".encode("utf-8"))
    return path


# --------------------------------------------------------------------------------------
# Qrels
# --------------------------------------------------------------------------------------


def read_qrels(path: str | Path) -> Qrels:
    """Read TREC qrels ``qid iter docno rel``; rows keep file order, the iter column is ignored."""
    path = Path(path)
    qids, docs, rels = [], [], []
    first_line: dict[tuple[str, str], int] = {}
    for line, text in iter_lines(path):
        fields = text.split()
        if len(fields) != 4:
            hint = (" (3 columns: a BEIR qrels row? read it with retrievo.data.beir.read_beir_qrels)"
                    if len(fields) == 3 else "")
            raise DataFormatError(f"expected 4 columns 'qid iter docno rel', got {len(fields)}{hint}",
                                  path, line)
        qid, _, docno, rel = fields
        try:
            relevance = int(rel)
        except ValueError:
            raise DataFormatError(f"relevance {rel!r} is not an integer", path, line) from None
        if not -2**31 <= relevance < 2**31:  # judgments are stored as int64 and summed in gains
            raise DataFormatError(f"relevance {rel!r} is out of range (|relevance| < 2**31)", path, line)
        seen = first_line.setdefault((qid, docno), line)
        if seen != line:
            raise DuplicateIdError(f"pair ({qid!r}, {docno!r}) already judged on line {seen}", path, line)
        qids.append(qid), docs.append(docno), rels.append(relevance)
    return Qrels(qids, docs, rels)


def write_qrels(path: str | Path, qrels: Qrels) -> Path:
    """Write TREC qrels ``qid 0 docno rel``, rows in ``qrels`` order."""
    path = Path(path)
    with atomic_writer(path) as f:
        for q, d, r in zip(qrels.qids.tolist(), qrels.doc_ids.tolist(), qrels.relevance.tolist()):
            f.write(f"{_check_token(q, 'query id', path)} 0 {_check_token(d, 'document id', path)} {r}\n"
                    .encode("utf-8"))
    return path


# --------------------------------------------------------------------------------------
# Topics
# --------------------------------------------------------------------------------------

_TAG = re.compile(r"<(/?)([A-Za-z]+)([^>]*)>")
_NUMBER_ATTR = re.compile(r"""number\s*=\s*["']?([^"'\s>]+)""", re.IGNORECASE)
_TAG_ROLE = {"top": "topic", "topic": "topic", "num": "num", "number": "num",
             "title": "title", "query": "title", "desc": "desc", "description": "desc",
             "narr": "narr", "narrative": "narr"}
_PREFIXES = {"num": ("number:",), "title": ("topic:", "title:"), "desc": ("description:",),
             "narr": ("narrative:",)}


def _clean(text: str, role: str) -> str:
    text = " ".join(text.split())
    for prefix in _PREFIXES.get(role, ()):
        if text.lower().startswith(prefix):
            text = text[len(prefix):].lstrip()
    return text


def read_topics(path: str | Path, field: str = "title") -> Queries:
    """Read classic TREC topics (``<top><num> Number: 301 <title> ... <desc> ...</top>``).

    ``field`` picks the query text: ``"title"`` (default), ``"desc"``, ``"narr"`` or
    ``"title+desc"``; every field found is kept in each query's ``meta``. The XML-ish
    variant ``<topic number="1"><query>...</query><description>...`` is read too;
    other tags (``<dom>``, ``<con>``, ``<subtopic>`` ...) are skipped.
    """
    if field not in TOPIC_FIELDS:
        raise ConfigError(f"field must be one of {', '.join(TOPIC_FIELDS)}; got {field!r}")
    path = Path(path)
    with open_binary(path) as f:
        content = f.read().decode("utf-8", errors="replace")

    def line_at(pos: int) -> int:
        return content.count("\n", 0, pos) + 1

    topics: list[tuple[int, dict[str, str]]] = []
    current: dict[str, str] | None = None
    topic_line = 0
    role, text_start = None, 0
    for match in _TAG.finditer(content):
        closing, name, attrs = match.group(1), match.group(2).lower(), match.group(3)
        if current is not None and role is not None:  # text since the last tag belongs to `role`
            piece = content[text_start:match.start()]
            current[role] = (current.get(role, "") + " " + piece).strip()
        tag_role = _TAG_ROLE.get(name, "other")
        if tag_role == "topic" and not closing:
            if current is not None:
                raise DataFormatError(f"<{name}> opened before the topic of line {topic_line} was closed",
                                      path, line_at(match.start()))
            current, topic_line, role = {}, line_at(match.start()), None
            if (number := _NUMBER_ATTR.search(attrs)) is not None:
                current["num"] = number.group(1)
        elif tag_role == "topic":
            if current is None:
                raise DataFormatError(f"</{name}> without an opening tag", path, line_at(match.start()))
            topics.append((topic_line, current))
            current, role = None, None
        elif current is None:
            raise DataFormatError(f"<{'/' if closing else ''}{name}> outside a <top> ... </top> block",
                                  path, line_at(match.start()))
        else:
            role = None if closing else tag_role
        text_start = match.end()
    if current is not None:
        raise DataFormatError("topic is never closed", path, topic_line)

    ids, texts, metas = [], [], []
    first_line: dict[str, int] = {}
    for line, raw in topics:
        fields = {r: _clean(v, r) for r, v in raw.items() if r != "other"}
        qid = fields.pop("num", "")
        if not qid:
            raise MissingFieldError("topic has no <num>", path, line)
        seen = first_line.setdefault(qid, line)
        if seen != line:
            raise DuplicateIdError(f"topic {qid!r} already defined on line {seen}", path, line)
        parts = [fields.get(name, "") for name in field.split("+")]
        text = " ".join(p for p in parts if p)
        if not text:
            raise MissingFieldError(f"topic {qid!r} has no {field} text", path, line)
        ids.append(qid), texts.append(text), metas.append(fields)
    if not ids:
        raise DataFormatError("no <top> topics found", path)
    return Queries(ids, texts, metas)


# --------------------------------------------------------------------------------------
# qid<TAB>text query files
# --------------------------------------------------------------------------------------


def read_tsv_queries(path: str | Path) -> Queries:
    """Read ``qid<TAB>text`` lines (MS MARCO style); a ``qid<TAB>...`` header row is skipped."""
    path = Path(path)
    ids, texts = [], []
    first_line: dict[str, int] = {}
    for n, (line, raw) in enumerate(iter_lines(path)):
        qid, tab, text = raw.partition("\t")
        qid, text = qid.strip(), text.strip()
        if not tab:
            raise DataFormatError("expected 'qid<TAB>text', found no tab", path, line)
        if n == 0 and qid.lower() in TSV_QUERY_HEADERS:
            continue
        if not qid or not text:
            raise MissingFieldError("empty query id or text", path, line)
        seen = first_line.setdefault(qid, line)
        if seen != line:
            raise DuplicateIdError(f"query id {qid!r} already appeared on line {seen}", path, line)
        ids.append(qid), texts.append(text)
    return Queries(ids, texts)


def write_tsv_queries(path: str | Path, queries: Queries | Iterable) -> Path:
    """Write ``qid<TAB>text`` lines; tabs and line breaks inside a text become spaces."""
    path = Path(path)
    with atomic_writer(path) as f:
        for q in Queries.of(queries):
            if not q.qid or "\t" in q.qid or "\n" in q.qid:
                raise DataFormatError(f"query id {q.qid!r} is empty or contains a tab or newline", path)
            f.write(f"{q.qid}\t{' '.join(q.text.split())}\n".encode("utf-8"))
    return path


__all__ = [
    "TOPIC_FIELDS",
    "read_qrels",
    "read_run",
    "read_topics",
    "read_tsv_queries",
    "write_qrels",
    "write_run",
    "write_tsv_queries",
]
