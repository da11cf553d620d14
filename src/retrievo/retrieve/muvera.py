"""MUVERA: multi-vector retrieval through fixed-dimensional encodings (Dhulipala et al., 2024).

A set of token vectors becomes one vector (its FDE) whose inner product with another
set's FDE approximates their MaxSim (Chamfer similarity), so a single-vector index finds
candidates that exact MaxSim then re-scores:

1. **SimHash partitions.** ``k_sim`` random Gaussian hyperplanes split the space into
   ``B = 2^k_sim`` buckets; a token goes to the bucket of its sign pattern.
2. **Inner projection.** Each token is projected to ``d_proj`` dimensions by a random
   ±1/√d_proj matrix (an AMS sketch), so an FDE block per bucket is small.
3. **Aggregation.** Per bucket, a *query* sums its projected tokens and a *document*
   averages them: MaxSim sums over query tokens the best document token, and a query
   token meets the mean of the document tokens that fell in its bucket — the best one
   when the partition is fine enough.
4. **Empty buckets.** A document bucket no token fell into takes the projected vector of
   the document token whose sign pattern is nearest (Hamming distance) to the bucket's,
   so a query token landing there still meets a similar document token (queries are
   not filled: their empty buckets add nothing).
5. **Repetitions.** Steps 1–4 are repeated ``reps`` times with independent randomness and
   the blocks concatenated: the estimate's variance falls as 1/reps (the test checks the
   approximation improves with more repetitions).
6. **Final projection** (optional, ``final_dim``): one more random Gaussian projection of
   the concatenation, for a smaller index.

FDE dimension ``reps × 2^k_sim × d_proj`` before the final projection. Defaults
``k_sim=1, d_proj=256, reps=10`` (5,120 dimensions) and 1,000 candidates re-scored, chosen
on SciFact *train* queries with ``bench/muvera_defaults_train.py`` (200 queries, the whole
corpus, all-MiniLM-L6-v2 token vectors; never the test split): among 5,120- and
10,240-dimension FDEs, candidate recall@100 against exhaustive MaxSim rose as ``k_sim``
fell and ``d_proj`` grew (at 1,000 candidates: 0.874 for the paper-style ``k_sim=4,
d_proj=16, reps=20``, 0.903 for ``3/32/20``, 0.919 for ``2/64/20``, 0.928 for ``1/256/10``;
a single bucket, ``0/384/1``, i.e. summed query tokens against mean document tokens, 0.871).
With untrained token vectors the sketch's projection noise costs more than coarse buckets
do; a trained ColBERT checkpoint, whose token vectors are made for MaxSim, may prefer the
paper's finer partitions — measure with that script on your own train queries.
Re-scoring reads each query's candidates' token vectors on its own, while exhaustive
search shares every block of the store among 64 queries, so MUVERA pays off only when the
candidates are a small share of the corpus (set ``candidates`` lower on small corpora).
All randomness comes from ``seed``, so encodings are reproducible.

Why our own kernel: the aggregation is a ragged group-by (tokens → (document, bucket))
with a per-document fill rule, which no library we depend on offers; one numba pass over
the tokens does it without materialising a ``[tokens, buckets]`` matrix. The FDEs are a
:class:`~retrievo.index.vectors.VectorIndex` (searched exactly or through HNSW graphs with
the dense code), cached beside the multi-vector index they were computed from.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from retrievo.errors import ConfigError
from retrievo.index.multivectors import MultiVectorIndex
from retrievo.index.vectors import VectorIndex
from retrievo.retrieve.exact import search_blocks
from retrievo.retrieve.first_stage import check_at_least
from retrievo.retrieve.maxsim import DEFAULT_K, LateInteraction
from retrievo.types import Queries, Rankings

DEFAULTS = {"k_sim": 1, "d_proj": 256, "reps": 10, "final_dim": 0, "seed": 42, "candidates": 1000}
_MEMORY: dict[tuple[str, str], VectorIndex] = {}
_LOCK = threading.Lock()


@njit(cache=True, nogil=True)
def _aggregate(proj, codes, offsets, n_buckets, mean, fill, out, col):
    """Per document (``offsets``), sum or average the projected tokens ``proj`` of each
    bucket ``codes`` into ``out[:, col + bucket * d_proj ...]``; fill empty buckets of
    documents from the Hamming-nearest token (first one on ties)."""
    d_proj = proj.shape[1]
    counts = np.zeros(n_buckets, dtype=np.int64)
    for d in range(offsets.shape[0] - 1):
        a = offsets[d]
        b = offsets[d + 1]
        counts[:] = 0
        for t in range(a, b):
            c = codes[t]
            counts[c] += 1
            base = col + c * d_proj
            for j in range(d_proj):
                out[d, base + j] += proj[t, j]
        for c in range(n_buckets):
            base = col + c * d_proj
            if counts[c] > 0:
                if mean and counts[c] > 1:
                    for j in range(d_proj):
                        out[d, base + j] /= counts[c]
            elif fill and b > a:
                best = a
                best_dist = 1 << 30
                for t in range(a, b):
                    x = codes[t] ^ c
                    dist = 0
                    while x:
                        dist += x & 1
                        x >>= 1
                    if dist < best_dist:
                        best_dist = dist
                        best = t
                for j in range(d_proj):
                    out[d, base + j] = proj[best, j]


class FDE:
    """The random draws of one parameter set, and the encodings they give."""

    def __init__(self, dim: int, k_sim: int = 4, d_proj: int = 16, reps: int = 20, final_dim: int = 0,
                 seed: int = 42):
        if not 0 <= k_sim <= 12:
            raise ConfigError(f"k_sim must be in [0, 12], got {k_sim}")
        if d_proj < 1 or reps < 1 or final_dim < 0:
            raise ConfigError("d_proj and reps must be >= 1, final_dim >= 0")
        self.dim, self.k_sim, self.d_proj, self.reps, self.final_dim, self.seed = dim, k_sim, d_proj, reps, \
            final_dim, seed
        rng = np.random.default_rng(seed)
        self.hyperplanes = rng.standard_normal((reps, dim, max(k_sim, 1))).astype(np.float32)
        self.projections = (rng.choice(np.array([-1.0, 1.0], np.float32), size=(reps, dim, d_proj))
                            / np.float32(np.sqrt(d_proj))).astype(np.float32)
        self.inner_dim = reps * (1 << k_sim) * d_proj
        self.final = None
        if final_dim:
            self.final = (rng.standard_normal((self.inner_dim, final_dim)) / np.sqrt(final_dim)).astype(np.float32)

    @property
    def out_dim(self) -> int:
        return self.final_dim or self.inner_dim

    def key(self) -> str:
        return f"fde-ksim{self.k_sim}-dproj{self.d_proj}-reps{self.reps}-final{self.final_dim}-seed{self.seed}"

    def encode(self, tokens: np.ndarray, lengths: np.ndarray, query: bool) -> np.ndarray:
        """FDEs ``[n, out_dim]`` of sets given as consecutive rows of ``tokens``."""
        tokens = np.asarray(tokens, dtype=np.float32)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        out = np.zeros((len(lengths), self.inner_dim), dtype=np.float32)
        n_buckets = 1 << self.k_sim
        weights = (1 << np.arange(max(self.k_sim, 1), dtype=np.int64))
        for r in range(self.reps):
            if self.k_sim:
                codes = ((tokens @ self.hyperplanes[r]) > 0).astype(np.int64) @ weights
            else:
                codes = np.zeros(len(tokens), dtype=np.int64)
            proj = np.ascontiguousarray(tokens @ self.projections[r])
            _aggregate(proj, codes, offsets, n_buckets, not query, not query, out, r * n_buckets * self.d_proj)
        return out @ self.final if self.final is not None else out

    def encode_queries(self, queries: np.ndarray) -> np.ndarray:
        """Queries ``[n, L, dim]``; zero rows (padding) are left out."""
        n, n_l, dim = queries.shape
        flat = queries.reshape(n * n_l, dim)
        keep = np.abs(flat).sum(axis=1) > 0
        lengths = keep.reshape(n, n_l).sum(axis=1)
        return self.encode(flat[keep], lengths, query=True)


def fdes_for(mindex: MultiVectorIndex, fde: FDE, chunk_docs: int = 1024) -> VectorIndex:
    """The FDE vector index of ``mindex``'s documents: cached beside an on-disk
    multi-vector index (``<folder>.muvera/<key>``), else in memory; rebuilt when the
    multi-vector index changed."""
    key = (mindex.identity, fde.key())
    with _LOCK:
        hit = _MEMORY.get(key)
    if hit is not None:
        return hit
    folder: Path | None = None
    if mindex.path is not None:
        folder = Path(f"{mindex.path}.muvera") / hashlib.sha256("|".join(key).encode()).hexdigest()[:16]
        from retrievo.index import lifecycle

        if lifecycle.is_index(folder):
            hit = VectorIndex.open(folder)
            with _LOCK:
                return _MEMORY.setdefault(key, hit)
    numbers = np.flatnonzero(mindex.live) if mindex.live is not None else np.arange(mindex.total_docs)
    parts = []
    for start in range(0, len(numbers), chunk_docs):
        tokens, lengths = mindex.token_matrices(numbers[start:start + chunk_docs])
        parts.append(fde.encode(tokens, lengths, query=False))
    vectors = np.concatenate(parts) if parts else np.empty((0, fde.out_dim), np.float32)
    ids = mindex.doc_ids[numbers].tolist()
    model = f"{mindex.model}|{fde.key()}"
    try:
        hit = VectorIndex.build(ids, vectors, folder, model=model, source=mindex.identity)
    except (OSError, PermissionError):
        hit = VectorIndex.build(ids, vectors, None, model=model, source=mindex.identity)
    with _LOCK:
        return _MEMORY.setdefault(key, hit)


@dataclass(eq=False)
class Muvera(LateInteraction):
    """MUVERA candidates (FDE inner product, exact or HNSW) re-scored by exact MaxSim.
    Takes queries (retrieval: the top ``candidates`` by FDE, re-scored, top ``k`` kept)
    or rankings (exact MaxSim of the given candidates)."""

    index: Any
    model: str | None = None
    dim: int | None = None
    query_length: int | None = None
    max_length: int | None = None
    batch_size: int | None = None
    k_sim: int = DEFAULTS["k_sim"]
    d_proj: int = DEFAULTS["d_proj"]
    reps: int = DEFAULTS["reps"]
    final_dim: int = DEFAULTS["final_dim"]
    seed: int = DEFAULTS["seed"]
    candidates: int = DEFAULTS["candidates"]
    search: str = "exact"
    ef: int = 64
    k: int = DEFAULT_K
    threads: int | None = None
    progress: bool = True
    _state: dict[str, Any] = field(default_factory=dict, repr=False)
    name = "muvera"
    takes = (Queries, Rankings)

    def __post_init__(self):
        self._setup_checks()
        check_at_least(1, candidates=self.candidates)
        if self.search not in ("exact", "hnsw"):
            raise ConfigError(f"search must be exact or hnsw, got {self.search!r}")
        FDE(1, self.k_sim, self.d_proj, 1, 0, self.seed)  # parameter checks before any encoding
        self._fdes()

    def fde(self) -> FDE:
        if "fde" not in self._state:
            self._state["fde"] = FDE(self.encoder().dim, self.k_sim, self.d_proj, self.reps, self.final_dim,
                                     self.seed)
        return self._state["fde"]

    def _fdes(self) -> VectorIndex:
        mindex = self.multivectors()
        if self._state.get("fkey") != mindex.identity:
            vindex = fdes_for(mindex, self.fde())
            graphs = None
            if self.search == "hnsw":
                from retrievo.index.derived import hnsw_kind
                from retrievo.retrieve.dense import Dense

                graphs = [u.value() for u in Dense._derived(vindex, hnsw_kind(16, 128))]
            self._state.update(fkey=mindex.identity, fdes=vindex, graphs=graphs)
        return self._state["fdes"]

    def candidate_numbers(self, qv: np.ndarray, threads: int) -> list[np.ndarray]:
        """Global numbers (in the multi-vector index) of each query's FDE candidates."""
        vindex = self._fdes()
        mindex = self.multivectors()
        qf = self.fde().encode_queries(qv)
        depth = min(self.candidates, len(vindex))
        if self.search == "hnsw":
            from retrievo.retrieve.hnsw import search_hnsw

            docs, _, counts = search_hnsw(self._state["graphs"], qf, vindex, depth, max(self.ef, depth), threads)
        else:
            docs, _, counts = search_blocks(qf, vindex.blocks(), vindex.total_docs, vindex.live, vindex.id_rank,
                                            vindex.by_rank, depth, threads)
        id_map = mindex.docstore.id_map()
        fde_ids = vindex.doc_ids
        return [np.fromiter((id_map[d] for d in fde_ids[docs[i, :counts[i]]]), dtype=np.int64, count=int(counts[i]))
                for i in range(len(qv))]

    def _search(self, queries: Queries, mindex: MultiVectorIndex, qv: np.ndarray, threads: int) -> Rankings:
        return self._rescored(queries, mindex, qv, self.candidate_numbers(qv, threads), threads)

    def spec(self, resources: bool = True) -> str:
        params = self._common_spec()
        for key, default in DEFAULTS.items():
            if getattr(self, key) != default:
                params[key] = getattr(self, key)
        if self.search != "exact":
            params["search"] = self.search
            if self.ef != 64:
                params["ef"] = self.ef
        return self._finish_spec(params, resources)


__all__ = ["DEFAULTS", "FDE", "Muvera", "fdes_for"]
