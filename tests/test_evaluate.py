"""retrievo.evaluate: metrics equal pytrec_eval / ir_measures, significance, experiments."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import ir_measures
import numpy as np
import pytest
import pytrec_eval
from scipy import stats

from retrievo.errors import ConfigError, RetrievoError
from retrievo.evaluate import (
    DEFAULT_METRICS,
    EvaluationError,
    Experiment,
    ExperimentResult,
    MetricError,
    Protocol,
    correct,
    evaluate,
    evaluate_run,
    mean_difference_ci,
    paired_test,
    parse_metrics,
    per_query_frame,
)
from retrievo.pipeline import Stage, as_queries
from retrievo.types import Cost, Qrels, Queries, Rankings

TOL = 1e-9
# pytrec_eval measure -> the ir_measures name evaluate() reports it under
TREC_TO_IRM = {"ndcg_cut_10": "nDCG@10", "recall_100": "R@100", "map": "AP", "recip_rank": "RR", "P_5": "P@5"}


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def read_qrels_tsv(path: Path) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f, delimiter="\t")
        next(rows)  # header: query-id corpus-id score
        for qid, doc, rel in rows:
            out.setdefault(qid, {})[doc] = int(rel)
    return out


def random_qrels(rng, n_queries=40, n_docs=300) -> dict[str, dict[str, int]]:
    qrels = {}
    for q in range(n_queries):
        docs = rng.choice(n_docs, size=rng.integers(1, 25), replace=False)
        qrels[f"q{q}"] = {f"d{d}": int(rng.integers(0, 4)) for d in docs}  # graded, incl. 0 rows
    return qrels


def synthetic_run(qrels, seed, drop=0.2, ties=False) -> dict[str, dict[str, float]]:
    """Seeded random rankings mixing judged and unjudged doc ids; some judged queries are
    left out and one unjudged query is added."""
    rng = np.random.default_rng(seed)
    pool = sorted({d for docs in qrels.values() for d in docs})
    run = {}
    for q in sorted(qrels):
        if rng.random() < drop:
            continue
        judged = list(qrels[q])
        picked = list(rng.choice(judged, size=rng.integers(0, len(judged) + 1), replace=False))
        noise = list(rng.choice(pool, size=min(len(pool), int(rng.integers(5, 120))), replace=False))
        unjudged = [f"unjudged-{q}-{i}" for i in range(int(rng.integers(0, 30)))]
        docs = list(dict.fromkeys(picked + noise + unjudged))
        docs = [docs[i] for i in rng.permutation(len(docs))]
        scores = rng.integers(0, 5, len(docs)) if ties else rng.permutation(len(docs))
        run[q] = {d: float(s) for d, s in zip(docs, scores)}
    run["never-judged"] = {pool[0]: 1.0, "x": 0.5}
    return run


def pytrec_aggregate(qrels, run) -> dict[str, float]:
    """pytrec_eval per query, with judged queries missing from the run counted 0 (trec_eval -c)."""
    per_q = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100", "map", "recip_rank", "P.5"}).evaluate(run)
    judged = [q for q, docs in qrels.items() if docs]
    return {irm: sum(per_q.get(q, {}).get(trec, 0.0) for q in judged) / len(judged) for trec, irm in TREC_TO_IRM.items()}


def assert_close(got: dict, want: dict):
    assert set(got) == set(want)
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=TOL), k


# --------------------------------------------------------------------------------------
# metrics: exactness
# --------------------------------------------------------------------------------------

METRICS = ["nDCG@10", "R@100", "AP", "RR", "P@5"]


@pytest.mark.parametrize("seed", range(4))
def test_random_runs_equal_pytrec_eval(seed):
    rng = np.random.default_rng(100 + seed)
    qrels = random_qrels(rng)
    run = synthetic_run(qrels, seed, ties=seed % 2 == 1)
    assert set(qrels) - set(run), "some judged queries must be missing from the run"
    want = pytrec_aggregate(qrels, run)
    assert_close(evaluate(run, qrels, METRICS), want)
    # the same through the columnar types
    assert_close(evaluate(Rankings.from_dict(run), Qrels.from_dict(qrels), METRICS), want)


@pytest.mark.parametrize("seed", range(3))
def test_random_runs_equal_ir_measures(seed):
    rng = np.random.default_rng(200 + seed)
    qrels = random_qrels(rng)
    run = synthetic_run(qrels, seed)
    names = ["nDCG@10", "RR@10", "Judged@10", "AP(rel=2)", "nDCG@20", "R@1000", "P(rel=2)@10"]
    measures = [ir_measures.parse_measure(n) for n in names]
    # ir_measures >= 0.4 also averages over every judged query (missing ones score 0)
    want = {str(k): v for k, v in ir_measures.calc_aggregate(measures, qrels, run).items()}
    assert_close(evaluate(run, qrels, names), want)
    per_q = evaluate(run, qrels, names, per_query=True)
    n = 0
    for m in ir_measures.iter_calc(measures, qrels, run):
        assert per_q[str(m.measure)][m.query_id] == pytest.approx(m.value, abs=TOL)
        n += 1
    assert n == sum(len(v) for v in per_q.values())


@pytest.mark.parametrize("seed", range(2))
def test_judged_queries_only_equals_plain_pytrec_eval(seed):
    rng = np.random.default_rng(300 + seed)
    qrels = random_qrels(rng)
    run = synthetic_run(qrels, seed)
    run[next(iter(set(qrels) - set(run)))] = {}  # asked, answered with nothing: counts 0
    per_q = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100", "map", "recip_rank", "P.5"}).evaluate(run)
    want = {irm: sum(v[trec] for v in per_q.values()) / len(per_q) for trec, irm in TREC_TO_IRM.items()}
    assert len(per_q) == len(set(run) & set(qrels))
    assert_close(evaluate(run, qrels, METRICS, judged_queries_only=True), want)


@pytest.mark.parametrize("collection", ["scifact", "cranfield"])
def test_real_qrels_equal_pytrec_eval(shared_data, collection):
    qrels = read_qrels_tsv(shared_data / collection / "qrels" / "test.tsv")
    if collection == "cranfield":
        assert {r for docs in qrels.values() for r in docs.values()} >= {0, 1, 2, 3, 4}
    for seed in range(2):
        run = synthetic_run(qrels, seed)
        assert_close(evaluate(run, qrels, METRICS), pytrec_aggregate(qrels, run))
        measures = [ir_measures.parse_measure(n) for n in ("nDCG@10", "RR@10", "Judged@10", "R@100")]
        want = {str(k): v for k, v in ir_measures.calc_aggregate(measures, qrels, run).items()}
        assert_close(evaluate(run, qrels, ["ndcg@10", "mrr@10", "judged@10", "recall@100"]), want)


def test_missing_and_empty_queries_count_zero():
    qrels = {"a": {"d1": 1, "d2": 0}, "b": {"d3": 0}, "c": {"d4": 2}, "d": {"d5": 1}, "e": {}}
    run = {"a": {"d1": 2.0, "x": 1.0}, "b": {"d3": 1.0}, "c": {}, "z": {"d1": 1.0}}
    per_q = evaluate(run, qrels, ["nDCG@10", "Judged@10"], per_query=True)
    # run order first, then unanswered judged queries; "e" (no judgments) and "z" (unjudged) never count
    assert list(per_q["nDCG@10"]) == ["a", "b", "c", "d"]
    assert per_q["nDCG@10"] == {"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0}
    assert per_q["Judged@10"] == {"a": 0.5, "b": 1.0, "c": 0.0, "d": 0.0}
    assert evaluate(run, qrels, ["nDCG@10"]) == {"nDCG@10": 0.25}
    # judged queries the run contains (incl. the empty list of "c")
    assert evaluate(run, qrels, ["nDCG@10"], judged_queries_only=True) == {"nDCG@10": pytest.approx(1 / 3)}


def test_results_keyed_canonically_in_request_order():
    qrels = {"q": {"a": 1}}
    run = {"q": {"a": 1.0}}
    out = evaluate(run, qrels, ["map", "ndcg@10", "mrr@10", "recall@100"])
    assert list(out) == ["AP", "nDCG@10", "RR@10", "R@100"]
    assert list(evaluate(run, qrels)) == list(DEFAULT_METRICS)


# --------------------------------------------------------------------------------------
# metrics: names, options, errors
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, canonical", [
    ("ndcg@10", "nDCG@10"), ("NDCG@10", "nDCG@10"), ("map", "AP"), ("MAP", "AP"), ("mrr", "RR"),
    ("mrr@10", "RR@10"), ("recall@100", "R@100"), ("p@5", "P@5"), ("judged@10", "Judged@10"),
    ("AP(rel=2)", "AP(rel=2)"), ("nDCG(dcg='exp-log2')@10", "nDCG(dcg='exp-log2')@10"),
    ("ndcg_cut_10", "nDCG@10"), ("recip_rank", "RR"), ("hits@10", "Success@10"), (" R@100 ", "R@100"),
])
def test_aliases(name, canonical):
    assert [str(m) for m in parse_metrics(name)] == [canonical]


def test_duplicates_collapse_and_measure_objects_pass_through():
    assert [str(m) for m in parse_metrics(["mrr@10", "RR@10", ir_measures.nDCG @ 10, "ndcg@10"])] == ["RR@10", "nDCG@10"]


@pytest.mark.parametrize("bad", ["xyz", "nDCG@ten", "nDCG(foo=1)@10", "", "RBP(p=0.5)"])
def test_unknown_metric_is_typed(bad):
    with pytest.raises(MetricError) as info:
        parse_metrics(bad)
    assert isinstance(info.value, RetrievoError) and isinstance(info.value, ValueError)
    with pytest.raises(MetricError):
        evaluate({"q": {"a": 1.0}}, {"q": {"a": 1}}, ["AP", bad])


def test_no_common_query_ids_is_an_error():
    with pytest.raises(EvaluationError, match="same query ids"):
        evaluate({"1": {"a": 1.0}}, {"q1": {"a": 1}})
    with pytest.raises(EvaluationError, match="no judgments"):
        evaluate({"1": {"a": 1.0}}, {})


def test_per_query_output_and_frame():
    qrels = {"q1": {"a": 1, "b": 2}, "q2": {"c": 1}}
    run = {"q1": {"b": 3.0, "a": 2.0}, "q2": {"x": 1.0, "c": 0.5}}
    per_q = evaluate(run, qrels, ["RR", "P@1"], per_query=True)
    assert per_q == {"RR": {"q1": 1.0, "q2": 0.5}, "P@1": {"q1": 1.0, "q2": 0.0}}
    frame = per_query_frame(run, qrels, ["RR", "P@1"])
    assert list(frame.columns) == ["qid", "metric", "value"]
    assert len(frame) == 4
    assert frame.set_index(["qid", "metric"]).loc[("q2", "RR"), "value"] == 0.5


def test_drop_self_hits():
    qrels = {"q1": {"q1": 1, "a": 1}, "q2": {"b": 1}}
    run = {"q1": {"q1": 9.0, "x": 8.0, "a": 7.0}, "q2": {"q2": 5.0, "b": 4.0}}
    clean = {"q1": {"x": 8.0, "a": 7.0}, "q2": {"b": 4.0}}
    want = evaluate(clean, qrels, ["nDCG@10", "RR", "AP"])
    assert evaluate(run, qrels, ["nDCG@10", "RR", "AP"], drop_self_hits=True) == want
    assert evaluate(Rankings.from_dict(run), qrels, ["nDCG@10", "RR", "AP"], drop_self_hits=True) == want
    assert evaluate(run, qrels, ["RR"], per_query=True)["RR"] == {"q1": 1.0, "q2": 0.5}  # self hits count
    assert evaluate(run, qrels, ["RR"], per_query=True, drop_self_hits=True)["RR"] == {"q1": 0.5, "q2": 1.0}


# --------------------------------------------------------------------------------------
# significance
# --------------------------------------------------------------------------------------

A = [0.61, 0.32, 0.80, 0.45, 0.50, 0.71, 0.22, 0.90, 0.38, 0.55, 0.47, 0.66]
B = [0.52, 0.30, 0.71, 0.46, 0.41, 0.60, 0.20, 0.85, 0.31, 0.55, 0.40, 0.50]


def test_t_test_matches_scipy():
    got = paired_test(A, B, "t")
    want = stats.ttest_rel(A, B)
    assert got.statistic == pytest.approx(float(want.statistic), abs=1e-12)
    assert got.pvalue == pytest.approx(float(want.pvalue), abs=1e-12)
    assert got.n == 12 and got.mean_diff == pytest.approx(np.mean(np.subtract(A, B)))


def test_wilcoxon_and_sign_match_scipy():
    got = paired_test(A, B, "wilcoxon")
    want = stats.wilcoxon(A, B)
    assert (got.statistic, got.pvalue) == pytest.approx((float(want.statistic), float(want.pvalue)))
    sign = paired_test(A, B, "sign")  # 10 wins, 1 loss, 1 tie
    assert sign.statistic == 10
    assert sign.pvalue == pytest.approx(stats.binomtest(10, 11, 0.5).pvalue)
    assert "1 ties" in sign.note


def test_permutation_is_exact_for_small_n_and_seeded():
    res = paired_test([2, 3, 4, 5, 6], [1, 1, 1, 1, 1], "permutation")
    assert res.pvalue == pytest.approx(2 / 32)  # exact: only the observed sign pattern is as extreme
    assert res.statistic == pytest.approx(3.0)
    rng = np.random.default_rng(1)
    x, y = rng.random(40), rng.random(40)
    assert paired_test(x, y, "permutation").pvalue == paired_test(x, y, "permutation").pvalue


def test_dict_input_pairs_by_query_id():
    a = {f"q{i}": v for i, v in enumerate(A)}
    b = {f"q{i}": v for i, v in reversed(list(enumerate(B)))}
    assert paired_test(a, b).pvalue == pytest.approx(paired_test(A, B).pvalue)
    with pytest.raises(EvaluationError, match="same query ids"):
        paired_test({"q1": 1.0, "q2": 0.0}, {"q1": 1.0, "q3": 0.0})


@pytest.mark.parametrize("test", ["t", "wilcoxon", "sign", "permutation"])
def test_degenerate_inputs(test):
    same = paired_test(A, A, test)
    assert same.pvalue == 1.0 and "identical" in same.note
    tiny = paired_test([0.5], [0.2], test)
    assert math.isnan(tiny.pvalue) and "at least 2" in tiny.note


def test_bad_test_inputs():
    with pytest.raises(ConfigError, match="choose from"):
        paired_test(A, B, "ztest")
    with pytest.raises(EvaluationError, match="equal length"):
        paired_test([1.0, 2.0], [1.0])


def test_corrections_hand_computed():
    p = [0.01, 0.04, 0.03, 0.005]
    np.testing.assert_allclose(correct(p, "bonferroni"), [0.04, 0.16, 0.12, 0.02])
    # Holm: sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, max(0.04*1, 0.06)=0.06
    np.testing.assert_allclose(correct(p, "holm"), [0.03, 0.06, 0.06, 0.02])
    # BH: p*m/rank = 0.02, 0.02, 0.04, 0.04 (monotone already)
    np.testing.assert_allclose(correct(p, "fdr_bh"), [0.02, 0.04, 0.04, 0.02])
    np.testing.assert_allclose(correct(p, "none"), p)
    np.testing.assert_allclose(correct([0.5, 0.6], "holm"), [1.0, 1.0])
    np.testing.assert_allclose(correct([0.5, 0.6], "bonferroni"), [1.0, 1.0])
    np.testing.assert_allclose(correct([0.01, float("nan"), 0.02], "bonferroni"), [0.02, float("nan"), 0.04])
    assert len(correct([], "holm")) == 0
    with pytest.raises(ConfigError):
        correct(p, "sidak-ish")


# --------------------------------------------------------------------------------------
# experiments
# --------------------------------------------------------------------------------------

N_Q = 30
QUERIES = Queries([f"q{i}" for i in range(N_Q)], [f"text {i}" for i in range(N_Q)])
QRELS = {f"q{i}": {f"rel{i}": 2, f"part{i}": 1, f"non{i}": 0} for i in range(N_Q)}
FILLER = [f"f{j}" for j in range(20)]


def ranked(i: int, rank_of_rel: int) -> list[str]:
    docs = list(FILLER)
    docs.insert(rank_of_rel, f"rel{i}")
    docs.insert(rank_of_rel + 1, f"part{i}")
    return docs


def make_run(rank_fn) -> dict[str, dict[str, float]]:
    return {f"q{i}": {d: float(100 - r) for r, d in enumerate(ranked(i, rank_fn(i)))} for i in range(N_Q)}


BASE_RUN = make_run(lambda i: 0 if i % 2 else 4)  # mixed
GOOD_RUN = make_run(lambda i: 0 if i % 5 else 1)  # nearly always first
BAD_RUN = make_run(lambda i: 9 + i % 3)  # buried


class FixedStage(Stage):
    """A stage that answers every query with a fixed ranking (query texts are ignored)."""

    def __init__(self, name: str, run: dict[str, dict[str, float]]):
        self.name = name
        self.run = run

    def transform(self, inp):
        qs = as_queries(inp)
        lists = [(list(self.run.get(q, {})), list(self.run.get(q, {}).values())) for q in qs.ids]
        return Rankings.from_lists(qs, lists, sort=True)


@pytest.fixture(scope="module")
def result() -> ExperimentResult:
    systems = [FixedStage("base", BASE_RUN), FixedStage("good", GOOD_RUN), FixedStage("bad", BAD_RUN),
               Rankings.from_dict(BASE_RUN, QUERIES)]
    exp = Experiment(systems, QUERIES, Qrels.from_dict(QRELS), metrics=["ndcg@10", "mrr", "map"],
                     names=["base", "good", "bad", "copy"])
    return exp.run()


def test_experiment_table(result):
    assert result.names == ["base", "good", "bad", "copy"]
    assert result.metrics == ["nDCG@10", "RR", "AP"]
    assert result.baseline == "base"
    for name, run in [("base", BASE_RUN), ("good", GOOD_RUN), ("bad", BAD_RUN), ("copy", BASE_RUN)]:
        want = evaluate(run, QRELS, result.metrics)
        assert {m: result[name][m] for m in result.metrics} == pytest.approx(want, abs=TOL)
        assert result.per_query[name] == evaluate(run, QRELS, result.metrics, per_query=True)
    base = result["base"]
    assert base["baseline"] and all(math.isnan(base[f"{m} p"]) and base[f"{m} sig"] == "" for m in result.metrics)
    assert all(result["good"][f"{m} sig"] == "win" for m in result.metrics)
    assert all(result["bad"][f"{m} sig"] == "loss" for m in result.metrics)
    assert all(result["copy"][f"{m} p"] == 1.0 and result["copy"][f"{m} sig"] == "" for m in result.metrics)
    assert result.value("good", "mrr") == result["good"]["RR"]


def test_experiment_pvalues_are_holm_corrected_per_metric(result):
    for m in result.metrics:
        raw = [paired_test(result.per_query[n][m], result.per_query["base"][m]).pvalue for n in ("good", "bad", "copy")]
        want = correct(raw, "holm")
        got = [result[n][f"{m} p"] for n in ("good", "bad", "copy")]
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_experiment_costs(result):
    for name in ("base", "good", "bad"):
        assert result[name]["s_per_query"] > 0  # from the Stage's Cost records
    assert math.isnan(result["copy"]["s_per_query"])  # precomputed, no costs
    costs = (Cost("bm25", 3.0, queries=N_Q), Cost("rerank", 1.5, queries=N_Q))
    timed = Rankings.from_dict(BASE_RUN, QUERIES).with_costs(costs)
    res = Experiment([timed], QUERIES, QRELS).run()
    assert res.rows[0]["s_per_query"] == pytest.approx(4.5 / N_Q)


def test_markdown(result):
    md = result.to_markdown()
    assert str(result) == md
    lines = md.splitlines()
    assert lines[0] == "| system | nDCG@10 | RR | AP | p(nDCG@10) | p(RR) | p(AP) | s/query |"
    assert lines[2].startswith("| base (baseline) |")
    assert "▲" in lines[3] and "▼" in lines[4] and "▲" not in lines[5] and "▼" not in lines[5]
    assert f"{result['good']['nDCG@10']:.4f} ▲" in lines[3]
    assert "holm correction per metric" in md


def test_csv(result, tmp_path):
    text = result.to_csv()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["system"] for r in rows] == result.names
    assert list(rows[0]) == result.columns()
    assert float(rows[1]["nDCG@10"]) == pytest.approx(result["good"]["nDCG@10"])
    assert rows[0]["nDCG@10 p"] == "" and rows[2]["AP sig"] == "loss"
    path = tmp_path / "table.csv"
    assert result.to_csv(path) == text and path.read_text(encoding="utf-8") == text


def test_json(result):
    data = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert data["metrics"] == ["nDCG@10", "RR", "AP"] and data["baseline"] == "base"
    assert data["test"] == "t" and data["correction"] == "holm" and data["alpha"] == 0.05
    good = data["systems"][1]
    assert good["name"] == "good" and good["metrics"]["AP"]["sig"] == "win"
    assert good["metrics"]["AP"]["p"] >= good["metrics"]["AP"]["p_raw"]
    assert data["systems"][0]["metrics"]["AP"]["p"] is None
    assert data["per_query"]["bad"]["RR"]["q0"] == result.per_query["bad"]["RR"]["q0"]


def test_pandas(result):
    frame = result.to_pandas()
    assert frame.shape == (4, len(result.columns()))
    assert frame.set_index("system").loc["good", "RR"] == result["good"]["RR"]
    long = result.to_pandas(per_query=True)
    assert list(long.columns) == ["system", "qid", "metric", "value"] and len(long) == 4 * 3 * N_Q


def test_plot_writes_png(result, tmp_path):
    for metric in (None, "map"):
        path = result.plot(tmp_path / f"plot-{metric}.png", metric=metric)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError, match="not evaluated"):
        result.plot(tmp_path / "x.png", metric="P@5")


def test_baseline_by_name_none_and_errors():
    systems = {"good": FixedStage("good", GOOD_RUN), "base": FixedStage("base", BASE_RUN)}
    res = Experiment(systems, QUERIES, QRELS, metrics=["AP"], baseline="base").run()
    assert res.baseline == "base" and res["good"]["AP sig"] == "win" and math.isnan(res["base"]["AP p"])
    res = Experiment(systems, QUERIES, QRELS, metrics=["AP"], baseline=None).run()
    assert res.baseline is None and all(math.isnan(r["AP p"]) for r in res.rows)
    assert "p(AP)" not in res.to_markdown() and "significantly" not in res.to_markdown()
    with pytest.raises(ConfigError, match="not a system"):
        Experiment(systems, QUERIES, QRELS, baseline="nope")
    with pytest.raises(ConfigError, match="out of range"):
        Experiment(systems, QUERIES, QRELS, baseline=5)
    with pytest.raises(ConfigError, match="choose from"):
        Experiment(systems, QUERIES, QRELS, test="z")
    with pytest.raises(EvaluationError, match="judgments"):
        Experiment(systems, QUERIES, {"other": {"d": 1}})


def test_default_names_and_plain_callables():
    def lookup(queries):
        return Rankings.from_dict(GOOD_RUN, queries)

    res = Experiment([FixedStage("base", BASE_RUN), lookup, Rankings.from_dict(BASE_RUN, QUERIES)],
                     QUERIES, QRELS, metrics=["RR"], test="wilcoxon", correction="bonferroni").run()
    assert res.names == ["base", "lookup", "run3"]
    assert res["lookup"]["s_per_query"] >= 0  # wall time of the call: no Cost records
    assert list(res.to_json()["systems"][0]["metrics"]) == ["RR"]


def test_subset_of_queries_and_drop_self_hits():
    sub = QUERIES[:10]
    res = Experiment([Rankings.from_dict(BASE_RUN, QUERIES)], sub, QRELS, metrics=["AP"]).run()
    want = evaluate({q: BASE_RUN[q] for q in sub.ids}, {q: QRELS[q] for q in sub.ids}, ["AP"])
    assert res.rows[0]["AP"] == pytest.approx(want["AP"])  # judged queries outside the set are ignored
    selfish = {q: {q: 1000.0, **docs} for q, docs in BASE_RUN.items()}
    qrels = {q: {**docs, q: 1} for q, docs in QRELS.items()}
    kept = Experiment([Rankings.from_dict(selfish, QUERIES)], QUERIES, qrels, metrics=["RR"]).run()
    dropped = Experiment([Rankings.from_dict(selfish, QUERIES)], QUERIES, qrels, metrics=["RR"],
                         drop_self_hits=True).run()
    assert kept.rows[0]["RR"] == 1.0
    assert dropped.rows[0]["RR"] == pytest.approx(evaluate(BASE_RUN, qrels, ["RR"])["RR"])


def test_plot_has_a_paired_difference_panel(result):
    """Second panel: sorted per-query differences vs the baseline, mean and 95% t CI."""
    fig = result.figure("map")
    assert len(fig.axes) == 2
    diff_ax = fig.axes[1]
    labels = [t.get_text() for t in diff_ax.get_legend().get_texts()]
    assert [label.split(":")[0] for label in labels] == ["good", "bad", "copy"]
    for system, label in zip(["good", "bad", "copy"], labels):
        diffs = result.differences("AP", system)
        values = np.array(list(diffs.values()))
        assert f"mean {values.mean():+.3f}" in label
        assert f"{int((values > 0).sum())} up, {int((values < 0).sum())} down" in label
        line = next(l for l in diff_ax.get_lines() if l.get_label() == label)
        assert np.allclose(line.get_ydata(), np.sort(values))  # sorted per system
    ci = stats.ttest_rel(list(result.differences("AP", "good").values()), np.zeros(N_Q)).confidence_interval()
    assert f"[{ci.low:+.3f}, {ci.high:+.3f}]" in labels[0]
    single = Experiment([FixedStage("base", BASE_RUN)], QUERIES, QRELS, metrics=["AP"]).run()
    assert len(single.figure().axes) == 1  # nothing to difference against
    with pytest.raises(KeyError, match="no system named"):
        result.differences("AP", "nope")


def test_mean_difference_ci_matches_scipy_paired_t():
    rng = np.random.default_rng(3)
    a, b = rng.random(25), rng.random(25)
    mean, low, high = mean_difference_ci(a, b)
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert mean == pytest.approx((a - b).mean()) and (low, high) == pytest.approx((ci.low, ci.high))
    assert all(math.isnan(x) for x in mean_difference_ci([1.0], [0.5])[1:])
    assert mean_difference_ci([1.0, 2.0], [0.0, 1.0]) == (1.0, 1.0, 1.0)
    with pytest.raises(ConfigError):
        mean_difference_ci(a, b, level=1.5)


# --------------------------------------------------------------------------------------
# warm-up, protocol, evaluate_run, the callable package
# --------------------------------------------------------------------------------------


class SlowFirstCall(FixedStage):
    """Pays a one-off cost on its first call, like numba compiling the BM25 kernels."""

    def __init__(self, name, run, delay):
        super().__init__(name, run)
        self.delay, self.calls = delay, 0

    def transform(self, inp):
        import time

        self.calls += 1
        if self.calls == 1:
            time.sleep(self.delay)
        return super().transform(inp)


def test_experiment_warms_systems_up_outside_the_timing():
    slow = SlowFirstCall("base", BASE_RUN, delay=0.3)
    res = Experiment([slow, FixedStage("good", GOOD_RUN)], QUERIES, QRELS, metrics=["AP"], names=["a", "b"]).run()
    assert slow.calls == 2 and res["a"]["s_per_query"] < 0.3 / N_Q / 3  # the warm-up call was not timed
    assert res.protocol.options["warmup"] == 32  # queries answered untimed first
    cold = SlowFirstCall("base", BASE_RUN, delay=0.3)
    res = Experiment([cold], QUERIES, QRELS, metrics=["AP"], warmup=False).run()
    assert cold.calls == 1 and res["base"]["s_per_query"] >= 0.3 / N_Q
    with pytest.raises(ConfigError, match="warmup"):
        Experiment([cold], QUERIES, QRELS, warmup=-1)


def test_experiment_result_carries_its_protocol(result, tmp_path):
    p = result.protocol
    assert p.pipelines == ["base", "good", "bad", "run4"]  # stage specs; precomputed rankings get run<i>
    assert p.options["systems"] == ["base", "good", "bad", "copy"] and p.options["baseline"] == "base"
    assert p.options["metrics"] == ["nDCG@10", "RR", "AP"] and p.options["num_queries"] == N_Q
    assert p.options["self_hits"] == "kept" and p.options["depth"] == 22
    assert p.options["tie_break"]["ranking"] == "score desc, doc id asc"
    assert p.options["test"] == "t" and p.options["correction"] == "holm" and p.models == []
    assert p.versions["ir_measures"] == ir_measures.__version__ and p.versions["pytrec_eval"]
    assert result.to_json()["protocol"]["options"]["metrics"] == ["nDCG@10", "RR", "AP"]
    line = p.summary()
    assert "\n" not in line and "self-hits kept" in line and "depth 22" in line and "30 queries" in line
    written = p.write_beside(tmp_path / "run.trec")
    assert written.name == "run.trec.protocol.json" and Protocol.read(written) == p


def test_protocol_hashes_the_dataset_files(tmp_path):
    import hashlib

    from retrievo.data import BeirDataset, write_beir
    from retrievo.types import Document

    docs = [Document(f"rel{i}", f"text {i}") for i in range(N_Q)]
    write_beir(tmp_path / "ds", docs, QUERIES, {"test": Qrels.from_dict(QRELS)})
    ds = BeirDataset(tmp_path / "ds")
    res = Experiment([FixedStage("base", BASE_RUN)], ds.queries("test"), ds.qrels("test"), metrics=["AP"],
                     dataset=ds, split="test", drop_self_hits=True).run()
    data = res.protocol.data
    for key, path in (("corpus", ds.corpus.path), ("queries", tmp_path / "ds" / "queries.jsonl"),
                      ("qrels", tmp_path / "ds" / "qrels" / "test.tsv")):
        assert data[key]["sha256"] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert res.protocol.options["self_hits"] == "dropped" and res.protocol.options["split"] == "test"
    assert "sha256 corpus " in res.protocol.summary()


def test_evaluate_run_from_files_in_either_qrels_format(tmp_path):
    from retrievo.data import write_qrels, write_run

    run = Rankings.from_dict(GOOD_RUN, QUERIES)
    run_path = write_run(tmp_path / "run.trec", run)
    trec_qrels = write_qrels(tmp_path / "qrels.txt", Qrels.from_dict(QRELS))
    beir_qrels = tmp_path / "test.tsv"
    beir_qrels.write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{r}\n" for q, docs in QRELS.items() for d, r in docs.items()))
    expected = evaluate(GOOD_RUN, QRELS, ["nDCG@10", "AP"])
    for qrels_path in (trec_qrels, beir_qrels):
        res = evaluate_run(run_path, qrels_path, ["nDCG@10", "AP"], per_query=True)
        assert res.metrics == pytest.approx(expected) and res.num_queries == N_Q
        assert set(res.per_query["AP"]) == set(QRELS)
        assert res.protocol.data["qrels"]["path"] == str(qrels_path)
        assert len(res.protocol.data["run"]["sha256"]) == 64
    in_memory = evaluate_run(run, QRELS, "AP")
    assert in_memory.per_query is None and in_memory.metrics["AP"] == pytest.approx(expected["AP"])
    assert in_memory.protocol.data == {}


def test_evaluate_run_without_common_queries_is_a_typed_error():
    with pytest.raises(EvaluationError, match="no query in common"):
        evaluate_run({"other": {"d": 1.0}}, QRELS, "AP")
    with pytest.raises(EvaluationError, match="no query in common"):
        evaluate_run({}, QRELS, "AP")


@pytest.mark.parametrize("statement", [
    "from retrievo import Experiment, evaluate",
    "from retrievo import evaluate, Experiment",
    "import retrievo.evaluate.metrics; from retrievo import evaluate",
    "import retrievo; retrievo.Experiment; from retrievo import evaluate",
    "from retrievo import evaluate; import retrievo.evaluate",
    "from retrievo import evaluate_run as _r; from retrievo import evaluate",
])
def test_from_retrievo_import_evaluate_is_callable_in_every_import_order(statement):
    """`from retrievo import evaluate` must not depend on whether the subpackage was
    imported first (which binds the module over the function); fresh interpreters, since
    the order of first imports is what matters."""
    import subprocess
    import sys

    code = (f"{statement}\nimport retrievo\n"
            "print(evaluate({'q': {'d': 1.0, 'e': 0.5}}, {'q': {'e': 1}}, ['RR'])['RR'], "
            "retrievo.evaluate.Experiment.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0.5", "Experiment"]


def test_missing_extras_raise_the_typed_error_naming_them(result, tmp_path, monkeypatch):
    from retrievo.errors import MissingExtraError

    monkeypatch.setitem(__import__("sys").modules, "pandas", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r"retrievo\[pandas\]"):
        result.to_pandas()
    with pytest.raises(MissingExtraError, match=r"retrievo\[pandas\]"):
        per_query_frame(GOOD_RUN, QRELS, "AP")
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(__import__("sys").modules, module, None)
    with pytest.raises(MissingExtraError, match=r"retrievo\[plot\]"):
        result.plot(tmp_path / "x.png")
