"""BM25 against its references: real Lucene (the oracle for Pyserini's numbers), Lucene's
norm encoding, bm25s for the other variants, and the published BEIR scores."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import lucene_bm25
from retrievo.data import BeirDataset
from retrievo.evaluate import evaluate
from retrievo.index import InvertedIndex
from retrievo.retrieve import BM25
from retrievo.retrieve.bm25 import (_NUM_FREE_VALUES, _long_to_int4, lucene_encode_lengths,
                                    lucene_length_table)
from retrievo.types import Document, Queries


def _scalar_int_to_byte4(i: int) -> int:
    return i if i < _NUM_FREE_VALUES else _NUM_FREE_VALUES + _long_to_int4(i - _NUM_FREE_VALUES)


def test_lucene_norm_encoding():
    lengths = np.concatenate([np.arange(0, 70_000), [2**20, 2**24 - 1, 2**31 - 1]])
    expected = np.array([_scalar_int_to_byte4(int(i)) for i in lengths])
    np.testing.assert_array_equal(lucene_encode_lengths(lengths), expected)
    table = lucene_length_table()
    # decoding is monotonic, exact below 40 and at most 1/8 too small above (4 significant bits)
    assert (np.diff(table) > 0).all()
    assert table[0] == 0 and table[39] == 39 and table[255] == 2013265944
    decoded = table[lucene_encode_lengths(lengths[1:70_000])]
    assert ((lengths[1:70_000] - decoded) / lengths[1:70_000] <= 1 / 8).all()


@pytest.fixture(scope="module")
def scifact(shared_data):
    return BeirDataset(shared_data / "scifact")


@pytest.fixture(scope="module")
def scifact_index(scifact):
    return InvertedIndex.build(scifact.iter_documents())


def _compare_with_lucene(index: InvertedIndex, docs: list[Document], queries: Queries, k: int = 1000) -> None:
    lucene_bm25.require()
    reference = lucene_bm25.lucene_run(((d.doc_id, d.contents) for d in docs), zip(queries.ids, queries.texts), k=k)
    ours = BM25(index, k=k)(queries)
    identical_lists, max_rel = 0, 0.0
    for ranked in ours:
        ref = reference.get(ranked.qid, [])
        ref_ids = [d for d, _ in ref]
        ref_scores = np.array([s for _, s in ref], dtype=np.float32)
        assert len(ranked) == len(ref), ranked.qid
        if len(ref):
            max_rel = max(max_rel, float(np.max(np.abs(ranked.scores - ref_scores) / ref_scores)))
        # the top 10 must be the same documents in the same order
        assert ranked.doc_ids[:10].tolist() == ref_ids[:10], ranked.qid
        identical_lists += ranked.doc_ids.tolist() == ref_ids
    assert max_rel < 2e-6, f"scores differ from Lucene by up to {max_rel:.2e} (relative)"
    # float rounding may swap documents whose scores tie to the last bit, nothing more
    assert identical_lists >= 0.98 * len(queries), f"{identical_lists}/{len(queries)} top-{k} lists identical"


@pytest.mark.slow
def test_scifact_matches_lucene(scifact, scifact_index):
    docs = list(scifact.iter_documents())
    _compare_with_lucene(scifact_index, docs, scifact.queries("test"))


@pytest.mark.slow
def test_cranfield_matches_lucene(shared_data):
    ds = BeirDataset(shared_data / "cranfield")
    docs = list(ds.iter_documents())
    _compare_with_lucene(InvertedIndex.build(docs), docs, ds.queries("test"))


def test_scifact_reproduces_pyserini(scifact, scifact_index):
    qrels = scifact.qrels("test")
    run = BM25(scifact_index)(scifact.queries("test")).drop_self_hits()
    scores = evaluate(run, qrels, ["nDCG@10", "R@100", "AP"])
    assert scores["nDCG@10"] == pytest.approx(0.6789, abs=0.002)
    assert scores["R@100"] == pytest.approx(0.9253, abs=0.005)
    assert scores["AP"] == pytest.approx(0.6401, abs=0.003)


def test_cli_eval_contract(shared_data):
    """`retrievo eval DATA_DIR --pipeline bm25 --split test --json`: one JSON object."""
    for name, expected in (("scifact", 0.6789), ("cranfield", 0.3506)):
        out = subprocess.run([sys.executable, "-m", "retrievo", "eval", str(shared_data / name), "--pipeline", "bm25",
                              "--split", "test", "--json"], capture_output=True, text=True, check=True)
        scores = json.loads(out.stdout)
        assert set(scores) >= {"nDCG@10", "R@100"}
        assert scores["nDCG@10"] == pytest.approx(expected, abs=0.002)
        if name == "scifact":
            assert scores["R@100"] == pytest.approx(0.9253, abs=0.005)
        else:
            assert scores["R@100"] == pytest.approx(0.7222, abs=0.005)


@pytest.mark.parametrize("method", ["robertson", "atire"])
def test_variants_match_bm25s(scifact, scifact_index, method):
    """Robertson and ATIRE use exact lengths; bm25s implements the same formulas
    (Kamphuis et al. 2020). Both index the same analysed tokens here."""
    bm25s = pytest.importorskip("bm25s")
    analyzer = scifact_index.analyzer
    docs = list(scifact.iter_documents())
    ref = bm25s.BM25(method=method, k1=0.9, b=0.4, idf_method=method)
    ref.index([analyzer(d.contents) for d in docs], show_progress=False)
    ids = np.array([d.doc_id for d in docs], dtype=object)
    queries = scifact.queries("test")[:60]
    ours = BM25(scifact_index, method=method, k=10)(queries)
    for ranked, text in zip(ours, queries.texts):
        scores = ref.get_scores(analyzer(text))
        top = np.argsort(-scores, kind="stable")[:10]
        np.testing.assert_allclose(ranked.scores, scores[top], rtol=1e-4)
        # the same documents, except where the 10th score ties with the 11th
        assert set(ranked.doc_ids[ranked.scores > ranked.scores[-1] + 1e-4]) <= set(ids[top])


def _paper_bm25(docs_tokens, query_tokens, method, k1=0.9, b=0.4, delta=None):
    """Lv & Zhai (2011) BM25L / BM25+ written directly from the formulas, one document at
    a time (a slow, independent oracle): only query terms the document contains count."""
    from collections import Counter

    n = len(docs_tokens)
    avgdl = sum(map(len, docs_tokens)) / n
    df = Counter(t for toks in docs_tokens for t in set(toks))
    out = np.zeros(n)
    for i, toks in enumerate(docs_tokens):
        tf = Counter(toks)
        norm = 1 - b + b * len(toks) / avgdl
        for t, qtf in Counter(query_tokens).items():
            if tf[t] == 0:
                continue
            if method == "bm25l":
                c = tf[t] / norm
                d = 0.5 if delta is None else delta
                out[i] += qtf * np.log((n + 1) / (df[t] + 0.5)) * (k1 + 1) * (c + d) / (k1 + c + d)
            else:
                d = 1.0 if delta is None else delta
                out[i] += qtf * np.log((n + 1) / df[t]) * ((k1 + 1) * tf[t] / (k1 * norm + tf[t]) + d)
    return out


@pytest.mark.parametrize("method", ["bm25l", "bm25+"])
def test_lower_bounded_variants_match_the_papers(pydoc_index, method):
    docs = list(pydoc_index.iter_documents())
    tokens = [pydoc_index.analyzer(d.contents) for d in docs]
    ids = np.array([d.doc_id for d in docs], dtype=object)
    for text in ["how do I catch an exception", "list comprehension syntax", "yield generator expression"]:
        expected = _paper_bm25(tokens, pydoc_index.analyzer(text), method)
        ranked = BM25(pydoc_index, method=method, k=20).search(text)
        top = np.argsort(-expected, kind="stable")[:20]
        np.testing.assert_allclose(ranked.scores, expected[top], rtol=1e-5)
        assert set(ranked.doc_ids[ranked.scores > ranked.scores[-1] + 1e-4]) <= set(ids[top])


@pytest.fixture(scope="module")
def pydoc_index():
    from retrievo.data import PydocCorpus

    return InvertedIndex.build(PydocCorpus().iter_documents())


def test_parameters_change_scores(scifact_index, scifact):
    queries = scifact.queries("test")[:20]
    base = BM25(scifact_index)(queries)
    other = BM25(scifact_index, k1=1.2, b=0.75)(queries)
    assert not np.array_equal(base.scores, other.scores)
    stage = BM25(scifact_index, k1=1.2, b=0.75, k=100)
    assert stage.spec(resources=False) == "bm25(k1=1.2, b=0.75) % 100"
    assert str(stage).startswith("bm25(k1=1.2, b=0.75, index='memory:index-") and str(stage).endswith(") % 100")


def test_top_k_selection_equals_a_full_sort():
    from retrievo.retrieve.topk import _top_k_sorted

    rng = np.random.default_rng(7)
    hist = np.zeros(2048, dtype=np.int64)
    for trial in range(300):
        c = int(rng.integers(1, 5000))
        k = int(rng.integers(1, 1500))
        if trial % 3 == 0:  # many equal scores, ties told apart by the low (id rank) bits
            keys = (rng.integers(0, 40, c).astype(np.uint64) << np.uint64(32)) | rng.permutation(c).astype(np.uint64)
        elif trial % 3 == 1:
            keys = rng.integers(0, 2**63, c, dtype=np.int64).astype(np.uint64)
        else:  # all keys within a narrow band
            keys = np.uint64(2**62) + rng.permutation(c).astype(np.uint64)
        work, tmp = keys.copy(), np.empty(c, dtype=np.uint64)
        n = _top_k_sorted(work, c, k, tmp, hist)
        assert n == min(k, c)
        np.testing.assert_array_equal(work[:n], np.sort(keys)[:n])
