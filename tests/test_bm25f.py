"""BM25F and per-field BM25 against a direct implementation of their formulas on a small
corpus; with one field both equal ``bm25``; stored and derived field postings agree;
field postings survive deletes, merges and reopening; spec options."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from retrievo.errors import ConfigError, PipelineSpecError
from retrievo.index.inverted import InvertedIndex
from retrievo.retrieve.bm25 import BM25, lucene_encode_lengths, lucene_length_table
from retrievo.retrieve.bm25f import BM25F
from retrievo.text import get_analyzer
from retrievo.types import Document, Queries

WORDS = "retrieval ranking query document index term score field title body vector sparse dense".split()
QUERIES = Queries.of({"q1": "ranking query", "q2": "title title field", "q3": "sparse dense vector index",
                      "q4": "document"})
FIELDS = ("title", "text", "abstract")


def _corpus(n=120, seed=0, titles=True):
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        title = " ".join(rng.choice(WORDS, int(rng.integers(0, 4)))) if titles else ""
        text = " ".join(rng.choice(WORDS, int(rng.integers(0, 20))))
        meta = {"abstract": " ".join(rng.choice(WORDS, int(rng.integers(1, 8))))} if rng.random() < 0.7 else {}
        if not title and not text:
            text = str(rng.choice(WORDS))
        docs.append(Document(f"d{i:03d}", text, title, meta))
    return docs


DOCS = _corpus()


def _field(doc, name):
    return {"title": doc.title, "text": doc.text}.get(name, doc.meta.get("abstract", "") if name == "abstract" else "")


def _direct(docs, weights, bs, k1, combine):
    """The formulas of retrievo.retrieve.bm25f, written out per document in float64 (Lucene
    norms decoded from their byte, as Lucene does per field)."""
    an = get_analyzer("english")
    table = lucene_length_table()
    tfs = {f: [Counter(an(_field(d, f))) for d in docs] for f in weights}
    lens = {f: np.array([sum(c.values()) for c in tfs[f]]) for f in weights}
    norm = {f: table[lucene_encode_lengths(lens[f])].astype(np.float64) for f in weights}
    avg = {f: lens[f][lens[f] > 0].mean() for f in weights}
    n_any = sum(1 for i in range(len(docs)) if any(lens[f][i] > 0 for f in weights))

    def idf(df, n):
        return math.log(1 + (n - df + 0.5) / (df + 0.5))

    out = {}
    for qid, text in zip(QUERIES.ids, QUERIES.texts):
        scores = {}
        for term, qtf in Counter(an(text)).items():
            if combine == "bm25f":
                df = sum(1 for i in range(len(docs)) if any(tfs[f][i][term] for f in weights))
                if not df:
                    continue
                for i in range(len(docs)):
                    tilde = sum(weights[f] * tfs[f][i][term] / ((1 - bs[f]) + bs[f] * norm[f][i] / avg[f])
                                for f in weights if tfs[f][i][term])
                    if tilde:
                        scores[docs[i].doc_id] = scores.get(docs[i].doc_id, 0) + qtf * idf(df, n_any) * tilde / (
                            k1 + tilde)
            else:
                for f in weights:
                    df = sum(1 for c in tfs[f] if c[term])
                    n_f = int((lens[f] > 0).sum())
                    for i in range(len(docs)):
                        tf = tfs[f][i][term]
                        if tf:
                            b_norm = (1 - bs[f]) + bs[f] * norm[f][i] / avg[f]
                            s = weights[f] * qtf * idf(df, n_f) * tf / (tf + k1 * b_norm)
                            scores[docs[i].doc_id] = scores.get(docs[i].doc_id, 0) + s
        out[qid] = scores
    return out


@pytest.fixture(scope="module")
def index():
    return InvertedIndex.build(DOCS, fields=FIELDS, workers=1)


@pytest.mark.parametrize("combine", ["bm25f", "sum"])
@pytest.mark.parametrize("weights, bs, k1", [
    ({"title": 2.0, "text": 1.0}, {"title": 0.5, "text": 0.75}, 1.2),
    ({"title": 3.0, "text": 1.0, "abstract": 0.5}, {"title": 0.0, "text": 0.4, "abstract": 1.0}, 0.9),
])
def test_scores_equal_the_formula(index, combine, weights, bs, k1):
    expected = _direct(DOCS, weights, bs, k1, combine)
    got = BM25F(index, weights, bs, k1=k1, combine=combine, k=len(DOCS))(QUERIES)
    for ranked in got:
        exp = expected[ranked.qid]
        assert set(ranked.doc_ids) == set(exp)  # every document with a query term, no other
        np.testing.assert_allclose(ranked.scores, [exp[d] for d in ranked.doc_ids], rtol=2e-6)
        assert (np.diff(ranked.scores) <= 0).all()


def test_bm25f_saturates_once_where_per_field_bm25_does_not(index):
    # the same evidence in two fields earns less than twice under BM25F's single saturation
    w = {"title": 1.0, "text": 1.0}
    f = BM25F(index, w, combine="bm25f", k=5)(QUERIES)
    s = BM25F(index, w, combine="sum", k=5)(QUERIES)
    assert [list(r.doc_ids) for r in f] != [list(r.doc_ids) for r in s]


@pytest.mark.parametrize("combine", ["bm25f", "sum"])
def test_one_field_equals_bm25(combine):
    docs = _corpus(titles=False, seed=3)
    idx = InvertedIndex.build(docs, fields=("text",), workers=1)
    ref = BM25(idx, k=50)(QUERIES)
    got = BM25F(idx, {"text": 1.0}, {"text": 0.4}, combine=combine, k=50)(QUERIES)
    for a, b in zip(ref, got):
        assert list(a.doc_ids) == list(b.doc_ids)
        np.testing.assert_array_equal(a.scores, b.scores)
    # with deletions too (statistics over live documents, as bm25)
    idx.delete([d.doc_id for d in docs[::5]])
    ref = BM25(idx, k=50)(QUERIES)
    got = BM25F(idx, {"text": 1.0}, combine=combine, k=50)(QUERIES)
    for a, b in zip(ref, got):
        assert list(a.doc_ids) == list(b.doc_ids)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_stored_and_derived_field_postings_agree(index):
    plain = InvertedIndex.build(DOCS, workers=1)  # no separate postings: analysed from the store
    assert plain.fields == ()
    w = {"title": 2.0, "text": 1.0, "abstract": 0.7}
    for combine in ("bm25f", "sum"):
        a = BM25F(index, w, combine=combine, k=20)(QUERIES)
        b = BM25F(plain, w, combine=combine, k=20)(QUERIES)
        np.testing.assert_array_equal(a.doc_ids, b.doc_ids)
        np.testing.assert_array_equal(a.scores, b.scores)
    # and the flat postings (every bm25 number) do not depend on the fields
    np.testing.assert_array_equal(BM25(index)(QUERIES).scores, BM25(plain)(QUERIES).scores)
    nostore = InvertedIndex.build(DOCS, store=False, workers=1)
    with pytest.raises(ConfigError, match="fields"):
        BM25F(nostore, w)


def test_field_postings_survive_deletes_merges_and_reopening(tmp_path):
    path = tmp_path / "f.idx"
    idx = InvertedIndex.build(DOCS, path, fields=FIELDS, segment_docs=25, merge=False, workers=1)
    gone = [d.doc_id for d in DOCS[::6]]
    idx.delete(gone)
    idx.upsert([Document("d001", "ranking ranking query", "query title", {"abstract": "field"})], workers=1)
    kept = [d for d in DOCS if d.doc_id not in set(gone) | {"d001"}]
    kept.append(Document("d001", "ranking ranking query", "query title", {"abstract": "field"}))
    fresh = InvertedIndex.build(kept, fields=FIELDS, workers=1)
    w = {"title": 2.0, "text": 1.0, "abstract": 0.5}
    for current in (InvertedIndex.open(path), InvertedIndex.open(path).merge(), InvertedIndex.open(path)):
        assert current.fields == FIELDS
        for combine in ("bm25f", "sum"):
            a = BM25F(current, w, combine=combine, k=30)(QUERIES)
            b = BM25F(fresh, w, combine=combine, k=30)(QUERIES)
            np.testing.assert_array_equal(a.doc_ids, b.doc_ids)
            np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
    from retrievo.index.verify import verify_index

    assert verify_index(path).ok


def test_spec_options_filter_and_candidates(index):
    from retrievo.pipeline import parse

    stage = parse("bm25f(title=2.0, text=1.0, b_title=0.5, combine=sum) % 10", {"index": index})
    again = parse(str(stage), {"index": index})
    assert str(again) == str(stage)
    np.testing.assert_array_equal(stage(QUERIES).doc_ids, again(QUERIES).doc_ids)
    with pytest.raises(PipelineSpecError):
        parse("bm25f(title=heavy)", {"index": index})
    with pytest.raises(ConfigError):
        parse("bm25f(title=1, b_text=0.5)", {"index": index})
    with pytest.raises(ConfigError):
        parse("bm25f(title=1, b_title=1.5)", {"index": index})
    # as a reranker it scores the candidates exactly as a retrieval does
    full = parse("bm25f(title=2.0, text=1.0)", {"index": index})(QUERIES)
    reranked = parse("bm25 % 30 >> bm25f(title=2.0, text=1.0)", {"index": index})(QUERIES)
    for f, r in zip(full, reranked):
        score = dict(zip(f.doc_ids, f.scores))
        assert all(score.get(d, 0) == s for d, s in zip(r.doc_ids, r.scores))


def test_cli_index_fields_and_search_bm25f(tmp_path):
    import json

    from typer.testing import CliRunner

    from retrievo.cli.main import app

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d.doc_id, "title": d.title, "text": d.text, **d.meta}) + "\n"
                              for d in DOCS))
    runner = CliRunner()
    out = runner.invoke(app, ["index", str(corpus), str(tmp_path / "c.idx"), "--fields", "title,text,abstract"])
    assert out.exit_code == 0, out.output
    assert InvertedIndex.open(tmp_path / "c.idx").fields == FIELDS
    res = runner.invoke(app, ["search", str(tmp_path / "c.idx"), "ranking query", "--json", "-k", "5",
                              "-p", "bm25f(title=2.0, text=1.0, abstract=0.5)"])
    assert res.exit_code == 0, res.output
    got = [r["doc_id"] for r in json.loads(res.output.strip().splitlines()[-1])["results"]]
    idx = InvertedIndex.build(DOCS, fields=FIELDS, workers=1)
    want = BM25F(idx, {"title": 2.0, "text": 1.0, "abstract": 0.5}, k=5)(Queries.of({"q": "ranking query"}))
    assert got == list(want[0].doc_ids)
