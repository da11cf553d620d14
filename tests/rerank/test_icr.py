"""ICR: score aggregation and calibration on a tiny randomly initialised Llama (fixed seed,
built here; its scores test the mechanics — two forward passes, masking, calibration —
not relevance), and its refusal on backends without attention."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from retrievo.errors import CapabilityError  # noqa: E402
from retrievo.index import InvertedIndex  # noqa: E402
from retrievo.llm.attention import context_attention  # noqa: E402
from retrievo.llm.base import LLM, ScriptedLLM  # noqa: E402
from retrievo.pipeline import parse  # noqa: E402
from retrievo.rerank.icr import ICR, masked_calibrated_score  # noqa: E402
from retrievo.types import Document, Queries  # noqa: E402

DOCS = [Document(f"d{i}", text) for i, text in enumerate([
    "cats purr when they are content", "dogs bark at the postman", "parrots can imitate speech",
    "goldfish have short memories", "horses sleep standing up", "owls hunt at night"])]


class _CharTokenizer:
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [3 + (ord(c) % 90) for c in text]}


class TinyAttentionLLM(LLM):
    """A local backend over a tiny random Llama with a character tokenizer."""

    capabilities = frozenset({"segment_attention", "count_tokens"})
    context_length = 4096

    def __init__(self):
        super().__init__("tiny-random-llama")
        torch.manual_seed(0)
        cfg = transformers.LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
        self.model = transformers.LlamaForCausalLM(cfg).eval()
        self.tokenizer = _CharTokenizer()

    def count_tokens(self, text):
        return len(text)

    def _context_attention(self, context, queries):
        return context_attention(self.model, self.tokenizer, context, queries)


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    return InvertedIndex.build(DOCS, tmp_path_factory.mktemp("icr") / "animals.idx")


@pytest.fixture(scope="module")
def tiny():
    return TinyAttentionLLM()


def _ranking(index):
    return parse("bm25 % 6", {"index": index})(Queries.of({"q1": "which animal barks", "q2": "night hunter"}))


def test_masked_calibration_drops_low_outliers_and_subtracts_the_calibration():
    real = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -20.0])
    calib = np.zeros(10)
    assert masked_calibrated_score(real, calib) == pytest.approx(9.0)  # the -20 token is masked
    assert masked_calibrated_score(np.array([3.0, 2.0]), np.array([1.0, 1.0])) == pytest.approx(3.0)
    assert masked_calibrated_score(np.array([2.0]), np.array([0.5])) == pytest.approx(1.5)
    assert masked_calibrated_score(np.array([]), np.array([])) == 0.0


def test_icr_scores_equal_the_attention_read_out_and_cost_two_passes(index, tiny):
    stage = ICR(index=index)
    stage._state["llm"] = tiny
    ranking = _ranking(index)
    out = stage(ranking)
    cost = out.costs[-1]
    assert cost.forward_passes == 2 * len(ranking.queries)  # two per query, whatever the candidate count
    # recompute one query by hand from the same pieces
    q = ranking.queries[0]
    ids = ranking[0].doc_ids.tolist()
    passages = stage.source.texts(ids)
    context, queries = stage._fit(q.text, passages)
    (calib, real), _ = context_attention(tiny.model, tiny.tokenizer, context, queries)
    want = [masked_calibrated_score(r, c) for r, c in zip(real[1:], calib[1:])]
    got = dict(zip(out[0].doc_ids, out[0].scores))
    np.testing.assert_allclose([got[d] for d in ids], want, rtol=1e-9)
    assert sorted(out[0].doc_ids) == sorted(ids)  # same candidates, none dropped


def test_two_passes_whatever_the_number_of_candidates(index, tiny):
    stage = ICR(index=index, calibrate=False)
    stage._state["llm"] = tiny
    for k in (2, 6):
        ranking = parse(f"bm25 % {k}", {"index": index})(Queries.of({"q": "cats dogs parrots goldfish horses owls"}))
        assert stage(ranking).costs[-1].forward_passes == 1  # one without calibration
    cal = ICR(index=index)
    cal._state["llm"] = tiny
    for k in (2, 6):
        ranking = parse(f"bm25 % {k}", {"index": index})(Queries.of({"q": "cats dogs parrots goldfish horses owls"}))
        assert cal(ranking).costs[-1].forward_passes == 2


def test_passages_shrink_to_fit_the_context_and_none_is_dropped(index, tiny):
    stage = ICR(index=index, max_passage_tokens=1000)
    small = TinyAttentionLLM()
    small.context_length = 300  # characters are tokens here: the six passages do not fit at full length
    stage._state["llm"] = small
    out = stage(_ranking(index))
    assert len(out[0]) == len(_ranking(index)[0])


def test_icr_refuses_a_backend_without_attention(index):
    stage = ICR(index=index)
    stage._state["llm"] = ScriptedLLM(generate_fn=lambda t: "x")
    with pytest.raises(CapabilityError, match="segment_attention"):
        stage(_ranking(index))


def test_icr_spec_rebuilds(index):
    stage = ICR(index=index, calibrate=False, max_passage_tokens=64)
    assert "calibrate=false" in str(stage) and "max_passage_tokens=64" in str(stage)
    assert str(parse(str(stage))) == str(stage)
