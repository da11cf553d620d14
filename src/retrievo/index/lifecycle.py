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

Garbage collection keeps the current generation only. Once a writer has published, it
deletes (still under the lock) every file and folder the new manifest does not name —
old manifests, replaced segments, tombstones, and ``*.retrievo-tmp*`` leftovers of
writers that died, wherever they are: under the lock no live writer can own a temporary
file. This is what makes ``merge`` give disk space back at once. Readers stay correct:
one that already opened the old generation keeps reading it, because POSIX keeps
unlinked files readable through open descriptors and memory maps (formats therefore open
or map every file when the snapshot is opened, never later); one that resolved the old
``CURRENT`` but had not opened its files yet finds them gone, sees that ``CURRENT``
moved, and retries with the new generation.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from retrievo.errors import ConfigError, CorruptIndexError, IndexFormatVersionError, IndexNotFoundError
from retrievo.index.atomic import TMP_MARK, write_bytes_atomic, write_json_atomic, write_lock

CURRENT = "CURRENT"
LOCK = "LOCK"
OPEN_RETRIES = 5  # generations a reader chases before it gives up (each retry needs a new publish)

T = TypeVar("T")


def manifest_name(generation: int) -> str:
    return f"gen-{generation:08d}.json"


def is_index(path: str | Path) -> bool:
    return (Path(path) / CURRENT).is_file()


def read_generation(path: Path) -> int:
    """The generation ``CURRENT`` names."""
    try:
        name = (path / CURRENT).read_text(encoding="utf-8").strip()
        return int(name.removeprefix("gen-").removesuffix(".json"))
    except FileNotFoundError:
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
    if not isinstance(manifest, dict) or manifest.get("generation") != generation or "format" not in manifest:
        raise CorruptIndexError(f"{path}/{manifest_name(generation)} is not a valid manifest; the index is damaged")
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
    """
    path = Path(path)
    for attempt in range(OPEN_RETRIES):
        snapshot = current_snapshot(path)
        try:
            return load(snapshot)
        except (IndexFormatVersionError, IndexNotFoundError):
            raise
        except (CorruptIndexError, OSError):
            if attempt == OPEN_RETRIES - 1 or _generation_now(path) == snapshot.generation:
                raise
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
                identity: str, docstore: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Make a new generation visible: its manifest first, then ``CURRENT``.

        ``files`` must name every file or folder (relative POSIX paths) the generation
        reads; garbage collection deletes everything else. They must all be written
        (and fsynced) before this call.
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
            "payload": dict(payload),
        }
        write_json_atomic(self.path / manifest_name(self.generation), manifest)
        write_bytes_atomic(self.path / CURRENT, f"{manifest_name(self.generation)}\n".encode())
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
            raise CorruptIndexError(
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
        if manifest is None or not isinstance(manifest.get("files"), list):
            return []
        keep |= {CURRENT, manifest_name(generation), *manifest["files"]}
    ancestors = {"/".join(parts[:i]) for k in keep for parts in [k.split("/")] for i in range(1, len(parts))}
    removed: list[str] = []
    _sweep(path, "", keep, ancestors, removed)
    return removed


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
    with contextlib.suppress(FileNotFoundError):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


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


def _open_uncached(path: Path, mmap: bool) -> Any:
    return open_snapshot(path, lambda snap: format_class(snap.format, path).from_snapshot(snap, mmap=mmap))


_CACHE: dict[tuple[str, bool], Any] = {}
_CACHE_LOCK = threading.Lock()


def open_index(path: str | Path, *, cached: bool = False, mmap: bool = True) -> Any:
    """Open the index at ``path`` with the reader its manifest names.

    ``cached=True`` is for named resources (pipelines that name an index, server
    workers): the same object comes back for the same real path as long as the index's
    generation is unchanged, and a fresh one once ``CURRENT`` moved, so repeated opens cost
    one small file read and every stage shares one set of memory maps and caches.
    """
    path = Path(path)
    if not cached:
        return _open_uncached(path, mmap)
    if not path.exists():
        raise IndexNotFoundError(f"no index at {path}: build one with `retrievo index`")
    key = (os.path.realpath(path), mmap)
    generation = read_generation(path)
    with _CACHE_LOCK:
        index = _CACHE.get(key)
        if index is not None and index.generation == generation:
            return index
    index = _open_uncached(path, mmap)
    with _CACHE_LOCK:
        _CACHE[key] = index
    return index


def clear_index_cache() -> None:
    """Forget every index :func:`open_index` cached (their memory maps close when unused)."""
    with _CACHE_LOCK:
        _CACHE.clear()


__all__ = [
    "CURRENT", "Snapshot", "Transaction", "clear_index_cache", "collect_garbage", "current_snapshot",
    "folder_size", "format_class", "is_index", "load_manifest", "manifest_name", "open_index", "open_snapshot",
    "read_generation", "register_format", "registered_formats", "writing",
]
