"""Metadata columns: documents' scalar metadata stored column-wise, per document-store part.

Filters (:mod:`retrievo.index.filters`) need one value per document and field, read
for every document of the collection at once, so the scalar values of each document's
``meta`` are kept as columns beside the stored documents of the same part (and written
in the same atomic folder, so a segment, its part and its columns are published — and
merged, and tombstoned — together). Every index format shares the document store, so every
format gets the same columns and the same filters.

What becomes a column: every top-level metadata value that is a string, a number or a
boolean; nested dicts are flattened with dots (BEIR's ``{"metadata": {"year": 2015}}``
gives ``metadata.year``). Lists and ``None`` are not columns (a document without a value
is *missing* for that field). One field may hold values of several kinds across documents
(``2015`` in one, ``"2015"`` in another): each kind is stored as its own column, and a
filter's literal picks the one it compares with, so nothing is coerced silently.

Storage per part (files of the part folder, hashed into its ``meta.json``)::

    columns.json     {"fields": {name: {kind: file}}, "values": {file: [keyword dictionary]}}
    col-<i>.npy      number: float64 (NaN = missing); bool: int8 (-1 missing, 0, 1);
                     keyword: int32 codes into the part's sorted dictionary (-1 missing)

Dates are keyword values in ISO 8601 form (``2015-06-01``, ``2015-06-01T12:00:00``); a
field is a *date* field when all its values parse as dates, and range filters on it
compare the parsed dates (see :mod:`retrievo.index.filters`). Keeping them as text means
no column changes kind when a later part brings a value that is not a date.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrievo.errors import CorruptIndexError
from retrievo.index.atomic import hash_array, hash_bytes, save_array, save_bytes

COLUMNS_FILE = "columns.json"
KINDS = ("keyword", "number", "bool")


def flatten_meta(meta: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """The scalar values of ``meta`` by (dotted) field name; lists and None are skipped."""
    out: dict[str, Any] = {}
    if not meta:
        return out
    for key, value in meta.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_meta(value, name + "."))
        elif isinstance(value, (bool, str)) or (isinstance(value, (int, float)) and np.isfinite(float(value))):
            out[name] = value
    return out


def kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "keyword"
    return "number"


class Columns:
    """The metadata columns of one document-store part (immutable once built)."""

    def __init__(self, n_docs: int, fields: Mapping[str, Mapping[str, np.ndarray]],
                 values: Mapping[tuple[str, str], Sequence[str]] | None = None):
        # fields[name][kind] = array of n_docs; values[(name, "keyword")] = sorted dictionary
        self.n_docs = n_docs
        self.fields = {name: dict(kinds) for name, kinds in fields.items()}
        self.values = {key: list(v) for key, v in (values or {}).items()}

    def __bool__(self) -> bool:
        return bool(self.fields)

    # building -----------------------------------------------------------------------------
    @classmethod
    def build(cls, flat_metas: Sequence[Mapping[str, Any] | None]) -> "Columns":
        """Columns of documents given their flattened metadata (see :func:`flatten_meta`)."""
        n = len(flat_metas)
        raw: dict[tuple[str, str], dict[int, Any]] = {}
        for i, meta in enumerate(flat_metas):
            for name, value in (meta or {}).items():
                raw.setdefault((name, kind_of(value)), {})[i] = value
        fields: dict[str, dict[str, np.ndarray]] = {}
        values: dict[tuple[str, str], list[str]] = {}
        for (name, kind), by_doc in sorted(raw.items()):
            rows = np.fromiter(by_doc.keys(), dtype=np.int64, count=len(by_doc))
            if kind == "number":
                arr = np.full(n, np.nan, dtype=np.float64)
                arr[rows] = np.fromiter((float(v) for v in by_doc.values()), dtype=np.float64, count=len(rows))
            elif kind == "bool":
                arr = np.full(n, -1, dtype=np.int8)
                arr[rows] = np.fromiter(by_doc.values(), dtype=np.int8, count=len(rows))
            else:
                dictionary = sorted(set(by_doc.values()))
                code = {v: c for c, v in enumerate(dictionary)}
                arr = np.full(n, -1, dtype=np.int32)
                arr[rows] = np.fromiter((code[v] for v in by_doc.values()), dtype=np.int32, count=len(rows))
                values[(name, kind)] = dictionary
            fields.setdefault(name, {})[kind] = arr
        return cls(n, fields, values)

    @classmethod
    def concatenate(cls, pieces: Sequence[tuple["Columns | None", int, int]]) -> "Columns":
        """Rows ``[a, b)`` of each piece's columns, in order (compaction: the live runs of
        the merged parts). Keyword codes are mapped onto the union of the dictionaries."""
        n = sum(b - a for _, a, b in pieces)
        keys = sorted({(name, kind) for cols, _, _ in pieces if cols is not None
                       for name, kinds in cols.fields.items() for kind in kinds})
        fields: dict[str, dict[str, np.ndarray]] = {}
        values: dict[tuple[str, str], list[str]] = {}
        for name, kind in keys:
            if kind == "keyword":
                dictionary = sorted({v for cols, _, _ in pieces if cols is not None
                                     for v in cols.values.get((name, kind), ())})
                values[(name, kind)] = dictionary
            chunks = []
            for cols, a, b in pieces:
                col = None if cols is None else cols.fields.get(name, {}).get(kind)
                if col is None:
                    fill = {"number": np.nan, "bool": -1, "keyword": -1}[kind]
                    dtype = {"number": np.float64, "bool": np.int8, "keyword": np.int32}[kind]
                    chunks.append(np.full(b - a, fill, dtype=dtype))
                elif kind == "keyword":
                    remap = np.searchsorted(dictionary, cols.values[(name, kind)]).astype(np.int32) \
                        if cols.values[(name, kind)] else np.empty(0, np.int32)
                    codes = np.asarray(col[a:b])
                    chunks.append(np.where(codes >= 0, remap[np.maximum(codes, 0)] if len(remap) else -1,
                                           -1).astype(np.int32))
                else:
                    chunks.append(np.asarray(col[a:b]))
            fields.setdefault(name, {})[kind] = np.concatenate(chunks) if chunks else np.empty(0)
        return cls(n, fields, values)

    # persistence --------------------------------------------------------------------------
    def _layout(self) -> tuple[bytes, list[tuple[str, np.ndarray]]]:
        files, spec, dictionaries = [], {}, {}
        for name in sorted(self.fields):
            spec[name] = {}
            for kind in sorted(self.fields[name]):
                fname = f"col-{len(files)}.npy"
                files.append((fname, np.ascontiguousarray(self.fields[name][kind])))
                spec[name][kind] = fname
                if kind == "keyword":
                    dictionaries[fname] = self.values[(name, kind)]
        body = json.dumps({"n_docs": self.n_docs, "fields": spec, "values": dictionaries}, sort_keys=True,
                          ensure_ascii=False).encode("utf-8")
        return body, files

    def file_hashes(self) -> dict[str, str]:
        """sha256 of each file :meth:`write` writes (empty when there is no column)."""
        if not self:
            return {}
        body, files = self._layout()
        return {COLUMNS_FILE: hash_bytes(body), **{f: hash_array(a) for f, a in files}}

    def write(self, folder: Path) -> dict[str, str]:
        """Write the column files into ``folder`` (a part folder being written
        atomically); returns their sha256. Nothing is written without columns."""
        if not self:
            return {}
        body, files = self._layout()
        hashes = {COLUMNS_FILE: save_bytes(folder / COLUMNS_FILE, body)}
        for fname, arr in files:
            hashes[fname] = save_array(folder / fname, arr)
        return hashes

    @classmethod
    def load(cls, folder: Path, n_docs: int, mmap_arrays: bool = True) -> "Columns | None":
        """The columns of a part folder, or None when it has none."""
        path = folder / COLUMNS_FILE
        if not path.exists():
            return None
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
            fields: dict[str, dict[str, np.ndarray]] = {}
            values: dict[tuple[str, str], list[str]] = {}
            for name, kinds in spec["fields"].items():
                for kind, fname in kinds.items():
                    if kind not in KINDS:
                        raise ValueError(f"unknown column kind {kind!r}")
                    arr = np.load(folder / fname, mmap_mode="r" if mmap_arrays else None, allow_pickle=False)
                    if arr.shape != (n_docs,):
                        raise ValueError(f"column {name!r} ({kind}) holds {arr.shape} values for {n_docs} documents")
                    fields.setdefault(name, {})[kind] = arr
                    if kind == "keyword":
                        values[(name, kind)] = list(spec["values"][fname])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptIndexError(f"cannot read the metadata columns of {folder}: {exc}; "
                                    "the index is damaged, rebuild it") from exc
        return cls(n_docs, fields, values)


def field_kinds(columns: Iterable["Columns | None"]) -> dict[str, set[str]]:
    """Every field name of the given parts' columns with the kinds it is stored as."""
    out: dict[str, set[str]] = {}
    for cols in columns:
        if cols is not None:
            for name, kinds in cols.fields.items():
                out.setdefault(name, set()).update(kinds)
    return out


__all__ = ["COLUMNS_FILE", "Columns", "field_kinds", "flatten_meta", "kind_of"]
