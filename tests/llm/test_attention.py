"""Attention read-outs (``context_attention``) against a direct eager forward pass on a
tiny randomly initialised Llama (fixed seed, built here: no download, no trained weights —
the numbers test the plumbing, not relevance)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from retrievo.llm.attention import context_attention  # noqa: E402


class _CharTokenizer:
    """One token per character (ids 3..), so spans are easy to check by hand."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [3 + (ord(c) % 90) for c in text]}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    model = transformers.LlamaForCausalLM(cfg).eval()
    return model, _CharTokenizer()


def _direct(model, tok, context, query):
    ids = [t for seg in context for t in tok(seg)["input_ids"]]
    q = tok(query)["input_ids"]
    model.set_attn_implementation("eager")
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids + q]), output_attentions=True)
    n = len(ids)
    total = sum(a[0, :, n:n + len(q), :n].mean(dim=1).sum(dim=0) for a in out.attentions)
    return total.numpy()


def test_context_attention_matches_a_direct_forward_for_every_query(tiny):
    model, tok = tiny
    context = ["Here are some paragraphs:", "\n[1] cats purr", "\n[2] dogs bark loudly", "\nQuery:"]
    queries = [" N/A", " which animal barks?"]
    got, tokens = context_attention(model, tok, context, queries)
    assert tokens == sum(len(c) for c in context) + sum(len(q) for q in queries)  # context encoded once
    for j, q in enumerate(queries):
        want = _direct(model, tok, context, q)
        np.testing.assert_allclose(np.concatenate(got[j]), want, rtol=1e-4, atol=1e-6)
        assert [len(x) for x in got[j]] == [len(c) for c in context]


def test_attention_rows_sum_to_layers_times_heads_over_context_and_query(tiny):
    model, tok = tiny
    context = ["abc", "defg"]
    got, _ = context_attention(model, tok, context, ["xy"])
    # each query row's weights sum to 1 over all keys; the context takes part of that mass
    mass = np.concatenate(got[0]).sum()
    assert 0 < mass < 3 * 4 + 1e-6
