"""The vector index: dense document vectors on the shared index life cycle.

Layout of an index folder (generations, ``CURRENT``, publishing and garbage collection
belong to :mod:`retrievo.index.lifecycle`, document ids and text to
:mod:`retrievo.index.docstore`)::

    CURRENT                      name of the live generation manifest
    gen-00000003.json            manifest; payload: model identity and spec, dimension, parts, deletions
    vectors/part-<id>/vectors.npy  float32 ``[n, dim]`` vectors of one part (memory-mapped when opened)
    vectors/part-<id>/meta.json    document count, dimension, file size and sha256
    docs/part-<id>/              stored ids (and text, when given) of the same part, same order
    deletes/del-00000003-<part>.npy  tombstone bitmap of one part in one generation
    derived/<kind>-<part>/       codes or HNSW graph of one part (see :mod:`retrievo.index.derived`)

Why a format of its own rather than a faiss or usearch file: the vectors are the ground
truth that every search structure (exact search, quantised codes, HNSW graphs) is derived
from, and they must live on the same life cycle as the lexical index — atomic publish,
readers that never see half a write, add and delete without rewriting what exists, and a
manifest that says which model made them. A vector searched with another model's query
is silently meaningless, so the manifest records the encoder's identity
(:meth:`retrievo.models.encoder.Encoder.identity`) and dimension, and every consumer
checks them (:meth:`VectorIndex.check_model`, :meth:`VectorIndex.check_dim`).

Like segments, parts are immutable: ``add`` writes a new part, ``delete`` writes
tombstones, ``merge`` compacts into one part. Opening checks every file's size against
its record (a truncated copy fails at once with :class:`CorruptIndexError`, before a
memory map reads past its end); :meth:`VectorIndex.verify` re-hashes the contents.
Search lives in :mod:`retrievo.retrieve.exact` (this module stores, it does not rank);
what this format shares with the multi-vector index (pairing with the document store,
publishing, opening, saving, the identity and model checks) lives in
:mod:`retrievo.index.embedded`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrievo.errors import ConfigError, CorruptIndexError, DimensionMismatchError, DuplicateIdError, \
    UnknownIdError
from retrievo.index import lifecycle
from retrievo.index.atomic import atomic_dir, check_file_sizes, hash_array, save_array
from retrievo.index.base import create_index_folder
from retrievo.index.derived import Unit, build_arrays, check_kind, write_unit
from retrievo.index.docstore import DocPart
from retrievo.index.embedded import EmbeddingIndex, new_doc_part
from retrievo.types import Document

FORMAT = "retrievo-vectors"
FORMAT_VERSION = 1
VECTORS_FOLDER = "vectors"
_VECTORS = "vectors.npy"


class VectorPart:
    """The vectors of one part (float32 ``[n, dim]``), immutable once built."""

    def __init__(self, name: str, vectors: np.ndarray, sha256: str | None = None):
        if vectors.ndim != 2:
            raise DimensionMismatchError(f"vectors must be a 2-d array [n, dim], got shape {vectors.shape}")
        self.name, self.vectors, self._sha = name, vectors, sha256
        self._fh: Any = None  # the vectors file, opened with the snapshot, for read_rows

    @property
    def n_docs(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def content_hash(self) -> str:
        if self._sha is None:
            self._sha = hash_array(np.asarray(self.vectors, dtype=np.float32))
        return self._sha

    def write(self, folder: Path) -> "VectorPart":
        """Write into ``folder/<name>`` atomically; returns the part memory-mapped from there."""
        with atomic_dir(folder / self.name) as tmp:
            sha = save_array(tmp / _VECTORS, np.asarray(self.vectors, dtype=np.float32))
            meta = {"name": self.name, "n_docs": self.n_docs, "dim": self.dim, "dtype": "float32",
                    "files": {_VECTORS: (tmp / _VECTORS).stat().st_size}, "sha256": {_VECTORS: sha}}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        self._sha = sha
        return VectorPart.load(folder / self.name)

    @classmethod
    def load(cls, folder: Path, mmap: bool = True) -> "VectorPart":
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            check_file_sizes(folder, meta["files"])
            vectors = np.load(folder / _VECTORS, mmap_mode="r" if mmap else None, allow_pickle=False)
            sha = meta["sha256"]
            sha = sha[_VECTORS] if isinstance(sha, dict) else sha  # (a plain digest in early writes)
            fh = open(folder / _VECTORS, "rb") if mmap else None
        except CorruptIndexError:
            raise
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise CorruptIndexError(f"cannot read vector part {folder}: {exc}; the index is damaged, rebuild it") \
                from exc
        if vectors.dtype != np.float32 or vectors.shape != (meta["n_docs"], meta["dim"]):
            raise CorruptIndexError(f"{folder / _VECTORS} holds {vectors.dtype} {vectors.shape}, its record says "
                                    f"float32 ({meta['n_docs']}, {meta['dim']}): the index is damaged, rebuild it")
        part = cls(meta["name"], vectors, sha)
        part._fh = fh
        return part

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (ascending local numbers) read with ``pread`` into private memory.

        Why not the memory map: a page fault maps the pages around the touched one too
        (the kernel's fault-around, 64 KiB), so rescoring a few hundred random rows through
        the map made all of SciFact's 8 MB vector file resident (100 rows: 4.6 MB). Reads
        copy exactly the candidates and leave the file to the kernel's page cache, which is
        shared and reclaimable, so the process's resident set stays at the codes.
        """
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        if self._fh is None or not isinstance(self.vectors, np.memmap):
            out[:] = self.vectors[rows]
            return out
        width = self.dim * 4
        base = int(self.vectors.offset)
        view = memoryview(out).cast("B")
        fd = self._fh.fileno()
        i, n = 0, len(rows)
        while i < n:  # one read per run of consecutive rows
            j = i + 1
            while j < n and rows[j] == rows[j - 1] + 1:
                j += 1
            want = (j - i) * width
            got = os.preadv(fd, [view[i * width:j * width]], base + int(rows[i]) * width)
            if got != want:
                raise CorruptIndexError(f"vector part {self.name}: short read ({got} of {want} bytes); "
                                        "the index is damaged, rebuild it")
            i = j
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fh"] = None
        if isinstance(self.vectors, np.memmap):
            state["vectors"] = np.array(self.vectors)
        return state


def _as_vectors(vectors: Any, dim: int | None) -> np.ndarray:
    arr = np.asarray(vectors)
    if arr.ndim != 2:
        raise DimensionMismatchError(f"vectors must be a 2-d array [n, dim], got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise DimensionMismatchError(f"vectors of dimension {arr.shape[1]} cannot go into an index of "
                                     f"dimension {dim}")
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ConfigError("vectors contain NaN or infinite values; check the encoder")
    return arr


class VectorIndex(EmbeddingIndex):
    """Dense vectors with ids (and optionally text), their model's identity and dimension.

    Build with :meth:`build` (in memory, or on disk when given a path), reopen with
    :meth:`open` or :func:`retrievo.index.open_index`. Global document numbers run over
    the parts in order, like the lexical index's segments. Besides its vectors each part
    may carry derived search structures (``derived``, see :meth:`ensure_derived`).
    """

    FORMAT = FORMAT
    FORMAT_VERSION = FORMAT_VERSION
    _KIND = "vector index"
    _PARTS_FOLDER = VECTORS_FOLDER
    _PART_TYPE = VectorPart
    _PART = "vector part"
    _ROWS = "vectors"
    _IDENTITY_PARTS = "vectors"
    _TOMBSTONE_CHECKSUMS = False

    def __init__(self, parts: Sequence[VectorPart], lives: Sequence[np.ndarray | None], doc_parts: Sequence[DocPart],
                 model: str, dim: int, *, model_spec: str = "", path: Path | None = None, generation: int = 0,
                 info: dict[str, Any] | None = None, derived: Sequence[dict[str, Unit]] | None = None,
                 kinds: Sequence[str] = ()):
        #: per part, derived structure kind -> unit; ``kinds`` every part carries (see ensure_derived)
        self.derived = [dict(d) for d in derived] if derived is not None else [{} for _ in parts]
        self.kinds = [check_kind(k) for k in kinds]
        super().__init__(parts, lives, doc_parts, model, dim, model_spec=model_spec, path=path,
                         generation=generation, info=info)

    def _per_part(self) -> list[list[Any]]:
        return [*super()._per_part(), self.derived]

    # ------------------------------------------------------------------ derived views
    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(first global number, vectors)`` of each part, memory-mapped on disk."""
        base = 0
        for p in self.parts:
            yield base, p.vectors
            base += p.n_docs

    def vectors_of(self, numbers: np.ndarray) -> np.ndarray:
        """Vectors of global document numbers (float32, ``[len(numbers), dim]``)."""
        numbers = np.asarray(numbers, dtype=np.int64)
        out = np.empty((len(numbers), self.dim), dtype=np.float32)
        if not len(numbers):
            return out
        bases = self.bases
        which = np.searchsorted(bases, numbers, side="right") - 1
        for p in np.unique(which).tolist():
            sel = which == p
            out[sel] = self.parts[p].vectors[numbers[sel] - bases[p]]
        return out

    def read_rows(self, numbers: np.ndarray) -> np.ndarray:
        """Like :meth:`vectors_of`, but read from disk with ``pread`` instead of through the
        memory map, so only these rows become resident (see :meth:`VectorPart.read_rows`):
        the bi-granular rescoring path."""
        numbers = np.asarray(numbers, dtype=np.int64)
        if not len(numbers):
            return np.empty((0, self.dim), dtype=np.float32)
        bases = self.bases
        first = int(np.searchsorted(bases, numbers[0], side="right") - 1)
        if numbers[-1] < bases[first + 1] and bool((numbers[1:] >= numbers[:-1]).all()):
            return self.parts[first].read_rows(numbers - bases[first])  # one part, ascending: no reorder copy
        order = np.argsort(numbers, kind="stable")
        ordered = numbers[order]
        which = np.searchsorted(bases, ordered, side="right") - 1
        out = np.empty((len(numbers), self.dim), dtype=np.float32)
        rows = np.empty_like(out)
        for p in np.unique(which).tolist():
            sel = which == p
            rows[sel] = self.parts[p].read_rows(ordered[sel] - bases[p])
        out[order] = rows
        return out

    def units(self, kind: str) -> list[Unit]:
        """The ``kind`` structure of every part, in part order (build it first with
        :meth:`ensure_derived`)."""
        missing = [p.name for p, d in zip(self.parts, self.derived) if kind not in d]
        if missing:
            raise ConfigError(f"vector parts {missing[:3]} have no {kind} structure; call ensure_derived({kind!r})")
        return [d[kind] for d in self.derived]

    def vectors(self, doc_ids: Iterable[str]) -> np.ndarray:
        """Vectors of live document ids, in order (:class:`UnknownIdError` for others)."""
        id_map = self.docstore.id_map()
        doc_ids = list(doc_ids)
        missing = [d for d in doc_ids if d not in id_map]
        if missing:
            raise UnknownIdError(f"{len(missing)} document id(s) are not in the vector index, e.g. {missing[:3]}")
        return self.vectors_of(np.fromiter((id_map[d] for d in doc_ids), dtype=np.int64, count=len(doc_ids)))

    # ------------------------------------------------------------------ checks
    def check_dim(self, dim: int) -> None:
        if int(dim) != self.dim:
            raise DimensionMismatchError(f"query vectors have dimension {dim}, the index {self.dim} "
                                         f"(model {self.model_spec or self.model})")

    def verify(self) -> None:
        """Re-hash every vector file against its record (:class:`CorruptIndexError` on a
        difference): catches bit rot and edits that keep file sizes, which opening does not."""
        for p in self.parts:
            recorded = p._sha
            p._sha = None
            actual = p.content_hash()
            p._sha = recorded
            if recorded is not None and actual != recorded:
                where = self.path / VECTORS_FOLDER / p.name if self.path is not None else p.name
                raise CorruptIndexError(f"{where}: vectors do not match their recorded sha256; rebuild the index")
        if self.path is not None:
            from retrievo.index.verify import unit_problems

            manifest = self.info.get("manifest") or {}
            for entry in manifest.get("payload", {}).get("parts", []):
                for rel in (entry.get("derived") or {}).values():
                    problems = unit_problems(self.path / rel, rel, full=True)
                    if problems:
                        raise CorruptIndexError(f"{self.path}: {'; '.join(problems)}; rebuild the index")

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, ids: Sequence[str], vectors: Any, path: str | Path | None = None, *, model: str,
              model_spec: str = "", documents: Sequence[Document] | None = None, source: str | None = None,
              overwrite: bool = True, derived: Sequence[str] = (),
              metadata: Sequence[Mapping[str, Any]] | None = None) -> "VectorIndex":
        """An index of ``vectors`` (``[n, dim]``) for document ``ids`` made by ``model``
        (an encoder identity). ``documents`` (same order) stores their text too; without
        it only ids are kept (the lexical index usually holds the text). With ``path`` it
        is written there and returned memory-mapped; an existing index is replaced only
        once the new one is complete. ``derived`` names structures (``int8``, ``binary``,
        ``hnsw-m16-efc128``, see :mod:`retrievo.index.derived`) built now and kept up to date
        by every later ``add`` and ``merge``. ``metadata`` (one mapping per id, when
        ``documents`` are not given) is kept as filterable columns only."""
        vectors = _as_vectors(vectors, None)
        part, docs = cls._make_part(ids, vectors, documents, metadata)
        info = {"store": documents is not None, "source": source}
        kinds = [check_kind(k) for k in dict.fromkeys(derived)]
        index = cls([part], [None], [docs], model, vectors.shape[1], model_spec=model_spec, info=info,
                    derived=[_units_for(part, kinds)], kinds=kinds)
        if path is None:
            return index
        path = Path(path)
        if lifecycle.is_index(path):
            with lifecycle.writing(path) as txn:
                index.path, index.generation = path, txn.base_generation
                index._write_parts(path)
                index._publish(txn)
            return cls.open(path)
        if path.exists() and any(path.iterdir()):
            raise FileExistsError(f"{path} exists and is not a retrievo index; refusing to overwrite it")
        create_index_folder(path, index._write_new)
        return cls.open(path)

    @staticmethod
    def _make_part(ids: Sequence[str], vectors: np.ndarray, documents: Sequence[Document] | None,
                   metadata: Sequence[Mapping[str, Any]] | None = None) -> tuple[VectorPart, DocPart]:
        if len(ids) != vectors.shape[0]:
            raise DimensionMismatchError(f"{len(ids)} ids but {vectors.shape[0]} vectors")
        docs = new_doc_part(ids, documents, metadata)
        return VectorPart(docs.name, vectors), docs

    def _write_parts(self, folder: Path) -> None:
        """Write every part not yet on disk under ``folder`` (and reopen it mapped), and
        its derived structures."""
        super()._write_parts(folder)
        for p, units in zip(self.parts, self.derived):
            for kind, unit in list(units.items()):
                rel = f"derived/{kind}-{p.name}"
                if not (folder / rel).exists():
                    write_unit(folder, kind, p.name, p.n_docs, {n: unit._read(n) for n in unit.files})
                    units[kind] = Unit.open(folder, rel, kind, p.n_docs)

    def _saved_state(self) -> dict[str, Any]:
        return {**super()._saved_state(), "derived": [dict(d) for d in self.derived], "kinds": list(self.kinds)}

    # ------------------------------------------------------------------ changes
    def add(self, ids: Sequence[str], vectors: Any, documents: Sequence[Document] | None = None, *,
            source: str | None = None, metadata: Sequence[Mapping[str, Any]] | None = None) -> int:
        """Add vectors for new ids as a new part; returns how many were added. On disk,
        readers see them only once the part is written and published."""
        vectors = _as_vectors(vectors, self.dim)
        if not len(ids):
            return 0
        if self.store and documents is None:
            raise ConfigError("this vector index stores text: give the documents of the added vectors")
        clash = [i for i in ids if i in self.docstore]
        if clash:
            raise DuplicateIdError(f"{len(clash)} id(s) are already in the vector index, e.g. {clash[:3]}; "
                                   "delete them first to replace their vectors")
        part, docs = self._make_part(ids, vectors, documents if self.store else None, metadata)
        units = _units_for(part, self.kinds)

        def apply(folder: Path | None) -> None:
            self._append(part, docs, units, source)

        self._change(apply)
        return len(ids)

    def upsert(self, ids: Sequence[str], vectors: Any, documents: Sequence[Document] | None = None, *,
               source: str | None = None, metadata: Sequence[Mapping[str, Any]] | None = None) -> tuple[int, int]:
        """Insert or replace the vectors (and documents) of ``ids`` in ONE generation:
        the ids already present are tombstoned and the new rows added as a new part,
        published together, so a reader (or a crash) sees the old state or the new one,
        never the deletions without the additions. Returns ``(replaced, added)``."""
        vectors = _as_vectors(vectors, self.dim)
        ids = [str(i) for i in ids]
        if not ids:
            return 0, 0
        if self.store and documents is None:
            raise ConfigError("this vector index stores text: give the documents of the upserted vectors")
        part, docs = self._make_part(ids, vectors, documents if self.store else None, metadata)  # validates first
        targets = self._deletion_targets([i for i in ids if i in self.docstore], missing_ok=False)
        units = _units_for(part, self.kinds)

        def apply(folder: Path | None) -> None:
            self._tombstone(targets)
            self._append(part, docs, units, source)

        self._change(apply, fault="upsert.before_publish")
        return len(targets), len(ids) - len(targets)

    def _append(self, part: VectorPart, docs: DocPart, units: dict[str, Unit], source: str | None) -> None:
        """Add a new part with its documents and derived structures (the in-memory step of
        ``add`` and ``upsert``)."""
        self.parts.append(part)
        self.doc_parts.append(docs)
        self.lives.append(None)
        self.derived.append(units)
        if source is not None:
            self.info["source"] = source
        self._invalidate()

    def _merged_part(self, name: str, keep: np.ndarray) -> VectorPart:
        return VectorPart(name, self.vectors_of(keep))

    def _parts_merged(self) -> None:
        self.derived = [_units_for(self.parts[0], self.kinds)]

    def _constructor_extras(self) -> dict[str, Any]:
        return {"derived": [dict(d) for d in self.derived], "kinds": list(self.kinds)}

    def ensure_derived(self, kind: str) -> list[Unit]:
        """Give every part a ``kind`` structure (codes or an HNSW graph) and keep it from
        now on (``add`` and ``merge`` build it for new parts); returns the units.

        On disk the units are written and published as a new generation, so the next
        process that opens the index reads them instead of recomputing them. A kind that
        is already there costs nothing.
        """
        check_kind(kind)
        if kind in self.kinds and all(kind in d for d in self.derived):
            return self.units(kind)
        built = [None if kind in d else build_arrays(kind, np.asarray(p.vectors))
                 for p, d in zip(self.parts, self.derived)]

        def apply(folder: Path | None) -> None:
            for d, p, files in zip(self.derived, self.parts, built):
                if files is not None:
                    d[kind] = Unit.in_memory(kind, p.n_docs, files)
            if kind not in self.kinds:
                self.kinds.append(kind)

        self._change(apply)  # on disk: the new units are written and published
        return self.units(kind)

    # ------------------------------------------------------------------ persistence
    def _record_part(self, i: int, entry: dict[str, Any]) -> list[str]:
        derived = {kind: f"derived/{kind}-{self.parts[i].name}" for kind in sorted(self.derived[i])}
        if derived:
            entry["derived"] = derived
        return list(derived.values())

    def _payload_fields(self) -> dict[str, Any]:
        return {"metric": "ip", **({"derived": list(self.kinds)} if self.kinds else {})}

    @classmethod
    def _check_part(cls, path: Path, part: VectorPart, entry: Mapping[str, Any], payload: Mapping[str, Any]) -> None:
        dim = int(payload["dim"])
        if part.n_docs != entry["n_docs"] or part.dim != dim or part._sha != entry["sha256"]:
            raise CorruptIndexError(f"{path}: vector part {entry['name']} does not match the manifest "
                                    f"({part.n_docs}x{part.dim}, expected {entry['n_docs']}x{dim})")

    @classmethod
    def _opened_extras(cls, path: Path, payload: Mapping[str, Any], parts: Sequence[VectorPart]) -> dict[str, Any]:
        derived = [{kind: Unit.open(path, rel, kind, part.n_docs) for kind, rel in (entry.get("derived") or {}).items()}
                   for entry, part in zip(payload["parts"], parts)]
        return {"derived": derived, "kinds": payload.get("derived", ())}

    # ------------------------------------------------------------------ presentation
    def __repr__(self) -> str:
        where = "in memory" if self.path is None else f"{self.path.name!r} gen {self.generation}"
        return f"<VectorIndex {where}: {len(self):,} docs x {self.dim}, model {self.model_spec or self.model}>"


def _units_for(part: VectorPart, kinds: Sequence[str]) -> dict[str, Unit]:
    """In-memory units of every kind for a new part (written with it when it is saved)."""
    return {kind: Unit.in_memory(kind, part.n_docs, build_arrays(kind, np.asarray(part.vectors)))
            for kind in kinds}


__all__ = ["FORMAT", "FORMAT_VERSION", "VectorIndex", "VectorPart"]
