"""Attention read-outs from a local transformers model, for attention-based reranking.

In-context reranking (ICR; Chen et al., 2024, "Attention in Large Language Models Yields
Efficient Zero-Shot Re-Rankers") scores documents by the attention that the query's
tokens pay to each document's tokens. No library exposes that as an API — the numbers are
the point of the method — so it is computed here, from the eager attention weights of one
forward pass:

    value[token t] = Σ_layers Σ_heads mean_{q ∈ query tokens} A[layer, head, q, t]

The context (instruction + documents) is run once with the first query and its key/value
cache cropped to the context; each further query (ICR's content-free calibration query and
the real one) then runs only its own tokens against that cache. Segments are tokenised one
by one (no special tokens are added: put the chat template's markup in the text), so token
spans are exact by construction.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np

_CACHE_KW: str | None = None


def _cache_kw() -> str:
    """transformers >= 5.2x names the key/value cache ``cache``; earlier releases
    ``past_key_values``."""
    import inspect

    from transformers import LlamaForCausalLM

    return "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


def _cache_of(out):
    return getattr(out, "cache", None) if getattr(out, "cache", None) is not None else out.past_key_values


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def context_attention(model, tokenizer, context: Sequence[str], queries: Sequence[str]
                      ) -> tuple[list[list[np.ndarray]], int]:
    """``(result, prompt_tokens)``; see :meth:`retrievo.llm.base.LLM.context_attention`."""
    import torch

    global _CACHE_KW
    if _CACHE_KW is None:
        _CACHE_KW = _cache_kw()
    seg_ids = [_ids(tokenizer, seg) for seg in context]
    bounds = np.cumsum([0] + [len(s) for s in seg_ids])
    prefix = [t for s in seg_ids for t in s]
    n_ctx = len(prefix)
    device = next(model.parameters()).device
    previous = getattr(model.config, "_attn_implementation", None)
    if previous != "eager":
        model.set_attn_implementation("eager")
    results: list[list[np.ndarray]] = []
    tokens = 0
    cache = None
    try:
        with torch.inference_mode():
            for j, query in enumerate(queries):
                q_ids = _ids(tokenizer, query)
                if not q_ids:
                    raise ValueError("a query segment must not be empty")
                if cache is None:
                    inp = torch.tensor([prefix + q_ids], device=device)
                    out = model(input_ids=inp, use_cache=True, output_attentions=True)
                    tokens += len(prefix) + len(q_ids)
                    q_rows = slice(n_ctx, n_ctx + len(q_ids))
                    cache = _cache_of(out)
                    cache.crop(-len(q_ids))  # keep the context only
                    base_cache = cache
                else:
                    run_cache = copy.deepcopy(base_cache)
                    inp = torch.tensor([q_ids], device=device)
                    pos = torch.arange(n_ctx, n_ctx + len(q_ids), device=device).unsqueeze(0)
                    out = model(input_ids=inp, **{_CACHE_KW: run_cache}, position_ids=pos,
                                cache_position=pos[0], use_cache=True, output_attentions=True)
                    tokens += len(q_ids)
                    q_rows = slice(0, len(q_ids))
                total = None
                for layer in out.attentions:  # (1, heads, q, keys)
                    a = layer[0, :, q_rows, :n_ctx].float().mean(dim=1).sum(dim=0)
                    total = a if total is None else total + a
                values = total.cpu().numpy().astype(np.float64)
                results.append([values[bounds[i]:bounds[i + 1]] for i in range(len(context))])
    finally:
        if previous is not None and previous != "eager":
            model.set_attn_implementation(previous)
    return results, tokens


__all__ = ["context_attention"]
