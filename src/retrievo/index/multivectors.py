"""The multi-vector index: token vectors of late-interaction models on the shared life cycle.

Layout of an index folder (generations and publishing: :mod:`retrievo.index.lifecycle`;
ids and text: :mod:`retrievo.index.docstore`)::

    CURRENT, gen-*.json                 as every format; payload: model, dim, dtype, parts
    mvectors/part-<id>/tokens.npy       ``[tokens, dim]`` token matrix of one part (memory-mapped)
    mvectors/part-<id>/offsets.npy      int64 ``[n + 1]``: document ``i`` is rows ``offsets[i]:offsets[i+1]``
    mvectors/part-<id>/meta.json        counts, file sizes and sha256 (so ``retrievo check`` verifies them)
    docs/part-<id>/                     ids (and text) of the same documents, same order
    deletes/del-<gen>-<part>.npy        tombstones

Why one flat matrix plus offsets rather than one array per document or a padded
``[docs, max tokens, dim]`` tensor: documents have very different token counts, padding
would waste most of the space, and a flat matrix is one memory map that MaxSim reads in
long sequential runs (exhaustive search streams it block by block; reranking gathers the
candidates' row ranges). Tokens are stored as float16 by default (half the bytes; MaxSim
computes in float32), ``dtype="float32"`` keeps them exact.

Parts are immutable, as the other formats' units: ``add`` writes a new part, ``delete``
writes tombstones, ``merge`` compacts into one part. The manifest records the encoder's
identity, and every consumer checks it (:meth:`MultiVectorIndex.check_model`). The life
cycle shared with the vector index lives in :mod:`retrievo.index.embedded`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrievo.errors import ConfigError, CorruptIndexError, DimensionMismatchError, DuplicateIdError
from retrievo.index.atomic import atomic_dir, check_file_sizes, hash_array, save_array
from retrievo.index.embedded import EmbeddingIndex, new_doc_part
from retrievo.types import Document

FORMAT = "retrievo-multivectors"
FORMAT_VERSION = 1
FOLDER = "mvectors"
DTYPES = ("float16", "float32")


class TokenPart:
    """The token vectors of one part: ``tokens [T, dim]`` and ``offsets [n + 1]``."""

    def __init__(self, name: str, tokens: np.ndarray, offsets: np.ndarray, sha256: dict[str, str] | None = None):
        if tokens.ndim != 2 or offsets.ndim != 1 or offsets[0] != 0 or offsets[-1] != tokens.shape[0]:
            raise CorruptIndexError(f"token part {name}: offsets do not span the token matrix")
        self.name, self.tokens, self.offsets, self._sha = name, tokens, offsets, sha256

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def dim(self) -> int:
        return int(self.tokens.shape[1])

    def content_hash(self) -> str:
        if self._sha is None:
            self._sha = {"tokens.npy": hash_array(np.asarray(self.tokens)),
                         "offsets.npy": hash_array(np.asarray(self.offsets))}
        return hashlib.sha256("".join(f"{k}:{v}\n" for k, v in sorted(self._sha.items())).encode()).hexdigest()

    def write(self, folder: Path) -> "TokenPart":
        with atomic_dir(folder / self.name) as tmp:
            sha = {"tokens.npy": save_array(tmp / "tokens.npy", np.asarray(self.tokens)),
                   "offsets.npy": save_array(tmp / "offsets.npy", np.asarray(self.offsets, dtype=np.int64))}
            meta = {"name": self.name, "n_docs": self.n_docs, "n_tokens": self.n_tokens,
                    "dim": self.dim, "dtype": str(self.tokens.dtype),
                    "files": {n: (tmp / n).stat().st_size for n in sha}, "sha256": sha}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        self._sha = sha
        return TokenPart.load(folder / self.name)

    @classmethod
    def load(cls, folder: Path, mmap: bool = True) -> "TokenPart":
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            check_file_sizes(folder, meta["files"])
            tokens = np.load(folder / "tokens.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
            offsets = np.load(folder / "offsets.npy", allow_pickle=False)
        except CorruptIndexError:
            raise
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise CorruptIndexError(f"cannot read token part {folder}: {exc}; the index is damaged, rebuild it") \
                from exc
        if tokens.shape != (meta["n_tokens"], meta["dim"]) or len(offsets) != meta["n_docs"] + 1 \
                or bool((np.diff(offsets) < 0).any()):
            raise CorruptIndexError(f"{folder}: token matrix or offsets differ from their record; rebuild the index")
        return cls(meta["name"], tokens, offsets, meta["sha256"])

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if isinstance(self.tokens, np.memmap):
            state["tokens"] = np.array(self.tokens)
        return state


class MultiVectorIndex(EmbeddingIndex):
    """Token vectors with ids (and optionally text), their model's identity and dimension."""

    FORMAT = FORMAT
    FORMAT_VERSION = FORMAT_VERSION
    _KIND = "multi-vector index"
    _PARTS_FOLDER = FOLDER
    _PART_TYPE = TokenPart
    _PART = "token part"
    _ROWS = "documents"
    _IDENTITY_PARTS = "tokens"

    @property
    def dtype(self) -> str:
        return str(self.info.get("dtype", "float16"))

    @property
    def n_tokens(self) -> int:
        return sum(p.n_tokens for p in self.parts)

    def blocks(self) -> Iterator[tuple[int, TokenPart]]:
        """``(first global number, part)`` of each part."""
        base = 0
        for p in self.parts:
            yield base, p
            base += p.n_docs

    def token_matrices(self, numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Token vectors of global document numbers, gathered: ``(float32 [sum of
        lengths, dim], lengths)`` in the order given."""
        numbers = np.asarray(numbers, dtype=np.int64)
        bases = self.bases
        which = np.searchsorted(bases, numbers, side="right") - 1
        pieces, lengths = [], np.empty(len(numbers), dtype=np.int64)
        for i, (n, p) in enumerate(zip(numbers.tolist(), which.tolist())):
            part = self.parts[p]
            a, b = part.offsets[n - bases[p]], part.offsets[n - bases[p] + 1]
            pieces.append(part.tokens[a:b])
            lengths[i] = b - a
        tokens = np.concatenate(pieces).astype(np.float32, copy=False) if pieces else \
            np.empty((0, self.dim), np.float32)
        return tokens, lengths

    @staticmethod
    def _live_digest(live: np.ndarray) -> str:
        """sha256 of the raw bitmap: how this format's identities were first computed
        (published identities must not change)."""
        return hashlib.sha256(live.tobytes()).hexdigest()

    def _model_named(self) -> str:
        return self.model_spec or self.model

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, ids: Sequence[str], tokens: np.ndarray, lengths: np.ndarray, path: str | Path | None = None, *,
              model: str, model_spec: str = "", documents: Sequence[Document] | None = None,
              source: str | None = None, dtype: str = "float16", truncated: int = 0,
              metadata: Sequence[Mapping[str, Any]] | None = None) -> "MultiVectorIndex":
        """An index of documents ``ids`` whose token vectors are ``tokens`` rows, ``lengths[i]``
        rows for document ``i`` in order; written at ``path`` when given. ``metadata`` (one
        mapping per id, when ``documents`` are not given) is kept as filterable columns."""
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        tokens = np.asarray(tokens)
        if tokens.ndim != 2:
            raise DimensionMismatchError(f"token vectors must be [tokens, dim], got shape {tokens.shape}")
        info = {"store": documents is not None, "source": source, "dtype": dtype, "truncated": int(truncated)}
        index = cls([], [], [], model, tokens.shape[1], model_spec=model_spec, info=info)
        index._append(ids, tokens, lengths, documents, metadata)
        return index if path is None else index._write_to_new_folder(Path(path))

    def _append(self, ids: Sequence[str], tokens: np.ndarray, lengths: np.ndarray,
                documents: Sequence[Document] | None, metadata: Sequence[Mapping[str, Any]] | None = None,
                replacing: bool = False) -> None:
        lengths = np.asarray(lengths, dtype=np.int64)
        if len(lengths) != len(ids) or int(lengths.sum()) != tokens.shape[0]:
            raise DimensionMismatchError(f"{len(ids)} ids, {len(lengths)} lengths and {tokens.shape[0]} token rows "
                                         "do not pair up")
        if tokens.shape[1] != self.dim:
            raise DimensionMismatchError(f"token vectors of dimension {tokens.shape[1]} cannot go into an index of "
                                         f"dimension {self.dim}")
        if not np.isfinite(np.asarray(tokens, dtype=np.float32)).all():
            raise ConfigError("token vectors contain NaN or infinite values; check the encoder")
        if self.parts and not replacing:
            clash = [i for i in ids if i in self.docstore]
            if clash:
                raise DuplicateIdError(f"{len(clash)} id(s) are already in the index, e.g. {clash[:3]}")
        docs = new_doc_part(ids, documents, metadata)
        part = TokenPart(docs.name, np.ascontiguousarray(tokens, dtype=self.dtype), _offsets(lengths))
        self.parts.append(part)
        self.doc_parts.append(docs)
        self.lives.append(None)
        self._invalidate()

    # ------------------------------------------------------------------ changes
    def add(self, ids: Sequence[str], tokens: np.ndarray, lengths: np.ndarray,
            documents: Sequence[Document] | None = None, *, source: str | None = None, truncated: int = 0,
            metadata: Sequence[Mapping[str, Any]] | None = None) -> int:
        """Add new documents' token vectors as a new part; returns how many were added."""
        if not len(ids):
            return 0
        if self.store and documents is None:
            raise ConfigError("this index stores text: give the documents of the added token vectors")

        def apply(folder: Path | None) -> None:
            self._append(ids, tokens, lengths, documents if self.store else None, metadata)
            if source is not None:
                self.info["source"] = source
            self.info["truncated"] = int(self.info.get("truncated") or 0) + int(truncated)

        self._change(apply)
        return len(ids)

    def upsert(self, ids: Sequence[str], tokens: np.ndarray, lengths: np.ndarray,
               documents: Sequence[Document] | None = None, *, source: str | None = None, truncated: int = 0,
               metadata: Sequence[Mapping[str, Any]] | None = None) -> tuple[int, int]:
        """Insert or replace the token vectors of ``ids`` in ONE generation: the ids already
        present are tombstoned and the new rows added as a new part, published together, so
        a reader (or a crash) sees the old state or the new one. Returns ``(replaced,
        added)``."""
        ids = [str(i) for i in ids]
        if not ids:
            return 0, 0
        if self.store and documents is None:
            raise ConfigError("this index stores text: give the documents of the upserted token vectors")
        targets = self._deletion_targets([i for i in ids if i in self.docstore], missing_ok=False)

        def apply(folder: Path | None) -> None:
            self._append(ids, tokens, lengths, documents if self.store else None, metadata, replacing=True)
            self._tombstone(targets)
            if source is not None:
                self.info["source"] = source
            self.info["truncated"] = int(self.info.get("truncated") or 0) + int(truncated)
            self._invalidate()

        self._change(apply, fault="upsert.before_publish")
        return len(targets), len(ids) - len(targets)

    def _merged_part(self, name: str, keep: np.ndarray) -> TokenPart:
        tokens, lengths = self.token_matrices(keep)
        return TokenPart(name, tokens.astype(self.dtype), _offsets(lengths))

    # ------------------------------------------------------------------ persistence
    def _record_part(self, i: int, entry: dict[str, Any]) -> list[str]:
        entry["n_tokens"] = self.parts[i].n_tokens
        return []

    def _payload_fields(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "truncated": int(self.info.get("truncated") or 0), "tokens": self.n_tokens}

    @classmethod
    def _info_from(cls, payload: Mapping[str, Any]) -> dict[str, Any]:
        return {"dtype": payload.get("dtype", "float16"), "truncated": payload.get("truncated", 0)}

    # ------------------------------------------------------------------ presentation
    def _described_shape(self) -> dict[str, Any]:
        return {"tokens": self.n_tokens, "dim": self.dim, "dtype": self.dtype}

    def __repr__(self) -> str:
        where = "in memory" if self.path is None else f"{self.path.name!r} gen {self.generation}"
        return (f"<MultiVectorIndex {where}: {len(self):,} docs, {self.n_tokens:,} tokens x {self.dim} "
                f"{self.dtype}, model {self.model_spec or self.model}>")


def _offsets(lengths: np.ndarray) -> np.ndarray:
    """Row offsets (int64 ``[n + 1]``) of documents with ``lengths`` token rows each."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


__all__ = ["DTYPES", "FORMAT", "FORMAT_VERSION", "MultiVectorIndex", "TokenPart"]
