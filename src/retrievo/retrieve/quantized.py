"""Compressed codes for candidate generation, rescored with the full vectors.

Two codes, both derived from a :class:`~retrievo.index.vectors.VectorIndex`'s float32
vectors (which stay the ground truth):

* ``int8`` — scalar quantisation per dimension, symmetric around 0: ``c = round(x / s)``
  with ``s_d = max|x_d| / 127`` over the collection, so a document costs ``dim`` bytes
  (4× smaller than float32) and ``q · x ≈ (q ⊙ s) · c``. Enough to rank almost exactly.
* ``binary`` — the sign of each dimension packed into bits (``dim / 8`` bytes, 32×
  smaller), searched by Hamming distance to the query's sign bits, as in binary
  embedding-based retrieval (BEBR): far cheaper and far cruder, so the top ``k × rescore``
  candidates are rescored with the exact inner product.

Rescoring reads only the candidates' full vectors. With the vector index memory-mapped,
that is the bi-granular arrangement: compact codes in RAM for every document, float
vectors on disk touched for a few hundred documents per query. Final scores are the
exact inner products and ties break by ascending id, as in exact search, so with a large
enough ``rescore`` factor the ranking equals the exact one.

An index on disk stores the codes as files of its life cycle, one unit per vector part
(:mod:`retrievo.index.derived`): written at build/add/merge, checked by ``retrievo check``,
read into RAM on first use. ``read="pread"`` fetches the candidates' vectors with plain
reads rather than through the memory map — the bi-granular mode (``dense(codes=binary,
bigranular=true)``), whose resident set is the codes plus one query's candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from retrievo.errors import ConfigError
from retrievo.retrieve.exact import BLOCK_DOCS, score_numbers, search_blocks
from retrievo.retrieve.openmp import torch_threads_kept

CODES = ("int8", "binary")
ENCODE_BLOCK = 65536
PREAD_GROUP = 16  # bi-granular: queries answered together (bounds the batch working memory)
PREAD_BLOCK = 4096  # bi-granular: codes scored per block


@njit(cache=True, nogil=True, inline="always")
def _popcount64(x):
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


@njit(cache=True, nogil=True, parallel=True)
def _neg_hamming(queries, codes, out):
    """``out[q, j] = -popcount(queries[q] XOR codes[j])`` over uint64 words."""
    n_q, words = queries.shape
    n = codes.shape[0]
    for j in prange(n):
        for q in range(n_q):
            d = np.uint64(0)
            for w in range(words):
                d += _popcount64(queries[q, w] ^ codes[j, w])
            out[q, j] = -np.float32(d)


def pack_signs(vectors: np.ndarray) -> np.ndarray:
    """Sign bits (``x > 0``) packed into uint64 words, zero-padded to a multiple of 64."""
    vectors = np.asarray(vectors)
    dim = vectors.shape[1]
    padded = -(-dim // 64) * 64
    bits = np.zeros((vectors.shape[0], padded), dtype=bool)
    bits[:, :dim] = vectors > 0
    return np.ascontiguousarray(np.packbits(bits, axis=1).view(np.uint64))


@dataclass
class Codes:
    """Compressed copies of every vector of an index (global document order)."""

    kind: str
    data: np.ndarray  # int8 [n, dim] or uint64 [n, words]
    scale: np.ndarray | None = None  # int8: per-dimension scale

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes + (0 if self.scale is None else self.scale.nbytes))

    @classmethod
    def build(cls, kind: str, blocks, dim: int) -> "Codes":
        """Codes of the vectors ``blocks`` yields (read block by block, so a memory-mapped
        index is streamed once, never loaded whole)."""
        if kind not in CODES:
            raise ConfigError(f"codes must be one of {', '.join(CODES)}, got {kind!r}")
        blocks = list(blocks)
        if kind == "binary":
            parts = [pack_signs(v[a:a + ENCODE_BLOCK]) for _, v in blocks for a in range(0, len(v), ENCODE_BLOCK)]
            words = -(-dim // 64)
            data = np.concatenate(parts) if parts else np.empty((0, words), np.uint64)
            return cls(kind, np.ascontiguousarray(data))
        peak = np.zeros(dim, dtype=np.float32)
        for _, v in blocks:
            for a in range(0, len(v), ENCODE_BLOCK):
                np.maximum(peak, np.abs(np.asarray(v[a:a + ENCODE_BLOCK])).max(axis=0), out=peak)
        scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
        parts = [np.clip(np.rint(np.asarray(v[a:a + ENCODE_BLOCK]) / scale), -127, 127).astype(np.int8)
                 for _, v in blocks for a in range(0, len(v), ENCODE_BLOCK)]
        data = np.concatenate(parts) if parts else np.empty((0, dim), np.int8)
        return cls(kind, np.ascontiguousarray(data), scale)

    def prepare(self, queries: np.ndarray) -> np.ndarray:
        """Queries in the form :meth:`score` takes."""
        if self.kind == "binary":
            return pack_signs(queries)
        return np.ascontiguousarray(queries * self.scale[None, :], dtype=np.float32)

    def score(self, queries: np.ndarray, block: np.ndarray) -> np.ndarray:
        if self.kind == "binary":
            out = np.empty((queries.shape[0], block.shape[0]), dtype=np.float32)
            with torch_threads_kept():
                _neg_hamming(queries, block, out)
            return out
        return queries @ block.astype(np.float32).T


def search_codes(codes: "Codes | Sequence[Codes]", queries: np.ndarray, vindex, k: int, rescore: int,
                 threads: int = 1, read: str = "mmap", allowed: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top ``k × rescore`` candidates by the codes, then the top ``k`` of those by the
    exact inner product with the full vectors. Same return shape as
    :func:`retrievo.retrieve.exact.search_blocks`; ``rescore=0`` returns the code scores
    themselves (no full vector is read).

    ``codes`` is one :class:`Codes` over the whole index or one per vector part (as the
    index stores them, each int8 part with its own scale). ``read`` says how candidates'
    vectors are fetched: ``mmap`` through the memory map (fastest; the pages stay mapped)
    or ``pread`` (bi-granular: only those rows are copied into memory, see
    :meth:`retrievo.index.vectors.VectorIndex.read_rows`).

    ``allowed`` (one bool per document number; default: the live bitmap) is applied while
    the codes select candidates, so a filter never empties the candidate list: the
    ``k × rescore`` candidates are the best-coded documents *among those kept*."""
    if read == "pread" and len(queries) > PREAD_GROUP:
        # bi-granular: answer a few queries at a time, so the candidate heaps and score
        # blocks (batch-sized working memory) stay small next to the codes
        chunks = [search_codes(codes, queries[i:i + PREAD_GROUP], vindex, k, rescore, threads, read, allowed)
                  for i in range(0, len(queries), PREAD_GROUP)]
        width = max(c[0].shape[1] for c in chunks)
        pad = [(np.pad(d, ((0, 0), (0, width - d.shape[1]))), np.pad(s, ((0, 0), (0, width - s.shape[1]))), c)
               for d, s, c in chunks]
        return (np.concatenate([p[0] for p in pad]), np.concatenate([p[1] for p in pad]),
                np.concatenate([p[2] for p in pad]))
    n_docs = vindex.total_docs
    depth = min(n_docs, k * max(rescore, 1))
    parts = [codes] if isinstance(codes, Codes) else list(codes)
    bases = [0] if isinstance(codes, Codes) else vindex.bases[:-1].tolist()
    blocks = [(int(b), c.data, c.score, c.prepare(queries)) for b, c in zip(bases, parts)]
    live = vindex.live if allowed is None else allowed
    cand, cscores, counts = search_blocks(queries, blocks, n_docs, live, vindex.id_rank, vindex.by_rank,
                                          depth, threads, block_docs=PREAD_BLOCK if read == "pread" else BLOCK_DOCS)
    if rescore == 0:
        return cand[:, :k], cscores[:, :k], np.minimum(counts, k)
    kk = min(k, depth)
    out_docs = np.zeros((len(queries), kk), dtype=np.int32)
    out_scores = np.zeros((len(queries), kk), dtype=np.float32)
    out_counts = np.zeros(len(queries), dtype=np.int64)
    id_rank = vindex.id_rank
    for q in range(len(queries)):
        numbers = cand[q, :counts[q]].astype(np.int64)
        if read == "pread":
            numbers.sort()  # file order: one read per run of rows, and no reordering copy
        rows = vindex.read_rows(numbers) if read == "pread" else vindex.vectors_of(numbers)
        exact = score_numbers(queries[q], rows)
        order = np.lexsort((id_rank[numbers], -exact))[:kk]
        out_docs[q, :len(order)] = numbers[order]
        out_scores[q, :len(order)] = exact[order]
        out_counts[q] = len(order)
    return out_docs, out_scores, out_counts


__all__ = ["CODES", "Codes", "pack_signs", "search_codes"]
