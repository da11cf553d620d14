"""Metadata filters: the language (errors with positions, types), the compiled bitmap
against a direct evaluation of each document's metadata, and filtered retrieval equal to
brute force — BM25 (both kernels), dense exact, codes — with ``min(k, matches)`` results;
HNSW recall against exact filtered search at every selectivity; spec, CLI, persistence."""

from __future__ import annotations

import datetime as dt
import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from retrievo.errors import FilterSyntaxError, FilterTypeError, UnknownFieldError  # noqa: E402
from retrievo.index.filters import canonical, parse_filter  # noqa: E402
from retrievo.index.inverted import InvertedIndex  # noqa: E402
from retrievo.index.vectors import VectorIndex  # noqa: E402
from retrievo.retrieve.bm25 import BM25  # noqa: E402
from retrievo.retrieve.exact import search_blocks  # noqa: E402
from retrievo.types import Document, Queries, Rankings  # noqa: E402

WORDS = "apple banana cherry date elder fig grape honey ice jam kiwi lemon mango nut olive".split()
SOURCES = ("pubmed", "pmc", "arxiv", "o'reilly")


def _meta(rng: np.random.Generator, i: int) -> dict:
    meta: dict = {}
    if rng.random() < 0.9:
        meta["year"] = int(rng.integers(2000, 2021))
    if rng.random() < 0.85:
        meta["source"] = str(rng.choice(SOURCES))
    if rng.random() < 0.8:
        meta["open"] = bool(rng.random() < 0.5)
    if rng.random() < 0.8:
        meta["published"] = (dt.date(2010, 1, 1) + dt.timedelta(days=int(rng.integers(0, 4000)))).isoformat()
    if rng.random() < 0.5:
        meta["metadata"] = {"score": float(rng.normal())}
    return meta


def _corpus(n: int = 400, seed: int = 0) -> list[Document]:
    rng = np.random.default_rng(seed)
    return [Document(f"d{i:04d}", " ".join(rng.choice(WORDS, int(rng.integers(1, 15)))), "", _meta(rng, i))
            for i in range(n)]


DOCS = _corpus()
QUERIES = Queries.of({"q1": "apple banana", "q2": "fig jam kiwi lemon", "q3": "olive", "q4": "nut nut cherry"})


@pytest.fixture(scope="module")
def index() -> InvertedIndex:
    return InvertedIndex.build(DOCS, workers=1)


# ------------------------------------------------------------------ a direct evaluation
def _value(meta: dict, name: str):
    cur = meta
    for part in name.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _holds(node, meta: dict) -> bool:
    kind = node[0]
    if kind == "and":
        return _holds(node[1], meta) and _holds(node[2], meta)
    if kind == "or":
        return _holds(node[1], meta) or _holds(node[2], meta)
    if kind == "not":
        return not _holds(node[1], meta)
    _, name, op, lit = node
    if op == "!=":
        return not _holds(("cmp", name, "=", lit), meta)
    v = _value(meta, name)
    if op == "in":
        return v is not None and type(v) is type(lit[0]) and v in lit
    if v is None or type(v) is not type(lit):
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(lit, float)):
            return False
    if name == "published" and op in ("<", "<=", ">", ">="):
        v, lit = dt.date.fromisoformat(v), dt.date.fromisoformat(lit)
    return {"=": v == lit, "<": v < lit, "<=": v <= lit, ">": v > lit, ">=": v >= lit}[op]


def _text(node) -> str:
    kind = node[0]
    if kind in ("and", "or"):
        return f"({_text(node[1])} {kind} {_text(node[2])})"
    if kind == "not":
        return f"not {_text(node[1])}"
    _, name, op, lit = node

    def lit_text(x):
        if isinstance(x, bool):
            return "true" if x else "false"
        if isinstance(x, str):
            return "'" + x.replace("'", "\\'") + "'"
        return repr(x)

    if op == "in":
        return f"{name} in ({', '.join(lit_text(x) for x in lit)})"
    return f"{name} {op} {lit_text(lit)}"


_leaf = st.one_of(
    st.tuples(st.just("cmp"), st.just("year"), st.sampled_from(["=", "!=", "<", "<=", ">", ">="]),
              st.integers(1998, 2022).map(float)),
    st.tuples(st.just("cmp"), st.just("source"), st.sampled_from(["=", "!="]), st.sampled_from(SOURCES + ("x",))),
    st.tuples(st.just("cmp"), st.just("source"), st.just("in"),
              st.lists(st.sampled_from(SOURCES), min_size=1, max_size=3).map(tuple)),
    st.tuples(st.just("cmp"), st.just("open"), st.sampled_from(["=", "!="]), st.booleans()),
    st.tuples(st.just("cmp"), st.just("published"), st.sampled_from(["<", ">=", "="]),
              st.dates(dt.date(2009, 1, 1), dt.date(2022, 1, 1)).map(dt.date.isoformat)),
    st.tuples(st.just("cmp"), st.just("metadata.score"), st.sampled_from(["<", ">"]),
              st.floats(-2, 2, allow_nan=False).map(lambda x: round(x, 3))),
)
_filters = st.recursive(_leaf, lambda inner: st.one_of(
    st.tuples(st.sampled_from(["and", "or"]), inner, inner), st.tuples(st.just("not"), inner)), max_leaves=6)


def _expected_mask(node) -> np.ndarray:
    return np.array([_holds(node, dict(d.meta)) for d in DOCS])


# ------------------------------------------------------------------ the language
def test_compiled_filters_match_a_direct_evaluation(index):
    for text, node in [
        ("year >= 2015 and source in ('pubmed','pmc')",
         ("and", ("cmp", "year", ">=", 2015.0), ("cmp", "source", "in", ("pubmed", "pmc")))),
        ("not open = true or published < '2012-06-01'",
         ("or", ("not", ("cmp", "open", "=", True)), ("cmp", "published", "<", "2012-06-01"))),
        ("source = 'o\\'reilly' and year != 2003", ("and", ("cmp", "source", "=", "o'reilly"),
                                                     ("cmp", "year", "!=", 2003.0))),
    ]:
        np.testing.assert_array_equal(index.filter_mask(text), _expected_mask(node), err_msg=text)


@pytest.mark.parametrize("text, position", [
    ("year >= ", 8), ("year 2015", 5), ("(year = 1", 9), ("year = 1)", 8), ("year in 1, 2", 8),
    ("year = 'abc", 7), ("and year = 1", 0), ("year = 1 or", 11), ("", 0), ("year ~ 3", 5), ("year not 3", 9),
])
def test_syntax_errors_point_at_the_problem(text, position):
    with pytest.raises(FilterSyntaxError) as err:
        parse_filter(text)
    assert err.value.position == position
    assert "^" in str(err.value) or not text


def test_unknown_fields_and_wrong_types_are_typed_errors(index):
    with pytest.raises(UnknownFieldError, match="yeer.*fields of this index: .*year"):
        index.filter_mask("yeer = 2015")
    for text in ("year = 'x'", "source < 'b'", "open > true", "source in ('a', 2)", "published < 'soon'",
                 "open = 1"):
        with pytest.raises(FilterTypeError):
            index.filter_mask(text)
    with pytest.raises(UnknownFieldError):
        BM25(index, filter="nope = 1")  # refused when the stage is made, before any search
    assert index.metadata_fields() == {"metadata.score": "number", "open": "bool", "published": "date",
                                       "source": "keyword", "year": "number"}


def test_canonical_spelling_is_the_cache_key():
    assert canonical("year>=2015 AND (source=='pmc')") == canonical("year >= 2015 and source = 'pmc'")
    assert canonical("`odd name` in (1, 2)") == "`odd name` in (1, 2)"


# ------------------------------------------------------------------ BM25 == brute force
def _bm25_brute(index: InvertedIndex, mask: np.ndarray, k: int) -> Rankings:
    """Every matching document scored (as candidates: another code path than the
    kernels) and sorted by score, then id; documents without a query term score 0 and
    are not retrieved, as in an unfiltered search."""
    ids = index.doc_ids[mask]
    cands = Rankings.from_lists(QUERIES, [(ids, np.zeros(len(ids), np.float32))] * len(QUERIES))
    scored = BM25(index, k=index.total_docs)(cands)
    return Rankings.from_lists(QUERIES, [(r.doc_ids[r.scores > 0][:k], r.scores[r.scores > 0][:k])
                                         for r in scored])


def _check_bm25(index, text, mask, k):
    from retrievo.retrieve import bm25 as bm25_mod

    brute = _bm25_brute(index, mask, k)
    full = BM25(index, k=index.total_docs, pruning="off")(QUERIES)
    saved = bm25_mod.FILTER_COMPACT_FRACTION
    runs = []
    try:  # every kernel path: full lists with the bitmap (pruned or not), lists compacted to the filter
        for pruning, fraction in (("on", 0.0), ("off", 0.0), ("off", 1.0)):
            bm25_mod.FILTER_COMPACT_FRACTION = fraction
            runs.append((pruning, BM25(index, k=k, filter=text, pruning=pruning)(QUERIES)))
    finally:
        bm25_mod.FILTER_COMPACT_FRACTION = saved
    for pruning, got in runs:
        for g, b, f in zip(got, brute, full):
            assert list(g.doc_ids) == list(b.doc_ids), (text, pruning)
            np.testing.assert_array_equal(g.scores, b.scores)
            # and it is the unfiltered ranking restricted to the filter
            keep = set(index.doc_ids[mask])
            assert list(g.doc_ids) == [d for d in f.doc_ids if d in keep][:k]
            assert len(g.doc_ids) == min(k, len(b.doc_ids))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(node=_filters, k=st.sampled_from([1, 3, 10, 50]))
def test_filtered_bm25_equals_brute_force(index, node, k):
    text = _text(node)
    mask = _expected_mask(node)
    np.testing.assert_array_equal(index.filter_mask(text), mask)
    _check_bm25(index, text, mask, k)


def test_filters_survive_segments_deletes_merges_and_reopening(tmp_path):
    path = tmp_path / "f.idx"
    idx = InvertedIndex.build(DOCS, path, segment_docs=64, merge=False, workers=1)
    assert len(idx.segments) > 3
    text = "year >= 2010 and (source in ('pubmed', 'arxiv') or open = false)"
    node = ("and", ("cmp", "year", ">=", 2010.0),
            ("or", ("cmp", "source", "in", ("pubmed", "arxiv")), ("cmp", "open", "=", False)))
    mask = _expected_mask(node)
    np.testing.assert_array_equal(InvertedIndex.open(path).filter_mask(text), mask)
    gone = [d.doc_id for d in DOCS[::7]]
    idx.delete(gone)
    reopened = InvertedIndex.open(path)
    alive = np.array([d.doc_id not in set(gone) for d in DOCS])
    np.testing.assert_array_equal(reopened.allowed(text), mask & alive)
    _check_bm25(reopened, text, mask & alive, 10)
    reopened.merge()
    merged = InvertedIndex.open(path)
    assert len(merged.segments) == 1 and merged.live is None
    np.testing.assert_array_equal(merged.filter_mask(text), mask[alive])
    _check_bm25(merged, text, mask[alive], 10)
    # the columns are files of the document part, hashed and checked like the rest
    from retrievo.index.verify import verify_index

    assert verify_index(path).ok
    part = next((path / "docs").iterdir())
    assert "columns.json" in json.loads((part / "meta.json").read_text())["files"]


def test_an_index_without_metadata_writes_no_column_files(tmp_path):
    idx = InvertedIndex.build([Document("a", "apple"), Document("b", "banana")], tmp_path / "plain.idx")
    part = next((tmp_path / "plain.idx" / "docs").iterdir())
    assert not (part / "columns.json").exists()
    with pytest.raises(UnknownFieldError, match="no document has scalar metadata"):
        idx.filter_mask("year = 1")


# ------------------------------------------------------------------ dense
def _vectors(n, dim, seed):
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def vindex() -> VectorIndex:
    return VectorIndex.build([d.doc_id for d in DOCS], _vectors(len(DOCS), 32, 1), model="m", documents=DOCS)


def _dense_brute(vindex, q, mask, k):
    numbers = np.flatnonzero(mask)
    scores = q @ vindex.vectors_of(numbers).T
    out = []
    for row in scores:
        order = np.lexsort((vindex.doc_ids[numbers].astype(str), -row))[:k]
        out.append((numbers[order], row[order]))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(node=_filters, k=st.sampled_from([1, 5, 20, 500]))
def test_filtered_dense_exact_equals_brute_force(vindex, node, k):
    text = _text(node)
    mask = _expected_mask(node)
    allowed = vindex.allowed(text)
    np.testing.assert_array_equal(allowed, mask)
    q = _vectors(3, 32, 2)
    docs, scores, counts = search_blocks(q, vindex.blocks(), vindex.total_docs, allowed, vindex.id_rank,
                                         vindex.by_rank, k)
    for i, (numbers, exact) in enumerate(_dense_brute(vindex, q, mask, k)):
        assert counts[i] == min(k, int(mask.sum()))
        np.testing.assert_array_equal(docs[i, :counts[i]], numbers)
        np.testing.assert_allclose(scores[i, :counts[i]], exact, atol=1e-6)


def test_filtered_codes_keep_k_results_from_the_filter(vindex):
    from retrievo.retrieve.quantized import Codes, search_codes

    q = _vectors(5, 32, 3)
    codes = Codes.build("int8", vindex.blocks(), 32)
    for text in ("source = 'pmc' and year < 2004", "year >= 2001"):
        mask = vindex.allowed(text)
        docs, scores, counts = search_codes(codes, q, vindex, 10, rescore=50, allowed=mask)
        brute = _dense_brute(vindex, q, mask, 10)
        for i, (numbers, exact) in enumerate(brute):
            assert counts[i] == min(10, int(mask.sum()))
            assert mask[docs[i, :counts[i]]].all()
            np.testing.assert_array_equal(docs[i, :counts[i]], numbers)  # rescore depth covers all kept docs


@pytest.mark.parametrize("force_graph", [False, True])
def test_filtered_hnsw_recall_at_every_selectivity(force_graph, monkeypatch):
    pytest.importorskip("usearch")
    from retrievo.index import derived as derived_mod
    from retrievo.retrieve import hnsw

    if force_graph:  # the oversampled graph route, not the exact one, for every filter
        monkeypatch.setattr(hnsw, "EXACT_MAX_DOCS", 0)
        monkeypatch.setattr(hnsw, "EXACT_MAX_FRACTION", 0.0)
    n = 4000
    rng = np.random.default_rng(5)
    ids = [f"v{i}" for i in range(n)]
    docs = [Document(i, "", "", {"bucket": int(b)}) for i, b in zip(ids, rng.integers(0, 1000, n))]
    kind = derived_mod.hnsw_kind(16, 128)
    vi = VectorIndex.build(ids, _vectors(n, 24, 6), model="m", documents=docs, derived=(kind,))
    vi.delete(ids[::50])
    graphs = [u.value() for u in vi.units(kind)]
    q = _vectors(50, 24, 7)
    for keep in (500, 100, 10, 1):  # 50%, 10%, 1%, 0.1% of the buckets
        mask = vi.allowed(f"bucket < {keep}")
        exact = search_blocks(q, vi.blocks(), vi.total_docs, mask, vi.id_rank, vi.by_rank, 10)
        d, s, c = hnsw.search_hnsw(graphs, q, vi, 10, ef=64, allowed=mask)
        want = min(10, int(mask.sum()))
        assert (c == want).all()
        assert mask[d[:, :want]].all()
        recall = np.mean([len(set(a[:want]) & set(b[:want])) / want for a, b in zip(d, exact[0])])
        assert recall >= 0.98, (keep, recall)


def test_dense_stage_selective_filter_scores_only_its_vectors(vindex, monkeypatch):
    """The subset route (a selective filter's vectors gathered once) returns what the
    full route returns, with every document of a small filter."""
    pytest.importorskip("torch")
    from retrievo.retrieve import dense as dense_mod
    from retrievo.retrieve.dense import Dense

    q = _vectors(4, 32, 9)
    queries = Queries(["a", "b", "c", "d"], ["x"] * 4, [{"vector": v} for v in q])
    text = "source = 'pmc' and year < 2006"
    mask = vindex.allowed(text)
    assert 0 < mask.sum() <= 0.125 * vindex.total_docs
    stage = Dense.__new__(Dense)  # a model-free stage over the test vectors: query vectors are given
    stage.__dict__.update(index=vindex, k=7, threads=1, codes=None, search="exact", filter=text,
                          _state={"key": ("fixed",), "vindex": vindex})
    monkeypatch.setattr(Dense, "_vectors", lambda self: vindex)
    monkeypatch.setattr(Dense, "query_vectors", lambda self, qs: q)
    routes = []
    for fraction in (1.0, 0.0):
        monkeypatch.setattr(dense_mod, "FILTER_SUBSET_FRACTION", fraction)
        routes.append(stage(queries))
    assert "subsets" in stage._state
    np.testing.assert_array_equal(routes[0].doc_ids, routes[1].doc_ids)
    np.testing.assert_allclose(routes[0].scores, routes[1].scores, atol=1e-6)
    for r, (numbers, _) in zip(routes[0], _dense_brute(vindex, q, mask, 7)):
        assert list(r.doc_ids) == vindex.doc_ids[numbers].tolist()


def test_dense_stage_filters_before_top_k(tmp_path):
    pytest.importorskip("torch")
    from retrievo.pipeline import parse

    small = DOCS[:60]
    lex = InvertedIndex.build(small, tmp_path / "s.idx", workers=1)
    text = "source = 'pmc'"
    keep = {d.doc_id for d in small if d.meta.get("source") == "pmc"}
    full = parse("dense", {"index": lex})(QUERIES)
    stage = parse(f'dense(filter="{text}") % 5', {"index": lex})
    assert str(parse(str(stage), {"index": lex})) == str(stage)
    out = stage(QUERIES)
    for f, g in zip(full, out):
        assert list(g.doc_ids) == [d for d in f.doc_ids if d in keep][:5]
    # as a reranker it passes on only the candidates the filter keeps
    reranked = parse(f'bm25 % 50 >> dense(filter="{text}")', {"index": lex})(QUERIES)
    assert all(set(r.doc_ids) <= keep for r in reranked)


# ------------------------------------------------------------------ spec and CLI
def test_spec_round_trip_and_pipeline_filter(index):
    from retrievo.filtering import with_filter
    from retrievo.pipeline import parse

    text = "year >= 2015 and source in ('pubmed','pmc')"
    stage = parse(f'bm25(filter="{text}", k1=1.2) % 10', {"index": index})
    again = parse(str(stage), {"index": index})
    assert str(again) == str(stage)
    np.testing.assert_array_equal(stage(QUERIES).doc_ids, again(QUERIES).doc_ids)
    fused = with_filter(parse("bm25 + bm25(method=bm25l)", {"index": index}), text)
    keep = set(index.doc_ids[index.filter_mask(text)])
    assert set(fused(QUERIES).doc_ids) <= keep
    from retrievo.errors import ConfigError

    with pytest.raises(ConfigError):
        with_filter(stage, "year = 1")


def test_cli_search_filter_and_upsert(tmp_path):
    from typer.testing import CliRunner

    from retrievo.cli.main import app

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d.doc_id, "text": d.text, **d.meta}) + "\n" for d in DOCS[:80]))
    runner = CliRunner()
    out = runner.invoke(app, ["index", str(corpus), str(tmp_path / "c.idx")])
    assert out.exit_code == 0, out.output
    res = runner.invoke(app, ["search", str(tmp_path / "c.idx"), "apple banana", "--json", "-k", "50",
                              "--filter", "year >= 2010 and source in ('pubmed','pmc')"])
    assert res.exit_code == 0, res.output
    got = [r["doc_id"] for r in json.loads(res.output.strip().splitlines()[-1])["results"]]
    keep = {d.doc_id for d in DOCS[:80] if d.meta.get("year", 0) >= 2010 and d.meta.get("source") in ("pubmed", "pmc")}
    assert got and set(got) <= keep
    info = runner.invoke(app, ["info", str(tmp_path / "c.idx")])
    assert "metadata:" in info.output and "year (number)" in info.output and "published (date)" in info.output
    bad = runner.invoke(app, ["search", str(tmp_path / "c.idx"), "apple", "--filter", "year >>= 3"])
    assert bad.exit_code != 0 and "position" in bad.output
    update = tmp_path / "u.jsonl"
    update.write_text(json.dumps({"_id": DOCS[0].doc_id, "text": "zucchini", "year": 1990}) + "\n"
                      + json.dumps({"_id": "new", "text": "zucchini zucchini"}) + "\n")
    up = runner.invoke(app, ["index", str(update), str(tmp_path / "c.idx"), "--upsert"])
    assert up.exit_code == 0 and "1 replaced, 1 added" in up.output, up.output
    res = runner.invoke(app, ["search", str(tmp_path / "c.idx"), "zucchini", "--json", "--filter", "year < 2000"])
    assert [r["doc_id"] for r in json.loads(res.output.strip().splitlines()[-1])["results"]] == [DOCS[0].doc_id]


def test_readme_fields_filters_upserts_example_runs(tmp_path, monkeypatch, capsys):
    """The README's ``py`` example of fields, filters and upserts runs as written and
    prints what its comments say."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Fields, filters and upserts"):]
    code = re.search(r"```py\n(.*?)```", section, flags=re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})  # noqa: S102 - our own README
    printed = capsys.readouterr().out.splitlines()
    # the values the README's comments announce, in order
    assert printed == ["['c']", "['a', 'c']", "(1, 0)", "['b', 'c']"]
    for value in printed:
        assert f"# {value}" in code
