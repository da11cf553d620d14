"""The inverted index: lexical segments, vocabulary, tombstones and statistics.

Layout of an index folder (generations, ``CURRENT``, publishing and garbage collection
belong to :mod:`retrievo.index.lifecycle`, stored documents to
:mod:`retrievo.index.docstore`)::

    CURRENT                   name of the live generation manifest (replaced atomically)
    gen-00000007.json         manifest; its payload: analyzer, vocabulary, segments, deletions, statistics
    vocab/vocab-00000007.txt  index-wide vocabulary, one term per line (append-only across generations)
    segments/seg-<id>/        immutable lexical segments (see :mod:`retrievo.index.segment`)
    docs/part-<id>/           stored documents of segment ``seg-<id>`` (see :mod:`retrievo.index.docstore`)
    deletes/del-00000007-...  tombstone bitmaps of one generation
    LOCK                      writer lock (readers never take it)

Segments are never rewritten: adding documents writes a new segment and document part,
deleting writes a tombstone bitmap, and :meth:`InvertedIndex.merge` compacts everything
into one segment when asked (the old files are collected at once).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrievo.errors import ConfigError, CorruptIndexError
from retrievo.index import lifecycle
from retrievo.index.atomic import fsync_dir, hash_array, hash_bytes, write_bytes_atomic
from retrievo.index.base import DocumentNumbering, create_index_folder, load_tombstones, unit_entry
from retrievo.index.docstore import DOCS_FOLDER, DocPart, docstore_manifest, load_parts, merge_parts
from retrievo.index.ingest import SegmentBuilder, analysed_batches, default_workers, document_tuples, growing_vocab
from retrievo.index.segment import Segment, merge_segments, write_merged_segment
from retrievo.text import Analyzer, get_analyzer
from retrievo.types import Document

FORMAT = "retrievo-inverted"
FORMAT_VERSION = 2  # 2: stored documents moved from the segments to the shared document store
DEFAULT_SEGMENT_DOCS = 200_000
SEGMENTS_FOLDER = "segments"


def _progress(iterable: Iterable[Any], enabled: bool, total: int | None, desc: str) -> Iterable[Any]:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="doc", mininterval=0.5, smoothing=0.1)


def _reopen(path: str, mmap: bool) -> "InvertedIndex":
    return InvertedIndex.open(path, mmap=mmap)


def _from_state(segments: list[Segment], lives: list[np.ndarray | None], terms: list[str],
                analyzer: dict[str, Any], info: dict[str, Any], doc_parts: list[DocPart],
                field_segments: list[list[Segment]] | None = None) -> "InvertedIndex":
    return InvertedIndex(segments, lives, terms, Analyzer.from_config(analyzer), None, 0, info, doc_parts,
                         field_segments)


def _check_fields(fields: Sequence[str] | None) -> tuple[str, ...]:
    """Validated field names (checked before any document is read)."""
    if fields is None:
        return ()
    if isinstance(fields, str):
        fields = [f for f in fields.split(",") if f.strip()]
    out = tuple(str(f).strip() for f in fields)
    if any(not f or "/" in f or "\n" in f for f in out) or len(set(out)) != len(out):
        raise ConfigError(f"fields must be distinct non-empty names, got {list(fields)!r}")
    return out


def _megabytes(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


class InvertedIndex(DocumentNumbering):
    """Term statistics and stored documents for lexical retrieval (BM25 and friends).

    Build with :meth:`build` (in memory, or on disk when given a path), reopen with
    :meth:`open` (or :func:`retrievo.index.open_index`). Global document numbers run over
    the segments in order; document part ``i`` of the store holds segment ``i``'s documents.

    Pickling: an on-disk index pickles as its path and unpickles by reopening it, so it
    sees the generation that is current *then* (cheap to ship to worker processes); an
    in-memory index pickles by value.
    """

    FORMAT = FORMAT
    FORMAT_VERSION = FORMAT_VERSION
    _KIND = "index"

    def _units(self) -> Sequence[Segment]:
        return self.segments

    def __init__(self, segments: Sequence[Segment], lives: Sequence[np.ndarray | None], terms: list[str],
                 analyzer: Analyzer, path: Path | None = None, generation: int = 0,
                 info: dict[str, Any] | None = None, doc_parts: Sequence[DocPart] = (),
                 field_segments: Sequence[Sequence[Segment]] | None = None):
        self.segments = list(segments)
        # per segment, one segment per named field (self.fields), same documents and
        # vocabulary: the separate postings BM25F scores; empty lists without fields
        self.field_segments = [list(f) for f in field_segments] if field_segments is not None \
            else [[] for _ in self.segments]
        self.lives = list(lives)
        self.doc_parts = list(doc_parts)
        if not len(self.segments) == len(self.lives) == len(self.doc_parts):
            raise ValueError(f"{len(self.segments)} segments, {len(self.lives)} live bitmaps and "
                             f"{len(self.doc_parts)} document parts: they must pair up")
        if len(self.field_segments) != len(self.segments):
            raise ValueError(f"{len(self.segments)} segments but {len(self.field_segments)} field segment lists")
        self.terms = terms
        self.analyzer = analyzer
        self.path = path
        self.generation = generation
        self.info = dict(info or {})
        self._vocab: dict[str, int] | None = None
        self._cache: dict[str, Any] = {}
        self._mmap = True
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

    def _aligned_fields(self) -> list[list[Segment]]:
        """``field_segments``, one (possibly empty) list per segment: a sibling format that
        appends segments of its own (impacts) adds no field segments, so the pairing is
        restored here before anything zips the two."""
        missing = len(self.segments) - len(self.field_segments)
        if missing > 0:
            self.field_segments.extend([] for _ in range(missing))
        return self.field_segments

    @property
    def fields(self) -> tuple[str, ...]:
        """Named fields kept as separate postings (``build(fields=...)``), in order."""
        return tuple(self.info.get("fields") or ())

    @property
    def doc_lengths(self) -> np.ndarray:
        return self._cached("doclen", lambda: np.concatenate([np.asarray(s.doclen) for s in self.segments])
                            if self.segments else np.empty(0, np.int32))

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

    @property
    def identity(self) -> str:
        """sha256 (hex) of everything that determines what this index returns: format,
        analyzer, vocabulary, segment contents, tombstones and stored documents.

        Names and timestamps are left out, so two builds of the same documents with the
        same analyzer and segment layout give the same identity and any change (a delete)
        gives another. Written into each manifest, so reading it after open is free; an
        in-memory index computes it on first use from the same bytes a save would write.
        """
        def make():
            content = {
                "format": self.FORMAT, "format_version": self.FORMAT_VERSION, "analyzer": self.analyzer.config(),
                "vocab": hash_bytes(self._vocab_bytes()),
                "segments": [seg.content_hash() for seg in self.segments],
                "deletes": [None if lv is None else hash_array(np.asarray(lv, dtype=bool)) for lv in self.lives],
                "docs": [part.content_hash() for part in self.doc_parts], "text": self.store,
                **({"fields": list(self.fields),
                    "field_segments": [[f.content_hash() for f in fs] for fs in self._aligned_fields()]}
                   if self.fields else {}),
                **self._extra_payload(),
            }
            return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
        return self._cached("identity", make)

    def _extra_payload(self) -> dict[str, Any]:
        """What a sibling format built on this one (impacts, see
        :mod:`retrievo.index.impacts`) adds to the manifest payload and the identity."""
        return {}

    @classmethod
    def _extra_info(cls, payload: Any) -> dict[str, Any]:
        """The ``info`` a sibling format reads back from its payload."""
        return {}

    def _vocab_bytes(self) -> bytes:
        return "\n".join(self.terms).encode("utf-8")

    def _live_id_set(self) -> set[str]:
        ids, live = self.doc_ids, self.live
        return set((ids if live is None else ids[live]).tolist())

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, documents: Iterable[Document], path: str | Path | None = None, *,
              analyzer: Analyzer | str | dict | None = None, store: bool = True,
              segment_docs: int = DEFAULT_SEGMENT_DOCS, progress: bool = False,
              total: int | None = None, overwrite: bool = True, workers: int | None = None,
              merge: bool = True, fields: Sequence[str] | None = None) -> "InvertedIndex":
        """Index ``documents`` (any iterable of :class:`Document`, consumed once, streaming).

        With ``path`` the index is written there: segments are flushed every
        ``segment_docs`` documents so memory stays bounded, then merged into one (streamed
        term range by term range, so the merge is bounded too; ``merge=False`` keeps the
        segments, which search equally well). An existing index at ``path`` is
        replaced only when the new one is complete.
        ``workers`` processes analyse text (default: one per core; 1 = in-process).

        ``fields`` (e.g. ``("title", "text")``, or text-valued metadata fields such as
        ``"abstract"``) are also indexed one by one as separate postings, which BM25F and
        per-field BM25 score (:mod:`retrievo.retrieve.bm25f`). Opt-in: the default index
        holds the flat title+text postings only, so its size and speed do not change; the
        flat postings (and every ``bm25`` number) are the same with or without fields.
        """
        analyzer = get_analyzer(analyzer)
        fields = _check_fields(fields)
        index = cls([], [], [], analyzer, None, 0, {"store": store, **({"fields": list(fields)} if fields else {})})

        def fill(folder: Path | None) -> None:
            index._ingest(documents, segment_docs, progress, total, folder, workers)
            if merge and len(index.segments) > 1:
                index._compact(folder)

        if path is None:
            fill(None)
            return index
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        if lifecycle.is_index(path):
            # replace an index in place: readers keep the old generation until CURRENT flips
            with lifecycle.writing(path) as txn:
                index.path, index.generation = path, txn.base_generation
                fill(path)
                index._publish(txn)
            return index
        if path.exists() and any(path.iterdir()):
            raise FileExistsError(f"{path} exists and is not a retrievo index; refusing to overwrite it")

        def write_new(txn: lifecycle.Transaction) -> None:
            index.path = txn.path
            fill(txn.path)
            index._publish(txn)

        create_index_folder(path, write_new)
        return cls.open(path)

    def _ingest(self, documents: Iterable[Document], segment_docs: int, progress: bool, total: int | None,
                folder: Path | None, workers: int | None = None, replacing: bool = False) -> list[DocPart]:
        """Analyse ``documents`` into new segments (written under ``folder`` when given);
        returns their document parts. On failure the index is left as it was.
        ``replacing``: ids already in the index are allowed (an upsert tombstones their
        old versions afterwards); an id twice in ``documents`` is still refused."""
        if isinstance(segment_docs, bool) or not isinstance(segment_docs, int) or segment_docs < 1:
            raise ConfigError(f"segment_docs must be a whole number >= 1, got {segment_docs!r}")
        if folder is not None:
            (folder / SEGMENTS_FOLDER).mkdir(exist_ok=True)
            (folder / DOCS_FOLDER).mkdir(exist_ok=True)
        with self._restored_on_failure():
            vocab = growing_vocab(self.vocab)
            stream = document_tuples(documents, self._live_id_set() if self.segments and not replacing else set())
            batches = analysed_batches(_progress(stream, progress, total, "indexing"), self.analyzer, self.store,
                                       default_workers() if workers is None else workers, min(500, segment_docs),
                                       self.fields)
            builder = SegmentBuilder(vocab, self.store, self.fields)
            new: list[DocPart] = []

            def flush():
                nonlocal builder
                if len(builder):
                    seg, part, fsegs = builder.build(uuid.uuid4().hex[:16])
                    self.terms.extend(itertools.islice(vocab, len(self.terms), None))
                    if folder is not None:  # reopen memory-mapped: memory stays bounded
                        for f in fsegs:
                            f.write(folder / SEGMENTS_FOLDER)
                        fsegs = [Segment.load(folder / SEGMENTS_FOLDER / f.name) for f in fsegs]
                        seg.write(folder / SEGMENTS_FOLDER)
                        lifecycle.fault_point("ingest.after_segment")
                        seg = Segment.load(folder / SEGMENTS_FOLDER / seg.name)
                        part = part.write(folder / DOCS_FOLDER)
                        lifecycle.fault_point("ingest.after_part")
                    self._aligned_fields()  # (a sibling format may have added segments without fields)
                    self.segments.append(seg)
                    self.field_segments.append(fsegs)
                    self.lives.append(None)
                    self.doc_parts.append(part)
                    new.append(part)
                    self._invalidate()
                builder = SegmentBuilder(vocab, self.store, self.fields)

            for batch in batches:
                builder.add(batch)
                if len(builder) >= segment_docs:
                    flush()
            flush()
            self._vocab = dict(itertools.islice(vocab.items(), len(self.terms)))  # plain dict: lookups never insert
        return new

    @contextlib.contextmanager
    def _restored_on_failure(self) -> Iterator[None]:
        """Undo in-memory changes when a change fails part-way, so the object keeps
        matching its published generation (whose unpublished files GC removes)."""
        saved = (list(self.segments), list(self.lives), list(self.doc_parts), len(self.terms), self._vocab,
                 list(self._aligned_fields()), dict(self.info))
        try:
            yield
        except BaseException:
            self.segments, self.lives, self.doc_parts = saved[0], saved[1], saved[2]
            self.field_segments = saved[5]
            self.info = saved[6]
            del self.terms[saved[3]:]
            self._vocab = saved[4]
            self._invalidate()
            raise

    def _compact(self, folder: Path | None) -> None:
        """Replace all segments and document parts by one of each, without deleted documents."""
        name = uuid.uuid4().hex[:16]
        part = merge_parts(self.doc_parts, self.lives, f"part-{name}",
                           None if folder is None else folder / DOCS_FOLDER)
        fsegs = []
        for j in range(len(self.fields)):
            inputs = [fs[j] for fs in self._aligned_fields()]
            if folder is None:
                fsegs.append(merge_segments(inputs, self.lives, f"seg-{name}.f{j}", self.vocab_size))
            else:
                fsegs.append(write_merged_segment(inputs, self.lives, f"seg-{name}.f{j}", self.vocab_size,
                                                  folder / SEGMENTS_FOLDER))
        if folder is None:
            seg = merge_segments(self.segments, self.lives, f"seg-{name}", self.vocab_size)
        else:  # streamed from the memory-mapped segments: memory stays bounded
            lifecycle.fault_point("merge.after_part")
            seg = write_merged_segment(self.segments, self.lives, f"seg-{name}", self.vocab_size,
                                       folder / SEGMENTS_FOLDER)
            lifecycle.fault_point("merge.after_segment")
        self.segments, self.lives, self.doc_parts = [seg], [None], [part]
        self.field_segments = [fsegs]
        self._invalidate()

    # ------------------------------------------------------------------ changes
    def add(self, documents: Iterable[Document], *, progress: bool = False, total: int | None = None,
            segment_docs: int = DEFAULT_SEGMENT_DOCS, workers: int | None = None) -> list[str]:
        """Index more documents as new segment(s); returns their ids. Ids must be new.
        On disk, nothing is visible to readers until every new segment is written."""
        added = self._change(lambda folder: self._ingest(documents, segment_docs, progress, total, folder, workers),
                             publish=bool)
        return [d for p in added for d in p.ids.tolist()]

    def upsert(self, documents: Iterable[Document], *, progress: bool = False, total: int | None = None,
               segment_docs: int = DEFAULT_SEGMENT_DOCS, workers: int | None = None) -> tuple[int, int]:
        """Insert ``documents``, replacing the live documents with the same ids, in ONE
        generation: the new versions are written as new segment(s), the old ones are
        tombstoned, and both are published by a single manifest, so a reader — or a
        process killed at any instant — sees either the old index or the new one, never
        a document missing or twice. Returns ``(replaced, added)``.

        Scores afterwards equal those of a fresh build of the resulting documents:
        segments store statistics, not scores, and BM25 recomputes idf and lengths over
        the live documents (see :mod:`retrievo.index.segment`)."""
        def apply(folder: Path | None) -> tuple[int, int]:
            before = self.docstore.id_map()  # old versions, by global number (unchanged by appending)
            added = self._ingest(documents, segment_docs, progress, total, folder, workers, replacing=True)
            new_ids = [d for p in added for d in p.ids.tolist()]
            targets = sorted(before[d] for d in new_ids if d in before)
            if targets:
                self._tombstone(targets)
                self._invalidate()
            return len(targets), len(new_ids) - len(targets)

        return self._change(apply, fault="upsert.before_publish", publish=sum)

    def delete(self, doc_ids: Iterable[str], *, missing_ok: bool = False) -> int:
        """Mark documents deleted (tombstones); returns how many were deleted."""
        targets = self._deletion_targets(doc_ids, missing_ok)
        if not targets:
            return 0

        def apply(folder: Path | None) -> None:
            self._tombstone(targets)
            self._invalidate()

        self._change(apply, fault="delete.applied")
        return len(targets)

    def merge(self) -> "InvertedIndex":
        """Compact all segments into one, dropping deleted documents. Returns self.
        On disk the replaced segments, parts and tombstones are deleted when the merged
        generation is published, so the space comes back at once."""
        if len(self.segments) <= 1 and self.live is None:
            return self
        self._change(self._compact)
        return self

    def save(self, path: str | Path) -> "InvertedIndex":
        """Write this index to ``path`` (a new or empty folder); returns the index opened
        from there. A failed save leaves nothing behind."""
        path = Path(path)
        if path.exists() and any(path.iterdir()):
            raise FileExistsError(f"{path} exists and is not empty; choose a new folder")

        def write(txn: lifecycle.Transaction) -> None:
            folder = txn.path
            (folder / SEGMENTS_FOLDER).mkdir()
            (folder / DOCS_FOLDER).mkdir()
            for seg in self.segments + [f for fs in self._aligned_fields() for f in fs]:
                seg.write(folder / SEGMENTS_FOLDER)
            saved = type(self)([Segment.load(folder / SEGMENTS_FOLDER / s.name) for s in self.segments],
                               [None if lv is None else np.array(lv) for lv in self.lives], self.terms,
                               self.analyzer, folder, 0,
                               {"store": self.store, **({"fields": list(self.fields)} if self.fields else {}),
                                **self._extra_info(self._extra_payload())},
                               [part.write(folder / DOCS_FOLDER) for part in self.doc_parts],
                               [[Segment.load(folder / SEGMENTS_FOLDER / f.name) for f in fs]
                                for fs in self.field_segments])
            saved._publish(txn)

        create_index_folder(path, write)
        return type(self).open(path)

    # ------------------------------------------------------------------ persistence
    def _publish(self, txn: lifecycle.Transaction) -> None:
        """Write the vocabulary and tombstones of the next generation and publish it."""
        path, gen = txn.path, txn.generation
        (path / "vocab").mkdir(exist_ok=True)
        (path / "deletes").mkdir(exist_ok=True)
        vocab_name = f"vocab/vocab-{gen:08d}.txt"
        vocab_bytes = self._vocab_bytes()
        write_bytes_atomic(path / vocab_name, vocab_bytes)
        lifecycle.fault_point("publish.after_vocab")
        files = [vocab_name]
        checksums = {vocab_name: hash_bytes(vocab_bytes)}
        seg_entries = []
        def field_segments(entry: dict[str, Any], fsegs: list[Segment]) -> list[str]:
            if not self.fields:
                return []
            entry["fields"] = [{"name": f.name, "sha256": f.content_hash()} for f in fsegs]
            return [f"{SEGMENTS_FOLDER}/{f.name}" for f in fsegs]

        for seg, part, lv, fsegs in zip(self.segments, self.doc_parts, self.lives, self._aligned_fields()):
            seg_entries.append(unit_entry(path, gen, SEGMENTS_FOLDER, seg, part, lv, files, checksums,
                                          lambda entry, fsegs=fsegs: field_segments(entry, fsegs)))
        fsync_dir(path / "deletes")
        docstore_entry, doc_files = docstore_manifest(self.doc_parts, self.store)
        payload = {
            "analyzer": self.analyzer.config(), "store": self.store,
            "vocab": {"file": vocab_name, "size": self.vocab_size, "sha256": checksums[vocab_name]},
            "segments": seg_entries, "stats": self.collection_stats(), **self._extra_payload(),
            **({"fields": list(self.fields)} if self.fields else {}),
        }
        manifest = txn.publish(self.FORMAT, self.FORMAT_VERSION, payload, files + doc_files, identity=self.identity,
                               docstore=docstore_entry, checksums=checksums)
        self.path, self.generation = path, gen
        self.info["manifest"] = manifest

    @classmethod
    def open(cls, path: str | Path, mmap: bool = True) -> "InvertedIndex":
        """Open the current generation of an index folder (arrays memory-mapped)."""
        return lifecycle.open_snapshot(Path(path), lambda snapshot: cls.from_snapshot(snapshot, mmap=mmap))

    @classmethod
    def from_snapshot(cls, snapshot: lifecycle.Snapshot, mmap: bool = True) -> "InvertedIndex":
        """Read one generation (every file is opened or mapped here, none later)."""
        snapshot.require(cls.FORMAT, cls.FORMAT_VERSION)
        path = snapshot.path
        try:
            payload = snapshot.payload
            # bytes, not read_text: universal newlines would split a term or id at a "\r"
            vocab_bytes = (path / payload["vocab"]["file"]).read_bytes()
            if payload["vocab"].get("sha256") not in (None, hash_bytes(vocab_bytes)):
                raise CorruptIndexError(f"{path}: the vocabulary {payload['vocab']['file']} does not match its "
                                        "sha256 (terms changed)")
            terms = vocab_bytes.decode("utf-8").split("\n") if payload["vocab"]["size"] else []
            if len(terms) != payload["vocab"]["size"]:
                raise CorruptIndexError(f"{path}: vocabulary has {len(terms)} terms, "
                                        f"manifest says {payload['vocab']['size']}")
            segments, lives, field_segments = [], [], []
            fields = list(payload.get("fields") or ())
            for entry in payload["segments"]:
                seg = Segment.load(path / SEGMENTS_FOLDER / entry["name"], mmap_arrays=mmap)
                _check_segment(path, entry, seg, len(terms))
                segments.append(seg)
                fsegs = []
                for fentry in entry.get("fields", []) if fields else []:
                    fseg = Segment.load(path / SEGMENTS_FOLDER / fentry["name"], mmap_arrays=mmap)
                    _check_segment(path, {**fentry, "n_docs": seg.n_docs}, fseg, len(terms))
                    fsegs.append(fseg)
                if len(fsegs) != len(fields):
                    raise CorruptIndexError(f"{path}: segment {entry['name']} has {len(fsegs)} field segments, "
                                            f"the index names {len(fields)} fields")
                field_segments.append(fsegs)
                lives.append(load_tombstones(path, entry, seg.n_docs) if entry.get("deletes") else None)
            parts = load_parts(path, snapshot.docstore, mmap)
            if [p.name for p in parts] != [e["docs"] for e in payload["segments"]] or \
                    [p.n_docs for p in parts] != [s.n_docs for s in segments]:
                raise CorruptIndexError(f"{path}: the document store does not match the segments")
            analyzer = Analyzer.from_config(payload["analyzer"])
        except CorruptIndexError:
            raise
        except (OSError, KeyError, ValueError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            raise CorruptIndexError(f"cannot read index {path}: {exc}; rebuild it") from exc
        index = cls(segments, lives, terms, analyzer, path, snapshot.generation,
                    {"store": payload.get("store", True), "manifest": dict(snapshot.manifest),
                     **({"fields": fields} if fields else {}), **cls._extra_info(payload)}, parts, field_segments)
        index._mmap = mmap
        if payload.get("stats") is not None and payload["stats"] != index.collection_stats():
            raise CorruptIndexError(f"{path}: collection statistics {index.collection_stats()} differ from the "
                                    f"manifest's {payload['stats']}; the index is damaged, rebuild it")
        if snapshot.identity:
            index._cache["identity"] = snapshot.identity
        return index

    # ------------------------------------------------------------------ presentation
    def describe(self) -> dict[str, Any]:
        """What ``retrievo info`` shows: counts, format, analyzer, size and identity."""
        return {
            "path": None if self.path is None else str(self.path), "format": FORMAT,
            "format_version": FORMAT_VERSION, "generation": self.generation, "documents": len(self),
            "deleted": self.total_docs - len(self), "terms": self.vocab_size, "segments": len(self.segments),
            "analyzer": self.analyzer.config(), "store": self.store, "size_on_disk_bytes": self.size_on_disk(),
            **({"fields": list(self.fields)} if self.fields else {}),
            **({"metadata": self.metadata_fields()} if any(p.columns is not None for p in self.doc_parts) else {}),
            "identity": self.identity,
        }

    def __repr__(self) -> str:
        where = "in memory" if self.path is None else f"{self.path.name!r} gen {self.generation}"
        n = len(self.segments)
        size = self.size_on_disk()
        tail = "" if size is None else f", {_megabytes(size)}"
        return (f"<InvertedIndex {where}: {len(self):,} docs, {self.vocab_size:,} terms, "
                f"{n} segment{'s' if n != 1 else ''}{tail}>")

    def __reduce__(self):
        if self.path is not None:
            return _reopen, (str(self.path), self._mmap)
        return _from_state, (self.segments, self.lives, self.terms, self.analyzer.config(),
                             {"store": self.store, **({"fields": list(self.fields)} if self.fields else {})},
                             self.doc_parts, self._aligned_fields())


def _check_segment(path: Path, entry: dict[str, Any], seg: Segment, vocab_size: int) -> None:
    """Open-time checks of one segment: its recorded hashes chain up to the manifest, the
    small arrays (``indptr``, ``doclen``) match their sha256, and the postings are sound
    (see :mod:`retrievo.index.verify`); O(terms + postings), vectorised."""
    from retrievo.index.verify import file_sha256, segment_problems

    where = f"{path}: segment {entry['name']}"
    if seg.n_docs != entry["n_docs"]:
        raise CorruptIndexError(f"{where} has {seg.n_docs} docs, manifest says {entry['n_docs']}")
    if entry.get("sha256") is not None and seg.content_hash() != entry["sha256"]:
        raise CorruptIndexError(f"{where}: its meta.json does not match the manifest's hash")
    folder = path / SEGMENTS_FOLDER / entry["name"]
    recorded = seg.meta.get("sha256") or {}
    for small in ("indptr.npy", "doclen.npy"):
        if file_sha256(folder / small) != recorded.get(small):
            raise CorruptIndexError(f"{where}: {small} does not match its sha256")
    problems = segment_problems(seg, vocab_size, where)
    if problems:
        raise CorruptIndexError("; ".join(problems) + "; the index is damaged, rebuild it")


__all__ = ["DEFAULT_SEGMENT_DOCS", "FORMAT", "FORMAT_VERSION", "InvertedIndex"]
