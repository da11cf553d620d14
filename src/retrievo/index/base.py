"""What every index format shares about its documents: numbering, deletions, lookups.

An index of any format is a list of immutable units (lexical segments, vector parts...)
with their live bitmaps, paired one to one with the parts of the shared document store
(:mod:`retrievo.index.docstore`). Global document numbers run over the units in order.
Everything here is derived from that pairing — the global live bitmap, the id of each
number, the id-order tie-break ranks every retriever uses, and lookups of stored
documents — so each format writes only what is its own (postings, vectors).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from retrievo.errors import CorruptIndexError, UnknownIdError
from retrievo.index import lifecycle
from retrievo.index.atomic import disk_full_named, fsync_dir, hash_bytes, save_array, tmp_sibling
from retrievo.index.docstore import DocPart, DocStore
from retrievo.types import Document

T = TypeVar("T")


class DocumentNumbering:
    """Mixin of an index made of units paired with document-store parts.

    Subclasses set ``lives``, ``doc_parts``, ``path``, ``info``, ``version`` and
    ``_cache``, and say which units carry the documents (:meth:`_units`) and how to name
    themselves in messages (``_KIND``).
    """

    _KIND = "index"
    _STORE_DEFAULT = True
    lives: list[np.ndarray | None]
    doc_parts: list[DocPart]
    info: dict[str, Any]
    version: int
    _cache: dict[str, Any]

    def _units(self) -> Sequence[Any]:
        raise NotImplementedError

    # ------------------------------------------------------------------ cache
    def _cached(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def _invalidate(self) -> None:
        """Forget every derived view after a change (searchers compare ``version``)."""
        self.version += 1
        self._cache.clear()

    # ------------------------------------------------------------------ numbering
    @property
    def store(self) -> bool:
        """Whether document text is stored (``build(store=...)``)."""
        return bool(self.info.get("store", self._STORE_DEFAULT))

    @property
    def docstore(self) -> DocStore:
        """The stored documents of this snapshot (one object until the index changes)."""
        where = f"{self._KIND} {self.path}" if self.path is not None else f"this in-memory {self._KIND}"
        return self._cached("docstore", lambda: DocStore(self.doc_parts, self.lives, has_text=self.store,
                                                         where=where))

    @property
    def bases(self) -> np.ndarray:
        """Global number of each unit's first document."""
        sizes = [u.n_docs for u in self._units()]
        return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)

    @property
    def total_docs(self) -> int:
        """Documents in the units, deleted ones included (size of score buffers)."""
        return int(sum(u.n_docs for u in self._units()))

    @property
    def live(self) -> np.ndarray | None:
        """Global bitmap of live documents, or None when nothing is deleted."""
        def make():
            if all(lv is None for lv in self.lives):
                return None
            return np.concatenate([np.ones(u.n_docs, bool) if lv is None else np.asarray(lv, bool)
                                   for u, lv in zip(self._units(), self.lives)])
        return self._cached("live", make)

    @property
    def doc_ids(self) -> np.ndarray:
        """External id of every global document number (deleted ones included)."""
        return self.docstore.ids

    @property
    def id_rank(self) -> np.ndarray:
        """Position of each document's id in sorted id order: the deterministic tie-break
        of every retriever (Anserini breaks score ties by ascending document id), so
        results never depend on the index's layout."""
        def make():
            order = np.argsort(self.doc_ids.astype(str), kind="stable")
            rank = np.empty(len(order), dtype=np.int32)
            rank[order] = np.arange(len(order), dtype=np.int32)
            return rank
        return self._cached("id_rank", make)

    @property
    def by_rank(self) -> np.ndarray:
        """Global document number for each id rank (inverse of :attr:`id_rank`)."""
        return self._cached("by_rank", lambda: np.argsort(self.id_rank).astype(np.int32))

    def __len__(self) -> int:
        live = self.live
        return self.total_docs if live is None else int(live.sum())

    # ------------------------------------------------------------------ filters
    def filter_mask(self, expression: str) -> np.ndarray:
        """The documents (global numbers, deleted ones included) a metadata filter
        selects (see :mod:`retrievo.index.filters`), compiled once per index version and
        normalised spelling of the filter, so a stage that filters every batch compiles once."""
        from retrievo.index.filters import canonical, compile_filter

        key = f"filter:{canonical(expression)}"
        return self._cached(key, lambda: compile_filter(
            expression, [p.columns for p in self.doc_parts], [p.n_docs for p in self.doc_parts]))

    def allowed(self, expression: str | None) -> np.ndarray | None:
        """Live documents the filter keeps: the bitmap every retriever applies before
        top-k selection (None: no filter and nothing deleted)."""
        if expression is None:
            return self.live
        mask = self.filter_mask(expression)
        live = self.live
        return mask if live is None else mask & live

    def metadata_fields(self) -> dict[str, str]:
        """``{field: type}`` of the metadata columns filters can use (keyword, date,
        number, bool; a field holding several types lists them joined by ``|``)."""
        from retrievo.index.filters import describe_fields

        return describe_fields([p.columns for p in self.doc_parts])

    # ------------------------------------------------------------------ lookups
    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self.docstore

    def _ids_to_global(self) -> dict[str, int]:
        """Live id -> global document number for callers that look up many ids at once
        (the document store's shared map; see :meth:`DocStore.id_map`)."""
        return self.docstore.id_map()

    def locate(self, doc_id: str) -> int:
        """Global document number of a live document id (:class:`UnknownIdError` if none)."""
        return self.docstore.locate(doc_id)

    def document(self, doc_id: str) -> Document:
        """The stored document (title, text, meta) for ``doc_id``; an index built with
        ``store=False`` raises :class:`~retrievo.errors.ConfigError` (see the docstore)."""
        return self.docstore.get(doc_id)

    def documents(self, doc_ids: Iterable[str]) -> list[Document]:
        """The stored documents of ``doc_ids`` in order; unknown ids raise one
        :class:`UnknownIdError` naming them."""
        return self.docstore.get_many(doc_ids)

    def iter_documents(self) -> Iterator[Document]:
        """Every live stored document, in index order."""
        return self.docstore.iter_documents()

    # ------------------------------------------------------------------ deletions
    def _deletion_targets(self, doc_ids: Iterable[str], missing_ok: bool) -> list[int]:
        """Global numbers of the live documents ``doc_ids`` names, sorted; unknown ids are
        an :class:`UnknownIdError` unless ``missing_ok``."""
        doc_ids = list(doc_ids)
        store = self.docstore
        unknown = [d for d in doc_ids if d not in store]
        if unknown and not missing_ok:
            raise UnknownIdError(f"cannot delete {len(unknown)} unknown document id(s), e.g. {unknown[:3]}")
        return sorted({store.locate(d) for d in doc_ids if d in store})

    def _tombstone(self, targets: Iterable[int]) -> None:
        """Clear the live bits of global numbers ``targets``. Each touched bitmap is copied
        first: a snapshot (or a rollback) may still hold the old one."""
        bases, units = self.bases, self._units()
        copied: set[int] = set()
        for g in targets:
            s = int(np.searchsorted(bases, g, side="right") - 1)
            if s not in copied:
                self.lives[s] = (np.ones(units[s].n_docs, dtype=bool) if self.lives[s] is None
                                 else np.array(self.lives[s], dtype=bool))
                copied.add(s)
            self.lives[s][g - int(bases[s])] = False

    def _delete_published(self, doc_ids: Iterable[str], missing_ok: bool, source: str | None) -> int:
        """Tombstone ``doc_ids`` (optionally recording the ``source`` the index now
        matches) and, on disk, publish the new live bitmaps as one generation; returns how
        many were deleted."""
        targets = self._deletion_targets(doc_ids, missing_ok)
        if not targets and source is None:
            return 0

        def apply(folder: Path | None) -> None:
            self._tombstone(targets)
            if source is not None:
                self.info["source"] = source
            self._invalidate()

        self._change(apply)
        return len(targets)

    # ------------------------------------------------------------------ one change
    def _change(self, apply: Callable[[Path | None], T], *, fault: str | None = None,
                publish: Callable[[T], bool] = lambda result: True) -> T:
        """Make one change — ``apply(folder)`` — all or nothing, and return its result.

        In memory (``folder`` None) the object's state is put back if ``apply`` fails. On
        disk, inside a write transaction on the current generation: ``apply(path)`` (which
        may write new files under it), then the parts it added in memory are written
        (:meth:`_write_parts`), ``fault`` names a crash point for the fault tests, and the
        new generation is published — unless ``publish(result)`` says nothing changed. A
        failure anywhere restores the object and publishes nothing (the next writer's
        garbage collection removes the unpublished files).

        Subclasses provide ``_restored_on_failure`` (a context that undoes in-memory
        changes on error) and ``_publish(txn)``."""
        if self.path is None:
            with self._restored_on_failure():
                return apply(None)
        with lifecycle.writing(self.path, self.generation) as txn, self._restored_on_failure():
            result = apply(self.path)
            if publish(result):
                self._write_parts(self.path)
                if fault is not None:
                    lifecycle.fault_point(fault)
                self._publish(txn)
        return result

    def _write_parts(self, folder: Path) -> None:
        """Write the parts a change added in memory under ``folder`` (indexes that write
        while applying have nothing left to do)."""

    # ------------------------------------------------------------------ presentation
    def size_on_disk(self) -> int | None:
        """Bytes of the files this generation uses (None in memory)."""
        manifest = self.info.get("manifest")
        if self.path is None or manifest is None:
            return None
        # not cached: publishing derived files (codes, graphs) changes it without a new change
        return lifecycle.folder_size(self.path, [lifecycle.CURRENT, lifecycle.manifest_name(self.generation),
                                                 *manifest["files"]])


def write_tombstones(path: Path, generation: int, unit: str, live: np.ndarray) -> tuple[str, str]:
    """Write the live bitmap of the part or segment ``unit`` for ``generation`` (a new file,
    renamed into place); returns its name relative to ``path`` and its sha256."""
    name = f"deletes/del-{generation:08d}-{unit}.npy"
    tmp = tmp_sibling(path / name)
    sha = save_array(tmp, np.asarray(live, dtype=bool))
    lifecycle.fault_point("publish.after_deletes")
    os.replace(tmp, path / name)
    return name, sha


def unit_entry(path: Path, generation: int, folder: str, unit: Any, docs: Any, live: np.ndarray | None,
               files: list[str], checksums: dict[str, str],
               extra: Callable[[dict[str, Any]], list[str]] | None = None) -> dict[str, Any]:
    """The manifest entry of one segment or part ``unit`` (in ``folder``) being published:
    its name, size, content hash and stored documents' part (``docs``), then what ``extra``
    adds (it returns the further files the unit uses), then its tombstones when ``live``
    marks deletions, written now. The unit's files are appended to ``files``, the
    tombstones' sha256 to ``checksums``."""
    entry: dict[str, Any] = {"name": unit.name, "n_docs": unit.n_docs, "sha256": unit.content_hash(),
                             "docs": docs.name}
    files.append(f"{folder}/{unit.name}")
    if extra is not None:
        files.extend(extra(entry))
    if live is not None:
        name, entry["deletes_sha256"] = write_tombstones(path, generation, unit.name, live)
        checksums[name] = entry["deletes_sha256"]
        entry["deletes"] = name
        files.append(name)
    return entry


def load_tombstones(path: Path, entry: dict[str, Any], n_docs: int) -> np.ndarray:
    """The live bitmap a manifest entry names, checked against its sha256 (when recorded),
    length and dtype (:class:`~retrievo.errors.CorruptIndexError` otherwise)."""
    data = (path / entry["deletes"]).read_bytes()
    if entry.get("deletes_sha256") not in (None, hash_bytes(data)):
        raise CorruptIndexError(f"{path}: {entry['deletes']} does not match its sha256")
    live = np.load(path / entry["deletes"], allow_pickle=False)
    if live.shape != (n_docs,) or live.dtype != np.bool_:
        raise CorruptIndexError(f"{path}: {entry['deletes']} holds {live.shape} {live.dtype}, "
                                f"expected {n_docs} booleans")
    return live


def create_index_folder(path: Path, write: Callable[[lifecycle.Transaction], None]) -> None:
    """Create a new index at ``path``: written beside it and renamed into place (rename
    also replaces an empty folder made for it), so a failure leaves nothing behind.

    The writer lock of the temporary folder is held until after the rename, which is how
    :func:`lifecycle.collect_abandoned_builds` (run first) tells a dead build's leftovers
    from a live one's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lifecycle.collect_abandoned_builds(path)
    tmp = tmp_sibling(path)
    tmp.mkdir()
    try:
        with disk_full_named(path), lifecycle.writing(tmp) as txn:
            write(txn)
            lifecycle.collect_garbage(tmp)  # segments merged away while building
            fsync_dir(tmp)
            lifecycle.fault_point("create.before_rename")
            os.rename(tmp, path)  # still under the lock (GC of the vanished tmp path is a no-op)
            fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = ["DocumentNumbering", "create_index_folder", "load_tombstones", "unit_entry", "write_tombstones"]
