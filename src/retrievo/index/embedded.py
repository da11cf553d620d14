"""What the vector and multi-vector indexes share: encoder output in immutable parts.

Both formats store what an encoder made of each document — one vector
(:mod:`retrievo.index.vectors`) or a matrix of token vectors
(:mod:`retrievo.index.multivectors`) — in immutable parts paired one to one with
document-store parts, and record the encoder's identity and dimension so that a query
from another model is refused instead of ranking nonsense. Everything else about their
life cycle is the same: checking the pairing, writing new parts, undoing a failed change,
publishing a generation (part entries, tombstones, document store), opening a snapshot,
saving, pickling, the identity hash, the model check, deleting and merging. It lives here
once, so a fix to one format cannot miss the other; each format says only what its parts
hold, through the class attributes and small hooks of :class:`EmbeddingIndex`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from retrievo.errors import ConfigError, CorruptIndexError, DimensionMismatchError, DuplicateIdError, \
    ModelMismatchError
from retrievo.index import lifecycle
from retrievo.index.atomic import fsync_dir, hash_array
from retrievo.index.base import DocumentNumbering, create_index_folder, load_tombstones, unit_entry
from retrievo.index.columns import Columns, flatten_meta
from retrievo.index.docstore import DOCS_FOLDER, DocPart, docstore_manifest, load_parts, merge_parts
from retrievo.types import Document


def new_doc_part(ids: Sequence[str], documents: Sequence[Document] | None,
                 metadata: Sequence[Mapping[str, Any]] | None = None) -> DocPart:
    """The document-store part of new ids under a fresh part name (which the format's own
    part takes too): their text when ``documents`` are given (same order as ``ids``),
    otherwise the ids and, when given, ``metadata`` as filterable columns."""
    ids_arr = np.empty(len(ids), dtype=object)
    ids_arr[:] = [str(i) for i in ids]
    if len(set(ids_arr.tolist())) != len(ids_arr):
        raise DuplicateIdError("document ids must be unique within a vector index")
    name = f"part-{uuid.uuid4().hex[:16]}"
    if documents is None:
        if metadata is not None and len(metadata) != len(ids_arr):
            raise DimensionMismatchError(f"{len(ids_arr)} ids but {len(metadata)} metadata records")
        columns = Columns.build([flatten_meta(m) for m in metadata]) if metadata is not None else None
        return DocPart(name, ids_arr, columns=columns)
    if len(documents) != len(ids_arr) or any(d.doc_id != i for d, i in zip(documents, ids_arr)):
        raise ConfigError("documents must be given in the same order as the ids")
    records = [json.dumps({"title": d.title, "text": d.text, "meta": dict(d.meta)}, ensure_ascii=False).encode()
               for d in documents]
    offsets = np.zeros(len(records) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in records], out=offsets[1:])
    columns = Columns.build([flatten_meta(d.meta) for d in documents])
    return DocPart(name, ids_arr, b"".join(records), offsets, columns=columns)


def _reopen(cls: type[EmbeddingIndex], path: str, mmap: bool) -> EmbeddingIndex:
    return cls.open(path, mmap=mmap)


def _from_state(cls: type[EmbeddingIndex], parts, lives, doc_parts, model, dim, model_spec, info,
                extras) -> EmbeddingIndex:
    return cls(parts, lives, doc_parts, model, dim, model_spec=model_spec, info=info, **extras)


class EmbeddingIndex(DocumentNumbering):
    """Parts of encoder output with ids (and optionally text), the model's identity and dimension.

    A format sets ``FORMAT`` and ``FORMAT_VERSION``, ``_PARTS_FOLDER`` (where its parts
    live) and ``_PART_TYPE`` (the part class: ``name``, ``n_docs``, ``dim``,
    ``content_hash()``, ``write(folder)`` and ``load(folder, mmap)``), the words its
    messages use (``_KIND``, ``_PART``, ``_ROWS``, ``_IDENTITY_PARTS``), and overrides the
    hooks where it keeps more than parts, tombstones and documents (its manifest fields,
    how it checks a loaded part, how it builds a merged part).

    Pickling: an on-disk index pickles as its path and unpickles by reopening it; an
    in-memory one pickles by value.
    """

    FORMAT: str
    FORMAT_VERSION: int
    _PARTS_FOLDER: str
    _PART_TYPE: Any
    _STORE_DEFAULT = False
    #: how messages name one part, and what it holds once per document
    _PART = "part"
    _ROWS = "rows"
    #: key of the parts' content hashes in :attr:`identity` (part of every published identity)
    _IDENTITY_PARTS = "parts"
    #: whether the manifest lists the tombstone files' sha256 under ``checksums`` (the
    #: vector format never did; its manifests stay as they were)
    _TOMBSTONE_CHECKSUMS = True

    def __init__(self, parts: Sequence[Any], lives: Sequence[np.ndarray | None], doc_parts: Sequence[DocPart],
                 model: str, dim: int, *, model_spec: str = "", path: Path | None = None, generation: int = 0,
                 info: dict[str, Any] | None = None):
        self.parts, self.lives, self.doc_parts = list(parts), list(lives), list(doc_parts)
        if len({len(per_part) for per_part in self._per_part()}) != 1:
            raise ValueError(f"{self._PART}s, live bitmaps and document parts must pair up")
        for p, d in zip(self.parts, self.doc_parts):
            if p.dim != dim:
                raise DimensionMismatchError(f"{self._PART} {p.name} has dimension {p.dim}, the index {dim}")
            if p.n_docs != d.n_docs:
                raise CorruptIndexError(f"{self._PART} {p.name} has {p.n_docs} {self._ROWS} but {d.n_docs} ids")
        self.model, self.model_spec, self.dim = model, model_spec, int(dim)
        self.path, self.generation = path, generation
        self.info = dict(info or {})
        self._cache: dict[str, Any] = {}
        self._mmap = True
        self.version = 0

    def _units(self) -> Sequence[Any]:
        return self.parts

    def _per_part(self) -> list[list[Any]]:
        """The lists that hold one item per part (a format keeping more per part adds them)."""
        return [self.parts, self.lives, self.doc_parts]

    @property
    def source(self) -> str | None:
        """Identity of the collection the vectors were made from (e.g. the lexical index
        whose documents were encoded), so a cache can tell when it is stale."""
        return self.info.get("source")

    @property
    def identity(self) -> str:
        """sha256 (hex) of what determines search results: model, dimension, the parts'
        contents, ids and tombstones (names and timestamps left out)."""
        def make():
            content = {"format": self.FORMAT, "format_version": self.FORMAT_VERSION, "model": self.model,
                       "dim": self.dim, self._IDENTITY_PARTS: [p.content_hash() for p in self.parts],
                       "docs": [d.content_hash() for d in self.doc_parts],
                       "deletes": [None if lv is None else self._live_digest(np.asarray(lv, dtype=bool))
                                   for lv in self.lives]}
            return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
        return self._cached("identity", make)

    @staticmethod
    def _live_digest(live: np.ndarray) -> str:
        """How :attr:`identity` hashes one live bitmap (the sha256 of its .npy file)."""
        return hash_array(live)

    # ------------------------------------------------------------------ checks
    def check_model(self, identity: str) -> None:
        """Raise :class:`ModelMismatchError` unless ``identity`` is the model the vectors
        were made with: another model's query vectors would rank nonsense silently."""
        if identity != self.model:
            where = self.path if self.path is not None else f"this {self._KIND}"
            raise ModelMismatchError(f"{where} was encoded with {self._model_named()}, not {identity}; "
                                     "search it with the same model and options, or build a new index")

    def _model_named(self) -> str:
        """How :meth:`check_model` names the model the index was encoded with."""
        return f"model {self.model} ({self.model_spec or 'spec not recorded'})"

    # ------------------------------------------------------------------ building
    def _write_new(self, txn: lifecycle.Transaction) -> None:
        self.path = txn.path
        self._write_parts(txn.path)
        self._publish(txn)

    def _write_parts(self, folder: Path) -> None:
        """Write every part not yet on disk under ``folder`` (and reopen it mapped)."""
        (folder / self._PARTS_FOLDER).mkdir(exist_ok=True)
        (folder / DOCS_FOLDER).mkdir(exist_ok=True)
        for i, (p, d) in enumerate(zip(self.parts, self.doc_parts)):
            if not (folder / self._PARTS_FOLDER / p.name).exists():
                self.parts[i] = p.write(folder / self._PARTS_FOLDER)
            if not (folder / DOCS_FOLDER / d.name).exists():
                self.doc_parts[i] = d.write(folder / DOCS_FOLDER)

    def _write_to_new_folder(self, path: Path) -> Self:
        """Write this index as a new index at ``path`` (a new or empty folder); returns it
        opened from there."""
        if path.exists() and any(path.iterdir()):
            raise FileExistsError(f"{path} exists and is not empty; choose a new folder")
        create_index_folder(path, self._write_new)
        return type(self).open(path)

    def _saved_state(self) -> dict[str, Any]:
        """Copies of every attribute a change may modify, which :meth:`_restored_on_failure`
        puts back."""
        return {"parts": list(self.parts), "lives": list(self.lives), "doc_parts": list(self.doc_parts),
                "info": dict(self.info)}

    @contextlib.contextmanager
    def _restored_on_failure(self) -> Iterator[None]:
        saved = self._saved_state()
        try:
            yield
        except BaseException:
            for name, value in saved.items():
                setattr(self, name, value)
            self._invalidate()
            raise

    # ------------------------------------------------------------------ changes
    def delete(self, doc_ids: Iterable[str], *, missing_ok: bool = False, source: str | None = None) -> int:
        """Mark documents deleted (tombstones); returns how many were deleted."""
        return self._delete_published(doc_ids, missing_ok, source)

    def merge(self) -> Self:
        """Compact every part into one without the deleted documents."""
        if len(self.parts) <= 1 and self.live is None:
            return self
        live = self.live
        keep = np.flatnonzero(live) if live is not None else np.arange(self.total_docs)
        name = f"part-{uuid.uuid4().hex[:16]}"

        def apply(folder: Path | None) -> None:
            part = self._merged_part(name, keep)
            if folder is not None:
                (folder / DOCS_FOLDER).mkdir(exist_ok=True)
            docs = merge_parts(self.doc_parts, self.lives, name, None if folder is None else folder / DOCS_FOLDER)
            self.parts, self.doc_parts, self.lives = [part], [docs], [None]
            self._parts_merged()
            self._invalidate()

        self._change(apply)
        return self

    def _merged_part(self, name: str, keep: np.ndarray) -> Any:
        """One part named ``name`` holding the documents of global numbers ``keep``."""
        raise NotImplementedError

    def _parts_merged(self) -> None:
        """Called once :meth:`merge` has replaced the parts (a format keeping more per
        part rebuilds it here)."""

    def save(self, path: str | Path) -> Self:
        """Write this index to ``path`` (a new or empty folder); returns it opened from there."""
        copy = type(self)(list(self.parts), [None if lv is None else np.array(lv) for lv in self.lives],
                          list(self.doc_parts), self.model, self.dim, model_spec=self.model_spec,
                          info=self._portable_info(), **self._constructor_extras())
        return copy._write_to_new_folder(Path(path))

    def _portable_info(self) -> dict[str, Any]:
        """``info`` without what belongs to one generation on disk (its manifest)."""
        return {k: v for k, v in self.info.items() if k != "manifest"}

    def _constructor_extras(self) -> dict[str, Any]:
        """Keyword arguments, beyond the common ones, that rebuild this index (copies)."""
        return {}

    # ------------------------------------------------------------------ persistence
    def _publish(self, txn: lifecycle.Transaction) -> None:
        path, gen = txn.path, txn.generation
        (path / "deletes").mkdir(exist_ok=True)
        files: list[str] = []
        checksums: dict[str, str] = {}
        entries = []
        for i, (part, docs, lv) in enumerate(zip(self.parts, self.doc_parts, self.lives)):
            entries.append(unit_entry(path, gen, self._PARTS_FOLDER, part, docs, lv, files, checksums,
                                      lambda entry, i=i: self._record_part(i, entry)))
        fsync_dir(path / "deletes")
        docstore_entry, doc_files = docstore_manifest(self.doc_parts, self.store)
        payload = {"model": self.model, "model_spec": self.model_spec, "dim": self.dim, "store": self.store,
                   "source": self.source, "parts": entries, "documents": len(self), **self._payload_fields()}
        manifest = txn.publish(self.FORMAT, self.FORMAT_VERSION, payload, files + doc_files, identity=self.identity,
                               docstore=docstore_entry, checksums=checksums if self._TOMBSTONE_CHECKSUMS else None)
        self.path, self.generation = path, gen
        self.info["manifest"] = manifest

    def _record_part(self, i: int, entry: dict[str, Any]) -> list[str]:
        """Add the format's own fields of part ``i`` to its manifest ``entry``; returns the
        further files (relative paths) the part uses."""
        return []

    def _payload_fields(self) -> dict[str, Any]:
        """The format's own fields of the manifest payload."""
        return {}

    @classmethod
    def open(cls, path: str | Path, mmap: bool = True) -> Self:
        """Open the current generation (parts memory-mapped)."""
        return lifecycle.open_snapshot(Path(path), lambda snapshot: cls.from_snapshot(snapshot, mmap=mmap))

    @classmethod
    def from_snapshot(cls, snapshot: lifecycle.Snapshot, mmap: bool = True) -> Self:
        snapshot.require(cls.FORMAT, cls.FORMAT_VERSION)
        path = snapshot.path
        try:
            payload = snapshot.payload
            parts, lives = [], []
            for entry in payload["parts"]:
                part = cls._PART_TYPE.load(path / cls._PARTS_FOLDER / entry["name"], mmap)
                cls._check_part(path, part, entry, payload)
                parts.append(part)
                lives.append(load_tombstones(path, entry, part.n_docs) if entry.get("deletes") else None)
            extras = cls._opened_extras(path, payload, parts)
            doc_parts = load_parts(path, snapshot.docstore, mmap)
            if [d.name for d in doc_parts] != [e["docs"] for e in payload["parts"]]:
                raise CorruptIndexError(f"{path}: the document store does not match the {cls._PART}s")
            info = {"store": payload.get("store", False), "source": payload.get("source"),
                    **cls._info_from(payload), "manifest": dict(snapshot.manifest)}
            index = cls(parts, lives, doc_parts, payload["model"], int(payload["dim"]),
                        model_spec=payload.get("model_spec", ""), path=path, generation=snapshot.generation,
                        info=info, **extras)
        except (CorruptIndexError, DimensionMismatchError):
            raise
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise CorruptIndexError(f"cannot read {cls._KIND} {path}: {exc}; rebuild it") from exc
        index._mmap = mmap
        if snapshot.identity:
            index._cache["identity"] = snapshot.identity
        return index

    @classmethod
    def _check_part(cls, path: Path, part: Any, entry: Mapping[str, Any], payload: Mapping[str, Any]) -> None:
        """Raise :class:`CorruptIndexError` unless a loaded part is the one its manifest
        ``entry`` records."""
        if part.n_docs != entry["n_docs"] or part.content_hash() != entry["sha256"]:
            raise CorruptIndexError(f"{path}: {cls._PART} {entry['name']} does not match the manifest")

    @classmethod
    def _opened_extras(cls, path: Path, payload: Mapping[str, Any], parts: Sequence[Any]) -> dict[str, Any]:
        """Keyword arguments, beyond the common ones, of the index a snapshot opens to."""
        return {}

    @classmethod
    def _info_from(cls, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The format's own ``info`` fields, read from a manifest payload."""
        return {}

    # ------------------------------------------------------------------ presentation
    def describe(self) -> dict[str, Any]:
        return {"path": None if self.path is None else str(self.path), "format": self.FORMAT,
                "format_version": self.FORMAT_VERSION, "generation": self.generation, "documents": len(self),
                "deleted": self.total_docs - len(self), **self._described_shape(), "model": self.model,
                "model_spec": self.model_spec, "parts": len(self.parts), "store": self.store,
                "size_on_disk_bytes": self.size_on_disk(), "identity": self.identity}

    def _described_shape(self) -> dict[str, Any]:
        """What :meth:`describe` says about the vectors' shape."""
        return {"dim": self.dim}

    def __reduce__(self):
        if self.path is not None:
            return _reopen, (type(self), str(self.path), self._mmap)
        return _from_state, (type(self), self.parts, self.lives, self.doc_parts, self.model, self.dim,
                             self.model_spec, self._portable_info(), self._constructor_extras())


__all__ = ["EmbeddingIndex", "new_doc_part"]
