"""Search arrays derived from one index generation, cached in the index folder.

Why: BM25 impacts depend on collection statistics (document count, average length,
document frequencies), so they cannot live in the immutable segments; computing them, and
the block-max table the pruned kernel reads, costs O(postings) every time a large index
is opened for search (about 1.5 s at 40 M postings). Cached once per generation and
parameter set, a later open maps them instead.

Layout: ``cache/<name>/`` beside the generations, one folder per entry, written with
:func:`~retrievo.index.atomic.atomic_dir` (a temporary folder renamed into place after
every file is fsync'd, so a killed process leaves either no entry or a complete one)::

    cache/<name>/meta.json   identity (of the generation), kind, params, files (name -> bytes), sha256 (name -> digest)
    cache/<name>/<array>.npy

``name`` hashes the index identity with the parameters, so an entry can never be read for
another generation or other parameters; :data:`CACHE_VERSION` is part of it, to be
raised whenever what is cached is computed differently.

Who writes: readers (a search process), without the writer lock: the entry is derived
data, not part of any generation, so publishing it needs no new manifest. BM25 writes one
entry per index folder and process (a server taking live updates would otherwise write
the arrays again at every commit; its next start writes one for the generation then). A failed write
(read-only folder, full disk, a writer's garbage collection removing the temporary
folder) only means the arrays are computed in memory again. Writers' garbage collection
(:func:`retrievo.index.lifecycle.collect_garbage`) removes entries of other identities;
a reader still using one keeps it through its memory map.

Integrity: as for segments, sizes are checked when an entry is opened and the sha256 of
every file by ``retrievo check`` (:mod:`retrievo.index.verify`), which reports a damaged
entry of the current generation; deleting the entry repairs it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from retrievo.errors import CorruptIndexError
from retrievo.index.atomic import atomic_dir, check_file_sizes, save_array

CACHE_FOLDER = "cache"  # = retrievo.index.lifecycle.CACHE, which keeps it through garbage collection
CACHE_VERSION = 1


def entry_name(kind: str, identity: str, params: Mapping[str, Any]) -> str:
    """Folder name of the entry for ``kind`` computed with ``params`` from the generation
    whose identity is ``identity``."""
    text = json.dumps({"kind": kind, "identity": identity, "params": dict(params), "version": CACHE_VERSION},
                      sort_keys=True)
    return f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:24]}"


def load(index_path: Path, kind: str, identity: str, params: Mapping[str, Any]) -> dict[str, Any] | None:
    """The cached arrays (memory-mapped) and ``meta["extra"]``, or None when there is no
    usable entry (missing, another identity, wrong sizes, unreadable)."""
    folder = Path(index_path) / CACHE_FOLDER / entry_name(kind, identity, params)
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if meta.get("identity") != identity or meta.get("kind") != kind:
            return None
        check_file_sizes(folder, meta["files"])
        arrays: dict[str, Any] = {name[:-4]: np.load(folder / name, mmap_mode="r", allow_pickle=False)
                                  for name in meta["files"] if name.endswith(".npy")}
    except (OSError, ValueError, KeyError, TypeError, CorruptIndexError):
        return None
    arrays["extra"] = meta.get("extra", {})
    return arrays


def store(index_path: Path, kind: str, identity: str, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
          extra: Mapping[str, Any] | None = None) -> bool:
    """Write an entry atomically; False (and nothing left behind) when it cannot be
    written or another process wrote it first."""
    root = Path(index_path) / CACHE_FOLDER
    final = root / entry_name(kind, identity, params)
    if final.exists():
        return False
    try:
        root.mkdir(exist_ok=True)
        from retrievo.index.lifecycle import fault_point  # lifecycle imports modules that import this one

        with atomic_dir(final) as tmp:
            hashes = {}
            for name, arr in arrays.items():
                hashes[f"{name}.npy"] = save_array(tmp / f"{name}.npy", np.asarray(arr))
                fault_point("scorecache.after_array")
            sizes = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
            meta = {"kind": kind, "identity": identity, "params": dict(params), "version": CACHE_VERSION,
                    "files": sizes, "sha256": hashes, "extra": dict(extra or {})}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    except OSError:
        return False
    return True


__all__ = ["CACHE_FOLDER", "CACHE_VERSION", "entry_name", "load", "store"]
