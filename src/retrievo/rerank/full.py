"""Full ranking: every candidate of a query in one listwise prompt — a single window as
wide as the list, so the model compares all of them at once and no sliding is needed.

``mode=generate`` asks for the whole permutation with RankGPT's prompt and numeric
identifiers (:mod:`retrievo.rerank.rankgpt`); ``mode=first`` reads it from the first
identifier's log-probabilities with FIRST's prompt and single-token identifiers
(:mod:`retrievo.rerank.first`; the tokenizer's distinct identifiers, about 60 letters and
digits, bound the list length — a longer list is a :class:`~retrievo.errors.ConfigError`).

A long list may not fit the model's context at ``max_passage_tokens`` per passage: the
passages are then shortened together until the prompt fits (the answer's tokens reserved);
a candidate is never dropped, and a list that does not fit even at one token per passage
is a :class:`~retrievo.errors.ContextLengthError`. One LLM call per query.
"""

from __future__ import annotations

from dataclasses import dataclass

from retrievo.errors import ConfigError
from retrievo.rerank.first import rank_by_first_token
from retrievo.rerank.listwise import ListwiseReranker, Window
from retrievo.rerank.rankgpt import rank_by_generation

MODES = ("generate", "first")


@dataclass
class FullRanking(ListwiseReranker):
    """All candidates in one listwise window: ``bm25 % 20 >> full(mode=first)``."""

    mode: str = "generate"

    name = "full"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"full ranking mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        super().__post_init__()

    @property
    def template_name(self) -> str:
        return "rankgpt" if self.mode == "generate" else "first"

    def windows(self, n: int) -> list[tuple[int, int]]:
        return [(0, n)] if n else []

    def rank_windows(self, windows: list[Window]) -> list[list[int]]:
        if self.mode == "generate":
            return rank_by_generation(self, windows)
        return rank_by_first_token(self, windows)


__all__ = ["MODES", "FullRanking"]
