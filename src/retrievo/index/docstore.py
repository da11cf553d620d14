"""Stored documents (ids, title, text, meta), shared by every index format.

Documents are kept apart from what a format searches (postings, vectors), so every
format gets the same store, rerankers and readers get text from any index, and the
search structures stay small. The store is a list of immutable *parts*, one per unit of
the format that owns it (a lexical segment, a block of vectors): part ``i`` holds the
documents of unit ``i`` in the same order, so one global document number addresses both,
and the format's live bitmaps (tombstones) apply to the store unchanged. On disk::

    docs/part-<id>/ids.txt        one external id per line
    docs/part-<id>/store.jsonl    one JSON record per document ({"title", "text", "meta"}); absent without text
    docs/part-<id>/offsets.npy    int64 byte offsets of the records (n_docs + 1); absent without text
    docs/part-<id>/meta.json      document count, file sizes and sha256 of each file

Parts are named in the manifest's ``docstore`` section and their folders in its
``files``, so the life cycle publishes and collects them like any other file. ``add``
writes new parts, merging compacts parts into one without the deleted documents.

An index built with ``store=False`` keeps ids only: ids, membership and counts work, and
asking for text raises :class:`~retrievo.errors.ConfigError` rather than handing back
empty documents, because a reranker or reader given empty text would silently rank or
answer from nothing.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrievo.errors import ConfigError, CorruptIndexError, UnknownIdError
from retrievo.index.atomic import (HashingWriter, atomic_dir, check_file_sizes, hash_array, hash_bytes, save_array,
                                   save_bytes)
from retrievo.index.columns import COLUMNS_FILE, Columns
from retrievo.types import Document

try:
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson is a dependency, this is a fallback
    _loads = json.loads

DOCS_FOLDER = "docs"
_IDS, _BLOB, _OFFSETS = "ids.txt", "store.jsonl", "offsets.npy"


def _combined_hash(file_hashes: Mapping[str, str]) -> str:
    """One hash over named file hashes; names are fixed, so equal content gives equal hashes."""
    text = "".join(f"{name}:{digest}\n" for name, digest in sorted(file_hashes.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def _ids_bytes(ids: np.ndarray) -> bytes:
    return "\n".join(ids.tolist()).encode("utf-8")


class DocPart:
    """The stored documents of one unit of an index, immutable once built."""

    def __init__(self, name: str, ids: np.ndarray, blob: bytes | mmap.mmap | None = None,
                 offsets: np.ndarray | None = None, file_hashes: Mapping[str, str] | None = None,
                 columns: Columns | None = None):
        if (blob is None) != (offsets is None):
            raise ValueError("a document part has both a text blob and its offsets, or neither")
        self.name, self.ids, self.blob, self.offsets = name, ids, blob, offsets
        # metadata columns for filters (see retrievo.index.columns); None: no metadata
        self.columns = columns if columns else None
        self._file_hashes = dict(file_hashes) if file_hashes else None

    @property
    def n_docs(self) -> int:
        return len(self.ids)

    @property
    def has_text(self) -> bool:
        return self.offsets is not None

    def file_hashes(self) -> dict[str, str]:
        """sha256 of each file this part is (or would be) written as."""
        if self._file_hashes is None:
            hashes = {_IDS: hash_bytes(_ids_bytes(self.ids))}
            if self.has_text:
                hashes[_BLOB] = hash_bytes(bytes(self.blob))
                hashes[_OFFSETS] = hash_array(self.offsets)
            if self.columns is not None:
                hashes.update(self.columns.file_hashes())
            self._file_hashes = hashes
        return dict(self._file_hashes)

    def content_hash(self) -> str:
        return _combined_hash(self.file_hashes())

    def document(self, local: int) -> Document:
        a, b = int(self.offsets[local]), int(self.offsets[local + 1])
        rec = _loads(self.blob[a:b])
        return Document(self.ids[local], rec.get("text", ""), rec.get("title", ""), rec.get("meta") or {})

    # persistence ------------------------------------------------------------------------
    def write(self, folder: Path) -> "DocPart":
        """Write into ``folder/<name>`` atomically; returns the part loaded from there."""
        with atomic_dir(folder / self.name) as tmp:
            hashes = {_IDS: save_bytes(tmp / _IDS, _ids_bytes(self.ids))}
            if self.has_text:
                hashes[_BLOB] = save_bytes(tmp / _BLOB, bytes(self.blob))
                hashes[_OFFSETS] = save_array(tmp / _OFFSETS, self.offsets)
            if self.columns is not None:
                hashes.update(self.columns.write(tmp))
            _write_meta(tmp, self.name, self.n_docs, hashes)
        return DocPart.load(folder / self.name)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if isinstance(self.blob, mmap.mmap):  # a mapped file travels as its bytes
            state["blob"] = bytes(self.blob)
        if isinstance(self.offsets, np.memmap):
            state["offsets"] = np.array(self.offsets)
        return state

    @classmethod
    def load(cls, folder: Path, mmap_arrays: bool = True) -> "DocPart":
        """Open a written part; the text is memory-mapped (read into memory with
        ``mmap_arrays=False``), so opening costs the ids only."""
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            check_file_sizes(folder, meta["files"])
            # bytes, not read_text: universal newlines would split an id at a "\r"; hashed
            # on every open because a swapped id silently changes which document ranks
            raw_ids = (folder / _IDS).read_bytes()
            if hash_bytes(raw_ids) != meta["sha256"][_IDS]:
                raise CorruptIndexError(f"{folder / _IDS} does not match its sha256: document ids changed; "
                                        "the index is damaged, rebuild it")
            text = raw_ids.decode("utf-8")
            blob = offsets = None
            if _OFFSETS in meta["files"]:
                offsets = np.load(folder / _OFFSETS, mmap_mode="r" if mmap_arrays else None, allow_pickle=False)
                with open(folder / _BLOB, "rb") as fh:
                    if not meta["files"][_BLOB]:
                        blob = b""
                    elif mmap_arrays:
                        blob = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
                    else:
                        blob = fh.read()
            ids = np.empty(meta["n_docs"], dtype=object)
            ids[:] = text.split("\n") if meta["n_docs"] else []
            columns = Columns.load(folder, meta["n_docs"], mmap_arrays) if COLUMNS_FILE in meta["files"] else None
        except CorruptIndexError:
            raise
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise CorruptIndexError(f"cannot read document store part {folder}: {exc}; "
                                    "the index is damaged, rebuild it") from exc
        part = cls(meta["name"], ids, blob, offsets, meta["sha256"], columns)
        from retrievo.index.verify import part_problems

        problems = part_problems(part, str(folder))
        if problems:
            raise CorruptIndexError("; ".join(problems) + "; the index is damaged, rebuild it")
        return part


def _write_meta(folder: Path, name: str, n_docs: int, hashes: Mapping[str, str]) -> None:
    sizes = {fname: (folder / fname).stat().st_size for fname in sorted(hashes)}
    meta = {"name": name, "n_docs": n_docs, "files": sizes, "sha256": dict(hashes)}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


def _live_runs(live: np.ndarray | None, n_docs: int) -> list[tuple[int, int]]:
    """Maximal ``[start, end)`` runs of live documents (few for typical deletions, so
    compaction copies large byte ranges instead of one record at a time)."""
    if live is None:
        return [(0, n_docs)] if n_docs else []
    edges = np.diff(np.concatenate([[0], np.asarray(live, dtype=np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def merge_parts(parts: Sequence[DocPart], lives: Sequence[np.ndarray | None], name: str,
                folder: Path | None = None) -> DocPart:
    """One part holding the live documents of ``parts`` in order (deleted ones dropped).

    With ``folder`` the part is written there, streaming the text from the (memory-mapped)
    parts to the file, so compaction does not hold the collection's text in memory.
    """
    text = bool(parts) and all(p.has_text for p in parts)
    runs = [(p, a, b) for p, lv in zip(parts, lives) for a, b in _live_runs(lv, p.n_docs)]
    ids = np.concatenate([p.ids[a:b] for p, a, b in runs]).astype(object) if runs else np.empty(0, object)
    offsets = None
    if text:
        lengths = [np.diff(np.asarray(p.offsets[a:b + 1], dtype=np.int64)) for p, a, b in runs]
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        if lengths:
            np.cumsum(np.concatenate(lengths), out=offsets[1:])

    def chunks() -> Iterator[bytes]:
        for p, a, b in runs:
            yield p.blob[int(p.offsets[a]):int(p.offsets[b])]

    columns = Columns.concatenate([(p.columns, a, b) for p, a, b in runs]) \
        if any(p.columns is not None for p in parts) else None
    if folder is None:
        return DocPart(name, ids, b"".join(chunks()) if text else None, offsets, columns=columns)
    with atomic_dir(folder / name) as tmp:
        hashes = {_IDS: save_bytes(tmp / _IDS, _ids_bytes(ids))}
        if columns:
            hashes.update(columns.write(tmp))
        if text:
            with open(tmp / _BLOB, "wb") as fh:
                sink = HashingWriter(fh)
                for chunk in chunks():
                    sink.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            hashes[_BLOB] = sink.sha.hexdigest()
            hashes[_OFFSETS] = save_array(tmp / _OFFSETS, offsets)
        _write_meta(tmp, name, len(ids), hashes)
    return DocPart.load(folder / name)


def docstore_manifest(parts: Sequence[DocPart], has_text: bool) -> tuple[dict[str, Any], list[str]]:
    """The manifest's ``docstore`` section and the folders it adds to ``files``."""
    entry = {"text": bool(has_text),
             "parts": [{"name": p.name, "n_docs": p.n_docs, "sha256": p.content_hash()} for p in parts]}
    return entry, [f"{DOCS_FOLDER}/{p.name}" for p in parts]


def load_parts(path: Path, entry: Mapping[str, Any], mmap_arrays: bool = True) -> list[DocPart]:
    """Open the parts a manifest's ``docstore`` section names (all at once: a snapshot
    must hold every file it reads before a later writer may collect them)."""
    parts = []
    for item in entry["parts"]:
        part = DocPart.load(path / DOCS_FOLDER / item["name"], mmap_arrays)
        if part.n_docs != item["n_docs"]:
            raise CorruptIndexError(f"{path}: document part {item['name']} has {part.n_docs} documents, "
                                    f"the manifest says {item['n_docs']}")
        if item.get("sha256") is not None and part.content_hash() != item["sha256"]:
            raise CorruptIndexError(f"{path}: document part {item['name']}'s meta.json does not match the "
                                    "manifest's hash; the index is damaged, rebuild it")
        parts.append(part)
    return parts


class DocStore:
    """The documents of one index snapshot: id lookups and stored text.

    Built once per snapshot (and again only when the index object itself changes): the
    id map is made on first lookup and kept, and the parts keep their memory maps, so
    fetching the texts of a ranked list costs only the records read.
    ``lives`` are the owning index's live bitmaps: deleted documents are not found.
    """

    def __init__(self, parts: Sequence[DocPart], lives: Sequence[np.ndarray | None] | None = None, *,
                 has_text: bool = True, where: str = "this index"):
        self.parts = list(parts)
        self.lives = list(lives) if lives is not None else [None] * len(self.parts)
        if len(self.lives) != len(self.parts):
            raise ValueError(f"{len(self.parts)} document parts but {len(self.lives)} live bitmaps")
        self.has_text = has_text and all(p.has_text for p in self.parts)
        self.where = where
        self.bases = np.concatenate([[0], np.cumsum([p.n_docs for p in self.parts], dtype=np.int64)]).astype(np.int64)
        self._ids: np.ndarray | None = None
        self._id_map: dict[str, int] | None = None

    @property
    def ids(self) -> np.ndarray:
        """External id of every global document number (deleted ones included)."""
        if self._ids is None:
            self._ids = (np.concatenate([p.ids for p in self.parts]).astype(object) if self.parts
                         else np.empty(0, object))
        return self._ids

    def id_map(self) -> dict[str, int]:
        """Live id -> global document number, built on first use and shared by every
        lookup of this snapshot (callers must not modify it)."""
        if self._id_map is None:
            ids = self.ids.tolist()
            if all(lv is None for lv in self.lives):
                self._id_map = dict(zip(ids, range(len(ids))))
            else:
                live = np.concatenate([np.ones(p.n_docs, bool) if lv is None else np.asarray(lv, bool)
                                       for p, lv in zip(self.parts, self.lives)])
                self._id_map = {ids[i]: i for i in np.flatnonzero(live).tolist()}
        return self._id_map

    def __len__(self) -> int:
        return len(self.id_map())

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self.id_map()

    def locate(self, doc_id: str) -> int:
        """Global document number of a live id."""
        try:
            return self.id_map()[doc_id]
        except KeyError:
            raise UnknownIdError(f"document id {doc_id!r} is not in the index") from None

    def _require_text(self) -> None:
        if not self.has_text:
            raise ConfigError(f"{self.where} was built without a document store (store=False / --no-store): "
                              "ids work but document text is unavailable; rebuild it with store=True "
                              "to rerank, read or show snippets")

    def document_at(self, number: int) -> Document:
        self._require_text()
        part = int(np.searchsorted(self.bases, number, side="right") - 1)
        return self.parts[part].document(number - int(self.bases[part]))

    def get(self, doc_id: str) -> Document:
        self._require_text()
        return self.document_at(self.locate(doc_id))

    def get_many(self, doc_ids: Iterable[str]) -> list[Document]:
        """The documents of ``doc_ids``, in the same order (repeats allowed).

        Raises :class:`UnknownIdError` naming the ids that are missing (all of them are
        looked up first, so one call reports every missing id, not the first).
        """
        self._require_text()
        id_map = self.id_map()
        doc_ids = list(doc_ids)
        missing = [d for d in doc_ids if d not in id_map]
        if missing:
            shown = ", ".join(repr(d) for d in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise UnknownIdError(f"{len(missing)} document id(s) are not in the index: {shown}{more}")
        numbers = np.fromiter((id_map[d] for d in doc_ids), dtype=np.int64, count=len(doc_ids))
        which = np.searchsorted(self.bases, numbers, side="right") - 1
        locals_ = numbers - self.bases[which]
        return [self.parts[p].document(i) for p, i in zip(which.tolist(), locals_.tolist())]

    def iter_documents(self) -> Iterator[Document]:
        """Every live document, in index order."""
        self._require_text()
        return self._iter_documents()

    def _iter_documents(self) -> Iterator[Document]:
        for part, lv in zip(self.parts, self.lives):
            for local in range(part.n_docs):
                if lv is None or lv[local]:
                    yield part.document(local)


__all__ = ["DOCS_FOLDER", "DocPart", "DocStore", "docstore_manifest", "load_parts", "merge_parts"]
