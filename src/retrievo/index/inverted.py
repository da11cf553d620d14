"""The on-disk inverted index: segments, tombstones and generations.

Layout of an index folder::

    CURRENT                   name of the live generation manifest (replaced atomically)
    gen-00000007.json         manifest: format version, analyzer, vocabulary, segments, deletions
    vocab/vocab-00000007.txt  index-wide vocabulary, one term per line (append-only across generations)
    segments/seg-.../         immutable segments (see :mod:`retrievo.index.segment`)
    deletes/del-00000007-...  tombstone bitmaps of one generation
    LOCK                      writer lock (readers never take it)

Every change (build, add, delete, merge) writes new files under fresh names and publishes
them by replacing ``CURRENT`` last, so a reader always sees one consistent generation and
a writer killed at any moment leaves the previous generation intact. Segments are never
rewritten: adding documents writes a new segment, deleting writes a tombstone bitmap, and
:meth:`InvertedIndex.merge` compacts everything into one segment when asked.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import itertools
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrievo import __version__
from retrievo.errors import (
    CorruptIndexError,
    IndexFormatVersionError,
    IndexNotFoundError,
    UnknownIdError,
)
from retrievo.index.atomic import (
    atomic_dir,
    fsync_dir,
    remove_temporaries,
    save_array,
    write_bytes_atomic,
    write_json_atomic,
    write_lock,
)
from retrievo.index.ingest import SegmentBuilder, analysed_batches, default_workers, document_tuples, growing_vocab
from retrievo.index.segment import Segment, merge_segments
from retrievo.text import Analyzer, get_analyzer
from retrievo.types import Document

FORMAT = "retrievo-inverted"
FORMAT_VERSION = 1
DEFAULT_SEGMENT_DOCS = 200_000


def _progress(iterable: Iterable[Any], enabled: bool, total: int | None, desc: str) -> Iterable[Any]:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="doc", mininterval=0.5, smoothing=0.1)


class InvertedIndex:
    """Term statistics and stored documents for lexical retrieval (BM25 and friends).

    Build with :meth:`build` (in memory, or on disk when given a path), reopen with
    :meth:`open`. Global document numbers run over the segments in order.
    """

    def __init__(self, segments: Sequence[Segment], lives: Sequence[np.ndarray | None], terms: list[str],
                 analyzer: Analyzer, path: Path | None = None, generation: int = 0,
                 info: dict[str, Any] | None = None):
        self.segments = list(segments)
        self.lives = list(lives)
        self.terms = terms
        self.analyzer = analyzer
        self.path = path
        self.generation = generation
        self.info = dict(info or {})
        self._vocab: dict[str, int] | None = None
        self._id_map: dict[str, int] | None = None
        self._cache: dict[str, Any] = {}
        self.version = 0  # bumped on every change, so searchers know to refresh derived arrays

    # ------------------------------------------------------------------ derived views
    @property
    def vocab(self) -> dict[str, int]:
        if self._vocab is None:
            self._vocab = {t: i for i, t in enumerate(self.terms)}
        return self._vocab

    @property
    def vocab_size(self) -> int:
        return len(self.terms)

    @property
    def bases(self) -> np.ndarray:
        """Global number of each segment's first document."""
        sizes = [s.n_docs for s in self.segments]
        return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)

    @property
    def total_docs(self) -> int:
        """Documents in the segments, deleted ones included (size of score buffers)."""
        return int(sum(s.n_docs for s in self.segments))

    def _cached(self, key: str, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def live(self) -> np.ndarray | None:
        """Global bitmap of live documents, or None when nothing is deleted."""
        def make():
            if all(lv is None for lv in self.lives):
                return None
            return np.concatenate([np.ones(s.n_docs, bool) if lv is None else np.asarray(lv, bool)
                                   for s, lv in zip(self.segments, self.lives)])
        return self._cached("live", make)

    @property
    def doc_ids(self) -> np.ndarray:
        """External id of every global document number (deleted ones included)."""
        return self._cached("ids", lambda: np.concatenate([s.ids for s in self.segments]).astype(object)
                            if self.segments else np.empty(0, object))

    @property
    def doc_lengths(self) -> np.ndarray:
        return self._cached("doclen", lambda: np.concatenate([np.asarray(s.doclen) for s in self.segments])
                            if self.segments else np.empty(0, np.int32))

    @property
    def id_rank(self) -> np.ndarray:
        """Position of each document's id in sorted id order: the deterministic tie-break
        (Anserini breaks score ties by ascending document id)."""
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

    def document_frequencies(self) -> np.ndarray:
        """Live documents containing each term (deleted documents do not count)."""
        def make():
            df = np.zeros(self.vocab_size, dtype=np.int64)
            for seg, lv in zip(self.segments, self.lives):
                if lv is None:
                    df += seg.document_frequencies(self.vocab_size)
                else:
                    keep = np.asarray(lv, bool)[np.asarray(seg.docs)]
                    df += np.bincount(seg.term_ids_of_postings()[keep], minlength=self.vocab_size)
            return df
        return self._cached("df", make)

    def collection_stats(self) -> dict[str, int]:
        """Lucene's collection statistics over live documents: ``doc_count`` counts
        documents with at least one indexed term, ``sum_doc_len`` all indexed terms."""
        def make():
            lengths = self.doc_lengths.astype(np.int64)
            live = self.live
            if live is not None:
                lengths = lengths[live]
            return {"num_docs": len(self), "doc_count": int((lengths > 0).sum()),
                    "sum_doc_len": int(lengths.sum())}
        return self._cached("stats", make)

    # ------------------------------------------------------------------ lookups
    def _ids_to_global(self) -> dict[str, int]:
        if self._id_map is None:
            ids = self.doc_ids.tolist()
            live = self.live
            self._id_map = {d: i for i, d in enumerate(ids) if live is None or live[i]}
        return self._id_map

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._ids_to_global()

    def locate(self, doc_id: str) -> int:
        try:
            return self._ids_to_global()[doc_id]
        except KeyError:
            raise UnknownIdError(f"document id {doc_id!r} is not in the index") from None

    def document(self, doc_id: str) -> Document:
        """The stored document (title, text, meta) for ``doc_id``."""
        g = self.locate(doc_id)
        seg = int(np.searchsorted(self.bases, g, side="right") - 1)
        return self.segments[seg].document(g - int(self.bases[seg]))

    def documents(self, doc_ids: Iterable[str]) -> list[Document]:
        return [self.document(d) for d in doc_ids]

    def iter_documents(self) -> Iterator[Document]:
        """Every live stored document, in index order."""
        for seg, lv in zip(self.segments, self.lives):
            for local in range(seg.n_docs):
                if lv is None or lv[local]:
                    yield seg.document(local)

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, documents: Iterable[Document], path: str | Path | None = None, *,
              analyzer: Analyzer | str | dict | None = None, store: bool = True,
              segment_docs: int = DEFAULT_SEGMENT_DOCS, progress: bool = False,
              total: int | None = None, overwrite: bool = True, workers: int | None = None,
              merge: bool = True) -> "InvertedIndex":
        """Index ``documents`` (any iterable of :class:`Document`, consumed once, streaming).

        With ``path`` the index is written there: segments are flushed every
        ``segment_docs`` documents so memory stays bounded, then merged into one (the merge
        holds all postings in memory; ``merge=False`` keeps the segments, which search
        equally well, for collections too large for that). An existing index at ``path`` is
        replaced only when the new one is complete.
        ``workers`` processes analyse text (default: one per core; 1 = in-process).
        """
        analyzer = get_analyzer(analyzer)
        index = cls([], [], [], analyzer, None, 0, {"store": store})
        if path is None:
            index._ingest(documents, store, segment_docs, progress, total, None, workers)
            if merge and len(index.segments) > 1:
                index = index._merged(None)
            return index
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        if path.exists() and not (path / "CURRENT").exists() and any(path.iterdir()):
            raise FileExistsError(f"{path} exists and is not a retrievo index; refusing to overwrite it")
        if (path / "CURRENT").exists():
            # replace an index in place: readers keep the old generation until CURRENT flips
            with write_lock(path):
                remove_temporaries(path / "segments")
                index._write_new_generation(documents, path, _read_generation(path), store, segment_docs,
                                            progress, total, workers, merge)
            return index
        # a new index: build beside it and rename into place (rename also replaces an empty
        # folder the user made for it), so a failed build leaves nothing behind
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_dir(path) as tmp:
            with write_lock(tmp):
                index._write_new_generation(documents, tmp, 0, store, segment_docs, progress, total, workers, merge)
            (tmp / "LOCK").unlink(missing_ok=True)
        return InvertedIndex.open(path)

    def _write_new_generation(self, documents, path: Path, previous: int, store: bool, segment_docs: int,
                              progress: bool, total: int | None, workers: int | None, merge: bool) -> None:
        self.path, self.generation = path, previous
        (path / "segments").mkdir(exist_ok=True)
        self._ingest(documents, store, segment_docs, progress, total, path / "segments", workers)
        if merge and len(self.segments) > 1:
            parts = [path / "segments" / s.name for s in self.segments]
            merged = self._merged(path / "segments")
            self.segments, self.lives = merged.segments, merged.lives
            self._invalidate()
            self._commit()
            for p in parts:
                shutil.rmtree(p, ignore_errors=True)
        else:
            self._commit()

    def _ingest(self, documents: Iterable[Document], store: bool, segment_docs: int, progress: bool,
                total: int | None, folder: Path | None, workers: int | None = None) -> list[Segment]:
        if segment_docs < 1:
            raise ValueError("segment_docs must be >= 1")
        vocab = growing_vocab(self.vocab)
        stream = document_tuples(documents, set(self._ids_to_global()) if self.segments else set())
        batches = analysed_batches(_progress(stream, progress, total, "indexing"), self.analyzer, store,
                                   default_workers() if workers is None else workers, min(500, segment_docs))
        builder = SegmentBuilder(vocab, store)
        new: list[Segment] = []

        def flush():
            nonlocal builder
            if len(builder):
                seg = builder.build(f"seg-{uuid.uuid4().hex[:16]}")
                self.terms.extend(itertools.islice(vocab, len(self.terms), None))
                if folder is not None:
                    seg.write(folder)
                    seg = Segment.load(folder / seg.name)
                self.segments.append(seg)
                self.lives.append(None)
                new.append(seg)
                self._invalidate()
            builder = SegmentBuilder(vocab, store)

        for batch in batches:
            builder.add(batch)
            if len(builder) >= segment_docs:
                flush()
        flush()
        self._vocab = dict(itertools.islice(vocab.items(), len(self.terms)))  # plain dict: lookups never insert
        return new

    def _invalidate(self) -> None:
        self.version += 1
        self._cache.clear()
        self._id_map = None

    def _merged(self, folder: Path | None) -> "InvertedIndex":
        seg = merge_segments(self.segments, self.lives, f"seg-{uuid.uuid4().hex[:16]}", self.vocab_size)
        if folder is not None:
            seg.write(folder)
            seg = Segment.load(folder / seg.name)
        merged = InvertedIndex([seg], [None], self.terms, self.analyzer, self.path, self.generation, self.info)
        merged._vocab = self._vocab
        return merged

    # ------------------------------------------------------------------ changes
    def add(self, documents: Iterable[Document], *, progress: bool = False, total: int | None = None,
            segment_docs: int = DEFAULT_SEGMENT_DOCS, workers: int | None = None) -> list[str]:
        """Index more documents as new segment(s); returns their ids. Ids must be new.
        On disk, nothing is visible to readers until every new segment is written."""
        store = self.info.get("store", True)
        if self.path is None:
            added = self._ingest(documents, store, segment_docs, progress, total, None, workers)
            return [d for s in added for d in s.ids.tolist()]
        with write_lock(self.path):
            self._check_current()
            remove_temporaries(self.path / "segments")
            added = self._ingest(documents, store, segment_docs, progress, total, self.path / "segments", workers)
            if added:
                self._commit()
        return [d for s in added for d in s.ids.tolist()]

    def delete(self, doc_ids: Iterable[str], *, missing_ok: bool = False) -> int:
        """Mark documents deleted (tombstones); returns how many were deleted."""
        doc_ids = list(doc_ids)
        id_map = self._ids_to_global()
        unknown = [d for d in doc_ids if d not in id_map]
        if unknown and not missing_ok:
            raise UnknownIdError(f"cannot delete {len(unknown)} unknown document id(s), e.g. {unknown[:3]}")
        targets = sorted({id_map[d] for d in doc_ids if d in id_map})
        if not targets:
            return 0

        def apply():
            bases = self.bases
            for g in targets:
                s = int(np.searchsorted(bases, g, side="right") - 1)
                if self.lives[s] is None:
                    self.lives[s] = np.ones(self.segments[s].n_docs, dtype=bool)
                elif not self.lives[s].flags.writeable:
                    self.lives[s] = np.array(self.lives[s])
                self.lives[s][g - int(bases[s])] = False
            self._invalidate()

        if self.path is None:
            apply()
        else:
            with write_lock(self.path):
                self._check_current()
                apply()
                self._commit()
        return len(targets)

    def merge(self) -> "InvertedIndex":
        """Compact all segments into one, dropping deleted documents. Returns self."""
        if len(self.segments) <= 1 and self.live is None:
            return self
        if self.path is None:
            merged = self._merged(None)
            self.segments, self.lives = merged.segments, merged.lives
            self._invalidate()
            return self
        with write_lock(self.path):
            self._check_current()
            merged = self._merged(self.path / "segments")
            self.segments, self.lives = merged.segments, merged.lives
            self._invalidate()
            self._commit()
        return self

    def save(self, path: str | Path) -> "InvertedIndex":
        """Write an in-memory index to ``path`` (a new or empty folder); returns the
        index opened from there."""
        path = Path(path)
        if path.exists() and any(path.iterdir()):
            raise FileExistsError(f"{path} exists and is not empty; choose a new folder")
        path.mkdir(parents=True, exist_ok=True)
        with write_lock(path):
            (path / "segments").mkdir(exist_ok=True)
            for seg in self.segments:
                seg.write(path / "segments")
            saved = InvertedIndex([Segment.load(path / "segments" / s.name) for s in self.segments],
                                  [None if lv is None else np.array(lv) for lv in self.lives],
                                  self.terms, self.analyzer, path, 0, self.info)
            saved._commit()
        return saved

    # ------------------------------------------------------------------ persistence
    def _check_current(self) -> None:
        if self.path is not None and _read_generation(self.path) != self.generation:
            raise CorruptIndexError(
                f"{self.path} was changed by another writer since it was opened "
                f"(generation {self.generation} -> {_read_generation(self.path)}); reopen it and retry")

    def _commit(self) -> None:
        assert self.path is not None
        path = self.path
        gen = self.generation + 1
        (path / "vocab").mkdir(exist_ok=True)
        (path / "deletes").mkdir(exist_ok=True)
        vocab_name = f"vocab/vocab-{gen:08d}.txt"
        write_bytes_atomic(path / vocab_name, "\n".join(self.terms).encode("utf-8"))
        seg_entries = []
        for seg, lv in zip(self.segments, self.lives):
            entry: dict[str, Any] = {"name": seg.name, "n_docs": seg.n_docs}
            if lv is not None:
                name = f"deletes/del-{gen:08d}-{seg.name}.npy"
                tmp = path / f"{name}.retrievo-tmp"
                save_array(tmp, np.asarray(lv, dtype=bool))
                os.replace(tmp, path / name)
                entry["deletes"] = name
            seg_entries.append(entry)
        fsync_dir(path / "deletes")
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "generation": gen,
            "retrievo_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "analyzer": self.analyzer.config(), "store": bool(self.info.get("store", True)),
            "vocab": {"file": vocab_name, "size": self.vocab_size},
            "segments": seg_entries, "stats": self.collection_stats(),
        }
        write_json_atomic(path / f"gen-{gen:08d}.json", manifest)
        write_bytes_atomic(path / "CURRENT", f"gen-{gen:08d}.json\n".encode())
        self.generation = gen
        _collect_garbage(path, keep=(manifest, _load_manifest(path, gen - 1)))

    @classmethod
    def open(cls, path: str | Path, mmap: bool = True) -> "InvertedIndex":
        """Open the current generation of an index folder (arrays memory-mapped)."""
        path = Path(path)
        if not path.exists():
            raise IndexNotFoundError(f"no index at {path}: build one with `retrievo index`")
        if not (path / "CURRENT").exists():
            raise IndexNotFoundError(f"{path} is not a retrievo index (no CURRENT file)")
        gen = _read_generation(path)
        manifest = _load_manifest(path, gen)
        if manifest is None:
            raise CorruptIndexError(f"{path}: CURRENT names generation {gen} but its manifest is missing")
        if manifest.get("format") != FORMAT:
            raise CorruptIndexError(f"{path} holds {manifest.get('format')!r}, not a {FORMAT} index")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise IndexFormatVersionError(
                f"{path} was written in index format version {manifest.get('format_version')} "
                f"(retrievo {manifest.get('retrievo_version')}); this retrievo reads version {FORMAT_VERSION}. "
                "Rebuild the index with `retrievo index`.")
        try:
            vocab_text = (path / manifest["vocab"]["file"]).read_text(encoding="utf-8")
            terms = vocab_text.split("\n") if manifest["vocab"]["size"] else []
            if len(terms) != manifest["vocab"]["size"]:
                raise CorruptIndexError(f"{path}: vocabulary has {len(terms)} terms, manifest says {manifest['vocab']['size']}")
            segments, lives = [], []
            for entry in manifest["segments"]:
                seg = Segment.load(path / "segments" / entry["name"], mmap_arrays=mmap)
                if seg.n_docs != entry["n_docs"]:
                    raise CorruptIndexError(f"{path}: segment {entry['name']} has {seg.n_docs} docs, manifest says {entry['n_docs']}")
                segments.append(seg)
                lives.append(np.load(path / entry["deletes"], allow_pickle=False) if entry.get("deletes") else None)
            analyzer = Analyzer.from_config(manifest["analyzer"])
        except CorruptIndexError:
            raise
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise CorruptIndexError(f"cannot read index {path}: {exc}; rebuild it") from exc
        return cls(segments, lives, terms, analyzer, path, gen, {"store": manifest.get("store", True),
                                                                 "manifest": manifest})


def _read_generation(path: Path) -> int:
    try:
        name = (path / "CURRENT").read_text(encoding="utf-8").strip()
        return int(name.removeprefix("gen-").removesuffix(".json"))
    except (OSError, ValueError) as exc:
        raise CorruptIndexError(f"{path}/CURRENT is unreadable ({exc}); the index is damaged") from exc


def _load_manifest(path: Path, gen: int) -> dict[str, Any] | None:
    p = path / f"gen-{gen:08d}.json"
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CorruptIndexError(f"{p} is unreadable ({exc}); the index is damaged") from exc


def _collect_garbage(path: Path, keep: Sequence[dict[str, Any] | None]) -> None:
    """Remove files no kept generation refers to (the current one and its predecessor,
    so a reader that just resolved the previous CURRENT can still open it)."""
    keep = [m for m in keep if m]
    used = {f"gen-{m['generation']:08d}.json" for m in keep}
    used |= {m["vocab"]["file"] for m in keep}
    used |= {f"segments/{s['name']}" for m in keep for s in m["segments"]}
    used |= {s["deletes"] for m in keep for s in m["segments"] if s.get("deletes")}
    candidates = list(path.glob("gen-*.json")) + list(path.glob("vocab/*")) + list(path.glob("deletes/*")) \
        + list(path.glob("segments/*"))
    for p in candidates:
        rel = p.relative_to(path).as_posix()
        if rel in used or "retrievo-tmp" in rel:
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(p) if p.is_dir() else p.unlink()


__all__ = ["InvertedIndex", "FORMAT_VERSION"]
