"""Readers and RAG methods: the mechanics, with scripted backends whose replies are known,
so no test depends on a model's quality (one short end-to-end run with the bundled
SmolLM2 checks the real backend's plumbing, streaming included).

What must hold whatever the model writes: citations only ever name documents the reader
was given; Iter-RetGen retrieves exactly ``rounds`` times; gating that rejects everything
answers closed-book; bad input is a typed error or a documented fallback."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from retrievo.errors import ConfigError, ContextLengthError, EmptyQueryError, LLMError, LLMServerError
from retrievo.index import InvertedIndex
from retrievo.llm.base import Completion, ScriptedLLM
from retrievo.pipeline import Reranker, Retriever, parse
from retrievo.rag.alr2 import ALR2, parse_sentence_ids, sentences
from retrievo.rag.base import build_context, clean_answer, parse_citations, reorder
from retrievo.rag.closed_book import ClosedBook
from retrievo.rag.iter_retgen import IterRetGen
from retrievo.rag.read import Read
from retrievo.rag.rear import REAR
from retrievo.rag.self_ask import SelfAsk, forced_step, parse_step
from retrievo.rag.utility import UtilityFilter, parse_selection
from retrievo.rewrite.hyde import HyDE
from retrievo.rewrite.query2doc import Query2Doc
from retrievo.rewrite.think import Think
from retrievo.types import Document, Queries, Rankings

DOCS = [
    Document("d0", "Paris is the capital of France. It lies on the Seine.", title="Paris"),
    Document("d1", "Berlin is the capital of Germany. It lies on the Spree.", title="Berlin"),
    Document("d2", "Madrid is the capital of Spain.", title="Madrid"),
    Document("d3", "Paris is the capital of France. It lies on the Seine.", title="Paris"),  # duplicate text of d0
    Document("d4", "Rome is the capital of Italy. " * 200, title="Rome"),  # far longer than any context here
    Document("d5", "The Seine flows through Paris into the English Channel.", title="Seine"),
]


@pytest.fixture(scope="module")
def index():
    return InvertedIndex.build(DOCS, workers=1)


def rankings(ids, queries=None) -> Rankings:
    qs = queries or Queries.of({"q1": "What is the capital of France?"})
    return Rankings.from_lists(qs, [(list(ids), np.arange(len(ids), 0, -1, dtype=float)) for _ in qs])


def scripted(reply, **kw) -> ScriptedLLM:
    fn = reply if callable(reply) else (lambda _p: reply)
    return ScriptedLLM(generate_fn=fn, **kw)


def with_llm(stage, llm):
    stage._state["llm"] = llm
    return stage


def cost_of(out, name):
    return next(c for c in out.costs if c.stage == name)


def shown_markers(prompt: str) -> dict[int, str]:
    """Marker -> first words of the passage line, from a read prompt."""
    return {int(n): t for n, t in re.findall(r"^\[(\d+)\] (.*)$", prompt, flags=re.M)}


# ------------------------------------------------------------------------------ context building
def test_reorder_rank_reversed_and_lost_in_the_middle():
    items = [1, 2, 3, 4, 5, 6]
    assert reorder(items, "rank") == [1, 2, 3, 4, 5, 6]
    assert reorder(items, "reversed") == [6, 5, 4, 3, 2, 1]
    # best at both ends, the weakest in the middle
    assert reorder(items, "lost_in_the_middle") == [1, 3, 5, 6, 4, 2]
    assert reorder([1, 2, 3, 4, 5], "lost_in_the_middle") == [1, 3, 5, 4, 2]
    with pytest.raises(ConfigError):
        reorder(items, "random")


def test_context_dedupes_truncates_budgets_and_numbers_in_presentation_order():
    llm = scripted("x")
    texts = ["alpha beta gamma", "delta epsilon", "alpha  beta GAMMA", "one two three four five six", "z"]
    got = build_context(["a", "b", "c", "d", "e"], texts, [5, 4, 3, 2, 1], llm=llm, k=10, max_passage_tokens=4,
                        budget=100, order="rank")
    assert [p.doc_id for p in got] == ["a", "b", "d", "e"]  # c repeats a's text (case and spaces aside)
    assert got[2].text == "one two three four"  # truncated to 4 tokens
    assert [p.n for p in got] == [1, 2, 3, 4]
    # budget: each line costs marker + text + newline tokens; only what fits is kept
    few = build_context(["a", "b", "d"], ["w1 w2", "w3 w4", "w5 w6"], [3, 2, 1], llm=llm, k=10,
                        max_passage_tokens=10, budget=8, order="rank")
    assert [p.doc_id for p in few] == ["a", "b"]
    rev = build_context(["a", "b", "d"], ["w1", "w2", "w3"], [3, 2, 1], llm=llm, k=3, max_passage_tokens=10,
                        budget=100, order="reversed")
    assert [(p.n, p.doc_id, p.rank) for p in rev] == [(1, "d", 2), (2, "b", 1), (3, "a", 0)]


def test_a_first_passage_longer_than_the_budget_is_cut_to_fit_not_dropped():
    llm = scripted("x")
    got = build_context(["a"], ["word " * 500], [1.0], llm=llm, k=3, max_passage_tokens=1000, budget=20,
                        order="rank")
    assert len(got) == 1 and llm.count_tokens("[1] " + got[0].text) + 1 <= 20
    with pytest.raises(ContextLengthError):
        build_context(["a"], ["w"], [1.0], llm=llm, k=3, max_passage_tokens=10, budget=0, order="rank")


def test_citations_map_markers_to_shown_ids_and_drop_the_rest():
    llm = scripted("x")
    shown = build_context(["x7", "x9"], ["a b", "c d"], [2, 1], llm=llm, k=5, max_passage_tokens=5, budget=50,
                          order="reversed")  # [1] is x9, [2] is x7
    cited, invalid = parse_citations("It is Paris [2][1, 3] and [0] or [2].", shown)
    assert cited == ["x7", "x9"] and invalid == 2
    assert clean_answer("Answer: Paris [1].\nmore text") == "Paris"
    assert clean_answer(' "The Seine" [2]') == "The Seine"


# ------------------------------------------------------------------------------ read
def test_read_answers_with_citations_of_input_ids_only(index):
    seen = []

    def reply(prompt):
        seen.append(prompt)
        return " Paris [1] [4] [17]"

    out = with_llm(Read(index=index, k=3), scripted(reply))(rankings(["d0", "d1", "d2", "d5"]))
    a = out[0]
    assert a.text == "Paris"
    assert a.citations == ("d0",)  # [4] was not shown (k=3), [17] never existed
    assert cost_of(out, "read").extra["invalid_citations"] == 2
    assert cost_of(out, "read").calls == 1
    assert list(out.contexts[0].doc_ids) == ["d0", "d1", "d2", "d5"]  # the list the reader received
    markers = shown_markers(seen[0])
    assert len(markers) == 3 and markers[1].startswith("Paris")


def test_no_invented_ids_whatever_the_model_writes(index):
    """Property: random replies full of bracketed numbers never cite an id outside the input."""
    rng = random.Random(7)
    for trial in range(40):
        ids = rng.sample([d.doc_id for d in DOCS], rng.randint(1, 5))
        reply = " ".join(rng.choice(["x", f"[{rng.randint(-2, 12)}]", f"[{rng.randint(0, 9)}, {rng.randint(0, 9)}]",
                                     "[]", "[a]"]) for _ in range(12))
        reader = with_llm(Read(index=index, k=rng.randint(1, 5), order=rng.choice(["rank", "reversed",
                                                                                      "lost_in_the_middle"])),
                          scripted(reply))
        out = reader(rankings(ids))
        assert set(out[0].citations) <= set(ids), (trial, reply, ids, out[0].citations)


def test_order_changes_presentation_but_citations_still_map(index):
    prompts = []

    def reply(prompt):
        prompts.append(prompt)
        return "Paris [1]"

    out = with_llm(Read(index=index, k=3, order="reversed"), scripted(reply))(rankings(["d0", "d1", "d2"]))
    assert shown_markers(prompts[0])[1].startswith("Madrid")  # best last: [1] is the third-ranked passage
    assert out[0].citations == ("d2",)


def test_abstaining_and_turning_it_off(index):
    prompts = []

    def reply(prompt):
        prompts.append(prompt)
        return "Insufficient evidence. [1]"

    out = with_llm(Read(index=index), scripted(reply))(rankings(["d1"]))
    assert out[0].text == "insufficient evidence" and out[0].citations == ()
    assert "reply exactly: insufficient evidence" in prompts[0]
    custom = with_llm(Read(index=index, abstain="unknown"), scripted("unknown"))(rankings(["d1"]))
    assert custom[0].text == "unknown"
    never = with_llm(Read(index=index, abstain="", on_empty="closed_book"), scripted(reply))(rankings(["d1"]))
    assert "reply exactly" not in prompts[-1]
    assert never[0].text == "Insufficient evidence"  # an ordinary answer when abstaining is off
    with pytest.raises(ConfigError):
        Read(index=index, abstain="")  # on_empty=abstain needs a text


def test_no_passages_abstain_without_a_call_or_answer_closed_book(index):
    llm = scripted("Paris")
    out = with_llm(Read(index=index), llm)(rankings([]))
    assert out[0].text == "insufficient evidence" and cost_of(out, "read").calls == 0
    assert cost_of(out, "read").extra["empty_contexts"] == 1
    closed = with_llm(Read(index=index, on_empty="closed_book"), llm)(rankings([]))
    assert closed[0].text == "Paris" and closed[0].citations == ()
    assert "Passages" not in llm.prompts_seen[-1]


def test_empty_question_is_a_typed_error(index):
    with pytest.raises(EmptyQueryError):
        with_llm(Read(index=index), scripted("x"))(rankings(["d0"], Queries.of({"q1": "   "})))
    with pytest.raises(EmptyQueryError):
        with_llm(ClosedBook(), scripted("x"))(Queries.of({"q1": ""}))


def test_passages_longer_than_the_context_are_truncated_to_fit(index):
    llm = scripted("Rome [1]", context_length=120)
    prompts = []
    llm.generate_fn = lambda p: prompts.append(p) or "Rome [1]"
    out = with_llm(Read(index=index, k=3, max_passage_tokens=5000, context_tokens=5000, max_tokens=16), llm)(
        rankings(["d4", "d0"]))
    assert out[0].citations == ("d4",)
    assert llm.count_tokens(prompts[0]) + 16 <= 120
    # a question that alone fills the context leaves no room: a typed error, not a silent empty prompt
    long_q = Queries.of({"q1": "why " * 200})
    with pytest.raises(ContextLengthError):
        with_llm(Read(index=index, max_tokens=16), scripted("x", context_length=120))(rankings(["d0"], long_q))


def test_llm_errors_raise_or_abstain_as_configured(index):
    def broken(_prompt):
        raise LLMServerError("connection refused")

    with pytest.raises(LLMError):
        with_llm(Read(index=index), scripted(broken))(rankings(["d0"]))
    out = with_llm(Read(index=index, on_error="abstain"), scripted(broken))(rankings(["d0"]))
    assert out[0].text == "insufficient evidence" and out[0].citations == ()
    assert cost_of(out, "read").extra["llm_errors"] == 1


def test_read_needs_an_index_with_text():
    with pytest.raises(ConfigError):
        with_llm(Read(index=None), scripted("x"))(rankings(["d0"]))


# ------------------------------------------------------------------------------ streaming
class PieceLLM(ScriptedLLM):
    """A backend that streams word by word (as the transformers backend streams tokens)."""

    def _stream(self, prompt, params, holder):
        text = self.generate_fn(self.text_of(prompt))
        for piece in re.findall(r"\S+\s*|\s+", text):
            yield piece
        holder.append(Completion(text, self.count_tokens(self.text_of(prompt)), len(text.split())))


def test_streaming_yields_pieces_then_the_parsed_answer(index):
    llm = PieceLLM(generate_fn=lambda p: " Paris [1] is it")
    stream = with_llm(Read(index=index), llm).stream_answer("capital of France?", ["d0", "d1"])
    pieces = list(stream)
    assert len(pieces) > 1 and "".join(pieces) == " Paris [1] is it"
    assert stream.reading.citations == ["d0"] and stream.sources == [(1, "d0")]
    # a backend without streaming yields the whole reply once; same answer
    whole = with_llm(Read(index=index), scripted(" Paris [1] is it")).stream_answer("capital?", ["d0"])
    assert list(whole) == [" Paris [1] is it"] and whole.reading.text == "Paris [1] is it".replace(" [1]", "")
    # no passages: the abstain text, no call
    empty = with_llm(Read(index=index), scripted("x")).stream_answer("capital?", [])
    assert list(empty) == ["insufficient evidence"]


def test_llm_stream_charges_when_exhausted_and_uses_the_cache(tmp_path):
    from retrievo.llm.cache import ResponseCache
    from retrievo.pipeline import _METER, _Meter

    llm = PieceLLM(generate_fn=lambda p: "a b c")
    llm.cache = ResponseCache(tmp_path / "c.sqlite")
    meter = _Meter()
    token = _METER.set(meter)
    try:
        assert "".join(llm.stream("q")) == "a b c"
        assert meter.calls == 1 and meter.completion_tokens == 3
        assert list(llm.stream("q")) == ["a b c"]  # cached: one piece, no new call
        assert meter.calls == 1 and meter.extra["cache_hits"] == 1
    finally:
        _METER.reset(token)


# ------------------------------------------------------------------------------ closed book
def test_closed_book_reads_no_passage(index):
    llm = scripted("Answer: Paris.")
    out = with_llm(ClosedBook(), llm)(rankings(["d0", "d1"]))
    assert out[0].text == "Paris" and out[0].citations == () and out.contexts is None
    assert "Passages" not in llm.prompts_seen[0]


# ------------------------------------------------------------------------------ Iter-RetGen
class Recorder(Retriever):
    """A retriever that records each batch of query texts it gets and ranks fixed docs."""

    name = "recorder"

    def __init__(self, docs):
        self.docs, self.batches = docs, []

    def transform(self, inp):
        self.batches.append(list(inp.texts))
        return Rankings.from_lists(inp, [(self.docs, [2.0, 1.0][: len(self.docs)]) for _ in inp])


@pytest.mark.parametrize("rounds", [1, 2, 3, 5])
def test_iter_retgen_retrieves_exactly_k_rounds_with_the_previous_answer(index, rounds):
    rec = Recorder(["d0", "d5"])
    answers = iter(f"answer{i} [1]" for i in range(1, 100))
    llm = scripted(lambda p: next(answers))
    qs = Queries.of({"q1": "capital of France?", "q2": "river of Paris?"})
    out = with_llm(IterRetGen(index=index, retriever=rec, rounds=rounds), llm)(qs)
    assert len(rec.batches) == rounds
    assert cost_of(out, "iter_retgen").extra["retrieval_rounds"] == 2 * rounds
    assert cost_of(out, "iter_retgen").calls == 2 * rounds
    assert rec.batches[0] == ["capital of France?", "river of Paris?"]
    for r in range(1, rounds):  # round r retrieves with the question + round r-1's answer
        assert rec.batches[r] == [f"capital of France? answer{2 * r - 1}", f"river of Paris? answer{2 * r}"]
    assert out[0].text == f"answer{2 * rounds - 1}" and out[0].citations == ("d0",)


def test_iter_retgen_needs_a_retriever(index):
    with pytest.raises(ConfigError):
        IterRetGen(index=index, retriever=None)
    with pytest.raises(ConfigError):
        IterRetGen(index=index, retriever=Recorder(["d0"]), rounds=0)


# ------------------------------------------------------------------------------ REAR gating
class FixedScores(Reranker):
    name = "fixed"

    def __init__(self, scores):
        self.scores = scores

    def transform(self, inp):
        lists = []
        for i in range(len(inp)):
            lo, hi = int(inp.offsets[i]), int(inp.offsets[i + 1])
            ids = inp.doc_ids[lo:hi].tolist()
            s = np.array([self.scores[d] for d in ids])
            order = np.argsort(-s, kind="stable")
            lists.append(([ids[j] for j in order], s[order]))
        return Rankings.from_lists(inp.queries, lists)


def test_gating_that_rejects_everything_answers_closed_book(index):
    llm = scripted(lambda p: "Lyon [1]" if "Passages" in p else "Paris")
    stage = with_llm(REAR(index=index, scorer=FixedScores({"d0": -1.0, "d1": -2.0}), threshold=0.0), llm)
    out = stage(rankings(["d0", "d1"]))
    assert out[0].text == "Paris" and out[0].citations == ()
    assert "Passages" not in llm.prompts_seen[-1]
    assert cost_of(out, "rear").extra["gated_closed_book"] == 1


def test_gating_shows_only_passages_over_the_threshold_best_first(index):
    llm = scripted("Paris [1] [2]")
    stage = with_llm(REAR(index=index, scorer=FixedScores({"d0": 0.5, "d1": -3.0, "d5": 2.0}), threshold=0.0), llm)
    out = stage(rankings(["d0", "d1", "d5"]))
    markers = shown_markers(llm.prompts_seen[-1])
    assert len(markers) == 2 and markers[1].startswith("Seine") and markers[2].startswith("Paris")
    assert out[0].citations == ("d5", "d0")
    assert cost_of(out, "rear").extra["gated_passages"] == 2


# ------------------------------------------------------------------------------ utility filtering
def test_utility_votes_over_sampled_orders(index):
    def reply(prompt):  # selects whichever shown passages mention the Seine, by their marker in this order
        return " ".join(f"[{n}]" for n, t in shown_markers(prompt).items() if "Seine" in t) or "none"

    llm = scripted(reply)
    stage = with_llm(UtilityFilter(index=index, samples=4, window=5), llm)
    out = stage(rankings(["d1", "d0", "d2", "d5"]))
    assert list(out[0].doc_ids) == ["d0", "d5"]  # both mention the Seine; ties keep the incoming order
    np.testing.assert_allclose(out[0].scores, [1.0, 1.0])
    assert cost_of(out, "utility").calls == 4
    orders = [tuple(shown_markers(p)[1] for _ in [0]) for p in llm.prompts_seen]
    assert len(set(orders)) > 1  # the samplings really showed other orders
    assert parse_selection("[2], 3 and [9]", 4) == ([2, 3], 1)


def test_utility_generation_budget_reaches_the_model(index):
    llm = scripted("[1]")
    budgets = []
    generate = llm._generate
    llm._generate = lambda prompts, params, top: (budgets.append(params.max_tokens), generate(prompts, params, top))[1]
    with_llm(UtilityFilter(index=index, samples=2, max_tokens=5), llm)(rankings(["d0", "d1"]))
    assert budgets and set(budgets) == {5}
    with_llm(UtilityFilter(index=index, samples=1), llm)(rankings(["d0"]))
    assert budgets[-1] == 24  # the default: room for a list of passage numbers
    with pytest.raises(ConfigError):
        UtilityFilter(index=index, max_tokens=0)


def test_utility_that_selects_nothing_leaves_the_reader_its_empty_policy(index):
    llm = scripted(lambda p: "none" if "useful" in p else "Paris")
    pipe = UtilityFilter(index=index, samples=2) >> Read(index=index, on_empty="closed_book")
    with_llm(pipe.stages[0], llm)
    with_llm(pipe.stages[1], llm)
    out = pipe(rankings(["d0", "d1"]))
    assert out[0].text == "Paris" and out[0].citations == ()


# ------------------------------------------------------------------------------ ALR2
def test_alr2_extracts_sentences_then_answers_only_from_them(index):
    def reply(prompt):
        if "ids of the sentences" in prompt:
            return " [1.2] [9.9] [2.1]"
        return "the Seine [1]"

    llm = scripted(reply)
    out = with_llm(ALR2(index=index, k=2), llm)(rankings(["d0", "d1"]))
    answer_prompt = llm.prompts_seen[-1]
    assert "It lies on the Seine" in answer_prompt and "Paris is the capital" not in answer_prompt
    assert "Berlin is the capital of Germany" in answer_prompt and "Spree" not in answer_prompt
    assert out[0].text == "the Seine" and out[0].citations == ("d0",)
    assert cost_of(out, "alr2").extra["invalid_sentence_ids"] == 1
    assert sentences("A b. C d! 3 e? f") == ["A b.", "C d!", "3 e? f"]
    assert parse_sentence_ids("[1.1] 2.3, [1.1]", {(1, 1): "", (2, 3): ""}) == ([(1, 1), (2, 3)], 0)


def test_alr2_without_evidence_abstains(index):
    out = with_llm(ALR2(index=index), scripted("nothing relevant"))(rankings(["d0"]))
    assert out[0].text == "insufficient evidence" and cost_of(out, "alr2").calls == 1


# ------------------------------------------------------------------------------ self-ask
def test_self_ask_retrieves_and_answers_each_follow_up_then_composes(index):
    rec = Recorder(["d5", "d0"])

    def reply(prompt):
        if "Follow up: <simpler question>" in prompt:
            return "Follow up: Which river flows through Paris?" if "Intermediate" not in prompt else \
                "So the final answer is: the Seine"
        if "Facts:" in prompt:
            return "Answer: the Seine"
        return "The Seine [1]"

    llm = scripted(reply)
    out = with_llm(SelfAsk(index=index, retriever=rec, max_hops=3), llm)(Queries.of({"q1": "Which river?"}))
    assert rec.batches == [["Which river flows through Paris?"]]
    assert out[0].text == "the Seine" and out[0].citations == ("d5",)
    assert set(out.contexts[0].doc_ids) == {"d5", "d0"}
    assert cost_of(out, "self_ask").extra["hops"] == 1 and cost_of(out, "self_ask").calls == 4
    assert parse_step("Who is it?") == ("follow", "Who is it?")
    assert parse_step("So the final answer is: X.") == ("final", "X")
    assert parse_step("blah") == ("none", "")


def test_self_ask_without_decomposition_reads_the_question(index):
    rec = Recorder(["d0"])
    out = with_llm(SelfAsk(index=index, retriever=rec, min_hops=0),
                   scripted(lambda p: "no" if "follow-up" in p else "Paris [1]"))(Queries.of({"q1": "capital of France?"}))
    assert rec.batches == [["capital of France?"]] and out[0].citations == ("d0",)


def test_self_ask_forces_the_first_hops_with_the_follow_up_primer(index):
    """The first min_hops replies are primed with "Follow up:", so a model that would
    answer at once still decomposes; later hops are free, and an empty primed reply ends."""
    rec = Recorder(["d5"])
    prompts = []

    def reply(prompt):
        prompts.append(prompt)
        if "Follow up: <simpler question>" in prompt:
            return "Which river flows through Paris?" if prompt.endswith("Follow up:") else "Paris is the answer."
        return "the Seine [1]"

    out = with_llm(SelfAsk(index=index, retriever=rec, max_hops=3, min_hops=1), scripted(reply))(
        Queries.of({"q1": "Which river?"}))
    asks = [p for p in prompts if "Follow up: <simpler question>" in p]
    assert [p.endswith("Follow up:") for p in asks] == [True, False]
    assert rec.batches == [["Which river flows through Paris?"]]
    assert cost_of(out, "self_ask").extra["hops"] == 1
    empty = with_llm(SelfAsk(index=index, retriever=Recorder(["d5"]), max_hops=2, min_hops=2),
                     scripted(lambda p: "  \n" if p.endswith("Follow up:") else "x [1]"))(Queries.of({"q1": "Which river?"}))
    assert cost_of(empty, "self_ask").extra.get("hops", 0) == 0
    assert forced_step("Follow up: Who? \nmore") == ("follow", "Who?") and forced_step("") == ("none", "")
    assert forced_step(" Who? So the final answer is: X") == ("follow", "Who?")
    same = Recorder(["d5"])  # a primed reply that repeats the question is no decomposition: read the question
    with_llm(SelfAsk(index=index, retriever=same), scripted(lambda p: " Which river?" if p.endswith("Follow up:")
                                                            else "the Seine [1]"))(Queries.of({"q1": "Which river?"}))
    assert same.batches == [["Which river?"]]
    with pytest.raises(ConfigError, match="min_hops"):
        SelfAsk(index=index, retriever=rec, max_hops=1, min_hops=2)
    with pytest.raises(ConfigError, match="min_hops"):
        SelfAsk(index=index, retriever=rec, min_hops=-1)


# ------------------------------------------------------------------------------ rewriters
def test_generative_rewriters_keep_ids_and_the_question(index):
    qs = Queries.of({"q1": "capital of France?"})
    h = with_llm(HyDE(), scripted("Passage about Paris."))(qs)
    assert h.texts == ("capital of France?\nPassage about Paris.",) and h[0].meta["question"] == "capital of France?"
    q2d = with_llm(Query2Doc(repeat=3), scripted("doc"))(qs)
    assert q2d.texts == ("capital of France? capital of France? capital of France? doc",)
    t = with_llm(Think(), scripted("Need the capital."))(qs)
    assert t.texts == ("capital of France? Need the capital.",)
    # a reader after a rewriter answers the original question, not the expansion
    llm = scripted("Paris [1]")
    pipe = with_llm(HyDE(), scripted("Paris Seine")) >> parse("bm25 % 3", {"index": index}) >> with_llm(
        Read(index=index), llm)
    out = pipe(qs)
    assert "Question: capital of France?\n" in llm.prompts_seen[-1] and out[0].citations
    with pytest.raises(EmptyQueryError):
        with_llm(HyDE(), scripted("x"))(Queries.of({"q1": " "}))


def test_rewriter_llm_error_keeps_the_query_when_asked():
    def broken(_p):
        raise LLMServerError("down")

    qs = Queries.of({"q1": "capital of France?"})
    with pytest.raises(LLMError):
        with_llm(HyDE(), scripted(broken))(qs)
    assert with_llm(HyDE(on_error="keep"), scripted(broken))(qs).texts == qs.texts


# ------------------------------------------------------------------------------ specs
@pytest.mark.parametrize("spec", [
    "bm25 % 10 >> read(k=3, order=lost_in_the_middle)",
    "iter_retgen(bm25 % 5, rounds=2)",
    "self_ask(bm25 % 3, max_hops=1)",
    "bm25 % 5 >> rear(scorer=pointwise(max_passage_tokens=16), threshold=-1.0)",
    "bm25 % 5 >> utility(samples=2) >> read(on_empty=closed_book)",
    "query2doc(repeat=1) >> bm25 % 5 >> alr2",
    "closed_book(max_tokens=8)",
])
def test_specs_print_and_rebuild(index, spec):
    stage = parse(spec, {"index": index})
    assert str(parse(str(stage))) == str(stage)
    assert str(parse(stage.spec(resources=False), {"index": index})) == str(stage)


def test_bad_options_are_typed_errors(index):
    from retrievo.errors import PipelineSpecError

    for bad in ("read(order=middle)", "read(k=0)", "iter_retgen(rounds=0)", "utility(min_votes=2)",
                "read(on_error=ignore)"):
        with pytest.raises(PipelineSpecError):
            parse(bad, {"index": index})
    with pytest.raises(ConfigError):
        REAR(index=index, scorer=None)
