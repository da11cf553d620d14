"""Stage kinds, the registry as data, checked spec strings and pipelines as values.

Each test here pins a defect of the first core: stages that return queries crashed the
pipeline, ``bm25 >> bm25`` silently retrieved again, stages registered on import (an
import cycle), specs could not take sub-pipelines or ``bm25+``, bad options gave raw
tracebacks, a BM25 stage could not be pickled after one search, specs omitted the index,
and every search changed numba's process-wide thread count.
"""

from __future__ import annotations

import multiprocessing
import pickle
import subprocess
import sys

import numpy as np
import pytest

from retrievo.data import PydocCorpus
from retrievo.errors import (ConfigError, PipelineCompositionError, PipelineSpecError, RetrievoError,
                             StageInputError)
from retrievo.index import InvertedIndex
from retrievo.pipeline import Reader, Reranker, Rewriter, charge, parse, spec_call
from retrievo.registry import REGISTRY, Option, Registry, StageEntry
from retrievo.retrieve import BM25
from retrievo.spec import parse_spec
from retrievo.types import Answers, Cost, Queries, Rankings, cost_summary, cost_table

QUERIES = Queries.of({"p1": "how do I catch an exception", "p2": "list comprehension syntax",
                      "p3": "yield keyword generator"})


@pytest.fixture(scope="module")
def index():
    return InvertedIndex.build(PydocCorpus().iter_documents())


@pytest.fixture(scope="module")
def disk_index(tmp_path_factory):
    return InvertedIndex.build(PydocCorpus().iter_documents(), tmp_path_factory.mktemp("spec") / "pydoc.idx")


def same(a: Rankings, b: Rankings) -> None:
    assert a.queries.ids == b.queries.ids
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(a.doc_ids, b.doc_ids)
    np.testing.assert_array_equal(a.scores, b.scores)


# -------------------------------------------------------------------- kinds and composition
class Append(Rewriter):
    """A text rewriter: appends a word to every query."""

    name = "append"

    def __init__(self, word="python"):
        self.word = word

    def transform(self, inp):
        q = inp if isinstance(inp, Queries) else inp.queries
        return q.with_texts([f"{t} {self.word}" for t in q.texts])


class Echo(Reader):
    """A reader: answers with the first document's id and cites it."""

    name = "echo"

    def transform(self, inp):
        charge(calls=len(inp), prompt_tokens=10 * len(inp), completion_tokens=2 * len(inp), forward_passes=1)
        firsts = [r.doc_ids[:1].tolist() for r in inp]
        return Answers.from_lists(inp.queries, [f[0] if f else "" for f in firsts], firsts, contexts=inp)


def test_a_stage_that_returns_queries_chains(index):
    p = BM25(index, k=10) >> Append() >> BM25(index, k=10)
    out = p(QUERIES)
    assert isinstance(out, Rankings) and out.queries.texts[0].endswith(" python")
    assert [c.stage for c in out.costs] == ["bm25", "append", "bm25"]


def test_a_reader_gives_answers_with_costs(index):
    answers = (BM25(index, k=3) >> Echo())(QUERIES)
    assert isinstance(answers, Answers) and len(answers) == 3
    first = answers["p1"]
    assert first.citations == (first.text,) and first.context is not None and len(first.context) == 3
    cost = answers.costs[-1]
    assert cost.stage == "echo" and cost.calls == 3 and cost.prompt_tokens == 30 and cost.forward_passes == 1
    summary = cost_summary(answers.costs)
    assert list(summary) == ["bm25", "echo"] and summary["echo"].completion_tokens == 6
    assert "prompt_tokens" in cost_table(answers.costs, per_query=3)


def test_incompatible_stages_fail_when_built_naming_both(index):
    with pytest.raises(PipelineCompositionError, match="echo.*bm25|bm25.*echo"):
        BM25(index) >> Echo() >> BM25(index)
    with pytest.raises(PipelineCompositionError):
        BM25(index) >> Echo() % 5
    with pytest.raises(PipelineCompositionError, match="rm3"):
        parse_spec("bm25 >> rm3 >> rm3")
    with pytest.raises(StageInputError, match="run a retriever first"):
        Echo()(QUERIES)
    with pytest.raises(StageInputError):
        BM25(index)(12345)


def test_a_retriever_after_a_ranking_scores_only_the_candidates(index):
    first = BM25(index, k=50)(QUERIES)
    again = (BM25(index, k=50) >> BM25(index))(QUERIES)
    same(again, first)  # same candidates, same (exact) scores, same order: no fresh retrieval
    other = (BM25(index, k=20) >> BM25(index, method="bm25l"))(QUERIES)
    full = BM25(index, method="bm25l")(QUERIES)
    for r, f in zip(other, full):
        assert set(r.doc_ids.tolist()) == set(first[r.qid].doc_ids[:20].tolist())  # candidates kept
        scores = dict(f)
        for d, s in r:
            assert s == pytest.approx(scores.get(d, 0.0), rel=1e-6)


def test_weighted_terms_score_as_boosted_term_queries(index):
    plain = BM25(index, k=20)(QUERIES[:1])
    terms = dict(__import__("collections").Counter(index.analyzer(QUERIES.texts[0])))
    same(BM25(index, k=20)(QUERIES[:1].with_terms([terms])), plain)
    boosted = BM25(index, k=20)(QUERIES[:1].with_terms([{t: 2.0 * w for t, w in terms.items()}]))
    np.testing.assert_allclose(boosted.scores, 2 * plain.scores, rtol=1e-6)


# -------------------------------------------------------------------- registry as data
def test_importing_the_core_imports_no_method():
    code = ("import sys, retrievo.pipeline, retrievo.spec, retrievo.registry;"
            "from retrievo.spec import parse_spec; parse_spec('bm25 % 10 >> rm3 >> bm25(method=bm25+)');"
            "from retrievo.registry import REGISTRY; [e.options for e in REGISTRY];"
            "bad = [m for m in sys.modules if m.startswith(('retrievo.retrieve', 'retrievo.rewrite', 'numba', 'torch'))];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_pipelines_listing_imports_no_method():
    code = ("import sys; from typer.testing import CliRunner; from retrievo.cli.main import app;"
            "out = CliRunner().invoke(app, ['pipelines']); assert out.exit_code == 0, out.output;"
            "assert 'k1' in out.output and 'fb_terms' in out.output and 'demo_reciprocal' not in sys.modules;"
            "bad = [m for m in sys.modules if m.startswith(('retrievo.retrieve', 'retrievo.rewrite', 'numba', 'torch'))];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bm25_methods_in_the_registry_match_the_retriever():
    from retrievo.retrieve.bm25 import METHODS

    assert REGISTRY.entry("bm25").option("method").choices == METHODS


# -------------------------------------------------------------------- richer specs
def _loop_registry():
    reg = Registry()

    class Loop(Reranker):
        """Runs a sub-pipeline `rounds` times on the queries, keeping the last ranking."""

        name = "loop"

        def __init__(self, inner, rounds):
            self.inner, self.rounds = inner, rounds

        def transform(self, inp):
            out, costs = inp, []
            for _ in range(self.rounds):
                out = self.inner(inp.queries)
                costs.extend(out.costs)  # every round's records, not only the last one's
            return out.with_costs(costs)

        def spec(self, resources=True):
            return spec_call("loop", {"inner": self.inner.spec(resources), "rounds": self.rounds}).replace(
                f"'{self.inner.spec(resources)}'", self.inner.spec(resources))

    reg.add(StageEntry("loop", lambda ctx, inner, rounds=1: Loop(inner, rounds), "test", "reranker",
                       (Option("inner", "pipeline"), Option("rounds", "int", 1, min=1))))
    reg.add(StageEntry("bm25", BM25.from_options, "", "retriever", REGISTRY.entry("bm25").options,
                       takes=("queries", "rankings")))
    return reg


def test_options_may_be_sub_pipelines(index):
    reg = _loop_registry()
    p = parse("bm25 % 5 >> loop(bm25(method=bm25+) % 3, rounds=2)", {"index": index}, reg)
    out = p(QUERIES)
    assert out.lengths.tolist() == [3, 3, 3]
    assert [c.stage for c in out.costs].count("bm25") == 3  # the outer one and two inner rounds
    inner = p.stages[-1].inner
    assert inner.spec(resources=False) == "bm25(method='bm25+') % 3"
    # a positional sub-pipeline fills the pipeline option
    q = parse("bm25 % 5 >> loop(bm25 % 2)", {"index": index}, reg)
    assert q(QUERIES).lengths.tolist() == [2, 2, 2]
    with pytest.raises(PipelineSpecError, match="rounds"):
        parse("loop(bm25, rounds=zero)", {"index": index}, reg)


def test_values_are_tokens_a_user_types(index, disk_index):
    assert parse("bm25(method=bm25+)", {"index": index}).method == "bm25+"
    assert parse("bm25(method='bm25+', k1=1.2, b=.75)", {"index": index}).params.b == 0.75
    stage = parse(f"bm25(index={disk_index.path}, k1=1.1)")  # a bare path
    assert stage.index.path == disk_index.path and stage.k1 == 1.1


@pytest.mark.parametrize("spec, message", [
    ("bm25(k=1.2)", "whole number"),
    ("bm25(k1=abc)", "takes a number"),
    ("bm25 % 0", ">= 1"),
    ("bm25 % x", "whole number"),
    ("bm25(k1=-1)", ">= 0"),
    ("bm25(b=2)", "<= 1"),
    ("bm25(kk=3)", "did you mean 'k'"),
    ("bm26", "did you mean 'bm25'"),
    ("bm25(method=bm25x)", "one of lucene"),
    ("bm25(index='/no/such/index')", "no index at"),
    ("bm25(bm25)", "positional"),
    ("rrf(bm25)", "two or more"),
    ("rrf(bm25, bm25, weights=a/b)", "numbers"),
    ("bm25(k1=1, k1=2)", "given twice"),
    ("bm25 >>", "expected a stage name"),
    ("(bm25", "expected '\\)'"),
    ("bm25(k1='1.2)", "unterminated"),
    ("", "empty"),
])
def test_bad_specs_are_typed_errors_before_anything_is_built(spec, message, monkeypatch):
    import retrievo.registry as registry

    def fail(*a, **k):  # nothing may be imported or built while checking
        raise AssertionError("a stage factory was loaded while checking a spec")

    monkeypatch.setattr(registry.StageEntry, "factory", fail)
    with pytest.raises(PipelineSpecError, match=message):
        parse_spec(spec)


def test_bad_values_for_built_stages_are_typed(index):
    with pytest.raises(ConfigError):
        BM25(index, k1=-1.0)
    with pytest.raises(PipelineSpecError):
        BM25(index) % 0
    with pytest.raises(ConfigError, match="needs an index"):
        parse("bm25")


# -------------------------------------------------------------------- pipelines as values
def test_specs_name_their_index_and_rebuild(disk_index):
    p = parse("bm25(k1=1.2) % 10 >> bm25(method=bm25l)", {"index": disk_index})
    assert f"index='{disk_index.path}'" in str(p)
    assert p.spec(resources=False) == "bm25(k1=1.2) % 10 >> bm25(method='bm25l')"
    again = parse(str(p))  # no context needed: the spec names the index
    assert str(again) == str(p)
    same(again(QUERIES), p(QUERIES))
    # both stages share one opened index (the per-process resource cache)
    assert again.stages[0].index is again.stages[1].index


def test_bm25_pickles_after_a_search(index, disk_index):
    for idx in (index, disk_index):
        stage = BM25(idx, k=10)
        first = stage(QUERIES)
        clone = pickle.loads(pickle.dumps(stage))
        same(clone(QUERIES), first)
        del clone
        import gc

        gc.collect()
        same(parse(str(stage))(QUERIES), first)  # the name still resolves once the clone is gone


def _run_spec_in_worker(payload: bytes) -> bytes:
    stage, queries = pickle.loads(payload)
    return pickle.dumps(stage(queries))


def test_pipelines_pickle_into_a_spawned_worker(index, disk_index):
    ctx = multiprocessing.get_context("spawn")
    pipelines = [parse("rrf(bm25 % 20, bm25(method=bm25l) % 20) % 10", {"index": disk_index}),
                 BM25(index, k=15) >> BM25(index, method="atire")]  # an in-memory index travels by value
    with ctx.Pool(1) as pool:
        for p in pipelines:
            local = p(QUERIES)
            remote = pickle.loads(pool.apply(_run_spec_in_worker, (pickle.dumps((p, QUERIES)),)))
            same(remote, local)


def test_no_process_wide_thread_setting_changes(index):
    import numba

    before = numba.get_num_threads()
    BM25(index, threads=1)(QUERIES)
    BM25(index, threads=2)(QUERIES)
    assert numba.get_num_threads() == before


def test_memory_names_do_not_travel_as_text(index):
    spec = str(BM25(index))
    code = f"from retrievo.pipeline import parse; parse({spec!r})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0 and "in-memory" in out.stderr and "save the index" in out.stderr


def test_costs_are_summed_per_stage():
    costs = [Cost("bm25", 1.0, 3), Cost("rerank", 2.0, 3, calls=3, prompt_tokens=300), Cost("bm25", 0.5, 3)]
    summary = cost_summary(costs)
    assert summary["bm25"].seconds == 1.5 and summary["bm25"].queries == 6
    assert summary["rerank"].prompt_tokens == 300
    assert pickle.loads(pickle.dumps(costs)) == costs


def test_every_retrievo_error_is_catchable_as_one_type():
    for exc in (PipelineSpecError, PipelineCompositionError, StageInputError, ConfigError):
        assert issubclass(exc, RetrievoError)


def test_workflows_check_the_spec_before_reading_or_indexing(shared_data, monkeypatch, disk_index):
    from retrievo import workflows

    def no_indexing(*a, **k):
        raise AssertionError("indexed although the spec is wrong / names its own index")

    monkeypatch.setattr(workflows, "build_index", no_indexing)
    for bad in ("bm25(k1=abc)", "bm25 % 0", "bm25(method=bm25x)"):
        with pytest.raises(PipelineSpecError):
            workflows.evaluate_pipeline(shared_data / "scifact", bad)
        with pytest.raises(PipelineSpecError):
            workflows.compare_pipelines(shared_data / "scifact", ["bm25", bad])
    # a spec that names its index never indexes the data; the pydoc index holds none of the
    # judged scifact documents, so the evaluation refuses it rather than report nDCG 0
    from retrievo.errors import EvaluationError

    with pytest.raises(EvaluationError, match="another collection"):
        workflows.evaluate_pipeline(shared_data / "scifact", f"bm25(index='{disk_index.path}') % 10",
                                    metrics=["nDCG@10"])


def test_reports_sum_costs_per_stage(shared_data):
    from typer.testing import CliRunner

    from retrievo import workflows
    from retrievo.cli.main import app

    report = workflows.evaluate_pipeline(shared_data / "scifact", "bm25 % 100 >> bm25(method=bm25l)",
                                         metrics=["nDCG@10"])
    assert list(report.costs) == ["bm25"] and report.costs["bm25"].queries == 2 * report.num_queries
    result = workflows.compare_pipelines(shared_data / "scifact", ["bm25", "bm25 % 50 >> bm25(k1=1.2)"],
                                         metrics=["nDCG@10"])
    assert "| bm25 |" in result.cost_markdown() and result.costs("bm25")["bm25"].queries == 300
    assert result.to_json()["systems"][1]["costs"][0]["stage"] == "bm25"
    out = CliRunner().invoke(app, ["eval", str(shared_data / "scifact"), "-m", "nDCG@10"])
    assert out.exit_code == 0 and "cost per stage:" in out.stdout and "ms/query" in out.stdout


def test_protocols_record_rebuildable_specs(index, disk_index):
    on_disk = parse("bm25 % 10", {"index": disk_index})
    assert on_disk.record_spec() == str(on_disk) and "index=" in on_disk.record_spec()
    in_memory = BM25(index, k=10)
    assert in_memory.record_spec() == "bm25 % 10"  # a memory name would mean nothing elsewhere


def test_cli_reports_spec_errors_before_indexing(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from retrievo import workflows
    from retrievo.cli.main import app

    (tmp_path / "a.txt").write_text("cats sleep all day")
    monkeypatch.setattr(workflows, "build_index", lambda *a, **k: pytest.fail("indexed before checking the spec"))
    for cmd in (["search", str(tmp_path), "cats", "-p", "bm25(k1=abc)"], ["demo", str(tmp_path), "-p", "bm25 % 0"]):
        out = CliRunner().invoke(app, cmd)
        assert out.exit_code == 2 and "error:" in out.output and "Traceback" not in out.output


def test_reprs_fit_on_a_screen(index):
    ranked = BM25(index, k=1000)(QUERIES)[0]
    text = repr(ranked)
    assert len(ranked) > 100 and len(text) < 120 and f"{len(ranked)} results" in text and text.endswith(
        f"… +{len(ranked) - 3})")
    assert len(repr(index)) < 120 and "InvertedIndex" in repr(index)
    assert repr(QUERIES).startswith("Queries(3: ")


def test_composites_report_the_models_of_their_parts(index):
    from retrievo.evaluate.protocol import stage_models

    class Scored(Reranker):
        name = "scored"
        models = ["org/model@abc123"]

        def transform(self, inp):
            return inp

    p = BM25(index, k=5) >> Scored() >> Scored()
    assert stage_models(p) == ["org/model@abc123"]
    assert stage_models(fuse_two := (BM25(index) + (BM25(index, k=5) >> Scored()))) == ["org/model@abc123"]
    assert stage_models(BM25(index)) == [] and fuse_two.rebuildable() is False


def test_the_lazy_default_index_reaches_factories_that_copy_the_context(index):
    from retrievo import workflows

    made = []

    def make():
        made.append(1)
        return index

    reg = Registry()
    reg.add(StageEntry("bm25", BM25.from_options, "", "retriever", REGISTRY.entry("bm25").options))
    reg.add(StageEntry("copying", lambda ctx: parse("bm25 % 5", dict(ctx), reg), "", "retriever", ()))
    ctx = workflows.LazyContext(make)
    assert "index" in ctx and not made  # listed, not built
    stage = parse("copying", ctx, reg)
    assert stage(QUERIES).lengths.tolist() == [5, 5, 5] and made == [1]
    named = workflows.LazyContext(lambda: pytest.fail("built although the spec names its index"))
    memory_name = list(BM25(index).resources())[0]
    assert parse(f"bm25(index='{memory_name}') % 5", named, reg).index is index


def test_pipelines_listing_of_one_stage_and_of_an_unknown_one():
    from typer.testing import CliRunner

    from retrievo.cli.main import app

    out = CliRunner().invoke(app, ["pipelines", "rm3"])
    assert out.exit_code == 0 and "fb_terms" in out.output and "bm25  [" not in out.output
    listing = CliRunner().invoke(app, ["pipelines", "--json"])
    assert {"bm25", "rm3", "rrf"} <= {e["name"] for e in __import__("json").loads(listing.output)}
    out = CliRunner().invoke(app, ["pipelines", "bm26"])
    assert out.exit_code == 2 and "did you mean 'bm25'" in out.output and "Traceback" not in out.output
