"""Immutable index segments: term-major postings plus a document store.

A segment holds, for the documents it was built from, the exact analysed length of every
document and, for every term id of the index-wide vocabulary, the ascending local doc
numbers that contain it with their term frequencies (CSC-like ``indptr``/``docs``/``tfs``
arrays, memory-mapped on load as bm25s does). It stores statistics, not scores: BM25
parameters, variants and collection statistics are applied at search time, so adding or
deleting documents never rewrites a segment, and scores after any sequence of changes are
those of a fresh build.
"""

from __future__ import annotations

import json
import mmap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrievo.errors import CorruptIndexError
from retrievo.index.atomic import atomic_dir, save_array
from retrievo.types import Document

try:
    from orjson import loads as _loads
except ImportError:  # pragma: no cover
    _loads = json.loads

_ARRAYS = ("indptr", "docs", "tfs", "doclen", "store_offsets")


class DocStore:
    """Stored documents of one segment: a JSON-lines file plus line offsets, read by seek."""

    def __init__(self, blob: bytes | mmap.mmap, offsets: np.ndarray, ids: np.ndarray):
        self._blob, self._offsets, self._ids = blob, offsets, ids

    def get(self, local: int) -> Document:
        a, b = int(self._offsets[local]), int(self._offsets[local + 1])
        rec = _loads(self._blob[a:b])
        return Document(self._ids[local], rec.get("text", ""), rec.get("title", ""), rec.get("meta") or {})


@dataclass(eq=False)
class Segment:
    name: str
    ids: np.ndarray  # external document ids (object array of str)
    doclen: np.ndarray  # int32, analysed length of each document
    indptr: np.ndarray  # int64, postings of term t are docs[indptr[t]:indptr[t+1]]
    docs: np.ndarray  # int32 local document numbers
    tfs: np.ndarray  # int32 term frequencies
    store_blob: Any = None
    store_offsets: np.ndarray | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def n_docs(self) -> int:
        return len(self.ids)

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

    def document(self, local: int) -> Document:
        if self.store_offsets is None:
            return Document(self.ids[local], "")
        return DocStore(self.store_blob, self.store_offsets, self.ids).get(local)

    # persistence ------------------------------------------------------------------------
    def write(self, folder: Path) -> None:
        """Write into ``folder/<name>`` atomically."""
        with atomic_dir(folder / self.name) as tmp:
            save_array(tmp / "indptr.npy", self.indptr)
            save_array(tmp / "docs.npy", self.docs)
            save_array(tmp / "tfs.npy", self.tfs)
            save_array(tmp / "doclen.npy", self.doclen)
            if self.store_offsets is not None:
                save_array(tmp / "store_offsets.npy", self.store_offsets)
                (tmp / "store.jsonl").write_bytes(bytes(self.store_blob))
            (tmp / "ids.txt").write_text("\n".join(self.ids.tolist()), encoding="utf-8")
            sizes = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
            meta = {"name": self.name, "n_docs": self.n_docs, "n_postings": self.n_postings,
                    "vocab_size": self.vocab_size, "files": sizes, **dict(self.meta)}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path, mmap_arrays: bool = True) -> "Segment":
        meta_path = folder / "meta.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            for fname, size in meta["files"].items():
                actual = (folder / fname).stat().st_size
                if actual != size:
                    raise CorruptIndexError(f"{folder / fname} has {actual} bytes, expected {size}: the index is damaged; rebuild it")
            mode = "r" if mmap_arrays else None
            arrays = {n: np.load(folder / f"{n}.npy", mmap_mode=mode, allow_pickle=False)
                      for n in _ARRAYS if (folder / f"{n}.npy").exists()}
            text = (folder / "ids.txt").read_text(encoding="utf-8")
        except CorruptIndexError:
            raise
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise CorruptIndexError(f"cannot read index segment {folder}: {exc}; the index is damaged, rebuild it") from exc
        ids = np.empty(meta["n_docs"], dtype=object)
        ids[:] = text.split("\n") if meta["n_docs"] else []
        blob = None
        if "store_offsets" in arrays:
            with open(folder / "store.jsonl", "rb") as fh:
                size = (folder / "store.jsonl").stat().st_size
                blob = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        extra = {k: v for k, v in meta.items() if k not in ("name", "n_docs", "n_postings", "vocab_size", "files")}
        return cls(meta["name"], ids, arrays["doclen"], arrays["indptr"], arrays["docs"], arrays["tfs"],
                   blob, arrays.get("store_offsets"), extra)


def merge_segments(segments: list[Segment], lives: list[np.ndarray | None], name: str, vocab_size: int) -> Segment:
    """One segment holding the live documents of ``segments`` in order (deleted ones dropped)."""
    id_parts, len_parts, renumber, base = [], [], [], 0
    store = all(s.store_offsets is not None for s in segments)
    blobs, off_parts, store_base = [], [], 0
    for seg, live in zip(segments, lives):
        live = np.ones(seg.n_docs, dtype=bool) if live is None else np.asarray(live, dtype=bool)
        new_num = np.full(seg.n_docs, -1, dtype=np.int64)
        new_num[live] = base + np.arange(int(live.sum()))
        renumber.append(new_num)
        base += int(live.sum())
        id_parts.append(seg.ids[live])
        len_parts.append(np.asarray(seg.doclen)[live])
        if store:
            offs = np.asarray(seg.store_offsets)
            starts, ends = offs[:-1][live], offs[1:][live]
            blob = bytes(seg.store_blob)
            blobs.extend(blob[a:b] for a, b in zip(starts.tolist(), ends.tolist()))
            off_parts.append(np.cumsum(ends - starts) + store_base)
            store_base += int((ends - starts).sum())
    term_parts, doc_parts, tf_parts = [], [], []
    for seg, new_num in zip(segments, renumber):
        docs = new_num[np.asarray(seg.docs)]
        keep = docs >= 0
        term_parts.append(seg.term_ids_of_postings()[keep])
        doc_parts.append(docs[keep])
        tf_parts.append(np.asarray(seg.tfs)[keep])
    term = np.concatenate(term_parts) if term_parts else np.empty(0, np.int64)
    doc = np.concatenate(doc_parts) if doc_parts else np.empty(0, np.int64)
    order = np.lexsort((doc, term))
    indptr = np.zeros(vocab_size + 1, dtype=np.int64)
    np.cumsum(np.bincount(term, minlength=vocab_size), out=indptr[1:])
    ids = np.concatenate(id_parts) if id_parts else np.empty(0, object)
    offsets = None
    blob = None
    if store:
        offsets = np.concatenate([[0], *off_parts]).astype(np.int64)
        blob = b"".join(blobs)
    return Segment(name, ids.astype(object), np.concatenate(len_parts).astype(np.int32), indptr,
                   doc[order].astype(np.int32), np.concatenate(tf_parts)[order].astype(np.int32), blob, offsets)
