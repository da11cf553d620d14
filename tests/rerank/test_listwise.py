"""Listwise rerankers (RankGPT sliding window, FIRST, full ranking): the mechanics, with a
scripted backend whose answers are known, so no test depends on a model's quality.

One end-to-end run with the bundled SmolLM2 checks the real backend's plumbing (it skips,
saying why, where the local backend cannot be loaded)."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrievo.errors import ConfigError, ContextLengthError
from retrievo.index import InvertedIndex
from retrievo.llm.base import ScriptedLLM
from retrievo.pipeline import parse
from retrievo.rerank.first import FIRST, identifiers, order_by_logprobs
from retrievo.rerank.full import FullRanking
from retrievo.rerank.listwise import single_token_ids, sliding_windows
from retrievo.rerank.permutation import numeric_labels, parse_permutation
from retrievo.rerank.rankgpt import RankGPT
from retrievo.types import Document, Queries, Rankings

N = 10
DOCS = [Document(f"d{i}", f"passage number {i} rel{i % 7} " + "filler " * 3, title=f"t{i}") for i in range(N)]


@pytest.fixture(scope="module")
def index():
    return InvertedIndex.build(DOCS, workers=1)


def rankings(n: int = N, queries: int = 1) -> Rankings:
    qs = Queries.of({f"q{k}": f"query {k}" for k in range(queries)})
    ids = [f"d{i}" for i in range(n)]
    return Rankings.from_lists(qs, [(ids, np.arange(n, 0, -1, dtype=float)) for _ in range(queries)])


def window_ids(prompt: str) -> list[str]:
    """The identifiers of the passages in a prompt, in order (lines ``[id] text``)."""
    return re.findall(r"^\[(\w+)\] ", prompt, flags=re.M)


def reverse_generation(prompt: str) -> str:
    return " > ".join(f"[{i}]" for i in reversed(window_ids(prompt)))


def reverse_logprobs(prompt: str, candidates) -> list[float]:
    return [float(i) for i in range(len(candidates))]  # the last identifier is the likeliest


def doc_order(out: Rankings, q: int = 0) -> list[int]:
    return [int(d[1:]) for d in out[q].doc_ids]


def with_llm(stage, llm):
    stage._state["llm"] = llm
    return stage


# hand-computed: n=10, window=4, stride=2, every window reversed
#   windows [6,10) [4,8) [2,6) [0,4) (back to front)
#   0 1 2 3 4 5 6 7 8 9 -> 0 1 2 3 4 5 9 8 7 6 -> 0 1 2 3 8 9 5 4 7 6 -> 0 1 9 8 3 2 5 4 7 6 -> 8 9 1 0 3 2 5 4 7 6
REVERSED_10_4_2 = [8, 9, 1, 0, 3, 2, 5, 4, 7, 6]


# ------------------------------------------------------------------------ windows
def test_windows_move_from_the_back_to_the_front():
    assert sliding_windows(10, 4, 2) == [(6, 10), (4, 8), (2, 6), (0, 4)]
    assert sliding_windows(11, 4, 2) == [(7, 11), (5, 9), (3, 7), (1, 5), (0, 3)]  # the last one reaches the top
    assert sliding_windows(100, 20, 10)[0] == (80, 100) and sliding_windows(100, 20, 10)[-1] == (0, 20)
    assert len(sliding_windows(100, 20, 10)) == 9
    assert sliding_windows(5, 20, 10) == [(0, 5)]
    assert sliding_windows(0, 4, 2) == []
    for n in range(1, 40):
        for w in range(2, 8):
            for s in range(1, w + 1):
                ws = sliding_windows(n, w, s)
                assert ws[0][1] == n and ws[-1][0] == 0
                assert all(0 <= a < b <= n and b - a <= w for a, b in ws)
                covered = {i for a, b in ws for i in range(a, b)}
                assert covered == set(range(n))


def test_rankgpt_sliding_window_order_with_a_scripted_backend(index):
    llm = ScriptedLLM(generate_fn=reverse_generation)
    stage = with_llm(RankGPT(index=index, window=4, stride=2), llm)
    out = stage(rankings())
    assert doc_order(out) == REVERSED_10_4_2
    assert list(out[0].scores) == list(range(N, 0, -1))  # positions, best first
    # each prompt showed the window in the list's current order
    assert [len(window_ids(p)) for p in llm.prompts_seen] == [4, 4, 4, 4]
    cost = out.costs[-1]
    assert cost.stage == "rankgpt" and cost.calls == 4
    assert "repaired_permutations" not in cost.extra


def test_first_sliding_window_order_and_one_forward_pass_per_window(index):
    llm = ScriptedLLM(logprobs_fn=reverse_logprobs)
    stage = with_llm(FIRST(index=index, window=4, stride=2), llm)
    out = stage(rankings(queries=3))
    for q in range(3):
        assert doc_order(out, q) == REVERSED_10_4_2
    cost = out.costs[-1]
    assert cost.stage == "first"
    assert cost.forward_passes == 3 * len(sliding_windows(N, 4, 2)) == cost.calls
    assert cost.completion_tokens == 0  # nothing generated


def test_the_best_passage_travels_from_the_bottom_to_the_top(index):
    def by_relevance(prompt: str) -> str:  # a perfect judge: the passage text says how relevant it is
        lines = re.findall(r"^\[(\w+)\] t\d+: passage number (\d+)", prompt, flags=re.M)
        return " > ".join(f"[{i}]" for i, doc in sorted(lines, key=lambda x: -int(x[1])))

    stage = with_llm(RankGPT(index=index, window=4, stride=2), ScriptedLLM(generate_fn=by_relevance))
    order = doc_order(stage(rankings()))
    assert order[:2] == [9, 8]  # window - stride places per step: the top two reach the top


def test_queries_move_in_lock_step_in_one_batched_call_per_step(index):
    calls = []

    class Counting(ScriptedLLM):
        def _generate(self, prompts, params, top_logprobs):
            calls.append(len(prompts))
            return super()._generate(prompts, params, top_logprobs)

    stage = with_llm(RankGPT(index=index, window=4, stride=2), Counting(generate_fn=reverse_generation))
    out = stage(rankings(queries=3))
    assert calls == [3, 3, 3, 3]
    assert all(doc_order(out, q) == REVERSED_10_4_2 for q in range(3))


def test_lists_of_different_lengths_and_tiny_lists(index):
    qs = Queries.of({"a": "x", "b": "y", "c": "z", "e": "w"})
    lists = [([f"d{i}" for i in range(10)], np.ones(10)), ([f"d{i}" for i in range(3)], np.ones(3)),
             (["d4"], np.ones(1)), ([], np.ones(0))]
    inp = Rankings.from_lists(qs, lists)
    for stage in (RankGPT(index=index, window=4, stride=2), FIRST(index=index, window=4, stride=2)):
        with_llm(stage, ScriptedLLM(generate_fn=reverse_generation, logprobs_fn=reverse_logprobs))
        out = stage(inp)
        assert doc_order(out, 0) == REVERSED_10_4_2
        assert doc_order(out, 1) == [2, 1, 0]
        assert doc_order(out, 2) == [4]
        assert len(out[3].doc_ids) == 0


def test_order_list_for_one_query(index):
    stage = with_llm(RankGPT(index=index, window=4, stride=2), ScriptedLLM(generate_fn=reverse_generation))
    from retrievo.types import Query

    assert stage.order_list(Query("q", "x"), [d.doc_id for d in DOCS], [d.text for d in DOCS]) == REVERSED_10_4_2


# ------------------------------------------------------------------------ permutation repair
@pytest.mark.parametrize("text, expected", [
    ("[2] > [1] > [3]", [1, 0, 2]),
    ("[2]>[1]>[3]", [1, 0, 2]),
    ("2 > 1 > 3", [1, 0, 2]),
    ("The ranking is: [3] > [1] > [2]. Passage 3 is best.", [2, 0, 1]),
    ("I think 3 > 2 > 1 because", [2, 1, 0]),
    ("[2] > [2] > [1]", [1, 0, 2]),            # duplicate: the first place counts
    ("[7] > [3] > [0]", [2, 0, 1]),            # invalid ids dropped, missing appended in order
    ("[3]", [2, 0, 1]),
    ("", [0, 1, 2]),
    ("I cannot rank these passages.", [0, 1, 2]),
    ("[ 2 ] > [03] > [1]", [1, 2, 0]),
    ("3, 1, 2", [2, 0, 1]),
])
def test_permutation_parsing_and_repair_numeric(text, expected):
    assert list(parse_permutation(text, numeric_labels(3)).order) == expected


@pytest.mark.parametrize("text, expected", [
    ("[B] > [A] > [C]", [1, 0, 2]),
    ("B > A > C", [1, 0, 2]),
    ("[b] > [c]", [1, 2, 0]),                   # case-insensitive where unambiguous
    ("I think C > A", [2, 0, 1]),               # "I" is prose, not an identifier
    ("[Z] > [C] > [C]", [2, 0, 1]),
])
def test_permutation_parsing_letters(text, expected):
    assert list(parse_permutation(text, ["A", "B", "C"]).order) == expected


def test_repair_counts():
    p = parse_permutation("[2] > [2] > [9] > [x]", numeric_labels(4))
    assert p.order == (1, 0, 2, 3) and (p.duplicates, p.invalid, p.missing) == (1, 2, 3) and p.repaired
    clean = parse_permutation("[2] > [1]", numeric_labels(2))
    assert not clean.repaired


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("[]>0123456789ABCabc ,.\n\x00é") + ["[10]", "[2]", " > ", "[B]"]),
                max_size=40).map("".join) | st.text(max_size=60), st.integers(min_value=0, max_value=25), st.booleans())
def test_parsing_always_gives_a_permutation(text, n, letters):
    labels = [chr(65 + i) for i in range(n)] if letters else numeric_labels(n)
    p = parse_permutation(text, labels)
    assert sorted(p.order) == list(range(n))


def test_parsing_never_crashes_on_odd_values():
    for value in (None, 12, b"[1]", ["[1]"], "[" * 10_000, "]" * 500 + ">" * 500, "[99999999999999999999]"):
        assert sorted(parse_permutation(value, numeric_labels(4)).order) == [0, 1, 2, 3]


@pytest.mark.parametrize("answer", ["", "I cannot help with that.", "[99] > [1] > [1] > [0]", "[" * 300,
                                    "]]]>>>[[[", "\x00\x01", "passage one is best", "[-1] > [1.5] > [3e2]",
                                    "四 > 三", "[A] > [B]"])
def test_malformed_model_output_never_crashes_and_is_counted(index, answer):
    stage = with_llm(RankGPT(index=index, window=4, stride=2), ScriptedLLM(generate_fn=lambda p: answer))
    out = stage(rankings())
    assert sorted(doc_order(out)) == list(range(N))
    assert out.costs[-1].extra.get("repaired_permutations") == 4


# ------------------------------------------------------------------------ FIRST specifics
def test_first_ties_keep_the_incoming_order(index):
    stage = with_llm(FIRST(index=index, window=4, stride=2), ScriptedLLM(logprobs_fn=lambda p, c: [0.0] * len(c)))
    assert doc_order(stage(rankings())) == list(range(N))
    assert order_by_logprobs([0.0, -1.0, 0.0, -1.0]) == [0, 2, 1, 3]
    assert order_by_logprobs([-np.inf, np.nan, -2.0]) == [2, 0, 1]

    # partial ties inside a window: [-1, 0, 0, -1] -> positions 1, 2 (incoming order), then 0, 3
    stage = with_llm(FIRST(index=index, window=4, stride=4),
                     ScriptedLLM(logprobs_fn=lambda p, c: [-1.0, 0.0, 0.0, -1.0][:len(c)]))
    assert doc_order(stage(rankings(n=4))) == [1, 2, 0, 3]


class QwenLike(ScriptedLLM):
    """A tokenizer with [A]..[Z] as single tokens except [O] and [Q] (split as '[' 'O' ']')."""

    def first_token(self, text):
        if re.fullmatch(r"\[[OQ]\]", text) or text.startswith("[") and not re.fullmatch(r"\[\w\]", text):
            return "["
        return text


class SplitsBrackets(ScriptedLLM):
    """A tokenizer that splits '[A]' into '[' 'A' ']' (first token always '[')."""

    def first_token(self, text):
        return text[:1]


def test_first_identifiers_skip_collisions(index):
    stage = FIRST(index=index)
    qwen = single_token_ids(QwenLike(logprobs_fn=reverse_logprobs), stage.template, 20)
    assert "O" not in qwen.labels and "Q" not in qwen.labels and len(qwen.labels) == 20
    assert qwen.labels[:3] == ("A", "B", "C") and qwen.candidates[0] == "[A]" and qwen.prefix == ""
    split = single_token_ids(SplitsBrackets(logprobs_fn=reverse_logprobs), stage.template, 20)
    assert split.prefix == "[" and split.candidates[:2] == ("A", "B") and "O" in split.labels
    with pytest.raises(ConfigError, match="distinct first tokens"):
        single_token_ids(SplitsBrackets(logprobs_fn=reverse_logprobs), stage.template, 100)


@pytest.mark.parametrize("backend", [QwenLike, SplitsBrackets])
def test_first_prompt_and_candidates_follow_the_tokenizer(index, backend):
    seen = []

    def logprobs(prompt, candidates):
        seen.append((prompt, list(candidates)))
        return reverse_logprobs(prompt, candidates)

    stage = with_llm(FIRST(index=index, window=4, stride=2), backend(logprobs_fn=logprobs))
    assert doc_order(stage(rankings())) == REVERSED_10_4_2
    prompt, cands = seen[0]
    assert window_ids(prompt) == ["A", "B", "C", "D"]
    if backend is SplitsBrackets:
        assert prompt.endswith("\n[") and cands == ["A", "B", "C", "D"]  # the reply is forced to open '['
    else:
        assert cands == ["[A]", "[B]", "[C]", "[D]"]


# ------------------------------------------------------------------------ context budgets
LONG = [Document(f"L{i}", " ".join(f"w{i}x{j}" for j in range(200))) for i in range(12)]


@pytest.fixture(scope="module")
def long_index():
    return InvertedIndex.build(LONG, workers=1)


def long_rankings(n=12):
    return Rankings.from_lists(Queries.of({"q": "find it"}), [([f"L{i}" for i in range(n)], np.ones(n))])


@pytest.mark.parametrize("make", [
    lambda idx: FullRanking(index=idx),
    lambda idx: FullRanking(index=idx, mode="first"),
    lambda idx: RankGPT(index=idx, window=12, stride=6),
    lambda idx: FIRST(index=idx, window=12, stride=6),
])
def test_a_prompt_too_long_is_shortened_and_keeps_every_candidate(long_index, make):
    llm = ScriptedLLM(generate_fn=reverse_generation, logprobs_fn=reverse_logprobs, context_length=600)
    stage = with_llm(make(long_index), llm)
    out = stage(long_rankings())
    prompt = llm.prompts_seen[0]
    assert len(window_ids(prompt)) == 12  # every candidate in the prompt
    assert all(f"w{i}x0" in prompt for i in range(12))  # each passage's beginning kept
    assert llm.prompt_tokens(prompt) < 600
    assert 12 * 128 > llm.prompt_tokens(prompt) > 300  # shortened, but not more than needed
    assert out.costs[-1].extra.get("shortened_prompts") == 1
    assert sorted(doc_order_l(out)) == list(range(12))


def doc_order_l(out):
    return [int(d[1:]) for d in out[0].doc_ids]


def test_generation_budget_is_reserved_for_the_whole_permutation(long_index):
    seen = []

    class Recording(ScriptedLLM):
        def _generate(self, prompts, params, top_logprobs):
            seen.append(params.max_tokens)
            return super()._generate(prompts, params, top_logprobs)

    llm = Recording(generate_fn=reverse_generation, context_length=600)
    with_llm(FullRanking(index=long_index), llm)(long_rankings())
    # "[1] > [2] > ... > [12]" is 23 words for this backend, plus the margin
    assert seen[0] >= 23
    assert llm.prompt_tokens(llm.prompts_seen[0]) + seen[0] <= 600


def test_context_too_small_even_for_one_token_passages_is_a_typed_error(long_index):
    llm = ScriptedLLM(generate_fn=reverse_generation, context_length=40)
    with pytest.raises(ContextLengthError, match="one token per passage"):
        with_llm(FullRanking(index=long_index), llm)(long_rankings())


def test_full_ranking_is_one_window_per_query(index):
    llm = ScriptedLLM(generate_fn=reverse_generation, logprobs_fn=reverse_logprobs)
    for mode in ("generate", "first"):
        stage = with_llm(FullRanking(index=index, mode=mode), llm)
        out = stage(rankings(queries=2))
        assert doc_order(out, 0) == list(range(N - 1, -1, -1)) == doc_order(out, 1)
        assert out.costs[-1].calls == 2
    assert FullRanking(index=index, mode="first").template.name == "first"


# ------------------------------------------------------------------------ options and specs
def test_option_errors_are_typed(index, tmp_path):
    with pytest.raises(ConfigError, match="stride"):
        RankGPT(index=index, window=4, stride=5)
    with pytest.raises(ConfigError, match="window"):
        FIRST(index=index, window=1)
    with pytest.raises(ConfigError, match="stride"):
        FIRST(index=index, stride=0)
    with pytest.raises(ConfigError, match="mode"):
        FullRanking(index=index, mode="pairwise")
    with pytest.raises(ConfigError, match="no prompt template"):
        RankGPT(index=index, prompt="nope")
    bad = tmp_path / "bad.toml"
    bad.write_text("user = 'Rank {passages}'\n")
    with pytest.raises(ConfigError, match="num, query|query"):
        RankGPT(index=index, prompt=str(bad))
    with pytest.raises(ConfigError, match="max_passage_tokens"):
        RankGPT(index=index, max_passage_tokens=0)


def test_a_user_template_is_used(index, tmp_path):
    custom = tmp_path / "mine.toml"
    custom.write_text("user = '''Q={query} N={num}\n{passages}\nOrder them.'''\n[defaults]\n"
                      "passage_line = '<{id}> {passage}'\n")
    llm = ScriptedLLM(generate_fn=lambda p: " > ".join(reversed(re.findall(r"^<(\d+)>", p, flags=re.M))))
    stage = with_llm(RankGPT(index=index, window=4, stride=2, prompt=str(custom)), llm)
    assert doc_order(stage(rankings())) == REVERSED_10_4_2
    assert llm.prompts_seen[0].startswith("Q=query 0 N=4\n<1> ")


@pytest.mark.parametrize("spec", ["rankgpt(window=4, stride=2, max_passage_tokens=64)", "rankgpt",
                                  "first(window=8, stride=4, prompt=rankgpt)", "first", "full(mode=first)",
                                  "full"])
def test_specs_rebuild(index, spec):
    stage = parse(spec, {"index": index})
    again = parse(str(stage))
    assert str(again) == str(stage) and type(again) is type(stage)
    for field in ("window", "stride", "prompt", "mode", "max_passage_tokens"):
        assert getattr(again, field, None) == getattr(stage, field, None)


# ------------------------------------------------------------------------ the real model
@pytest.fixture(scope="module")
def smollm2():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from retrievo.llm.load import load_llm
    except ImportError as exc:
        pytest.skip(f"retrievo.llm.load is not available yet ({exc})")
    try:
        return load_llm("smollm2")
    except Exception as exc:  # noqa: BLE001 - missing optional dependency or package: say which
        pytest.skip(f"SmolLM2 cannot be loaded here: {type(exc).__name__}: {exc}")


@pytest.mark.slow
def test_end_to_end_with_smollm2(index, smollm2):
    inp = rankings(n=6, queries=1)
    for stage, passes in ((FIRST(index=index, window=4, stride=2), 2),
                          (FullRanking(index=index, mode="first"), 1),
                          (RankGPT(index=index, window=4, stride=2, max_passage_tokens=32), None)):
        with_llm(stage, smollm2)
        out = stage(inp)
        assert sorted(doc_order(out)) == list(range(6))
        cost = out.costs[-1]
        assert cost.calls >= 1 and cost.prompt_tokens > 0
        if passes is not None:
            assert cost.forward_passes == passes and cost.completion_tokens == 0
        else:
            assert cost.calls == 2 and cost.completion_tokens > 0
    # SmolLM2's tokenizer splits '[A]' into '[' 'A' ']': FIRST forces the '[' and scores the bare letters
    ids = identifiers(with_llm(FIRST(index=index), smollm2), 20)
    assert ids.prefix == "[" and ids.candidates[:3] == ("A", "B", "C") and len(set(ids.candidates)) == 20
