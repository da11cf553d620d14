"""Pointwise relevance generation: ask, for each candidate on its own, whether the passage
answers the query, and read the answer from the model's next-token distribution.

The prompt (``pointwise_yes_no`` by default, a TOML template with ``{query}`` and
``{passage}``) is the relevance-generation prompt of Liang et al. (HELM, 2022) as used for
zero-shot reranking (Sachan et al.'s UPR is the query-likelihood alternative:
:mod:`retrievo.rerank.upr`). Nothing is generated: one forward pass per candidate gives
the log-probabilities of the first token of ``yes`` and of ``no`` as the next token, and

    score = log P(yes) - log P(no)

the log-odds of "relevant" between the two answers. It orders candidates exactly as
``P(yes) / (P(yes) + P(no))`` does (a monotone function of it) without the saturation of
a probability near 0 or 1, and it ignores the mass the model puts on other tokens. The
first tokens of ``yes`` and ``no`` must differ in the model's tokenizer, else both read
the same number: that is checked once, when the model is first used
(:class:`~retrievo.errors.ConfigError`).

Cost: one LLM call and one forward pass per candidate (charged by the backend), prompt
tokens as the backend counts them; a response cache hit costs nothing but ``cache_hits``.
All candidates of a query go to the backend in one ``next_token_logprobs`` request, which
the backend splits into its own batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from retrievo.errors import ConfigError
from retrievo.llm.prompts import PromptTemplate, load_template
from retrievo.rerank.base import LLMReranker
from retrievo.types import Query

#: placeholders the pointwise template must have
REQUIRED = frozenset({"query", "passage"})


@dataclass
class Pointwise(LLMReranker):
    """``pointwise(model=smollm2, prompt=pointwise_yes_no, yes=Yes, no=No)``: score =
    log P(first token of ``yes``) − log P(first token of ``no``) of the next token."""

    prompt: str = "pointwise_yes_no"
    yes: str = "Yes"
    no: str = "No"
    name = "pointwise"

    def __post_init__(self):
        super().__post_init__()
        for label, word in (("yes", self.yes), ("no", self.no)):
            if not isinstance(word, str) or not word.strip():
                raise ConfigError(f"pointwise: {label} must be a non-empty word, got {word!r}")
        if self.yes == self.no:
            raise ConfigError(f"pointwise: yes and no must differ, both are {self.yes!r}")
        self._state["template"] = load_template(self.prompt, required=REQUIRED)

    @property
    def template(self) -> PromptTemplate:
        return self._state["template"]

    def answers(self) -> list[str]:
        """``[yes, no]``, checked once per backend to start with different tokens."""
        llm = self.llm
        if self._state.get("checked") is not llm:
            llm.require("next_token_logprobs", method="pointwise reranking")
            if not llm.first_tokens_distinct([self.yes, self.no]):
                raise ConfigError(f"pointwise: yes={self.yes!r} and no={self.no!r} start with the same token in "
                                  f"{llm.identity}, so their log-probabilities cannot differ; choose other words")
            self._state["checked"] = llm
        return [self.yes, self.no]

    def prompts(self, query: Query, passages: Sequence[str]) -> list:
        return [self.template.render(query=query.text, passage=p) for p in self.truncated(passages)]

    def score_list(self, query: Query, doc_ids: Sequence[str], passages: list[str]) -> np.ndarray:
        answers = self.answers()
        logprobs = self.llm.next_token_logprobs(self.prompts(query, passages), answers)
        scores = logprobs[:, 0] - logprobs[:, 1]
        # both answers impossible (-inf - -inf): no evidence either way, rank it last
        return np.where(np.isnan(scores), -np.inf, scores)


__all__ = ["Pointwise"]
