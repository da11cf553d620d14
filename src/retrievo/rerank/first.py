"""FIRST (Reddy et al., 2024): single-token listwise reranking. The model is shown a window
of passages and asked for their ranking, as in RankGPT, but nothing is generated: the reply
is forced to begin where the first identifier is written, and the window is ordered by the
log-probability of each identifier as that first token — one forward pass per window.

Identifiers must differ in their first token, or the model could not tell them apart in one
token (numbers fail: ``[1]`` and ``[10]`` share theirs). They are chosen at run time from the
model's own tokenizer (:func:`~retrievo.rerank.listwise.single_token_ids`): letters ``A``,
``B``, … skipping any that collide — with Qwen2.5, where ``[A]`` … ``[T]`` are single tokens
but ``[O]`` and ``[Q]`` are not, the identifiers are the bracketed letters without ``O`` and
``Q``; with a tokenizer that splits ``[A]`` (SmolLM2), the reply is forced to begin with
``[`` and the bare letters are scored. A window larger than the identifiers available is a
:class:`~retrievo.errors.ConfigError` naming the limit.

Ordering: by log-probability, descending; equal values keep the incoming order (so a
model that cannot separate two passages leaves them as the first stage ranked them).
Windows slide from the back to the front like RankGPT's (:mod:`retrievo.rerank.listwise`).

Cost: one call and one forward pass per window (windows of one candidate ask nothing).
Output scores are positions (``n`` for the top, ``1`` for the last), not probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retrievo.rerank.listwise import (Identifiers, ListwiseReranker, SlidingWindowReranker, Window, fit_prompt,
                                      render, single_token_ids)

#: tokens reserved for the answer: the one next token that is scored
ANSWER_TOKENS = 1


def identifiers(stage: ListwiseReranker, n: int) -> Identifiers:
    """Single-token identifiers for ``n`` passages in this stage's model (cached)."""
    cache = stage._state.setdefault("first_ids", {})
    if n not in cache:
        cache[n] = single_token_ids(stage.llm, stage.template, n)
    return cache[n]


def order_by_logprobs(values) -> list[int]:
    """Positions by descending value, ties (and NaN, read as -inf) by incoming order."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=-np.inf)
    return [int(i) for i in np.lexsort((np.arange(len(v)), -v))]


def rank_by_first_token(stage: ListwiseReranker, windows: list[Window], n_ids: int | None = None
                        ) -> list[list[int]]:
    """Each window ordered by the first-token log-probabilities of its identifiers: one
    ``next_token_logprobs`` call (one forward pass per window) for windows of equal size."""
    llm = stage.llm
    llm.require("next_token_logprobs", method=f"{stage.name} (single-token listwise ranking)")
    ids = identifiers(stage, n_ids or max(len(w.passages) for w in windows))
    by_size: dict[int, list[int]] = {}
    for k, w in enumerate(windows):
        by_size.setdefault(len(w.passages), []).append(k)
    out: list[list[int] | None] = [None] * len(windows)
    for size, members in by_size.items():
        labels = ids.labels[:size]
        prompts = [fit_prompt(llm, lambda ps, q=windows[k].query: render(stage.template, q, labels, ps, ids.prefix),
                              windows[k].passages, stage.max_passage_tokens, ANSWER_TOKENS) for k in members]
        values = llm.next_token_logprobs(prompts, list(ids.candidates[:size]))
        for row, k in zip(values, members, strict=True):
            out[k] = order_by_logprobs(row)
    return out  # type: ignore[return-value]


@dataclass
class FIRST(SlidingWindowReranker):
    """Single-token listwise reranking over a sliding window (see the module docstring):
    ``bm25 % 100 >> first(window=20, stride=10)``."""

    prompt: str = "first"

    name = "first"

    def rank_windows(self, windows: list[Window]) -> list[list[int]]:
        return rank_by_first_token(self, windows)


__all__ = ["FIRST", "identifiers", "order_by_logprobs", "rank_by_first_token"]
