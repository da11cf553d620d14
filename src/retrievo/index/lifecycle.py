"""One life cycle for every on-disk index format: generations, manifests, publish, GC.

An index folder holds any number of immutable files and folders plus::

    CURRENT             name of the live manifest, replaced atomically (the only file ever replaced)
    gen-00000007.json   manifest of generation 7
    LOCK                writer lock (readers never take it)

A manifest records ``format`` and ``format_version`` (which class reads the folder, see
:func:`open_index`), ``generation``, ``retrievo_version``, ``created``, the index
``identity`` (a content hash, see each format), ``files`` — every path, relative to the
folder, that the generation uses — an optional ``docstore`` section (see
:mod:`retrievo.index.docstore`) and the format's own ``payload``.

Writers (:func:`writing`) take the lock, write new content under fresh names, then
:meth:`Transaction.publish` writes the next manifest and replaces ``CURRENT`` last, so a
process killed at any moment leaves the previous generation intact. Readers
(:func:`open_snapshot`) resolve ``CURRENT`` once and read that generation only.

Garbage collection keeps the current generation only (and, under ``cache/``, the search
arrays derived from it, see :mod:`retrievo.index.scorecache`). Once a writer has published, it
deletes (still under the lock) every file and folder the new manifest does not name —
old manifests, replaced segments, tombstones, and ``*.retrievo-tmp*`` leftovers of
writers that died, wherever they are: under the lock no live writer can own a temporary
file. This is what makes ``merge`` give disk space back at once. Readers stay correct:
one that already opened the old generation keeps reading it, because POSIX keeps
unlinked files readable through open descriptors and memory maps (formats therefore open
or map every file when the snapshot is opened, never later); one that resolved the old
``CURRENT`` but had not opened its files yet finds them gone, sees that ``CURRENT``
moved, and retries with the new generation.

Integrity: every manifest carries a ``checksum`` (sha256 of its own canonical JSON
without that field), so a same-size edit of the manifest is found on open; files a
generation names carry their sha256 either in the manifest's ``checksums`` or, for
folders, in their own ``meta.json`` (see :mod:`retrievo.index.verify`, which checks all of
them for ``retrievo check`` and ``open_index(path, verify=True)``).

Fault injection: :func:`fault_point` marks each step of a write (and of opening); tests
install a hook with :func:`fault_hook`, or set ``RETRIEVO_FAULT_AT=step[:n]`` to have the
process kill itself with SIGKILL at the ``n``-th time it reaches ``step``, so crash
recovery is tested at every step deterministically instead of by luck.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib
import json
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from retrievo.errors import (ConfigError, CorruptIndexError, IndexConflictError, IndexFormatVersionError,
                             IndexNotFoundError)
from retrievo.index.atomic import _HELD, TMP_MARK, write_bytes_atomic, write_json_atomic, write_lock

CURRENT = "CURRENT"
LOCK = "LOCK"
CACHE = "cache"  # derived search arrays readers add (retrievo.index.scorecache); kept for the current identity
OPEN_RETRIES = 5  # generations a reader chases before it gives up (each retry needs a new publish)

T = TypeVar("T")


def manifest_name(generation: int) -> str:
    return f"gen-{generation:08d}.json"


def is_index(path: str | Path) -> bool:
    return (Path(path) / CURRENT).is_file()


# ------------------------------------------------------------------ fault injection
FAULT_ENV = "RETRIEVO_FAULT_AT"
_FAULT_HOOK: Callable[[str], None] | None = None
_FAULT_COUNTS: dict[str, int] = {}


def fault_point(step: str) -> None:
    """Mark one step of a write or an open (e.g. ``"publish.before_current"``).

    Costs one global read and one environment lookup; it is never called on the search
    path. The test hook (see :func:`fault_hook`) may raise or pause; with
    ``RETRIEVO_FAULT_AT=step[:n]`` the process SIGKILLs itself at the ``n``-th visit
    (default 1), exactly as a crash would leave the folder.
    """
    if _FAULT_HOOK is not None:
        _FAULT_HOOK(step)
    target = os.environ.get(FAULT_ENV)
    if target:
        name, _, nth = target.partition(":")
        if name == step:
            _FAULT_COUNTS[step] = _FAULT_COUNTS.get(step, 0) + 1
            if _FAULT_COUNTS[step] >= int(nth or 1):
                os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def fault_hook(hook: Callable[[str], None]) -> Iterator[None]:
    """Call ``hook(step)`` at every :func:`fault_point` while the block runs (tests only:
    the hook may raise to simulate a failure at that step, or sleep to widen a race)."""
    global _FAULT_HOOK
    previous, _FAULT_HOOK = _FAULT_HOOK, hook
    try:
        yield
    finally:
        _FAULT_HOOK = previous


_INDEX_MARKERS = ("gen-[0-9]*.json", "segments/seg-*", "docs/part-*/meta.json", "vocab/vocab-*.txt")


def looks_like_index(path: str | Path) -> bool:
    """Whether ``path`` holds index files (a manifest, segments, document parts or a
    vocabulary), with or without ``CURRENT``: such a folder must be opened as an index,
    and reported as damaged when it cannot be, never read as a folder of text files."""
    path = Path(path)
    if is_index(path):
        return True
    if not path.is_dir():
        return False
    return any(next(iter(path.glob(pattern)), None) is not None for pattern in _INDEX_MARKERS)


def manifest_checksum(manifest: Mapping[str, Any]) -> str:
    """sha256 of a manifest's canonical JSON without its ``checksum`` field."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False,
                                     separators=(",", ":")).encode("utf-8")).hexdigest()


def read_generation(path: Path) -> int:
    """The generation ``CURRENT`` names."""
    try:
        name = (path / CURRENT).read_text(encoding="utf-8").strip()
        return int(name.removeprefix("gen-").removesuffix(".json"))
    except FileNotFoundError:
        if looks_like_index(path):
            raise CorruptIndexError(f"{path} holds index files but no {CURRENT} file: the index is damaged "
                                    "(run `retrievo check` on it, or rebuild it)") from None
        raise IndexNotFoundError(f"{path} is not a retrievo index (no {CURRENT} file)") from None
    except (OSError, ValueError) as exc:
        raise CorruptIndexError(f"{path}/{CURRENT} is unreadable ({exc}); the index is damaged") from exc


def load_manifest(path: Path, generation: int) -> dict[str, Any] | None:
    """The manifest of ``generation``, or None when its file does not exist."""
    p = path / manifest_name(generation)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise CorruptIndexError(f"{p} is unreadable ({exc}); the index is damaged") from exc


@dataclass(frozen=True)
class Snapshot:
    """One generation of an index folder, as its manifest describes it."""

    path: Path
    manifest: Mapping[str, Any]

    @property
    def generation(self) -> int:
        return int(self.manifest["generation"])

    @property
    def format(self) -> str:
        return str(self.manifest.get("format"))

    @property
    def format_version(self) -> Any:
        return self.manifest.get("format_version")

    @property
    def identity(self) -> str | None:
        return self.manifest.get("identity")

    @property
    def payload(self) -> Mapping[str, Any]:
        return self.manifest["payload"]

    @property
    def docstore(self) -> Mapping[str, Any] | None:
        return self.manifest.get("docstore")

    def require(self, format: str, format_version: int) -> None:
        """Check that this generation was written as ``format`` version ``format_version``."""
        if self.format != format:
            raise CorruptIndexError(f"{self.path} holds a {self.format!r} index, not {format!r}; "
                                    "open it with retrievo.index.open_index")
        if self.format_version != format_version:
            raise IndexFormatVersionError(
                f"{self.path} was written in {format} format version {self.format_version} "
                f"(retrievo {self.manifest.get('retrievo_version')}); this retrievo reads version {format_version}. "
                "Rebuild the index with `retrievo index`.")


def current_snapshot(path: str | Path) -> Snapshot:
    """Resolve ``CURRENT`` and read its manifest (no other file is touched)."""
    path = Path(path)
    if not path.exists():
        raise IndexNotFoundError(f"no index at {path}: build one with `retrievo index`")
    generation = read_generation(path)
    manifest = load_manifest(path, generation)
    if manifest is None:
        raise CorruptIndexError(f"{path}: {CURRENT} names generation {generation} but its manifest is missing")
    return _checked_snapshot(path, generation, manifest)


def _checked_snapshot(path: Path, generation: int, manifest: Any) -> Snapshot:
    if not isinstance(manifest, dict) or manifest.get("generation") != generation or "format" not in manifest \
            or not isinstance(manifest.get("payload", {}), dict):
        raise CorruptIndexError(f"{path}/{manifest_name(generation)} is not a valid manifest; the index is damaged")
    recorded = manifest.get("checksum")
    if recorded is not None and recorded != manifest_checksum(manifest):
        raise CorruptIndexError(f"{path}/{manifest_name(generation)} does not match its checksum: the manifest "
                                "was modified or damaged; rebuild the index")
    return Snapshot(path, manifest)


def _generation_now(path: Path) -> int | None:
    try:
        return read_generation(path)
    except (CorruptIndexError, IndexNotFoundError):
        return None


def open_snapshot(path: str | Path, load: Callable[[Snapshot], T]) -> T:
    """``load(snapshot)`` for the current generation, retried when a writer published in
    the meantime and collected the files it was reading (see the module docstring).

    A failure while ``CURRENT`` stays put is real damage and is raised as it is.
    A reader that loses every race (``CURRENT`` moved under it :data:`OPEN_RETRIES`
    times in a row) gets :class:`IndexConflictError`, never a corruption error: the index
    is healthy, only busy.
    """
    path = Path(path)
    if not path.exists():
        raise IndexNotFoundError(f"no index at {path}: build one with `retrievo index`")
    for attempt in range(OPEN_RETRIES):
        generation = read_generation(path)
        try:
            fault_point("open.after_current")
            manifest = load_manifest(path, generation)
            if manifest is None:
                raise CorruptIndexError(f"{path}: {CURRENT} names generation {generation} but its manifest "
                                        "is missing")
            snapshot = _checked_snapshot(path, generation, manifest)
            fault_point("open.after_manifest")
            return load(snapshot)
        except (IndexFormatVersionError, IndexNotFoundError):
            raise
        except (CorruptIndexError, OSError):
            if _generation_now(path) == generation:
                raise
            if attempt == OPEN_RETRIES - 1:
                raise IndexConflictError(f"{path} changed {OPEN_RETRIES} times while it was being opened "
                                         "(writers publishing quickly); it is not damaged, open it again") \
                    from None
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


class Transaction:
    """A writer's view while it holds the lock: the generation it builds on, and publish."""

    def __init__(self, path: Path, base_generation: int):
        self.path = path
        self.base_generation = base_generation
        self.published: dict[str, Any] | None = None

    @property
    def generation(self) -> int:
        """The generation :meth:`publish` will create."""
        return self.base_generation + 1

    def publish(self, format: str, format_version: int, payload: Mapping[str, Any], files: Iterable[str], *,
                identity: str, docstore: Mapping[str, Any] | None = None,
                checksums: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Make a new generation visible: its manifest first, then ``CURRENT``.

        ``files`` must name every file or folder (relative POSIX paths) the generation
        reads; garbage collection deletes everything else. They must all be written
        (and fsynced) before this call. ``checksums`` gives the sha256 of plain files
        among them (taken while they were written); folders record theirs in their own
        ``meta.json`` (see :mod:`retrievo.index.verify`).
        """
        if self.published is not None:
            raise RuntimeError("a transaction publishes one generation")
        files = sorted(set(files))
        missing = [f for f in files if not (self.path / f).exists()]
        if missing:
            raise CorruptIndexError(f"{self.path}: cannot publish, files missing: {missing[:3]}")
        manifest = {
            "format": format, "format_version": format_version, "generation": self.generation,
            "retrievo_version": _retrievo_version(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "identity": identity, "files": files,
            **({"docstore": dict(docstore)} if docstore is not None else {}),
            **({"checksums": dict(sorted(checksums.items()))} if checksums else {}),
            "payload": dict(payload),
        }
        manifest["checksum"] = manifest_checksum(manifest)
        fault_point("publish.before_manifest")
        write_json_atomic(self.path / manifest_name(self.generation), manifest)
        fault_point("publish.before_current")
        write_bytes_atomic(self.path / CURRENT, f"{manifest_name(self.generation)}\n".encode())
        fault_point("publish.after_current")
        self.published = manifest
        return manifest


def _retrievo_version() -> str:
    from retrievo import __version__

    return __version__


@contextlib.contextmanager
def writing(path: str | Path, expected_generation: int | None = None) -> Iterator[Transaction]:
    """Hold the writer lock of ``path`` for one change; garbage-collect when done.

    ``expected_generation`` is the generation the caller's in-memory state was read from:
    if another writer published since, the change would silently drop theirs, so it is
    refused. GC runs after a publish and also after a failed write (whose half-written
    files no generation refers to), still under the lock.
    """
    path = Path(path)
    with write_lock(path):
        base = read_generation(path) if (path / CURRENT).exists() else 0
        if expected_generation is not None and base != expected_generation:
            raise IndexConflictError(
                f"{path} was changed by another writer since it was opened "
                f"(generation {expected_generation} -> {base}); reopen it and retry")
        try:
            yield Transaction(path, base)
        finally:
            # a collection that fails (e.g. permissions) must not turn a published change
            # into an error: what it left behind goes at the next write
            with contextlib.suppress(OSError):
                collect_garbage(path)


def collect_garbage(path: Path) -> list[str]:
    """Delete what the current generation does not use; returns the removed paths.

    Call it only while holding the writer lock. When the current manifest cannot be read
    or was written before this life cycle existed (no ``files`` list), nothing is
    deleted: collection never guesses.
    """
    try:
        generation = read_generation(path) if (path / CURRENT).exists() else None
        manifest = load_manifest(path, generation) if generation is not None else None
    except CorruptIndexError:
        return []
    keep = {LOCK}
    if generation is not None:
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list) \
                or not all(isinstance(f, str) for f in manifest["files"]):
            return []
        keep |= {CURRENT, manifest_name(generation), *manifest["files"]}
    ancestors = {"/".join(parts[:i]) for k in keep for parts in [k.split("/")] for i in range(1, len(parts))}
    removed: list[str] = []
    fault_point("gc.before")
    identity = manifest.get("identity") if isinstance(manifest, dict) else None
    if isinstance(identity, str) and (path / CACHE).is_dir():
        # cached search arrays (retrievo.index.scorecache) of this generation stay
        keep.add(CACHE)
        for entry in sorted((path / CACHE).iterdir()):
            if TMP_MARK in entry.name or cache_identity(entry) != identity:
                _remove(entry)
                removed.append(f"{CACHE}/{entry.name}")
    _sweep(path, "", keep, ancestors, removed)
    return removed


def cache_identity(entry: Path) -> str | None:
    try:
        value = json.loads((entry / "meta.json").read_text(encoding="utf-8")).get("identity")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _sweep(folder: Path, prefix: str, keep: set[str], ancestors: set[str], removed: list[str]) -> None:
    for entry in sorted(folder.iterdir()):
        rel = prefix + entry.name
        if rel in keep:
            if entry.is_dir() and not entry.is_symlink():  # kept folders are complete, but be thorough
                for stray in sorted(entry.rglob(f"*{TMP_MARK}*")):
                    if stray.exists() or stray.is_symlink():  # not inside a stray removed just before
                        _remove(stray)
                        removed.append(prefix + stray.relative_to(folder).as_posix())
            continue
        if rel in ancestors and entry.is_dir() and not entry.is_symlink():
            _sweep(entry, rel + "/", keep, ancestors, removed)
            continue
        _remove(entry)
        removed.append(rel)


def _remove(entry: Path) -> None:
    fault_point("gc.remove")
    with contextlib.suppress(FileNotFoundError):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def collect_abandoned_builds(path: Path) -> list[str]:
    """Remove ``<path>.retrievo-tmp-*`` folders beside ``path`` left by builds that died
    before renaming their result into place; returns their names.

    A build holds the writer lock of its temporary folder until after the rename, so a
    folder whose lock can be taken belongs to a dead process. One without a lock file
    (the instant between creating the folder and locking it) is left alone unless it is
    over an hour old.
    """
    import fcntl
    import time

    removed: list[str] = []
    if not path.parent.is_dir():
        return removed
    for stray in sorted(path.parent.glob(f"{path.name}{TMP_MARK}-*")):
        if not stray.is_dir() or stray.is_symlink() or os.path.realpath(stray) in _HELD:
            continue  # (a build of this very process: record locks do not exclude their owner)
        lock = stray / LOCK
        try:
            if not lock.exists():
                if time.time() - stray.stat().st_mtime < 3600:
                    continue
                shutil.rmtree(stray)
                removed.append(stray.name)
                continue
            with open(lock, "a+") as fh:
                try:
                    fcntl.lockf(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a live build
                shutil.rmtree(stray)
                removed.append(stray.name)
        except OSError:
            continue
    return removed


def folder_size(path: Path, files: Iterable[str]) -> int:
    """Bytes on disk of ``files`` (relative paths, folders counted recursively)."""
    total = 0
    for rel in files:
        p = path / rel
        if p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        elif p.exists():
            total += p.stat().st_size
    return total


# ---------------------------------------------------------------------- formats
_FORMATS: dict[str, str] = {
    "retrievo-inverted": "retrievo.index.inverted:InvertedIndex",
    "retrievo-vectors": "retrievo.index.vectors:VectorIndex",
    "retrievo-impacts": "retrievo.index.impacts:ImpactIndex",
    "retrievo-multivectors": "retrievo.index.multivectors:MultiVectorIndex",
}


def register_format(name: str, target: str) -> None:
    """Make :func:`open_index` read indexes whose manifest says ``format: name``.

    ``target`` is ``"module:Class"``, imported on first use, so registering costs nothing.
    The class provides ``FORMAT``, ``FORMAT_VERSION`` and
    ``from_snapshot(snapshot, mmap=True)``.
    """
    module, _, attribute = target.partition(":")
    if not name or not module or not attribute:
        raise ConfigError(f"register_format({name!r}, {target!r}): expected a name and 'module:Class'")
    _FORMATS[name] = target


def registered_formats() -> dict[str, str]:
    return dict(_FORMATS)


def format_class(name: str, path: Path | None = None) -> type:
    """The class registered for ``name`` (imported now)."""
    target = _FORMATS.get(name)
    where = f"{path} holds" if path is not None else "this is"
    if target is None:
        raise CorruptIndexError(f"{where} an index of format {name!r}, which no registered reader opens "
                                f"(known: {', '.join(sorted(_FORMATS))}); install the plugin that writes it")
    module, _, attribute = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        raise CorruptIndexError(f"{where} an index of format {name!r}, but its reader {target} "
                                f"cannot be imported: {exc}") from exc


def _open_uncached(path: Path, mmap: bool, verify: bool = False) -> Any:
    def load(snap: Snapshot) -> Any:
        if verify:  # the same generation the reader opens, so a later publish cannot slip in between
            from retrievo.index.verify import IndexReport, snapshot_problems

            IndexReport(path, snap.generation, snapshot_problems(snap, full=True)).raise_if_damaged()
        return format_class(snap.format, path).from_snapshot(snap, mmap=mmap)

    return open_snapshot(path, load)


_CACHE: dict[tuple[str, bool], Any] = {}
_CACHE_LOCK = threading.Lock()


def open_index(path: str | Path, *, cached: bool = False, mmap: bool = True, verify: bool = False) -> Any:
    """Open the index at ``path`` with the reader its manifest names.

    Every open checks the manifest's checksum and the structure of what it reads (cheap,
    see :mod:`retrievo.index.verify`); ``verify=True`` also recomputes the sha256 of every
    file of the generation first (reads the whole index once) and raises
    :class:`CorruptIndexError` listing what differs.

    ``cached=True`` is for named resources (pipelines that name an index, server
    workers): the same object comes back for the same real path as long as the index's
    generation is unchanged, and a fresh one once ``CURRENT`` moved, so repeated opens cost
    one small file read and every stage shares one set of memory maps and caches.
    """
    path = Path(path)
    if not cached:
        return _open_uncached(path, mmap, verify)
    if not path.exists():
        raise IndexNotFoundError(f"no index at {path}: build one with `retrievo index`")
    key = (os.path.realpath(path), mmap)
    generation = read_generation(path)
    with _CACHE_LOCK:
        index = _CACHE.get(key)
        if index is not None and index.generation == generation:
            return index
    index = _open_uncached(path, mmap, verify)
    with _CACHE_LOCK:
        _CACHE[key] = index
    return index


def clear_index_cache() -> None:
    """Forget every index :func:`open_index` cached (their memory maps close when unused)."""
    with _CACHE_LOCK:
        _CACHE.clear()


__all__ = [
    "CURRENT", "FAULT_ENV", "Snapshot", "Transaction", "clear_index_cache", "collect_abandoned_builds",
    "collect_garbage", "current_snapshot", "fault_hook", "fault_point", "folder_size", "format_class", "is_index",
    "load_manifest", "looks_like_index", "manifest_checksum", "manifest_name", "open_index", "open_snapshot",
    "read_generation", "register_format", "registered_formats", "writing",
]
