"""Upserts: after random upserts and deletes an index returns what a fresh build of the
same documents returns (BM25 rankings and scores, filters, stored documents; vector
indexes likewise), and a process killed with SIGKILL in the middle of an upsert — at
every write step, and at random instants — leaves either the old state or the new one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from retrievo.errors import DuplicateIdError
from retrievo.index.inverted import InvertedIndex
from retrievo.index.vectors import VectorIndex
from retrievo.index.verify import verify_index
from retrievo.retrieve.bm25 import BM25
from retrievo.retrieve.exact import search_blocks
from retrievo.types import Document, Queries

WORDS = "apple banana cherry date elder fig grape honey ice jam kiwi lemon mango nut olive pear".split()
QUERIES = Queries.of({"q1": "apple banana", "q2": "fig jam kiwi lemon", "q3": "olive pear", "q4": "nut cherry"})
FILTER = "year >= 2010 and tag in ('a', 'b')"


def _doc(rng: np.random.Generator, doc_id: str) -> Document:
    meta = {"year": int(rng.integers(2000, 2021)), "tag": str(rng.choice(["a", "b", "c"]))}
    return Document(doc_id, " ".join(rng.choice(WORDS, int(rng.integers(1, 12)))), str(rng.choice(WORDS)), meta)


def _same_results(a: InvertedIndex, b: InvertedIndex) -> None:
    assert len(a) == len(b)
    for flt in (None, FILTER):
        for pruning in ("on", "off"):
            ra = BM25(a, k=50, filter=flt, pruning=pruning)(QUERIES)
            rb = BM25(b, k=50, filter=flt, pruning=pruning)(QUERIES)
            for x, y in zip(ra, rb):
                assert list(x.doc_ids) == list(y.doc_ids)
                np.testing.assert_array_equal(x.scores, y.scores)
    assert sorted(a.iter_documents(), key=lambda d: d.doc_id) == sorted(b.iter_documents(), key=lambda d: d.doc_id)


@pytest.mark.parametrize("on_disk", [False, True])
def test_random_upserts_and_deletes_equal_a_fresh_build(tmp_path, on_disk):
    rng = np.random.default_rng(11 + on_disk)
    state = {f"d{i}": _doc(rng, f"d{i}") for i in range(150)}
    idx = InvertedIndex.build(list(state.values()), tmp_path / "u.idx" if on_disk else None, workers=1)
    next_id = 150
    for step in range(12):
        if rng.random() < 0.7:
            old = rng.choice(sorted(state), size=int(rng.integers(1, 20)), replace=False).tolist()
            new = [f"d{next_id + j}" for j in range(int(rng.integers(0, 10)))]
            next_id += len(new)
            batch = [_doc(rng, d) for d in old + new]
            replaced, added = idx.upsert(batch, segment_docs=int(rng.integers(3, 40)), workers=1)
            assert (replaced, added) == (len(old), len(new))
            state.update({d.doc_id: d for d in batch})
        else:
            gone = rng.choice(sorted(state), size=int(rng.integers(1, 10)), replace=False).tolist()
            assert idx.delete(gone) == len(gone)
            for d in gone:
                del state[d]
        if on_disk:
            idx = InvertedIndex.open(idx.path)
        if step % 4 == 3:
            _same_results(idx, InvertedIndex.build(list(state.values()), workers=1))
    fresh = InvertedIndex.build(list(state.values()), workers=1)
    _same_results(idx, fresh)
    idx.merge()
    _same_results(idx, fresh)
    if on_disk:
        assert verify_index(idx.path).ok


def test_upsert_refuses_an_id_twice_and_changes_nothing(tmp_path):
    idx = InvertedIndex.build([Document("a", "apple"), Document("b", "banana")], tmp_path / "x.idx", workers=1)
    generation = idx.generation
    with pytest.raises(DuplicateIdError):
        idx.upsert([Document("a", "apricot"), Document("a", "avocado")], workers=1)
    again = InvertedIndex.open(tmp_path / "x.idx")
    assert again.generation == generation and again.document("a").text == "apple" and len(again) == 2
    assert idx.upsert([], workers=1) == (0, 0)


def test_vector_upserts_equal_a_fresh_build(tmp_path):
    rng = np.random.default_rng(3)
    dim = 16
    state: dict[str, np.ndarray] = {f"v{i}": rng.standard_normal(dim).astype(np.float32) for i in range(200)}
    ids = sorted(state)
    vi = VectorIndex.build(ids, np.stack([state[i] for i in ids]), tmp_path / "v.idx", model="m")
    for step in range(6):
        old = rng.choice(sorted(state), size=15, replace=False).tolist()
        new = [f"n{step}-{j}" for j in range(5)]
        vecs = rng.standard_normal((20, dim)).astype(np.float32)
        assert vi.upsert(old + new, vecs) == (15, 5)
        state.update(zip(old + new, vecs))
        gone = rng.choice(sorted(state), size=4, replace=False).tolist()
        vi.delete(gone)
        for d in gone:
            del state[d]
        vi = VectorIndex.open(vi.path)
    ids = sorted(state)
    fresh = VectorIndex.build(ids, np.stack([state[i] for i in ids]), model="m")
    q = rng.standard_normal((5, dim)).astype(np.float32)
    a = search_blocks(q, vi.blocks(), vi.total_docs, vi.live, vi.id_rank, vi.by_rank, 30)
    b = search_blocks(q, fresh.blocks(), fresh.total_docs, fresh.live, fresh.id_rank, fresh.by_rank, 30)
    np.testing.assert_array_equal(vi.doc_ids[a[0]], fresh.doc_ids[b[0]])
    np.testing.assert_allclose(a[1], b[1], atol=1e-6)
    np.testing.assert_array_equal(vi.vectors(ids), np.stack([state[i] for i in ids]))
    assert verify_index(vi.path).ok


# ------------------------------------------------------------------ kill -9 mid-upsert
WORKER = """
import json, sys, time
from retrievo.index.inverted import InvertedIndex
from retrievo.types import Document
docs = [Document(**d) for d in json.load(open(sys.argv[2]))]
index = InvertedIndex.open(sys.argv[1])
print("start", flush=True)
start = time.perf_counter()
index.upsert(docs, segment_docs=int(sys.argv[3]), workers=1)
print("done", time.perf_counter() - start, flush=True)
"""


def _state(path: Path) -> dict[str, tuple[str, str, str]]:
    idx = InvertedIndex.open(path)
    assert verify_index(path).ok
    return {d.doc_id: (d.title, d.text, json.dumps(dict(d.meta), sort_keys=True)) for d in idx.iter_documents()}


def _kill_setup(tmp_path: Path, n_update: int):
    rng = np.random.default_rng(9)
    base = [_doc(rng, f"d{i}") for i in range(300)]
    path = tmp_path / "k.idx"
    InvertedIndex.build(base, path, workers=1)
    update = [_doc(rng, f"d{i}") for i in range(0, 600, 2)][:n_update]  # half replace, half new
    payload = tmp_path / "update.json"
    payload.write_text(json.dumps([{"doc_id": d.doc_id, "text": d.text, "title": d.title, "meta": dict(d.meta)}
                                   for d in update]))
    old = _state(path)
    new = dict(old)
    new.update({d.doc_id: (d.title, d.text, json.dumps(dict(d.meta), sort_keys=True)) for d in update})
    return path, payload, old, new


def _env(**extra: str) -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra}


STEPS = ["ingest.after_segment:1", "ingest.after_part:2", "upsert.before_publish", "publish.after_vocab",
         "publish.after_deletes", "publish.before_manifest", "publish.before_current", "publish.after_current",
         "gc.before", "gc.remove"]


@pytest.mark.parametrize("step", STEPS)
def test_kill_at_each_upsert_step_leaves_old_or_new(tmp_path, step):
    path, payload, old, new = _kill_setup(tmp_path, 200)
    proc = subprocess.run([sys.executable, "-c", WORKER, str(path), str(payload), "64"],
                          env=_env(RETRIEVO_FAULT_AT=step), capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])
    after = _state(path)
    expected = new if step in ("publish.after_current", "gc.before", "gc.remove") else old
    assert after == expected
    # the next writer collects what the dead one left and the upsert goes through
    InvertedIndex.open(path).upsert([Document("d0", "again")], workers=1)
    assert InvertedIndex.open(path).document("d0").text == "again"


def test_kill_at_random_instants_leaves_old_or_new(tmp_path):
    """SIGKILL at a random instant of the upsert itself (the worker says when it starts;
    the delay is drawn over the measured length of a whole upsert)."""
    import shutil

    path, payload, old, new = _kill_setup(tmp_path, 300)
    pristine = tmp_path / "pristine.idx"
    shutil.copytree(path, pristine)
    full = subprocess.run([sys.executable, "-c", WORKER, str(path), str(payload), "20"], env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert full.returncode == 0, full.stderr[-2000:]
    assert _state(path) == new
    duration = float(full.stdout.split()[-1])
    rng = np.random.default_rng(2)
    interrupted = 0
    for _ in range(8):
        shutil.rmtree(path)
        shutil.copytree(pristine, path)
        proc = subprocess.Popen([sys.executable, "-c", WORKER, str(path), str(payload), "20"], env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().startswith("start")
        time.sleep(float(rng.uniform(0, duration)))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
        interrupted += "done" not in out
        assert _state(path) in (old, new)
    assert interrupted >= 1  # most kills land inside the upsert; at least one must


def test_a_failed_vector_upsert_publishes_nothing(tmp_path):
    from retrievo.index import lifecycle

    rng = np.random.default_rng(4)
    vi = VectorIndex.build(["a", "b", "c"], rng.standard_normal((3, 4)).astype(np.float32), tmp_path / "v.idx",
                           model="m")
    before = vi.vectors(["a", "b", "c"]).copy()

    def fail(step):
        if step == "upsert.before_publish":
            raise OSError("disk gone")

    with lifecycle.fault_hook(fail), pytest.raises(OSError):
        vi.upsert(["a", "d"], rng.standard_normal((2, 4)).astype(np.float32))
    for current in (vi, VectorIndex.open(tmp_path / "v.idx")):  # in memory and on disk: the old state
        assert len(current) == 3 and "d" not in current
        np.testing.assert_array_equal(current.vectors(["a", "b", "c"]), before)
    assert verify_index(tmp_path / "v.idx").ok


def test_dense_cache_reencodes_documents_replaced_by_an_upsert(tmp_path):
    """The dense stage's cached vectors follow an upsert: a document replaced under the
    same id is encoded again (found by the text hash recorded with each vector), so the
    results equal those over a fresh build."""
    pytest.importorskip("torch")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from retrievo.retrieve.dense import Dense

    rng = np.random.default_rng(8)
    docs = [_doc(rng, f"d{i}") for i in range(30)]
    lex = InvertedIndex.build(docs, tmp_path / "l.idx", workers=1)
    queries = Queries.of({"q": "a recipe for chocolate cake with butter and sugar"})
    Dense(lex, k=5, progress=False)(queries)  # encodes and caches the 30 documents
    replacement = Document("d7", "Bake a chocolate cake: butter, sugar, eggs and cocoa.", "Chocolate cake recipe")
    lex.upsert([replacement], workers=1)
    got = Dense(InvertedIndex.open(lex.path), k=5, progress=False)(queries)
    fresh_docs = [replacement if d.doc_id == "d7" else d for d in docs]
    fresh = InvertedIndex.build(fresh_docs, tmp_path / "f.idx", workers=1)
    want = Dense(fresh, k=5, progress=False)(queries)
    assert got[0].doc_ids[0] == "d7"
    np.testing.assert_array_equal(got.doc_ids, want.doc_ids)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)


@pytest.mark.parametrize("method", ["splade", "maxsim", "muvera"])
def test_splade_and_token_caches_reencode_documents_replaced_by_an_upsert(tmp_path, method):
    """Like the dense cache, the SPLADE impacts and the token-vector store (which MaxSim and
    MUVERA read) follow an upsert: the replaced document is encoded again, in one upsert of
    the cache, so results equal those over a fresh build."""
    pytest.importorskip("torch")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from retrievo.pipeline import parse

    spec = {"splade": "splade(max_length=32) % 5",
            "maxsim": "maxsim(max_length=32) % 5",
            "muvera": "muvera(max_length=32, candidates=20) % 5"}[method]
    rng = np.random.default_rng(9)
    docs = [_doc(rng, f"d{i}") for i in range(20)]
    lex = InvertedIndex.build(docs, tmp_path / "l.idx", workers=1)
    queries = Queries.of({"q": "a recipe for chocolate cake with butter and sugar"})
    parse(spec, {"index": lex})(queries)  # encodes and caches the 20 documents beside the index
    replacement = Document("d7", "Bake a chocolate cake: butter, sugar, eggs and cocoa.", "Chocolate cake recipe")
    lex.upsert([replacement], workers=1)
    got = parse(spec, {"index": InvertedIndex.open(lex.path)})(queries)
    fresh = InvertedIndex.build([replacement if d.doc_id == "d7" else d for d in docs], tmp_path / "f.idx",
                                workers=1)
    want = parse(spec, {"index": fresh})(queries)
    assert got[0].doc_ids[0] == "d7"
    np.testing.assert_array_equal(got.doc_ids, want.doc_ids)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-3)
