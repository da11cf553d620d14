"""Query likelihood (UPR: Sachan et al., 2022, "Improving Passage Retrieval with Zero-Shot
Question Generation"): rank passages by how likely the model finds the *query* once it
has read the passage.

The prompt (``upr_query_likelihood``: "Passage: … Please write a question based on this
passage.", with ``{passage}`` as its one placeholder) is followed by the query as the
model's answer, teacher-forced: one forward pass per candidate gives
``log P(query | prompt)`` summed over the query's tokens
(:meth:`~retrievo.llm.base.LLM.continuation_logprobs`), and

    score = sum log P(query tokens | passage) / number of query tokens

the *mean* token log-likelihood, as in the paper. Mean or sum: within one query the
denominator is the same for every candidate, so both order the candidates identically;
the mean is what makes scores comparable across queries of different lengths (fusion,
thresholds, score plots), so it is what the ranking carries. The token count is the
backend's :meth:`~retrievo.llm.base.LLM.count_tokens` of the query text.

Cost: one LLM call and one forward pass per candidate (charged by the backend).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from retrievo.errors import ConfigError
from retrievo.llm.prompts import PromptTemplate, load_template
from retrievo.rerank.base import LLMReranker
from retrievo.types import Query

#: placeholders the UPR template must have (the query is the continuation, not a placeholder)
REQUIRED = frozenset({"passage"})


@dataclass
class QueryLikelihood(LLMReranker):
    """``upr(model=smollm2, prompt=upr_query_likelihood)``: score = mean log P(query token |
    prompt with the passage), teacher-forced."""

    prompt: str = "upr_query_likelihood"
    name = "upr"

    def __post_init__(self):
        super().__post_init__()
        template = load_template(self.prompt, required=REQUIRED)
        if "query" in template.fields:
            raise ConfigError(f"upr: prompt template {template.name!r} must not contain {{query}}: the query is "
                              "what the model is asked to produce (its likelihood is the score)")
        self._state["template"] = template

    @property
    def template(self) -> PromptTemplate:
        return self._state["template"]

    def query_tokens(self, query: Query) -> int:
        """How many tokens the query's log-likelihood is averaged over (at least 1)."""
        return max(1, int(self.llm.count_tokens(query.text)))

    def score_list(self, query: Query, doc_ids: Sequence[str], passages: list[str]) -> np.ndarray:
        llm = self.llm
        llm.require("continuation_logprobs", method="query-likelihood reranking (upr)")
        prompts = [self.template.render(passage=p) for p in self.truncated(passages)]
        total = llm.continuation_logprobs(prompts, [query.text] * len(prompts))
        return np.asarray(total, dtype=np.float64) / self.query_tokens(query)


__all__ = ["QueryLikelihood"]
