"""Impact indexes: learned sparse vectors (SPLADE, or imported ones) as an inverted index.

Why a sibling of :class:`~retrievo.index.inverted.InvertedIndex` and not a new format:
a sparse document vector is a bag of weighted terms, which is what a lexical segment
already stores — term-major postings with one positive integer per posting — so an
impact index *is* an inverted index whose per-posting integer is a quantised weight
instead of a term frequency (as Anserini's impact indexes store them). Everything else
comes with it unchanged: segments, document store, tombstones, ``add``/``delete``/
``merge``, atomic publish through :mod:`retrievo.index.lifecycle`, checksums and
``retrievo check``, and the top-k kernel of :mod:`retrievo.retrieve.topk`. The manifest
says ``format: retrievo-impacts`` and records what a term-frequency index does not have:

``scale``      impacts are ``round(weight × scale)`` (postings that round to 0 are dropped),
               so a score is ``Σ query weight × impact / scale``;
``model``      identity of the document encoder (empty for imported vectors);
``model_spec`` the spec that loads it again;
``vocab_sha``  sha256 of the encoder's full vocabulary (its tokens in id order), so a
               query encoder with another tokenizer is refused
               (:class:`~retrievo.errors.VocabularyMismatchError`);
``source``     identity of the collection encoded (a lexical index), for caches;
``truncated``  documents cut at the encoder's token limit.

Quantisation error: each stored weight is off by at most ``0.5 / scale``, so a
document's score differs from the exact dot product of the two sparse vectors by at most
``0.5 / scale × Σ |query weights|`` (0.005 per unit of query weight at the default
``scale=100``); the tests check this bound.

Imported vectors: :meth:`ImpactIndex.from_jsonl` reads Pyserini's JsonVectorCollection
lines, ``{"id": ..., "vector": {term: weight}, "contents": optional text}``. Pyserini's
files usually hold weights already quantised to integers, hence ``scale=1`` there.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrievo.errors import ConfigError, DataFormatError, DuplicateIdError
from retrievo.index import lifecycle
from retrievo.index.columns import Columns, flatten_meta
from retrievo.index.docstore import DOCS_FOLDER, DocPart
from retrievo.index.ingest import growing_vocab
from retrievo.index.base import create_index_folder
from retrievo.index.inverted import SEGMENTS_FOLDER, InvertedIndex
from retrievo.index.segment import Segment
from retrievo.text import get_analyzer
from retrievo.types import Document

FORMAT = "retrievo-impacts"
FORMAT_VERSION = 1
DEFAULT_SCALE = 100.0
_INFO_KEYS = ("scale", "model", "model_spec", "vocab_sha", "source", "truncated")


def _reopen(path: str, mmap: bool) -> "ImpactIndex":
    return ImpactIndex.open(path, mmap=mmap)


def _from_state(segments, lives, terms, info, doc_parts) -> "ImpactIndex":
    return ImpactIndex(segments, lives, terms, get_analyzer(None), None, 0, info, doc_parts)


def quantise(weights: np.ndarray, scale: float) -> np.ndarray:
    """``round(weight × scale)`` as int32 (negative weights are refused by the callers)."""
    q = np.rint(np.asarray(weights, dtype=np.float64) * scale)
    if q.size and q.max() > np.iinfo(np.int32).max:
        raise ConfigError(f"a weight times scale={scale:g} exceeds the int32 range; use a smaller scale")
    return q.astype(np.int32)


def _segment_from_csr(matrix: Any, column_terms: np.ndarray, scale: float, name: str, vocab_size: int) -> Segment:
    """A lexical segment whose per-posting integers are quantised weights.

    ``column_terms[c]`` is the index term id of column ``c`` of ``matrix`` (CSR, rows are
    documents). ``doclen`` is each document's sum of impacts, so the segment's structural
    check (impacts add up to the length) holds as for term frequencies."""
    m = matrix.tocsr()
    m.sum_duplicates()
    n = m.shape[0]
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(m.indptr))
    if m.nnz and float(m.data.min()) < 0:
        raise DataFormatError("sparse vectors must have non-negative weights (impacts)")
    imp = quantise(m.data, scale)
    keep = imp > 0
    term = column_terms[m.indices[keep]].astype(np.int64)
    doc, imp = rows[keep], imp[keep]
    order = np.lexsort((doc, term))
    indptr = np.zeros(vocab_size + 1, dtype=np.int64)
    np.cumsum(np.bincount(term, minlength=vocab_size), out=indptr[1:])
    doclen = np.bincount(doc, weights=imp, minlength=n).astype(np.int64)
    if doclen.size and doclen.max() > np.iinfo(np.int32).max:
        raise ConfigError("a document's impacts sum past the int32 range; use a smaller scale")
    return Segment(f"seg-{name}", doclen.astype(np.int32), indptr, doc[order].astype(np.int32),
                   imp[order].astype(np.int32))


def _doc_part(name: str, ids: Sequence[str], documents: Sequence[Document] | None,
              metadata: Sequence[Mapping[str, Any]] | None = None) -> DocPart:
    ids_arr = np.empty(len(ids), dtype=object)
    ids_arr[:] = [str(i) for i in ids]
    if documents is None:
        if metadata is not None and len(metadata) != len(ids_arr):
            raise ConfigError(f"{len(ids_arr)} ids but {len(metadata)} metadata records")
        columns = Columns.build([flatten_meta(m) for m in metadata]) if metadata is not None else None
        return DocPart(f"part-{name}", ids_arr, columns=columns)
    if len(documents) != len(ids) or any(d.doc_id != i for d, i in zip(documents, ids_arr)):
        raise ConfigError("documents must be given in the same order as the ids")
    records = [json.dumps({"title": d.title, "text": d.text, **({"meta": dict(d.meta)} if d.meta else {})},
                          ensure_ascii=False).encode() + b"\n" for d in documents]
    offsets = np.zeros(len(records) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in records], out=offsets[1:])
    return DocPart(f"part-{name}", ids_arr, b"".join(records), offsets)


class ImpactIndex(InvertedIndex):
    """Quantised sparse document vectors on the inverted index's format and life cycle
    (see the module docstring). Build with :meth:`from_vectors` or :meth:`from_jsonl`,
    extend with :meth:`add_vectors`; ``delete``, ``merge``, ``save`` and ``open`` are the
    inverted index's."""

    FORMAT = FORMAT
    FORMAT_VERSION = FORMAT_VERSION
    _KIND = "impact index"

    # ------------------------------------------------------------------ recorded facts
    @property
    def scale(self) -> float:
        return float(self.info.get("scale", DEFAULT_SCALE))

    @property
    def model(self) -> str:
        return str(self.info.get("model") or "")

    @property
    def model_spec(self) -> str:
        return str(self.info.get("model_spec") or "")

    @property
    def vocab_sha(self) -> str:
        return str(self.info.get("vocab_sha") or "")

    @property
    def source(self) -> str | None:
        return self.info.get("source")

    def _extra_payload(self) -> dict[str, Any]:
        return {"impacts": {k: self.info.get(k) for k in _INFO_KEYS}}

    @classmethod
    def _extra_info(cls, payload: Any) -> dict[str, Any]:
        impacts = payload.get("impacts") if isinstance(payload, Mapping) else None
        if not isinstance(impacts, Mapping) or not impacts.get("scale"):
            from retrievo.errors import CorruptIndexError

            raise CorruptIndexError("an impact index manifest without its 'impacts' record (scale, model)")
        return {k: impacts.get(k) for k in _INFO_KEYS}

    # ------------------------------------------------------------------ building
    @classmethod
    def from_vectors(cls, ids: Sequence[str], vectors: Any, terms: Sequence[str], path: str | Path | None = None,
                     *, documents: Sequence[Document] | None = None, scale: float = DEFAULT_SCALE,
                     model: str = "", model_spec: str = "", vocab_sha: str = "", source: str | None = None,
                     truncated: int = 0, metadata: Sequence[Mapping[str, Any]] | None = None) -> "ImpactIndex":
        """An index of sparse ``vectors`` (a scipy sparse matrix ``[len(ids), len(terms)]``
        whose column ``c`` is the term ``terms[c]``), in memory or written at ``path``;
        ``metadata`` (one mapping per id, without ``documents``) is kept as columns."""
        if not scale > 0:
            raise ConfigError(f"scale must be > 0, got {scale}")
        info = {"store": documents is not None, "scale": float(scale), "model": model, "model_spec": model_spec,
                "vocab_sha": vocab_sha, "source": source, "truncated": int(truncated)}
        index = cls([], [], [], get_analyzer(None), None, 0, info)
        if path is None:
            index._ingest_vectors(ids, vectors, terms, documents, None, metadata)
            return index
        path = Path(path)
        if path.exists() and any(path.iterdir()):
            raise FileExistsError(f"{path} exists and is not empty; choose a new folder")

        def write_new(txn: lifecycle.Transaction) -> None:
            index.path = txn.path
            index._ingest_vectors(ids, vectors, terms, documents, txn.path, metadata)
            index._publish(txn)

        create_index_folder(path, write_new)
        return cls.open(path)

    @classmethod
    def from_jsonl(cls, source: str | Path, path: str | Path | None = None, *, scale: float = 1.0,
                   store: bool = True) -> "ImpactIndex":
        """Import precomputed sparse vectors, one JSON object a line:
        ``{"id": "d1", "vector": {"term": 12, ...}, "contents": "text"}`` (Pyserini's
        JsonVectorCollection; ``title``/``text`` are read too). ``scale`` multiplies the
        weights before rounding (1: weights are already integer impacts)."""
        from scipy.sparse import csr_matrix

        source = Path(source)
        ids: list[str] = []
        docs: list[Document] = []
        cols: dict[str, int] = {}
        indptr, indices, data = [0], [], []
        with open(source, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataFormatError(f"not JSON: {exc}", source, n) from None
                if not isinstance(rec, dict) or "id" not in rec or not isinstance(rec.get("vector"), dict):
                    raise DataFormatError("a line needs 'id' and a 'vector' object of term -> weight", source, n)
                for term, weight in rec["vector"].items():
                    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
                        raise DataFormatError(f"weight of {term!r} must be a number >= 0, got {weight!r}", source, n)
                    if not term or "\n" in term:
                        raise DataFormatError(f"term {term!r} is empty or holds a newline", source, n)
                    indices.append(cols.setdefault(term, len(cols)))
                    data.append(float(weight))
                indptr.append(len(indices))
                ids.append(str(rec["id"]))
                text = rec.get("contents", rec.get("text", ""))
                docs.append(Document(str(rec["id"]), str(text or ""), title=str(rec.get("title", "") or "")))
        matrix = csr_matrix((np.asarray(data, np.float64), np.asarray(indices, np.int64),
                             np.asarray(indptr, np.int64)), shape=(len(ids), len(cols)))
        return cls.from_vectors(ids, matrix, list(cols), path, documents=docs if store else None, scale=scale)

    def _ingest_vectors(self, ids: Sequence[str], vectors: Any, terms: Sequence[str],
                        documents: Sequence[Document] | None, folder: Path | None,
                        metadata: Sequence[Mapping[str, Any]] | None = None, replacing: bool = False) -> None:
        """Add one segment (and document part) for ``vectors``; on failure nothing changes."""
        ids = [str(i) for i in ids]
        if vectors.shape[0] != len(ids) or vectors.shape[1] != len(terms):
            raise ConfigError(f"{vectors.shape} vectors for {len(ids)} ids and {len(terms)} terms")
        if len(set(ids)) != len(ids):
            raise DuplicateIdError("document ids must be unique within an impact index")
        clash = [i for i in ids if i in self._live_id_set()] if self.segments and not replacing else []
        if clash:
            raise DuplicateIdError(f"{len(clash)} id(s) are already in the impact index, e.g. {clash[:3]}; "
                                   "delete them first to replace their vectors")
        if any(not i or "\n" in i for i in ids):
            raise ConfigError("document ids must be non-empty and contain no newline")
        if self.store and documents is None:
            raise ConfigError("this impact index stores text: give the documents of the added vectors")
        if folder is not None:
            (folder / SEGMENTS_FOLDER).mkdir(exist_ok=True)
            (folder / DOCS_FOLDER).mkdir(exist_ok=True)
        with self._restored_on_failure():
            vocab = growing_vocab(self.vocab)
            used = np.unique(vectors.tocsr().indices) if vectors.nnz else np.empty(0, np.int64)
            column_terms = np.full(len(terms), -1, dtype=np.int64)
            column_terms[used] = [vocab[terms[c]] for c in used.tolist()]
            name = uuid.uuid4().hex[:16]
            seg = _segment_from_csr(vectors, column_terms, self.scale, name, len(vocab))
            part = _doc_part(name, ids, documents if self.store else None, metadata)
            self.terms.extend(itertools.islice(vocab, len(self.terms), None))
            if folder is not None:
                seg.write(folder / SEGMENTS_FOLDER)
                seg = Segment.load(folder / SEGMENTS_FOLDER / seg.name)
                part = part.write(folder / DOCS_FOLDER)
            self.segments.append(seg)
            self.lives.append(None)
            self.doc_parts.append(part)
            self._vocab = dict(vocab)
            self._invalidate()

    # ------------------------------------------------------------------ changes
    def add_vectors(self, ids: Sequence[str], vectors: Any, terms: Sequence[str], *,
                    documents: Sequence[Document] | None = None, source: str | None = None,
                    truncated: int = 0, metadata: Sequence[Mapping[str, Any]] | None = None) -> int:
        """Add sparse vectors of new ids as a new segment; returns how many were added.
        On disk readers see them once the segment is written and published."""
        if not len(ids):
            return 0

        def apply(folder):
            self._ingest_vectors(ids, vectors, terms, documents, folder, metadata)
            if source is not None:
                self.info["source"] = source
            self.info["truncated"] = int(self.info.get("truncated") or 0) + int(truncated)

        self._change(apply)
        return len(ids)

    def upsert_vectors(self, ids: Sequence[str], vectors: Any, terms: Sequence[str], *,
                       documents: Sequence[Document] | None = None, source: str | None = None,
                       truncated: int = 0, metadata: Sequence[Mapping[str, Any]] | None = None) -> tuple[int, int]:
        """Insert or replace the sparse vectors of ``ids`` in ONE generation: the ids already
        present are tombstoned and the new vectors added as a new segment, published
        together (a reader, or a crash, sees the old state or the new one). Returns
        ``(replaced, added)``."""
        ids = [str(i) for i in ids]
        if not ids:
            return 0, 0
        targets = self._deletion_targets([i for i in ids if i in self.docstore], missing_ok=False)

        def apply(folder):
            self._ingest_vectors(ids, vectors, terms, documents, folder, metadata, replacing=True)
            self._tombstone(targets)
            self._invalidate()
            if source is not None:
                self.info["source"] = source
            self.info["truncated"] = int(self.info.get("truncated") or 0) + int(truncated)

        self._change(apply, fault="upsert.before_publish")
        return len(targets), len(ids) - len(targets)

    def set_source(self, source: str) -> None:
        """Record the collection identity this index now matches (after add/delete)."""
        if self.path is None:
            self.info["source"] = source
            return
        with lifecycle.writing(self.path, self.generation) as txn:
            self.info["source"] = source
            self._publish(txn)

    def add(self, documents: Iterable[Document], **kwargs: Any) -> list[str]:  # type: ignore[override]
        raise ConfigError("an impact index holds encoded vectors: add them with add_vectors(ids, vectors, terms), "
                          "or let the splade stage encode and add documents")

    # ------------------------------------------------------------------ presentation
    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(format=FORMAT, format_version=FORMAT_VERSION, **{k: self.info.get(k) for k in _INFO_KEYS})
        out.pop("analyzer", None)
        return out

    def __repr__(self) -> str:
        where = "in memory" if self.path is None else f"{self.path.name!r} gen {self.generation}"
        return (f"<ImpactIndex {where}: {len(self):,} docs, {self.vocab_size:,} terms, scale {self.scale:g}, "
                f"model {self.model_spec or self.model or 'imported'}>")

    def __reduce__(self):
        if self.path is not None:
            return _reopen, (str(self.path), self._mmap)
        return _from_state, (self.segments, self.lives, self.terms, dict(self.info, manifest=None),
                             self.doc_parts)


def vocab_sha(terms: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(terms).encode("utf-8")).hexdigest()


__all__ = ["DEFAULT_SCALE", "FORMAT", "FORMAT_VERSION", "ImpactIndex", "quantise", "vocab_sha"]
