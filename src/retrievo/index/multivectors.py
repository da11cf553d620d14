"""The multi-vector index: token vectors of late-interaction models on the shared life cycle.

Layout of an index folder (generations and publishing: :mod:`retrievo.index.lifecycle`;
ids and text: :mod:`retrievo.index.docstore`)::

    CURRENT, gen-*.json                 as every format; payload: model, dim, dtype, parts
    mvectors/part-<id>/tokens.npy       ``[tokens, dim]`` token matrix of one part (memory-mapped)
    mvectors/part-<id>/offsets.npy      int64 ``[n + 1]``: document ``i`` is rows ``offsets[i]:offsets[i+1]``
    mvectors/part-<id>/meta.json        counts, file sizes and sha256 (so ``retrievo check`` verifies them)
    docs/part-<id>/                     ids (and text) of the same documents, same order
    deletes/del-<gen>-<part>.npy        tombstones

Why one flat matrix plus offsets rather than one array per document or a padded
``[docs, max tokens, dim]`` tensor: documents have very different token counts, padding
would waste most of the space, and a flat matrix is one memory map that MaxSim reads in
long sequential runs (exhaustive search streams it block by block; reranking gathers the
candidates' row ranges). Tokens are stored as float16 by default (half the bytes; MaxSim
computes in float32), ``dtype="float32"`` keeps them exact.

Parts are immutable, as the other formats' units: ``add`` writes a new part, ``delete``
writes tombstones, ``merge`` compacts into one part. The manifest records the encoder's
identity, and every consumer checks it (:meth:`MultiVectorIndex.check_model`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrievo.errors import ConfigError, CorruptIndexError, DimensionMismatchError, DuplicateIdError, \
    ModelMismatchError
from retrievo.index import lifecycle
from retrievo.index.atomic import atomic_dir, check_file_sizes, fsync_dir, save_array
from retrievo.index.base import DocumentNumbering, create_index_folder, load_tombstones, write_tombstones
from retrievo.index.docstore import DOCS_FOLDER, DocPart, docstore_manifest, load_parts, merge_parts
from retrievo.types import Document

FORMAT = "retrievo-multivectors"
FORMAT_VERSION = 1
FOLDER = "mvectors"
DTYPES = ("float16", "float32")


class TokenPart:
    """The token vectors of one part: ``tokens [T, dim]`` and ``offsets [n + 1]``."""

    def __init__(self, name: str, tokens: np.ndarray, offsets: np.ndarray, sha256: dict[str, str] | None = None):
        if tokens.ndim != 2 or offsets.ndim != 1 or offsets[0] != 0 or offsets[-1] != tokens.shape[0]:
            raise CorruptIndexError(f"token part {name}: offsets do not span the token matrix")
        self.name, self.tokens, self.offsets, self._sha = name, tokens, offsets, sha256

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])

    def content_hash(self) -> str:
        if self._sha is None:
            from retrievo.index.atomic import hash_array

            self._sha = {"tokens.npy": hash_array(np.asarray(self.tokens)),
                         "offsets.npy": hash_array(np.asarray(self.offsets))}
        return hashlib.sha256("".join(f"{k}:{v}\n" for k, v in sorted(self._sha.items())).encode()).hexdigest()

    def write(self, folder: Path) -> "TokenPart":
        with atomic_dir(folder / self.name) as tmp:
            sha = {"tokens.npy": save_array(tmp / "tokens.npy", np.asarray(self.tokens)),
                   "offsets.npy": save_array(tmp / "offsets.npy", np.asarray(self.offsets, dtype=np.int64))}
            meta = {"name": self.name, "n_docs": self.n_docs, "n_tokens": self.n_tokens,
                    "dim": int(self.tokens.shape[1]), "dtype": str(self.tokens.dtype),
                    "files": {n: (tmp / n).stat().st_size for n in sha}, "sha256": sha}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        self._sha = sha
        return TokenPart.load(folder / self.name)

    @classmethod
    def load(cls, folder: Path, mmap: bool = True) -> "TokenPart":
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            check_file_sizes(folder, meta["files"])
            tokens = np.load(folder / "tokens.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
            offsets = np.load(folder / "offsets.npy", allow_pickle=False)
        except CorruptIndexError:
            raise
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise CorruptIndexError(f"cannot read token part {folder}: {exc}; the index is damaged, rebuild it") \
                from exc
        if tokens.shape != (meta["n_tokens"], meta["dim"]) or len(offsets) != meta["n_docs"] + 1 \
                or bool((np.diff(offsets) < 0).any()):
            raise CorruptIndexError(f"{folder}: token matrix or offsets differ from their record; rebuild the index")
        return cls(meta["name"], tokens, offsets, meta["sha256"])

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if isinstance(self.tokens, np.memmap):
            state["tokens"] = np.array(self.tokens)
        return state


def _reopen(path: str, mmap: bool) -> "MultiVectorIndex":
    return MultiVectorIndex.open(path, mmap=mmap)


def _from_state(parts, lives, doc_parts, model, dim, model_spec, info) -> "MultiVectorIndex":
    return MultiVectorIndex(parts, lives, doc_parts, model, dim, model_spec=model_spec, info=info)


class MultiVectorIndex(DocumentNumbering):
    """Token vectors with ids (and optionally text), their model's identity and dimension."""

    FORMAT = FORMAT
    FORMAT_VERSION = FORMAT_VERSION
    _KIND = "multi-vector index"
    _STORE_DEFAULT = False

    def _units(self) -> Sequence[TokenPart]:
        return self.parts

    def __init__(self, parts: Sequence[TokenPart], lives: Sequence[np.ndarray | None], doc_parts: Sequence[DocPart],
                 model: str, dim: int, *, model_spec: str = "", path: Path | None = None, generation: int = 0,
                 info: dict[str, Any] | None = None):
        self.parts, self.lives, self.doc_parts = list(parts), list(lives), list(doc_parts)
        if not len(self.parts) == len(self.lives) == len(self.doc_parts):
            raise ValueError("token parts, live bitmaps and document parts must pair up")
        for p, d in zip(self.parts, self.doc_parts):
            if p.tokens.shape[1] != dim:
                raise DimensionMismatchError(f"token part {p.name} has dimension {p.tokens.shape[1]}, the index {dim}")
            if p.n_docs != d.n_docs:
                raise CorruptIndexError(f"token part {p.name} has {p.n_docs} documents but {d.n_docs} ids")
        self.model, self.model_spec, self.dim = model, model_spec, int(dim)
        self.path, self.generation = path, generation
        self.info = dict(info or {})
        self._cache: dict[str, Any] = {}
        self._mmap = True
        self.version = 0

    @property
    def source(self) -> str | None:
        return self.info.get("source")

    @property
    def dtype(self) -> str:
        return str(self.info.get("dtype", "float16"))

    @property
    def n_tokens(self) -> int:
        return sum(p.n_tokens for p in self.parts)

    def blocks(self) -> Iterator[tuple[int, TokenPart]]:
        """``(first global number, part)`` of each part."""
        base = 0
        for p in self.parts:
            yield base, p
            base += p.n_docs

    def token_matrices(self, numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Token vectors of global document numbers, gathered: ``(float32 [sum of
        lengths, dim], lengths)`` in the order given."""
        numbers = np.asarray(numbers, dtype=np.int64)
        bases = self.bases
        which = np.searchsorted(bases, numbers, side="right") - 1
        pieces, lengths = [], np.empty(len(numbers), dtype=np.int64)
        for i, (n, p) in enumerate(zip(numbers.tolist(), which.tolist())):
            part = self.parts[p]
            a, b = part.offsets[n - bases[p]], part.offsets[n - bases[p] + 1]
            pieces.append(part.tokens[a:b])
            lengths[i] = b - a
        tokens = np.concatenate(pieces).astype(np.float32, copy=False) if pieces else \
            np.empty((0, self.dim), np.float32)
        return tokens, lengths

    @property
    def identity(self) -> str:
        def make():
            content = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": self.model, "dim": self.dim,
                       "tokens": [p.content_hash() for p in self.parts],
                       "docs": [d.content_hash() for d in self.doc_parts],
                       "deletes": [None if lv is None else hashlib.sha256(np.asarray(lv, bool).tobytes()).hexdigest()
                                   for lv in self.lives]}
            return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
        return self._cached("identity", make)

    def check_model(self, identity: str) -> None:
        if identity != self.model:
            where = self.path if self.path is not None else "this multi-vector index"
            raise ModelMismatchError(f"{where} was encoded with {self.model_spec or self.model}, not {identity}; "
                                     "search it with the same model and options, or build a new index")

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, ids: Sequence[str], tokens: np.ndarray, lengths: np.ndarray, path: str | Path | None = None, *,
              model: str, model_spec: str = "", documents: Sequence[Document] | None = None,
              source: str | None = None, dtype: str = "float16", truncated: int = 0,
              metadata: Sequence[Mapping[str, Any]] | None = None) -> "MultiVectorIndex":
        """An index of documents ``ids`` whose token vectors are ``tokens`` rows, ``lengths[i]``
        rows for document ``i`` in order; written at ``path`` when given. ``metadata`` (one
        mapping per id, when ``documents`` are not given) is kept as filterable columns."""
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        tokens = np.asarray(tokens)
        if tokens.ndim != 2:
            raise DimensionMismatchError(f"token vectors must be [tokens, dim], got shape {tokens.shape}")
        info = {"store": documents is not None, "source": source, "dtype": dtype, "truncated": int(truncated)}
        index = cls([], [], [], model, tokens.shape[1], model_spec=model_spec, info=info)
        index._append(ids, tokens, lengths, documents, metadata)
        if path is None:
            return index
        path = Path(path)
        if path.exists() and any(path.iterdir()):
            raise FileExistsError(f"{path} exists and is not empty; choose a new folder")
        create_index_folder(path, index._write_new)
        return cls.open(path)

    def _append(self, ids: Sequence[str], tokens: np.ndarray, lengths: np.ndarray,
                documents: Sequence[Document] | None, metadata: Sequence[Mapping[str, Any]] | None = None,
                replacing: bool = False) -> None:
        from retrievo.index.vectors import VectorIndex

        lengths = np.asarray(lengths, dtype=np.int64)
        if len(lengths) != len(ids) or int(lengths.sum()) != tokens.shape[0]:
            raise DimensionMismatchError(f"{len(ids)} ids, {len(lengths)} lengths and {tokens.shape[0]} token rows "
                                         "do not pair up")
        if tokens.shape[1] != self.dim:
            raise DimensionMismatchError(f"token vectors of dimension {tokens.shape[1]} cannot go into an index of "
                                         f"dimension {self.dim}")
        if not np.isfinite(np.asarray(tokens, dtype=np.float32)).all():
            raise ConfigError("token vectors contain NaN or infinite values; check the encoder")
        if self.parts and not replacing:
            clash = [i for i in ids if i in self.docstore]
            if clash:
                raise DuplicateIdError(f"{len(clash)} id(s) are already in the index, e.g. {clash[:3]}")
        vpart, docs = VectorIndex._make_part(ids, np.zeros((len(ids), 1), np.float32), documents, metadata)
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        part = TokenPart(vpart.name, np.ascontiguousarray(tokens, dtype=self.dtype), offsets)
        self.parts.append(part)
        self.doc_parts.append(docs)
        self.lives.append(None)
        self._invalidate()

    def _write_new(self, txn: lifecycle.Transaction) -> None:
        self.path = txn.path
        self._write_parts(txn.path)
        self._publish(txn)

    def _write_parts(self, folder: Path) -> None:
        (folder / FOLDER).mkdir(exist_ok=True)
        (folder / DOCS_FOLDER).mkdir(exist_ok=True)
        for i, (p, d) in enumerate(zip(self.parts, self.doc_parts)):
            if not (folder / FOLDER / p.name).exists():
                self.parts[i] = p.write(folder / FOLDER)
            if not (folder / DOCS_FOLDER / d.name).exists():
                self.doc_parts[i] = d.write(folder / DOCS_FOLDER)

    @contextlib.contextmanager
    def _restored_on_failure(self) -> Iterator[None]:
        saved = (list(self.parts), list(self.lives), list(self.doc_parts), dict(self.info))
        try:
            yield
        except BaseException:
            self.parts, self.lives, self.doc_parts, self.info = saved
            self._invalidate()
            raise

    # ------------------------------------------------------------------ changes
    def add(self, ids: Sequence[str], tokens: np.ndarray, lengths: np.ndarray,
            documents: Sequence[Document] | None = None, *, source: str | None = None, truncated: int = 0,
            metadata: Sequence[Mapping[str, Any]] | None = None) -> int:
        """Add new documents' token vectors as a new part; returns how many were added."""
        if not len(ids):
            return 0
        if self.store and documents is None:
            raise ConfigError("this index stores text: give the documents of the added token vectors")

        def apply(folder: Path | None) -> None:
            self._append(ids, tokens, lengths, documents if self.store else None, metadata)
            if source is not None:
                self.info["source"] = source
            self.info["truncated"] = int(self.info.get("truncated") or 0) + int(truncated)

        self._change(apply)
        return len(ids)

    def upsert(self, ids: Sequence[str], tokens: np.ndarray, lengths: np.ndarray,
               documents: Sequence[Document] | None = None, *, source: str | None = None, truncated: int = 0,
               metadata: Sequence[Mapping[str, Any]] | None = None) -> tuple[int, int]:
        """Insert or replace the token vectors of ``ids`` in ONE generation: the ids already
        present are tombstoned and the new rows added as a new part, published together, so
        a reader (or a crash) sees the old state or the new one. Returns ``(replaced,
        added)``."""
        ids = [str(i) for i in ids]
        if not ids:
            return 0, 0
        if self.store and documents is None:
            raise ConfigError("this index stores text: give the documents of the upserted token vectors")
        targets = self._deletion_targets([i for i in ids if i in self.docstore], missing_ok=False)

        def apply(folder: Path | None) -> None:
            self._append(ids, tokens, lengths, documents if self.store else None, metadata, replacing=True)
            self._tombstone(targets)
            if source is not None:
                self.info["source"] = source
            self.info["truncated"] = int(self.info.get("truncated") or 0) + int(truncated)
            self._invalidate()

        self._change(apply, fault="upsert.before_publish")
        return len(targets), len(ids) - len(targets)

    def delete(self, doc_ids, *, missing_ok: bool = False, source: str | None = None) -> int:
        """Mark documents deleted (tombstones); returns how many were deleted."""
        return self._delete_published(doc_ids, missing_ok, source)

    def merge(self) -> "MultiVectorIndex":
        """Compact every part into one without the deleted documents."""
        if len(self.parts) <= 1 and self.live is None:
            return self
        live = self.live
        keep = np.flatnonzero(live) if live is not None else np.arange(self.total_docs)

        def apply(folder: Path | None) -> None:
            tokens, lengths = self.token_matrices(keep)
            name = f"part-{uuid.uuid4().hex[:16]}"
            if folder is not None:
                (folder / DOCS_FOLDER).mkdir(exist_ok=True)
            docs = merge_parts(self.doc_parts, self.lives, name, None if folder is None else folder / DOCS_FOLDER)
            offsets = np.zeros(len(keep) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            self.parts, self.doc_parts, self.lives = [TokenPart(name, tokens.astype(self.dtype), offsets)], [docs], \
                [None]
            self._invalidate()

        self._change(apply)
        return self

    def save(self, path: str | Path) -> "MultiVectorIndex":
        path = Path(path)
        if path.exists() and any(path.iterdir()):
            raise FileExistsError(f"{path} exists and is not empty; choose a new folder")
        copy = MultiVectorIndex(list(self.parts), [None if lv is None else np.array(lv) for lv in self.lives],
                                list(self.doc_parts), self.model, self.dim, model_spec=self.model_spec,
                                info={k: v for k, v in self.info.items() if k != "manifest"})
        create_index_folder(path, copy._write_new)
        return MultiVectorIndex.open(path)

    # ------------------------------------------------------------------ persistence
    def _publish(self, txn: lifecycle.Transaction) -> None:
        path, gen = txn.path, txn.generation
        (path / "deletes").mkdir(exist_ok=True)
        files: list[str] = []
        checksums: dict[str, str] = {}
        entries = []
        for part, docs, lv in zip(self.parts, self.doc_parts, self.lives):
            entry: dict[str, Any] = {"name": part.name, "n_docs": part.n_docs, "n_tokens": part.n_tokens,
                                     "sha256": part.content_hash(), "docs": docs.name}
            files.append(f"{FOLDER}/{part.name}")
            if lv is not None:
                name, entry["deletes_sha256"] = write_tombstones(path, gen, part.name, lv)
                checksums[name] = entry["deletes_sha256"]
                entry["deletes"] = name
                files.append(name)
            entries.append(entry)
        fsync_dir(path / "deletes")
        docstore_entry, doc_files = docstore_manifest(self.doc_parts, self.store)
        payload = {"model": self.model, "model_spec": self.model_spec, "dim": self.dim, "dtype": self.dtype,
                   "store": self.store, "source": self.source, "truncated": int(self.info.get("truncated") or 0),
                   "parts": entries, "documents": len(self), "tokens": self.n_tokens}
        manifest = txn.publish(FORMAT, FORMAT_VERSION, payload, files + doc_files, identity=self.identity,
                               docstore=docstore_entry, checksums=checksums)
        self.path, self.generation = path, gen
        self.info["manifest"] = manifest

    @classmethod
    def open(cls, path: str | Path, mmap: bool = True) -> "MultiVectorIndex":
        return lifecycle.open_snapshot(Path(path), lambda snapshot: cls.from_snapshot(snapshot, mmap=mmap))

    @classmethod
    def from_snapshot(cls, snapshot: lifecycle.Snapshot, mmap: bool = True) -> "MultiVectorIndex":
        snapshot.require(FORMAT, FORMAT_VERSION)
        path = snapshot.path
        try:
            payload = snapshot.payload
            parts, lives = [], []
            for entry in payload["parts"]:
                part = TokenPart.load(path / FOLDER / entry["name"], mmap)
                if part.n_docs != entry["n_docs"] or part.content_hash() != entry["sha256"]:
                    raise CorruptIndexError(f"{path}: token part {entry['name']} does not match the manifest")
                parts.append(part)
                lives.append(load_tombstones(path, entry, part.n_docs) if entry.get("deletes") else None)
            doc_parts = load_parts(path, snapshot.docstore, mmap)
            if [d.name for d in doc_parts] != [e["docs"] for e in payload["parts"]]:
                raise CorruptIndexError(f"{path}: the document store does not match the token parts")
            info = {"store": payload.get("store", False), "source": payload.get("source"),
                    "dtype": payload.get("dtype", "float16"), "truncated": payload.get("truncated", 0),
                    "manifest": dict(snapshot.manifest)}
            index = cls(parts, lives, doc_parts, payload["model"], int(payload["dim"]),
                        model_spec=payload.get("model_spec", ""), path=path, generation=snapshot.generation, info=info)
        except (CorruptIndexError, DimensionMismatchError):
            raise
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise CorruptIndexError(f"cannot read multi-vector index {path}: {exc}; rebuild it") from exc
        index._mmap = mmap
        if snapshot.identity:
            index._cache["identity"] = snapshot.identity
        return index

    # ------------------------------------------------------------------ presentation
    def describe(self) -> dict[str, Any]:
        return {"path": None if self.path is None else str(self.path), "format": FORMAT,
                "format_version": FORMAT_VERSION, "generation": self.generation, "documents": len(self),
                "deleted": self.total_docs - len(self), "tokens": self.n_tokens, "dim": self.dim,
                "dtype": self.dtype, "model": self.model, "model_spec": self.model_spec, "parts": len(self.parts),
                "store": self.store, "size_on_disk_bytes": self.size_on_disk(), "identity": self.identity}

    def __repr__(self) -> str:
        where = "in memory" if self.path is None else f"{self.path.name!r} gen {self.generation}"
        return (f"<MultiVectorIndex {where}: {len(self):,} docs, {self.n_tokens:,} tokens x {self.dim} "
                f"{self.dtype}, model {self.model_spec or self.model}>")

    def __reduce__(self):
        if self.path is not None:
            return _reopen, (str(self.path), self._mmap)
        return _from_state, (self.parts, self.lives, self.doc_parts, self.model, self.dim, self.model_spec,
                             {k: v for k, v in self.info.items() if k != "manifest"})


__all__ = ["DTYPES", "FORMAT", "FORMAT_VERSION", "MultiVectorIndex", "TokenPart"]
