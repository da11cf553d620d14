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



def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def attention_modules(base) -> list:
    """The self-attention modules of a decoder, in layer order (each knows its ``layer_idx``)."""
    return [m for m in base.modules() if type(m).__name__.endswith("Attention") and hasattr(m, "layer_idx")]


def context_attention(model, tokenizer, context: Sequence[str], queries: Sequence[str], base=None
                      ) -> tuple[list[list[np.ndarray]], int]:
    """``(result, prompt_tokens)``; see :meth:`retrievo.llm.base.LLM.context_attention`.

    ``base`` is the decoder without its vocabulary projection (default: the model's base
    model) — the projection is never computed, and each layer's attention matrix is reduced
    by a forward hook as soon as it exists, so memory stays at one layer's weights rather
    than all of them (eager attention of a 3,000-token prompt is ~300 MB per layer)."""
    import inspect

    import torch

    if base is None:
        base = getattr(model, getattr(model, "base_model_prefix", ""), None) or model
    cache_kw = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
    modules = attention_modules(base)
    if not modules:
        raise ValueError(f"found no attention layers in {type(model).__name__}")
    seg_ids = [_ids(tokenizer, seg) for seg in context]
    bounds = np.cumsum([0] + [len(s) for s in seg_ids])
    prefix = [t for s in seg_ids for t in s]
    n_ctx = len(prefix)
    device = next(model.parameters()).device
    state: dict = {}

    def hook(_module, _args, output):
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            raise ValueError("the attention module returned no weights (eager attention is needed)")
        rows = weights[0, :, state["rows"], :n_ctx].float()  # (heads, query tokens, context tokens)
        paid = rows.mean(dim=1).sum(dim=0)
        state["total"] = paid if state.get("total") is None else state["total"] + paid

    previous = getattr(model.config, "_attn_implementation", None)
    handles = []
    results: list[list[np.ndarray]] = []
    tokens = 0
    base_cache = None
    try:
        if previous != "eager":
            model.set_attn_implementation("eager")
        handles = [m.register_forward_hook(hook) for m in modules]
        with torch.inference_mode():
            for query in queries:
                q_ids = _ids(tokenizer, query)
                if not q_ids:
                    raise ValueError("a query segment must not be empty")
                state["total"] = None
                if base_cache is None:
                    state["rows"] = slice(n_ctx, n_ctx + len(q_ids))
                    inp = torch.tensor([prefix + q_ids], device=device)
                    out = base(input_ids=inp, use_cache=True)
                    tokens += n_ctx + len(q_ids)
                    base_cache = out.cache if cache_kw == "cache" else out.past_key_values
                    base_cache.crop(-len(q_ids))  # keep the context's keys and values only
                else:
                    state["rows"] = slice(0, len(q_ids))
                    pos = torch.arange(n_ctx, n_ctx + len(q_ids), device=device).unsqueeze(0)
                    base(input_ids=torch.tensor([q_ids], device=device), position_ids=pos,
                         **{cache_kw: copy.deepcopy(base_cache)}, use_cache=True)
                    tokens += len(q_ids)
                values = state["total"].double().cpu().numpy()
                results.append([values[bounds[i]:bounds[i + 1]] for i in range(len(context))])
    finally:
        for h in handles:
            h.remove()
        if previous is not None and previous != "eager":
            model.set_attn_implementation(previous)
    return results, tokens


__all__ = ["attention_modules", "context_attention"]
