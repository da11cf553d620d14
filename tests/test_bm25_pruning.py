"""Exact dynamic pruning (:mod:`retrievo.retrieve.prune`): the pruned top-k must be the
exhaustive top-k — same ids, same float32 scores, same tie-breaks — on the real corpora,
on a synthetic one, on segmented indexes with deletions, and on random small corpora.

Both paths run the range kernel, so each is also checked against the plain dense
kernel of :mod:`retrievo.retrieve.topk` (an independent implementation), and ranges are
made small (:data:`~retrievo.retrieve.prune.RANGE_DOCS`) so that these small corpora
span many ranges and pruning really skips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrievo.data import BeirDataset
from retrievo.errors import ConfigError
from retrievo.index import InvertedIndex
from retrievo.pipeline import parse
from retrievo.retrieve import BM25
import retrievo.retrieve.prune as prune_module
from retrievo.retrieve.prune import range_table
from retrievo.retrieve.topk import search_postings
from retrievo.types import Document, Queries, Rankings


def assert_same(a, b, label=""):
    assert np.array_equal(a.offsets, b.offsets), label
    assert np.array_equal(a.doc_ids, b.doc_ids), label
    assert np.array_equal(a.scores.view(np.uint32), b.scores.view(np.uint32)), label  # bit for bit


def dense_reference(bm, queries) -> Rankings:
    """The top-k of the plain dense kernel (topk.search_postings) over the same impacts."""
    st = bm._arrays()
    q_ptr, q_terms, q_weights = bm._query_terms(queries, st["vocab"])
    k = min(bm.k, st["n_docs"])
    docs, scores, counts = search_postings(q_ptr, q_terms, q_weights, st["indptr"], st["docs"], st["imps"],
                                           st["live"], st["id_rank"], st["by_rank"], k, bm._workspace(1), 1)
    return Rankings.from_lists(queries, [(st["ids"][docs[q, :counts[q]]], scores[q, :counts[q]])
                                         for q in range(len(queries))])


@pytest.fixture(autouse=True)
def small_ranges(monkeypatch):
    monkeypatch.setattr(prune_module, "RANGE_DOCS", 64)  # many ranges even on small corpora


def check(index, queries, ks=(1, 10, 100, 1000), **options):
    for k in ks:
        off = BM25(index, k=k, pruning="off", **options)
        exhaustive = off(queries)
        pruned = BM25(index, k=k, pruning="on", **options)(queries)
        assert_same(pruned, exhaustive, f"k={k} {options}")
        assert_same(exhaustive, dense_reference(off, queries), f"dense k={k} {options}")


@pytest.fixture(scope="module")
def scifact(shared_data):
    return BeirDataset(shared_data / "scifact")


@pytest.fixture(scope="module")
def scifact_index(scifact):
    return InvertedIndex.build(scifact.iter_documents(), workers=1)


def test_scifact_pruned_equals_exhaustive(scifact, scifact_index):
    check(scifact_index, scifact.queries("test"))


def test_scifact_pruned_equals_exhaustive_for_other_variants_and_threads(scifact, scifact_index):
    queries = scifact.queries("test")[:100]
    for method in ("robertson", "bm25+"):
        check(scifact_index, queries, ks=(10,), method=method)
    check(scifact_index, queries, ks=(10,), threads=2)


def test_cranfield_pruned_equals_exhaustive(shared_data):
    ds = BeirDataset(shared_data / "cranfield")
    check(InvertedIndex.build(ds.iter_documents(), workers=1), ds.queries("test"))


def test_segmented_index_with_deletions(scifact, tmp_path):
    docs = list(scifact.iter_documents())[:2500]
    index = InvertedIndex.build(docs, tmp_path / "idx", segment_docs=400, merge=False, workers=1)
    assert len(index.segments) == 7
    index.delete([d.doc_id for d in docs[::7]])
    check(index, scifact.queries("test")[:150], ks=(1, 10, 50))


def test_synthetic_corpus(scifact):
    """Words drawn independently from SciFact's word distribution (bench/bm25_scale.py's
    corpus, small): the case where pruning can skip least."""
    words, counts = np.unique(" ".join(d.text for d in list(scifact.iter_documents())[:1500]).split(),
                              return_counts=True)
    rng = np.random.default_rng(3)
    lengths = np.clip(rng.lognormal(np.log(50), 0.45, 8000).round().astype(int), 4, 300)
    picks = rng.choice(len(words), size=int(lengths.sum()), p=counts / counts.sum())
    ends = np.cumsum(lengths)
    docs = [Document(f"s{i}", " ".join(words[picks[e - n:e]])) for i, (n, e) in enumerate(zip(lengths, ends))]
    check(InvertedIndex.build(docs, workers=1), scifact.queries("test")[:150], ks=(1, 10, 100))


def test_weighted_queries_and_negative_weights(scifact, scifact_index):
    queries = scifact.queries("test")[:40]
    weighted = Queries(queries.ids, queries.texts,
                       terms=[{t: 1.0 + (i % 3) * 0.25 for i, t in enumerate(scifact_index.analyzer(text))}
                              for text in queries.texts])
    check(scifact_index, weighted, ks=(10,))
    negative = Queries(queries.ids, queries.texts,
                       terms=[{t: (-0.5 if i == 0 else 1.0) for i, t in enumerate(scifact_index.analyzer(text))}
                              for text in queries.texts])
    check(scifact_index, negative, ks=(10,))  # falls back to the exhaustive kernel, same answer


def test_automatic_choice(scifact, scifact_index):
    queries = scifact.queries("test")
    auto = BM25(scifact_index, k=10)
    assert auto.uses_pruning() and auto.uses_pruning(1000) and not auto.uses_pruning(0)
    assert BM25(scifact_index, k=10, pruning="on").uses_pruning()
    assert not BM25(scifact_index, k=10, pruning="off").uses_pruning()
    st = auto._arrays()
    q_ptr, _, q_weights = auto._query_terms(queries, st["vocab"])
    assert auto._pruned_queries(q_ptr, q_weights, 10, st).all()
    negative = q_weights.copy()
    negative[q_ptr[3]] = -1.0  # query 3 gets a negative weight: never pruned
    assert auto._pruned_queries(q_ptr, negative, 10, st).tolist() == [i != 3 for i in range(len(queries))]
    assert_same(auto(queries), BM25(scifact_index, k=10, pruning="off")(queries))


def test_pruning_option_in_specs(scifact_index):
    stage = parse("bm25(pruning=on) % 10", {"index": scifact_index})
    assert stage.pruning == "on"
    assert "pruning='on'" in stage.spec(resources=False) or "pruning=on" in stage.spec(resources=False)
    assert "pruning" not in BM25(scifact_index).spec(resources=False)
    with pytest.raises(ConfigError):
        BM25(scifact_index, pruning="sometimes")


def test_range_table():
    """Runs per (segment, term) and document range: where each starts, its largest impact."""
    indptr = np.array([[0, 3, 3, 9], [9, 10, 12, 12]], dtype=np.int64)  # 2 segments: docs 0-9, 10-14
    docs = np.array([1, 5, 9, 0, 2, 3, 4, 7, 8, 10, 11, 14], dtype=np.int32)
    imps = np.arange(1, 13, dtype=np.float32)
    table = range_table(indptr, docs, imps, np.array([0, 10, 15]), range_docs=4)
    assert table.range_lo.tolist() == [0, 4, 8, 10, 14, 15]  # ranges stop at the segment boundary
    assert table.ent_ptr.tolist() == [[0, 3, 3, 6], [6, 7, 9, 9]]
    assert table.ent_range.tolist() == [0, 1, 2, 0, 1, 2, 3, 3, 4]
    assert table.ent_start.tolist() == [0, 1, 2, 3, 6, 8, 9, 10, 11]
    assert table.ent_max.tolist() == [1, 2, 3, 6, 8, 9, 10, 11, 12]


# ---------------------------------------------------------------------------- property test
WORDS = [f"w{i}" for i in range(14)]
word = st.integers(0, 40).map(lambda i: WORDS[min(i // 3, len(WORDS) - 1)])  # skewed: low ids common
corpus = st.lists(st.lists(word, min_size=0, max_size=12), min_size=1, max_size=50)
query = st.lists(word, min_size=1, max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=corpus, queries=st.lists(query, min_size=1, max_size=6), k=st.integers(1, 25),
       segment_docs=st.integers(1, 30), delete_every=st.integers(0, 5),
       method=st.sampled_from(["lucene", "robertson", "bm25+"]), weighted=st.booleans(),
       range_docs=st.integers(1, 9))
def test_property_pruned_equals_exhaustive(texts, queries, k, segment_docs, delete_every, method, weighted,
                                           range_docs):
    prune_module.RANGE_DOCS = range_docs  # restored by the autouse fixture's monkeypatch
    docs = [Document(f"d{i:03d}", " ".join(t)) for i, t in enumerate(texts)]
    index = InvertedIndex.build(docs, segment_docs=segment_docs, merge=False, workers=1)
    if delete_every:
        index.delete([d.doc_id for d in docs[::delete_every]][: max(0, len(docs) - 1)])
    qs = Queries([f"q{i}" for i in range(len(queries))], [" ".join(q) for q in queries],
                 terms=[{w: float(1 + (j % 2)) for j, w in enumerate(q)} for q in queries] if weighted else None)
    check(index, qs, ks=(k,), method=method)


def test_every_document_touched_by_every_term():
    """The touched list fills up (every document matches every term): the branch-free
    append writes one slot past the last document, which the workspace must hold."""
    docs = [Document(f"d{i}", "alpha beta " + "gamma " * (i % 4)) for i in range(40)]
    index = InvertedIndex.build(docs, workers=1)
    queries = Queries(["q1", "q2"], ["alpha beta", "beta alpha gamma"])
    for k in (1, 5, 40):
        check(index, queries, ks=(k,))
        assert len(BM25(index, k=k, pruning="off")(queries)[0]) == k
    # weights so small that every weight * impact underflows to 0 in float32: a sum that
    # stays 0 must not make a document new at each of its postings (it would come back twice)
    tiny = Queries(["q1"], ["alpha beta"], terms=[{"alpha": 1.4e-45, "beta": 1.4e-45}])
    check(index, tiny, ks=(40,))
    ranked = BM25(index, k=40, pruning="off")(tiny)[0]
    assert len(set(ranked.doc_ids.tolist())) == 40 and not ranked.scores.any()


def _oracle_bench():
    """bench/bm25_pruning_oracle.py as a module."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "bm25_pruning_oracle.py"
    spec = importlib.util.spec_from_file_location("bm25_pruning_oracle", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pruning_oracle_bench_runs(shared_data, scifact_index, tmp_path, capsys):
    """bench/bm25_pruning_oracle.py (the ceilings quoted in BENCHMARKS.md) on SciFact's index
    with 15 of the benchmark's queries: every fraction of postings lies in (0, 1]."""
    import json

    scifact_index.save(tmp_path / "sf.idx")
    oracle = _oracle_bench()
    oracle.main(["--index", str(tmp_path / "sf.idx"), "--data", str(shared_data), "--step", "60", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["queries"] == 15 and out["docs"] == 5183
    assert set(out["methods"]) == {"global", "block 32", "block 128", "block 32 +maxima", "block 128 +maxima"}
    for m in out["methods"].values():
        assert 0 < m["median"] <= 1 and 0 < m["weighted"] <= 1


def test_pruning_oracle_bench_refuses_bad_options(capsys):
    oracle = _oracle_bench()
    for bad in (["--block-docs", "0"], ["--block-docs", "32,x"], ["--step", "0"], ["--k", "0"]):
        with pytest.raises(SystemExit) as err:
            oracle.main(bad)
        assert err.value.code == 2 and "error:" in capsys.readouterr().err, bad
