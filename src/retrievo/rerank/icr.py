"""In-context reranking (ICR): relevance from attention, two forward passes per query.

Chen et al. (2024), "Attention in Large Language Models Yields Efficient Zero-Shot
Re-Rankers". All candidates go into one prompt (instruction, the passages in their incoming
order, then the query); a passage's score is the attention that the query's tokens pay to
its tokens. LLMs attend to some tokens whatever the query (position, formatting), so the
same prompt is also run with a content-free query (``N/A``) and its attention subtracted —
per token, after masking the tokens whose calibrated score falls more than two standard
deviations below that passage's mean (the paper's reference implementation's default,
"masked N/A calibration").

The context (instruction + passages) is encoded once; the calibration query and the real
one each run against its key/value cache, so a query costs exactly two forward passes
whatever the number of candidates (one with ``calibrate=false``). Passages are shortened
until the prompt fits the model's context — a candidate is never dropped. Only backends
that run the model in this process expose attention (the local transformers backend); an
HTTP backend raises :class:`~retrievo.errors.CapabilityError` before any work.

Written here rather than borrowed: the attention read-out is the method, and no library
offers it as an API (see :mod:`retrievo.llm.attention`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrievo.errors import ConfigError, ContextLengthError
from retrievo.rerank.base import LLMReranker
from retrievo.types import Query

#: tokens kept free for the query segment beyond its own length (chat markup)
_QUERY_SLACK = 16


def masked_calibrated_score(query_tokens: np.ndarray, calibration_tokens: np.ndarray) -> float:
    """One passage's ICR score from its per-token attention under the real query and
    under the content-free query: the sum of the calibrated values over the tokens not
    masked as outliers (calibrated value below mean − 2·std, sample std as in the
    reference implementation)."""
    calibrated = np.asarray(query_tokens, dtype=np.float64) - np.asarray(calibration_tokens, dtype=np.float64)
    if calibrated.size == 0:
        return 0.0
    std = calibrated.std(ddof=1) if calibrated.size > 1 else 0.0
    keep = calibrated > calibrated.mean() - 2 * std
    if calibrated.size == 1:
        keep = np.ones(1, dtype=bool)
    return float(calibrated[keep].sum())


@dataclass
class ICR(LLMReranker):
    """In-context reranking (see the module docstring)."""

    calibrate: bool = True
    prompt: str = "icr"
    name = "icr"

    def __post_init__(self):
        super().__post_init__()
        from retrievo.llm.prompts import load_template

        self._state["template"] = load_template(self.prompt, required={"passages", "query"})
        user = self._state["template"].user
        if user.index("{passages}") > user.index("{query}"):
            raise ConfigError(f"ICR prompt {self.prompt!r}: the passages must come before the query")

    # ------------------------------------------------------------------ prompt pieces
    def _pieces(self, query: str, passages: Sequence[str], budget: int) -> tuple[list[str], list[str]]:
        """``(context segments, [calibration query segment, real query segment])``."""
        t = self._state["template"]
        before, after = self.llm.chat_frame(t.system or None)
        head, rest = t.user.split("{passages}", 1)
        late, tail = rest.split("{query}", 1)
        fmt = t.defaults.get("passage_format", "\n\n[{number}] {text}")
        context = [before + head.format_map(dict(t.defaults))]
        context += [fmt.format(number=i + 1, text=self.llm.truncate(p, budget)) for i, p in enumerate(passages)]
        queries = [late + q + tail + after for q in (t.defaults.get("calibration_query", "N/A"), query)]
        return context, queries

    def _fit(self, query: str, passages: Sequence[str]) -> tuple[list[str], list[str]]:
        budget = self.max_passage_tokens
        limit = self.llm.context_length
        while True:
            context, queries = self._pieces(query, passages, budget)
            total = sum(self.llm.count_tokens(c) for c in context) + max(self.llm.count_tokens(q) for q in queries)
            if total + _QUERY_SLACK <= limit:
                return context, queries
            if budget <= 1:
                raise ContextLengthError(f"icr: {len(passages)} passages do not fit the model's context of {limit} "
                                         f"tokens even at 1 token each; rerank fewer candidates (e.g. '% 20')")
            budget = max(1, int(budget * 0.75))

    def score_list(self, query: Query, doc_ids: Sequence[str], passages: list[str]) -> np.ndarray:
        self.llm.require("segment_attention", method="icr")
        context, queries = self._fit(query.text, passages)
        if not self.calibrate:
            (att,) = self.llm.context_attention(context, queries[1:])
            return np.asarray([float(a.sum()) for a in att[1:]])
        calib, real = self.llm.context_attention(context, queries)
        return np.asarray([masked_calibrated_score(r, c) for r, c in zip(real[1:], calib[1:])])

    def models(self) -> list[Any]:
        return [str(self.model)]


__all__ = ["ICR", "masked_calibrated_score"]
