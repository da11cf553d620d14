"""Document collections to and from pandas DataFrames and Arrow tables.

pandas and pyarrow are optional extras (``pip install 'retrievo[pandas]'``), imported only
here and only when called. Column names follow PyTerrier (``docno``, ``title``, ``text``)
so frames move between the two tools unchanged; ``meta`` keys become extra columns.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from retrievo.errors import MissingExtraError, MissingFieldError
from retrievo.types import Document

CORE_COLUMNS = ("docno", "title", "text")


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{module} is not installed; install it with: "
                                "pip install 'retrievo[pandas]'") from None


def _columns(documents: Iterable[Document]) -> dict[str, list[Any]]:
    """Column lists: docno/title/text plus one per meta key (``None`` where a document lacks
    it); a meta key that clashes with a core column is stored as ``meta.<key>``."""
    columns: dict[str, list[Any]] = {name: [] for name in CORE_COLUMNS}
    for n, doc in enumerate(documents):
        columns["docno"].append(doc.doc_id)
        columns["title"].append(doc.title)
        columns["text"].append(doc.text)
        for key, value in doc.meta.items():
            name = f"meta.{key}" if key in CORE_COLUMNS else str(key)
            columns.setdefault(name, [None] * n).append(value)
        for values in columns.values():
            if len(values) == n:
                values.append(None)
    return columns


def _is_missing(value: Any) -> bool:
    """None, NaN, or pandas' NA/NaT markers (checked by type name: pandas stays optional)."""
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return True
    return isinstance(value, float) and math.isnan(value)


def _check_columns(columns: list[str], wanted: Iterable[str | None], source: str) -> None:
    for name in wanted:
        if name is not None and name not in columns:
            raise MissingFieldError(f"{source} has no column {name!r}; columns are {', '.join(columns)}")


def _documents_from_rows(rows: Iterable[Mapping[str, Any]], id: str, text: str, title: str | None,
                         source: str) -> Iterator[Document]:
    used = {id, text, title}
    for n, row in enumerate(rows):
        doc_id = row[id]
        if _is_missing(doc_id) or (isinstance(doc_id, str) and not doc_id.strip()):
            raise MissingFieldError(f"{source} row {n} has no document id in column {id!r}")
        body = row[text]
        head = row[title] if title is not None else ""
        meta = {str(k): v for k, v in row.items() if k not in used and not _is_missing(v)}
        yield Document(str(doc_id), "" if _is_missing(body) else str(body),
                       "" if _is_missing(head) else str(head), MappingProxyType(meta))


def documents_to_pandas(documents: Iterable[Document]):
    """A DataFrame with columns docno, title, text and one per meta key."""
    pd = _require("pandas")
    return pd.DataFrame(_columns(documents))


def documents_from_pandas(frame, id: str = "docno", text: str = "text",
                          title: str | None = None) -> Iterator[Document]:
    """Stream :class:`Document` objects from a DataFrame; other columns go to ``meta``.

    ``title=None`` uses a ``title`` column when the frame has one (so
    :func:`documents_to_pandas` output reads back unchanged). Returns a generator so a large frame is not copied into a second, object-heavy form.
    """
    columns = [str(c) for c in frame.columns]
    title = title if title is not None or "title" not in columns else "title"
    _check_columns(columns, (id, text, title), "DataFrame")
    rows = (dict(zip(columns, values)) for values in frame.itertuples(index=False, name=None))
    return _documents_from_rows(rows, id, text, title, "DataFrame")


def documents_to_arrow(documents: Iterable[Document]):
    """A pyarrow Table with columns docno, title, text and one per meta key."""
    pa = _require("pyarrow")
    return pa.table(_columns(documents))


def documents_from_arrow(table, id: str = "docno", text: str = "text",
                         title: str | None = None) -> Iterator[Document]:
    """Stream :class:`Document` objects from a pyarrow Table, one record batch at a time
    (``title=None``: the ``title`` column if present)."""
    if title is None and "title" in table.column_names:
        title = "title"
    _check_columns(list(table.column_names), (id, text, title), "Arrow table")

    def rows() -> Iterator[dict[str, Any]]:
        for batch in table.to_batches():
            yield from batch.to_pylist()

    return _documents_from_rows(rows(), id, text, title, "Arrow table")


__all__ = ["documents_from_arrow", "documents_from_pandas", "documents_to_arrow", "documents_to_pandas"]
