"""Search structures derived from a vector index's parts, stored on its life cycle.

The float32 vectors are the ground truth; compact codes (``int8``, ``binary``) and HNSW
graphs (``hnsw-m<M>-efc<EF>``) are computed from them, one *unit* per vector part::

    derived/<kind>-<part name>/meta.json     kind, parameters, files (name -> bytes), sha256 (name -> digest)
    derived/binary-<part>/data.npy           uint64 [n, ceil(dim/64)] packed sign bits
    derived/int8-<part>/data.npy, scale.npy  int8 [n, dim] and the part's per-dimension float32 scale
    derived/hnsw-m16-efc128-<part>/graph.usearch   a usearch HNSW graph over the part's rows (keys = row numbers)

Why per part: parts are immutable, so a unit built for a part never goes stale. ``add``
builds the units of the new part, ``merge`` those of the merged part, and ``delete`` only
writes tombstones, which every search filters (an HNSW graph keeps deleted rows as
waypoints; they are asked for and dropped, see :mod:`retrievo.retrieve.hnsw`). Each unit
is a folder written atomically and named in the manifest, so garbage collection, opening
checks (sizes) and ``retrievo check`` (sha256, see :mod:`retrievo.index.verify`) cover it
with no code of their own.

Units are read lazily — an index opened for exact search never loads its codes or graphs
— yet safely: the unit's files are opened when the snapshot is opened, and read through
those descriptors later, so a writer that publishes and collects the files meanwhile
cannot pull them away (POSIX keeps unlinked files readable through open descriptors).
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrievo.errors import ConfigError, CorruptIndexError, MissingExtraError
from retrievo.index.atomic import atomic_dir, check_file_sizes, save_array, save_bytes

DERIVED_FOLDER = "derived"
CODE_KINDS = ("int8", "binary")
_HNSW = re.compile(r"^hnsw-m(\d+)-efc(\d+)$")


def hnsw_kind(m: int, ef_construction: int) -> str:
    return f"hnsw-m{int(m)}-efc{int(ef_construction)}"


def check_kind(kind: str) -> str:
    """``kind`` if it names a derived structure this module builds, else :class:`ConfigError`."""
    if kind in CODE_KINDS or _HNSW.match(kind):
        return kind
    raise ConfigError(f"unknown derived structure {kind!r}: expected int8, binary or hnsw-m<M>-efc<EF>")


def unit_name(kind: str, part: str) -> str:
    return f"{DERIVED_FOLDER}/{kind}-{part}"


def usearch_index_class():
    try:
        from usearch.index import Index
    except ImportError as exc:
        raise MissingExtraError("HNSW search needs usearch: pip install 'retrievo[dense]'") from exc
    return Index


def build_arrays(kind: str, vectors: np.ndarray) -> dict[str, Any]:
    """The files of one unit, computed from one part's float32 vectors (``[n, dim]``):
    arrays for codes, bytes for a graph. Deterministic: the same vectors give the same
    bytes (HNSW is built with one thread, whose level draws come from a fixed seed)."""
    from retrievo.retrieve.quantized import Codes

    check_kind(kind)
    if kind in CODE_KINDS:
        codes = Codes.build(kind, [(0, vectors)], vectors.shape[1])
        out: dict[str, Any] = {"data.npy": codes.data}
        if codes.scale is not None:
            out["scale.npy"] = codes.scale
        return out
    m, efc = (int(x) for x in _HNSW.match(kind).groups())
    Index = usearch_index_class()
    graph = Index(ndim=vectors.shape[1], metric="ip", dtype="f32", connectivity=m, expansion_add=efc)
    if len(vectors):
        graph.add(np.arange(len(vectors), dtype=np.uint64), np.ascontiguousarray(vectors, dtype=np.float32),
                  threads=1)
    return {"graph.usearch": bytes(graph.save())}


def write_unit(root: Path, kind: str, part: str, n_docs: int, files: dict[str, Any]) -> str:
    """Write one unit under ``root`` (the index folder) atomically; returns its relative path."""
    rel = unit_name(kind, part)
    (root / DERIVED_FOLDER).mkdir(exist_ok=True)
    with atomic_dir(root / rel) as tmp:
        sizes, hashes = {}, {}
        for name, value in files.items():
            hashes[name] = save_array(tmp / name, value) if isinstance(value, np.ndarray) \
                else save_bytes(tmp / name, value)
            sizes[name] = (tmp / name).stat().st_size
        meta = {"kind": kind, "part": part, "n_docs": int(n_docs), "files": sizes, "sha256": hashes}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return rel


@dataclass
class Unit:
    """One derived structure of one part: on disk (open descriptors, read on first use)
    or in memory (an index that was never saved)."""

    kind: str
    n_docs: int
    files: dict[str, Any] = field(default_factory=dict)  # name -> open binary file, or the value itself
    _value: Any = field(default=None, repr=False)

    @classmethod
    def open(cls, root: Path, rel: str, kind: str, n_docs: int) -> "Unit":
        """Check sizes and record of a unit and open its files (not read yet)."""
        folder = root / rel
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            check_file_sizes(folder, meta["files"])
            if meta["kind"] != kind or meta["n_docs"] != n_docs:
                raise CorruptIndexError(f"{folder}: holds {meta['kind']} for {meta['n_docs']} rows, the manifest "
                                        f"says {kind} for {n_docs}; rebuild the index")
            handles = {name: open(folder / name, "rb") for name in meta["files"]}
        except CorruptIndexError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptIndexError(f"cannot read {folder}: {exc}; the index is damaged, rebuild it") from exc
        return cls(kind, n_docs, handles)

    @classmethod
    def in_memory(cls, kind: str, n_docs: int, files: dict[str, Any]) -> "Unit":
        return cls(kind, n_docs, dict(files))

    def _read(self, name: str) -> Any:
        fh = self.files[name]
        if not hasattr(fh, "read"):
            return fh
        fh.seek(0)
        data = fh.read()
        if name.endswith(".npy"):
            return np.load(io.BytesIO(data), allow_pickle=False)
        return data

    def value(self) -> Any:
        """The loaded structure: :class:`~retrievo.retrieve.quantized.Codes` (in RAM) or a
        usearch ``Index``; loaded once, then shared."""
        if self._value is None:
            try:
                if self.kind in CODE_KINDS:
                    from retrievo.retrieve.quantized import Codes

                    data = self._read("data.npy")
                    scale = self._read("scale.npy") if "scale.npy" in self.files else None
                    value = Codes(self.kind, np.ascontiguousarray(data), scale)
                    rows = value.data.shape[0]
                else:
                    value = usearch_index_class().restore(self._read("graph.usearch"))
                    rows = 0 if value is None else len(value)
                    if value is None:
                        raise ValueError("not a usearch index")
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise CorruptIndexError(f"{self.kind} unit cannot be read ({exc}); rebuild the index") from exc
            if rows != self.n_docs:
                raise CorruptIndexError(f"{self.kind} unit holds {rows} rows, its part {self.n_docs}; "
                                        "rebuild the index")
            self._value = value
        return self._value

    def close(self) -> None:
        for fh in self.files.values():
            if hasattr(fh, "close"):
                fh.close()

    def __getstate__(self) -> dict[str, Any]:
        # file objects do not pickle; a pickled index reopens from its path anyway, and an
        # in-memory one carries values
        return {"kind": self.kind, "n_docs": self.n_docs,
                "files": {n: (self._read(n) if hasattr(f, "read") else f) for n, f in self.files.items()},
                "_value": None}


__all__ = ["CODE_KINDS", "DERIVED_FOLDER", "Unit", "build_arrays", "check_kind", "hnsw_kind", "unit_name",
           "write_unit"]
