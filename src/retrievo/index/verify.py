"""Integrity checks for index folders, shared by every format (like ``git fsck`` or
Lucene's ``CheckIndex``).

Two levels, because damage that changes results must never pass silently, yet opening an
index must stay fast:

* **structural checks on every open** (:func:`segment_problems`, :func:`part_problems`,
  the manifest checksum in :mod:`retrievo.index.lifecycle`, and the small files each
  format hashes while it reads them anyway): bounds and invariants that every
  same-size edit of an array breaks — ``indptr`` starts at 0, never decreases and ends at
  the number of postings; document numbers lie inside the segment and ascend within a
  term; term frequencies are positive and add up, per document, to the document's
  recorded length (so a changed ``tf`` or document number cannot go unnoticed). They are
  vectorised, O(postings) once per open, never on the search path.
* **full verification** (:func:`verify_index`, ``retrievo check INDEX``,
  ``open_index(path, verify=True)``): additionally recomputes the sha256 of every file the
  generation names and compares it with what was recorded while writing — in the
  manifest's ``checksums`` for plain files, in each folder's ``meta.json`` (``sha256`` and
  ``files`` sizes) for folder units such as segments and document parts — and reports
  files a folder holds that its meta does not list; the same for the search arrays cached
  for this generation under ``cache/`` (:mod:`retrievo.index.scorecache`).

A folder unit is any folder named in a manifest's ``files`` whose ``meta.json`` records
``files`` (name → size) and ``sha256`` (name → digest): vector or multi-vector formats
that write their blocks the same way get full verification with no code of their own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrievo.errors import CorruptIndexError, IndexConflictError, IndexFormatVersionError
from retrievo.index import lifecycle
from retrievo.index.atomic import TMP_MARK

_CHUNK = 1 << 20
_POSTINGS_STEP = 1 << 22  # postings per step of the structural checks


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 1 MiB chunks (bounded memory for any size)."""
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            sha.update(chunk)
    return sha.hexdigest()


# ------------------------------------------------------------------ structure (cheap, on open)
def segment_problems(seg: Any, vocab_size: int, where: str) -> list[str]:
    """Structural problems of a lexical segment (empty list when sound); vectorised."""
    indptr, docs, tfs, doclen = (np.asarray(seg.indptr), np.asarray(seg.docs), np.asarray(seg.tfs),
                                 np.asarray(seg.doclen))  # views: memory-mapped segments stay mapped
    for name, arr in (("indptr", indptr), ("docs", docs), ("tfs", tfs), ("doclen", doclen)):
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            return [f"{where}: {name} is not a 1-d integer array (shape {arr.shape}, dtype {arr.dtype})"]
    n, postings = len(doclen), len(docs)
    if len(indptr) < 1:
        return [f"{where}: indptr is empty"]
    out = []
    if len(indptr) - 1 > vocab_size:
        out.append(f"{where}: {len(indptr) - 1} terms, but the vocabulary holds {vocab_size}")
    if indptr[0] != 0 or indptr[-1] != postings or len(tfs) != postings:
        out.append(f"{where}: indptr spans [{indptr[0]}, {indptr[-1]}] but there are {postings} document "
                   f"numbers and {len(tfs)} term frequencies")
        return out
    if len(indptr) > 1 and bool((np.diff(indptr) < 0).any()):
        return out + [f"{where}: indptr decreases (postings of a term would run backwards)"]
    # postings are checked in steps of _POSTINGS_STEP, so the temporaries stay bounded
    # whatever the segment's size (an index of millions of documents opens in bounded memory)
    sums = np.zeros(n, dtype=np.float64)
    starts = indptr[1:-1]
    starts = np.unique(starts[(starts > 0) & (starts < postings)])
    low_tf = unordered = False
    for a in range(0, postings, _POSTINGS_STEP):
        b = min(a + _POSTINGS_STEP, postings)
        d = np.asarray(docs[max(a - 1, 0):b])
        if int(d.min()) < 0 or int(d.max()) >= n:
            return out + [f"{where}: document numbers outside [0, {n})"]
        t = np.asarray(tfs[a:b])
        low_tf = low_tf or int(t.min()) < 1
        # positions p where docs[p] <= docs[p-1] (no overflow: numbers lie in [0, n));
        # a new term may start at any document
        p = np.flatnonzero(np.diff(d) <= 0) + max(a, 1)
        unordered = unordered or not bool(np.isin(p, starts, assume_unique=False).all())
        if not low_tf and not unordered:
            sums += np.bincount(d[1:] if a else d, weights=t, minlength=n)
    if low_tf:
        out.append(f"{where}: a term frequency is below 1")
    if unordered:
        out.append(f"{where}: document numbers do not ascend within a term")
    if n and int(doclen.min()) < 0:
        out.append(f"{where}: a document length is negative")
    if not out and not np.array_equal(sums, doclen):  # exact: integer sums far below 2**53
        out.append(f"{where}: term frequencies do not add up to the recorded document lengths")
    return out


def part_problems(part: Any, where: str) -> list[str]:
    """Structural problems of a document-store part (ids and text offsets)."""
    if not part.has_text:
        return []
    offsets = np.asarray(part.offsets)
    if offsets.ndim != 1 or offsets.dtype.kind not in "iu" or len(offsets) != part.n_docs + 1:
        return [f"{where}: offsets hold {offsets.shape} values for {part.n_docs} documents"]
    if offsets[0] != 0 or int(offsets[-1]) != len(part.blob) or bool((np.diff(offsets) < 0).any()):
        return [f"{where}: text offsets are not ascending within the {len(part.blob)}-byte store"]
    return []


# ------------------------------------------------------------------ files (full)
def unit_problems(folder: Path, rel: str, full: bool) -> list[str]:
    """Problems of one folder unit: sizes (always) and sha256 (``full``) against its meta."""
    meta_path = folder / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        sizes, hashes = meta["files"], meta["sha256"]
        if isinstance(hashes, str) and isinstance(sizes, dict) and len(sizes) == 1:
            hashes = {next(iter(sizes)): hashes}  # vector parts written before per-file digests
        if not isinstance(sizes, dict) or not isinstance(hashes, dict):
            raise TypeError("files/sha256 are not mappings")
    except FileNotFoundError:
        return [f"{rel}: meta.json is missing"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"{rel}/meta.json is unreadable ({exc})"]
    out = []
    present = {p.name for p in folder.iterdir()} - {"meta.json"}
    for extra in sorted(present - set(sizes)):
        out.append(f"{rel}/{extra}: a file its meta.json does not list")
    for name, size in sorted(sizes.items()):
        p = folder / name
        if not p.is_file():
            out.append(f"{rel}/{name}: missing")
            continue
        if p.stat().st_size != size:
            out.append(f"{rel}/{name}: {p.stat().st_size} bytes, {size} recorded")
            continue
        if name not in hashes:
            out.append(f"{rel}/{name}: no sha256 recorded")
        elif full and file_sha256(p) != hashes[name]:
            out.append(f"{rel}/{name}: sha256 differs from the one recorded when it was written")
    return out


@dataclass
class IndexReport:
    """What :func:`verify_index` found: ``problems`` (damage; the index must not be
    trusted) and ``notes`` (harmless, e.g. leftovers the next write collects)."""

    path: Path
    generation: int | None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_if_damaged(self) -> None:
        if self.problems:
            shown = "; ".join(self.problems[:5])
            more = f" (and {len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
            raise CorruptIndexError(f"{self.path} is damaged: {shown}{more}; rebuild it")


def snapshot_problems(snapshot: lifecycle.Snapshot, full: bool = True) -> list[str]:
    """Every file problem of one generation (see the module docstring), format-independent."""
    path, manifest = snapshot.path, snapshot.manifest
    files = manifest.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return [f"{lifecycle.manifest_name(snapshot.generation)}: 'files' is not a list of paths"]
    checksums = manifest.get("checksums") or {}
    if not isinstance(checksums, Mapping):
        return [f"{lifecycle.manifest_name(snapshot.generation)}: 'checksums' is not a mapping"]
    out = []
    for rel in files:
        p = path / rel
        if p.is_dir():
            out.extend(unit_problems(p, rel, full))
        elif not p.is_file():
            out.append(f"{rel}: missing")
        elif rel in checksums:
            if full and file_sha256(p) != checksums[rel]:
                out.append(f"{rel}: sha256 differs from the one recorded in the manifest")
        elif "checksums" in manifest:
            out.append(f"{rel}: no sha256 recorded in the manifest")
    return out


def cache_problems(path: Path, manifest: Mapping[str, Any], full: bool) -> list[str]:
    """Problems of the cached search arrays of this generation (:mod:`retrievo.index.scorecache`):
    a damaged entry would change scores, so it counts as damage (delete it to repair)."""
    folder = path / lifecycle.CACHE
    if not folder.is_dir():
        return []
    out = []
    for entry in sorted(folder.iterdir()):
        if TMP_MARK not in entry.name and entry.is_dir() \
                and lifecycle.cache_identity(entry) == manifest.get("identity"):
            out.extend(unit_problems(entry, f"{lifecycle.CACHE}/{entry.name}", full))
    return out


def _leftovers(path: Path, manifest: Mapping[str, Any]) -> list[str]:
    keep = {lifecycle.CURRENT, lifecycle.LOCK, lifecycle.manifest_name(int(manifest["generation"])),
            *manifest.get("files", []), lifecycle.CACHE}
    found = []
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path).as_posix()
        if TMP_MARK in p.name or (p.is_file() and not any(rel == k or rel.startswith(k + "/") for k in keep)):
            found.append(rel)
    return found


def verify_index(path: str | Path, *, full: bool = True) -> IndexReport:
    """Check the current generation of ``path`` completely and report (never raise) what
    is wrong. An index that is being written is re-checked on its new generation rather
    than reported damaged. Raises only :class:`~retrievo.errors.IndexNotFoundError` (no
    index there) and :class:`~retrievo.errors.IndexFormatVersionError`."""
    path = Path(path)

    def check(snapshot: lifecycle.Snapshot) -> IndexReport:
        report = IndexReport(path, snapshot.generation)
        report.problems.extend(snapshot_problems(snapshot, full))
        report.problems.extend(cache_problems(path, snapshot.manifest, full))
        if "checksum" not in snapshot.manifest:
            report.notes.append("the manifest records no checksum (written by an older retrievo)")
        try:
            lifecycle.format_class(snapshot.format, path).from_snapshot(snapshot, mmap=True)
        except IndexFormatVersionError:
            raise
        except (CorruptIndexError, OSError) as exc:
            report.problems.append(str(exc))
        if report.problems and lifecycle._generation_now(path) != snapshot.generation:
            raise CorruptIndexError("moved")  # a writer published meanwhile: check the new generation
        stray = _leftovers(path, snapshot.manifest)
        if stray:
            report.notes.append(f"{len(stray)} leftover file(s) of interrupted writes, removed by the next "
                                f"write: {', '.join(stray[:5])}")
        return report

    try:
        return lifecycle.open_snapshot(path, check)
    except IndexConflictError as exc:
        return IndexReport(path, None, [str(exc)])
    except CorruptIndexError as exc:  # damage found before a generation could be read
        return IndexReport(path, None, [str(exc)])


__all__ = ["IndexReport", "cache_problems", "file_sha256", "part_problems", "segment_problems",
           "snapshot_problems",
           "unit_problems", "verify_index"]
