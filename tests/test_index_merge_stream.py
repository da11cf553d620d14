"""The on-disk merge streams term ranges from the memory-mapped segments: it must write
exactly the segment the in-memory merge builds (same bytes, same hashes), whatever the
chunk size, with deletions, and with segments whose vocabularies grew between them."""

from __future__ import annotations

import numpy as np
import pytest

from retrievo.index import InvertedIndex
from retrievo.index.segment import merge_segments, write_merged_segment
from retrievo.retrieve import BM25
from retrievo.types import Document, Queries


def _docs(n: int, seed: int = 0) -> list[Document]:
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(60)]
    return [Document(f"d{i:04d}", " ".join(rng.choice(words, size=int(rng.integers(0, 15)),
                                                      p=np.arange(60, 0, -1) / 1830)))
            for i in range(n)]


@pytest.mark.parametrize("chunk", [1, 7, 1000, 1 << 22])
def test_streamed_merge_equals_the_in_memory_merge(tmp_path, chunk):
    index = InvertedIndex.build(_docs(300), tmp_path / "idx", segment_docs=40, merge=False, workers=1)
    index.delete([f"d{i:04d}" for i in range(0, 300, 9)])
    memory = merge_segments(index.segments, index.lives, "seg-x", index.vocab_size)
    out = tmp_path / f"out-{chunk}"
    out.mkdir()
    disk = write_merged_segment(index.segments, index.lives, "seg-x", index.vocab_size, out, chunk_postings=chunk)
    for name in ("indptr", "docs", "tfs", "doclen"):
        np.testing.assert_array_equal(np.asarray(getattr(disk, name)), getattr(memory, name))
        assert np.asarray(getattr(disk, name)).dtype == getattr(memory, name).dtype
    assert disk.file_hashes() == memory.file_hashes()  # byte for byte what Segment.write writes
    assert disk.content_hash() == memory.content_hash()


def test_merged_index_searches_and_opens_like_a_fresh_build(tmp_path):
    docs = _docs(500, seed=1)
    index = InvertedIndex.build(docs, tmp_path / "idx", segment_docs=60, merge=False, workers=1)
    assert len(index.segments) == 9
    queries = Queries(["a", "b", "c"], ["w1 w7 w30", "w59 w2", "w11 w11 w40 w3"])
    before = BM25(index, k=20)(queries)
    index.merge()
    assert len(index.segments) == 1
    reopened = InvertedIndex.open(tmp_path / "idx")
    fresh = InvertedIndex.build(docs, workers=1)
    assert reopened.identity == index.identity == fresh.identity
    after = BM25(reopened, k=20)(queries)
    assert np.array_equal(before.doc_ids, after.doc_ids) and np.array_equal(before.scores, after.scores)
