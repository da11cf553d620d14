"""BM25 impacts and block-max tables cached per generation and parameter set
(:mod:`retrievo.index.scorecache`): a reopen maps them and ranks exactly as a fresh
computation; a new generation or other parameters never read them; a write killed at
any step leaves no entry or a complete one; ``retrievo check`` reports a damaged one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import retrievo.retrieve.bm25 as bm25_module
from retrievo.index import InvertedIndex, lifecycle, scorecache
from retrievo.index.atomic import TMP_MARK
from retrievo.index.verify import verify_index
from retrievo.retrieve import BM25
from retrievo.types import Document, Queries

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def make_docs(n: int, prefix: str = "d", seed: int = 0) -> list[Document]:
    rng = np.random.default_rng(seed)
    return [Document(f"{prefix}{i}", " ".join(rng.choice(WORDS, size=int(rng.integers(2, 9)))))
            for i in range(n)]


QUERIES = Queries(["q1", "q2", "q3"], ["alpha beta", "gamma gamma zeta", "kappa mu iota theta"])


@pytest.fixture(autouse=True)
def persist_small(monkeypatch):
    monkeypatch.setattr(bm25_module, "PERSIST_MIN_POSTINGS", 0)
    monkeypatch.setattr(bm25_module, "_CACHE_WRITTEN", {})  # each test starts as a fresh process


def entries(path):
    folder = path / scorecache.CACHE_FOLDER
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def same(a, b):
    assert np.array_equal(a.offsets, b.offsets) and np.array_equal(a.doc_ids, b.doc_ids)
    assert np.array_equal(a.scores.view(np.uint32), b.scores.view(np.uint32))


@pytest.mark.parametrize("segments", [1, 3])
def test_reopen_maps_the_cached_arrays_and_ranks_the_same(tmp_path, segments):
    path = tmp_path / "idx"
    index = InvertedIndex.build(make_docs(300), path, segment_docs=100 if segments > 1 else 1000,
                                merge=segments == 1, workers=1)
    assert len(index.segments) == segments
    first = BM25(index, k=20)(QUERIES)
    assert len(entries(path)) == 1
    reopened = BM25(InvertedIndex.open(path), k=20)
    assert isinstance(reopened._arrays()["imps"], np.memmap)  # read from the cache, not recomputed
    same(reopened(QUERIES), first)
    with pytest.MonkeyPatch.context() as mp:  # the same search with nothing cached
        mp.setattr(bm25_module, "PERSIST_MIN_POSTINGS", 1 << 62)
        computed = BM25(InvertedIndex.open(path), k=20)
        assert not isinstance(computed._arrays()["imps"], np.memmap)
        same(computed(QUERIES), first)
    assert verify_index(path).ok


def test_other_parameters_and_generations_get_their_own_entries(tmp_path):
    path = tmp_path / "idx"
    index = InvertedIndex.build(make_docs(200), path, workers=1)
    BM25(index)(QUERIES)
    BM25(index, k1=1.2, b=0.75)(QUERIES)
    assert len(entries(path)) == 2
    index.add(make_docs(50, "n", seed=1))  # a new generation: new statistics, new impacts
    assert entries(path) == []  # the writer's garbage collection removed the stale entries
    after = BM25(index, k=30)(QUERIES)
    assert entries(path) == []  # a process that saw the index change under it writes no more
    bm25_module._CACHE_WRITTEN.clear()  # as a new process
    same(BM25(InvertedIndex.open(path), k=30)(QUERIES), after)
    assert len(entries(path)) == 1
    reread = BM25(InvertedIndex.open(path), k=30)
    assert isinstance(reread._arrays()["imps"], np.memmap)
    same(reread(QUERIES), after)


def test_a_write_killed_at_any_step_leaves_no_entry_or_a_complete_one(tmp_path):
    path = tmp_path / "idx"
    index = InvertedIndex.build(make_docs(200), path, workers=1)
    expected = BM25(index, k=15)(QUERIES)
    for entry in entries(path):  # start with nothing cached
        shutil.rmtree(path / scorecache.CACHE_FOLDER / entry)

    class Killed(BaseException):
        pass

    def kill(step):
        if step == "atomic_dir.before_rename":
            raise Killed(step)

    with lifecycle.fault_hook(kill), pytest.raises(Killed):
        BM25(InvertedIndex.open(path), k=15)
    assert entries(path) == []  # the temporary folder went with the failed write
    # a process killed outright leaves its temporary folder: never read, collected by writers
    stray = path / scorecache.CACHE_FOLDER / f"bm25-x{TMP_MARK}-dead"
    stray.mkdir()
    (stray / "imps.npy").write_bytes(b"partial")
    same(BM25(InvertedIndex.open(path), k=15)(QUERIES), expected)
    assert len(entries(path)) == 2
    index = InvertedIndex.open(path)
    index.delete(["d3"])  # a writer: its garbage collection takes the stray and the stale entry
    assert entries(path) == []


def test_damage_is_reported_by_check_and_never_read_when_sizes_differ(tmp_path):
    path = tmp_path / "idx"
    index = InvertedIndex.build(make_docs(200), path, workers=1)
    expected = BM25(index, k=15)(QUERIES)
    (entry,) = entries(path)
    imps = path / scorecache.CACHE_FOLDER / entry / "imps.npy"
    data = bytearray(imps.read_bytes())
    data[-1] ^= 0xFF  # same size, one impact changed
    imps.write_bytes(bytes(data))
    report = verify_index(path)
    assert not report.ok and any("imps.npy" in p for p in report.problems)
    imps.write_bytes(bytes(data[:-4]))  # a short file is not read: the impacts are computed again
    same(BM25(InvertedIndex.open(path), k=15)(QUERIES), expected)
    meta = json.loads((imps.parent / "meta.json").read_text())
    assert meta["identity"] == InvertedIndex.open(path).identity


@pytest.mark.parametrize("step", ["scorecache.after_array:1", "scorecache.after_array:3", "atomic_dir.before_rename"])
def test_sigkill_while_writing_leaves_no_entry_and_search_unchanged(tmp_path, step):
    path = tmp_path / "idx"
    index = InvertedIndex.build(make_docs(300), path, segment_docs=100, merge=False, workers=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bm25_module, "PERSIST_MIN_POSTINGS", 1 << 62)
        expected = BM25(index, k=25)(QUERIES)
    code = ("import retrievo.retrieve.bm25 as m; m.PERSIST_MIN_POSTINGS = 0\n"
            "from retrievo.index import InvertedIndex\nfrom retrievo.retrieve import BM25\n"
            f"BM25(InvertedIndex.open({str(path)!r}))\n")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "RETRIEVO_FAULT_AT": step}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr  # killed at that step
    assert all(TMP_MARK in e for e in entries(path)) and entries(path)  # only the dead writer's temporary folder
    assert verify_index(path).ok
    same(BM25(InvertedIndex.open(path), k=25)(QUERIES), expected)  # ignores it, writes a complete entry
    assert len([e for e in entries(path) if TMP_MARK not in e]) == 1
    same(BM25(InvertedIndex.open(path), k=25)(QUERIES), expected)  # and reads it back
