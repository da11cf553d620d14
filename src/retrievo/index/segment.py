"""Immutable lexical segments: term-major postings and document lengths.

A segment holds, for the documents it was built from, the exact analysed length of every
document and, for every term id of the index-wide vocabulary, the ascending local doc
numbers that contain it with their term frequencies (CSC-like ``indptr``/``docs``/``tfs``
arrays, memory-mapped on load as bm25s does). It stores statistics, not scores: BM25
parameters, variants and collection statistics are applied at search time, so adding or
deleting documents never rewrites a segment, and scores after any sequence of changes are
those of a fresh build. Ids and stored text live in the index's document store
(:mod:`retrievo.index.docstore`), part ``i`` beside segment ``i``.

Each file's sha256 is taken while it is written and kept in ``meta.json``; the
segment's :meth:`Segment.content_hash` over them feeds the index identity without ever
reading the arrays back.

Merging (:func:`merge_segments`) keeps the order of the documents, so a term's merged
postings are its postings in segment 0, then segment 1, ... with new numbers: a k-way
merge that needs no comparison of documents. On disk (:func:`write_merged_segment`) it
streams term range by term range from the memory-mapped inputs into the output files,
so memory stays bounded by :data:`MERGE_CHUNK_POSTINGS` whatever the index size, and the
files are byte for byte what :meth:`Segment.write` writes for the in-memory merge.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrievo.errors import CorruptIndexError
from retrievo.index.atomic import HashingWriter, atomic_dir, check_file_sizes, disk_full_named, hash_array, \
    save_array

_ARRAYS = ("indptr", "docs", "tfs", "doclen")
MERGE_CHUNK_POSTINGS = 1 << 22  # postings per streamed step of an on-disk merge (~50 MB of temporaries)


@dataclass(eq=False)
class Segment:
    name: str
    doclen: np.ndarray  # int32, analysed length of each document
    indptr: np.ndarray  # int64, postings of term t are docs[indptr[t]:indptr[t+1]]
    docs: np.ndarray  # int32 local document numbers
    tfs: np.ndarray  # int32 term frequencies
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def n_docs(self) -> int:
        return len(self.doclen)

    @property
    def vocab_size(self) -> int:
        return len(self.indptr) - 1

    @property
    def n_postings(self) -> int:
        return len(self.docs)

    def document_frequencies(self, vocab_size: int) -> np.ndarray:
        df = np.zeros(vocab_size, dtype=np.int64)
        df[: self.vocab_size] = np.diff(self.indptr)
        return df

    def term_ids_of_postings(self) -> np.ndarray:
        return np.repeat(np.arange(self.vocab_size, dtype=np.int64), np.diff(self.indptr))

    def postings(self, term_id: int) -> tuple[np.ndarray, np.ndarray]:
        if term_id >= self.vocab_size:
            return self.docs[:0], self.tfs[:0]
        a, b = self.indptr[term_id], self.indptr[term_id + 1]
        return self.docs[a:b], self.tfs[a:b]

    def file_hashes(self) -> dict[str, str]:
        """sha256 of each array file (recorded when written, computed for in-memory segments)."""
        recorded = self.meta.get("sha256")
        if recorded is None:
            recorded = {f"{n}.npy": hash_array(getattr(self, n)) for n in _ARRAYS}
            self.meta = {**self.meta, "sha256": recorded}
        return dict(recorded)

    def content_hash(self) -> str:
        """One hash of everything the segment holds (its name excluded, so two builds of
        the same documents hash alike)."""
        text = "".join(f"{fname}:{digest}\n" for fname, digest in sorted(self.file_hashes().items()))
        return hashlib.sha256(text.encode()).hexdigest()

    # persistence ------------------------------------------------------------------------
    def write(self, folder: Path) -> None:
        """Write into ``folder/<name>`` atomically."""
        with atomic_dir(folder / self.name) as tmp:
            hashes = {f"{n}.npy": save_array(tmp / f"{n}.npy", getattr(self, n)) for n in _ARRAYS}
            extra = {k: v for k, v in self.meta.items() if k != "sha256"}
            _write_meta(tmp, self.name, self.n_docs, self.n_postings, self.vocab_size, hashes, extra)

    @classmethod
    def load(cls, folder: Path, mmap_arrays: bool = True) -> "Segment":
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            check_file_sizes(folder, meta["files"])
            mode = "r" if mmap_arrays else None
            arrays = {n: np.load(folder / f"{n}.npy", mmap_mode=mode, allow_pickle=False) for n in _ARRAYS}
        except CorruptIndexError:
            raise
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise CorruptIndexError(f"cannot read index segment {folder}: {exc}; the index is damaged, rebuild it") from exc
        extra = {k: v for k, v in meta.items() if k not in ("name", "n_docs", "n_postings", "vocab_size", "files")}
        return cls(meta["name"], arrays["doclen"], arrays["indptr"], arrays["docs"], arrays["tfs"], extra)


def _write_meta(tmp: Path, name: str, n_docs: int, n_postings: int, vocab_size: int, hashes: dict[str, str],
                extra: Mapping[str, Any]) -> None:
    sizes = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
    meta = {"name": name, "n_docs": n_docs, "n_postings": n_postings, "vocab_size": vocab_size, "files": sizes,
            "sha256": hashes, **extra}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


def _renumbering(segments: list[Segment], lives: list[np.ndarray | None]) -> tuple[list[np.ndarray], np.ndarray]:
    """Each segment's old -> new document number (-1: deleted) and the merged lengths."""
    renumber, len_parts, base = [], [], 0
    for seg, live in zip(segments, lives):
        live = np.ones(seg.n_docs, dtype=bool) if live is None else np.asarray(live, dtype=bool)
        new_num = np.full(seg.n_docs, -1, dtype=np.int64)
        new_num[live] = base + np.arange(int(live.sum()))
        renumber.append(new_num)
        base += int(live.sum())
        len_parts.append(np.asarray(seg.doclen)[live])
    doclen = np.concatenate(len_parts).astype(np.int32) if len_parts else np.empty(0, np.int32)
    return renumber, doclen


def _read(arr: np.ndarray, a: int, b: int) -> np.ndarray:
    """``arr[a:b]`` as an ordinary array. From a memory-mapped file it is read (``read``,
    not a mapping), so the merge's resident memory stays the chunk it works on instead of
    growing with every page of the input it has mapped in."""
    if isinstance(arr, np.memmap) and getattr(arr, "filename", None) and arr.ndim == 1:
        return np.fromfile(arr.filename, dtype=arr.dtype, count=b - a, offset=arr.offset + a * arr.itemsize)
    return np.asarray(arr[a:b])


def _padded_indptr(seg: Segment, vocab_size: int) -> np.ndarray:
    ip = np.asarray(seg.indptr, dtype=np.int64)
    out = np.full(vocab_size + 1, ip[-1], dtype=np.int64)
    out[: len(ip)] = ip
    return out


def write_merged_segment(segments: list[Segment], lives: list[np.ndarray | None], name: str, vocab_size: int,
                         folder: Path, chunk_postings: int = MERGE_CHUNK_POSTINGS) -> Segment:
    """:func:`merge_segments` written to ``folder/<name>`` atomically without holding the
    postings in memory: a first pass counts each term's live postings (the new
    ``indptr``), a second copies term ranges of about ``chunk_postings`` postings from
    every input, renumbered, into the output files (hashed while written). Returns the
    segment opened memory-mapped."""
    renumber, doclen = _renumbering(segments, lives)
    pads = [_padded_indptr(seg, vocab_size) for seg in segments]
    counts = np.zeros(vocab_size, dtype=np.int64)
    for seg, ip, new_num, live in zip(segments, pads, renumber, lives):
        if live is None:
            counts += np.diff(ip)
            continue
        for a in range(0, seg.n_postings, chunk_postings):  # live postings per term, in chunks
            b = min(a + chunk_postings, seg.n_postings)
            keep = new_num[_read(seg.docs, a, b)] >= 0
            terms = np.searchsorted(ip, np.arange(a, b, dtype=np.int64)[keep], side="right") - 1
            counts += np.bincount(terms, minlength=vocab_size)
    indptr = np.zeros(vocab_size + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    total = int(indptr[-1])
    # term ranges of about chunk_postings input postings each
    combined = np.sum(pads, axis=0) if pads else np.zeros(vocab_size + 1, np.int64)
    bounds = [0]
    while bounds[-1] < vocab_size:
        t = int(np.searchsorted(combined, combined[bounds[-1]] + chunk_postings, side="right")) - 1
        bounds.append(min(vocab_size, max(t, bounds[-1] + 1)))
    with atomic_dir(folder / name) as tmp:
        hashes = {"indptr.npy": save_array(tmp / "indptr.npy", indptr),
                  "doclen.npy": save_array(tmp / "doclen.npy", doclen)}
        with disk_full_named(tmp), open(tmp / "docs.npy", "wb") as fd, open(tmp / "tfs.npy", "wb") as ft:
            sinks = {"docs.npy": HashingWriter(fd), "tfs.npy": HashingWriter(ft)}
            for sink in sinks.values():
                np.lib.format.write_array_header_1_0(sink, {"descr": "<i4", "fortran_order": False,
                                                            "shape": (total,)})
            for t0, t1 in zip(bounds[:-1], bounds[1:]):
                docs_parts, tf_parts, term_parts = [], [], []
                for seg, ip, new_num in zip(segments, pads, renumber):
                    a, b = int(ip[t0]), int(ip[t1])
                    if a == b:
                        continue
                    new = new_num[_read(seg.docs, a, b)]
                    keep = new >= 0
                    docs_parts.append(new[keep].astype(np.int32))
                    tf_parts.append(_read(seg.tfs, a, b)[keep].astype(np.int32))
                    term_parts.append(np.repeat(np.arange(t0, t1, dtype=np.int32), np.diff(ip[t0:t1 + 1]))[keep])
                if not docs_parts:
                    continue
                # by term, then segment order (a stable sort): each term's postings ascend
                order = np.argsort(np.concatenate(term_parts), kind="stable")
                sinks["docs.npy"].write(np.concatenate(docs_parts)[order].astype("<i4").tobytes())
                sinks["tfs.npy"].write(np.concatenate(tf_parts)[order].astype("<i4").tobytes())
            for fh in (fd, ft):
                fh.flush()
                os.fsync(fh.fileno())
        hashes.update({n: sink.sha.hexdigest() for n, sink in sinks.items()})
        _write_meta(tmp, name, len(doclen), total, vocab_size, hashes, {})
    return Segment.load(folder / name)


def merge_segments(segments: list[Segment], lives: list[np.ndarray | None], name: str, vocab_size: int) -> Segment:
    """One segment holding the live documents of ``segments`` in order (deleted ones dropped),
    in memory. Stored documents are compacted alongside by
    :func:`retrievo.index.docstore.merge_parts`; on disk, :func:`write_merged_segment`
    writes the same segment without holding the postings in memory."""
    renumber, doclen = _renumbering(segments, lives)
    term_parts, doc_parts, tf_parts = [], [], []
    for seg, new_num in zip(segments, renumber):
        docs = new_num[np.asarray(seg.docs)]
        keep = docs >= 0
        term_parts.append(seg.term_ids_of_postings()[keep])
        doc_parts.append(docs[keep])
        tf_parts.append(np.asarray(seg.tfs)[keep])
    term = np.concatenate(term_parts) if term_parts else np.empty(0, np.int64)
    doc = np.concatenate(doc_parts) if doc_parts else np.empty(0, np.int64)
    tf = np.concatenate(tf_parts) if tf_parts else np.empty(0, np.int32)
    order = np.lexsort((doc, term))
    indptr = np.zeros(vocab_size + 1, dtype=np.int64)
    np.cumsum(np.bincount(term, minlength=vocab_size), out=indptr[1:])
    return Segment(name, doclen, indptr, doc[order].astype(np.int32), tf[order].astype(np.int32))
