"""The parallel search kernels leave torch's CPU thread count as it was.

numba's OpenMP layer sets the OpenMP thread count that torch reads whenever a
``parallel=True`` kernel launches; :mod:`retrievo.retrieve.openmp` puts it back. Each test
sets torch to one thread, runs one kernel on two, and checks torch still has one.
"""

from __future__ import annotations

import numpy as np
import pytest

from retrievo.index import InvertedIndex
from retrievo.retrieve import BM25
from retrievo.retrieve.exact import search_blocks
from retrievo.retrieve.quantized import Codes
from retrievo.types import Document, Queries

torch = pytest.importorskip("torch")


@pytest.fixture
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def corpus(n: int = 400) -> list[Document]:
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(60)]
    return [Document(f"d{i}", " ".join(rng.choice(words, size=12))) for i in range(n)]


@pytest.mark.parametrize("pruning", ["off", "on"])
def test_bm25_parallel_search_keeps_torch_threads(one_torch_thread, pruning):
    index = InvertedIndex.build(corpus(), workers=1)
    queries = Queries([f"q{i}" for i in range(16)], [f"w{i} w{i + 1} w{i + 7}" for i in range(16)])
    rankings = BM25(index, k=10, threads=2, pruning=pruning)(queries)
    assert len(rankings) == 16
    assert torch.get_num_threads() == 1


def test_exact_and_binary_kernels_keep_torch_threads(one_torch_thread):
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((300, 16)).astype(np.float32)
    queries = rng.standard_normal((8, 16)).astype(np.float32)
    order = np.arange(300)
    docs, _, counts = search_blocks(queries, [(0, vectors)], 300, None, order, order, k=5, threads=2)
    assert counts.tolist() == [5] * 8
    assert torch.get_num_threads() == 1
    codes = Codes.build("binary", [(0, vectors)], 16)
    scores = codes.score(codes.prepare(queries), codes.data)
    assert scores.shape == (8, 300)
    assert torch.get_num_threads() == 1
