"""Reading query and judgment files whose format is not known in advance.

Users hand the command line (and notebooks) whatever file they have: a BEIR
``queries.jsonl``, an MS MARCO ``qid<TAB>text`` file, classic TREC topics, TREC qrels or
BEIR ``qrels/test.tsv``. Each reader in :mod:`~retrievo.data.trec` and
:mod:`~retrievo.data.beir` is strict about its own format, so a wrong guess fails with a
line number instead of silently reading garbage; this module only decides which strict
reader to call, from the file's *content* (the first lines), not just its name, so a
renamed or gzipped file still reads.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from retrievo.data.beir import read_beir_qrels, read_queries_jsonl
from retrievo.data.jsonl import open_binary
from retrievo.data.trec import read_qrels, read_topics, read_tsv_queries
from retrievo.errors import ConfigError, DataFormatError
from retrievo.types import Qrels, Queries

QUERY_FORMATS = ("jsonl", "tsv", "trec")
QRELS_FORMATS = ("trec", "beir")
_PEEK_BYTES = 8192


def _head(path: Path) -> str:
    """The first few kilobytes of ``path`` as text (gzip is unpacked by magic bytes)."""
    try:
        with open_binary(path) as f:
            return f.read(_PEEK_BYTES).decode("utf-8", errors="replace")
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:  # a truncated .gz shorter than the peek
        raise DataFormatError(f"corrupt or truncated gzip data: {err}", path) from None


def _first_line(head: str) -> str:
    return next((line for line in head.splitlines() if line.strip()), "")


def detect_queries_format(path: str | Path) -> str:
    """``"jsonl"`` (BEIR queries.jsonl), ``"trec"`` (SGML-style topics) or ``"tsv"``
    (``qid<TAB>text``), decided from the first lines of the file.

    Topics are recognised by a ``<top>`` / ``<topic>`` tag anywhere in the first 8 kB,
    JSONL by a first line starting with ``{``, TSV by a tab in the first line. Anything
    else raises :class:`DataFormatError` naming the three formats, because guessing on a
    file we cannot classify would produce wrong query texts.
    """
    path = Path(path)
    head = _head(path)
    lowered = head.lower()
    if "<top>" in lowered or "<topic" in lowered:
        return "trec"
    first = _first_line(head).lstrip("\ufeff").lstrip()
    if first.startswith("{"):
        return "jsonl"
    if "\t" in first:
        return "tsv"
    raise DataFormatError("cannot tell the query format: expected BEIR JSONL (lines like "
                          '{"_id": ..., "text": ...}), TSV (qid<TAB>text) or TREC topics (<top> ... </top>)', path)


def read_queries(path: str | Path, format: str = "auto", field: str = "title") -> Queries:
    """Read a queries file in any supported format (``format="auto"`` detects it).

    ``field`` picks the topic field for TREC topics (``"title"``, ``"desc"``, ``"narr"``,
    ``"title+desc"``); the other formats have a single text. The strict reader for the
    format reports malformed lines with file and line number.
    """
    path = Path(path)
    fmt = detect_queries_format(path) if format == "auto" else format
    if fmt == "jsonl":
        return read_queries_jsonl(path)
    if fmt == "tsv":
        return read_tsv_queries(path)
    if fmt == "trec":
        return read_topics(path, field=field)
    raise ConfigError(f"unknown query format {format!r}; use 'auto' or one of {', '.join(QUERY_FORMATS)}")


def detect_qrels_format(path: str | Path) -> str:
    """``"trec"`` (``qid iter docno rel``, 4 columns) or ``"beir"`` (``query-id corpus-id
    score``, 3 columns, optional header), from the column count of the first line."""
    path = Path(path)
    first = _first_line(_head(path))
    columns = len(first.split("\t")) if "\t" in first else len(first.split())
    if columns == 4:
        return "trec"
    if columns == 3:
        return "beir"
    if not first:
        raise DataFormatError("empty qrels file", path)
    raise DataFormatError(f"cannot tell the qrels format from a first line with {columns} column(s): expected "
                          "TREC 'qid iter docno rel' (4 columns) or BEIR 'query-id corpus-id score' (3)", path, 1)


def read_judgments(path: str | Path, format: str = "auto") -> Qrels:
    """Read relevance judgments in TREC or BEIR form (``format="auto"`` detects it).

    Both forms are common for the same collections (trec_eval wants TREC, BEIR ships TSV);
    accepting either means a user never has to convert a file just to evaluate a run.
    """
    path = Path(path)
    fmt = detect_qrels_format(path) if format == "auto" else format
    if fmt == "trec":
        return read_qrels(path)
    if fmt == "beir":
        return read_beir_qrels(path)
    raise ConfigError(f"unknown qrels format {format!r}; use 'auto' or one of {', '.join(QRELS_FORMATS)}")


__all__ = ["QRELS_FORMATS", "QUERY_FORMATS", "detect_qrels_format", "detect_queries_format", "read_judgments",
           "read_queries"]
