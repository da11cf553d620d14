"""Utility filtering (after Zhang et al. 2024, "Are large language models good at utility
judgments?"): an LLM selects, listwise, the passages useful for answering the question.

Relevance is not utility: a passage on the right topic may not help answer. Each query's
top ``window`` candidates are shown together, numbered, and the model lists the useful
ones. Listwise judgments depend on the order passages are shown in, so the judgment is
repeated ``samples`` times, each over a different order (the first in rank order, the
others seeded random permutations — reproducible), and each passage's score is the share of
samplings that selected it. Passages selected in at least ``min_votes`` of the samplings
are kept, by votes then incoming rank; the others are **dropped** — this stage is a filter,
placed between a retriever and a reader (``bm25 % 10 >> utility >> read``). When nothing
is kept the reader's empty-context policy applies (abstain, or closed-book).

A reply of ``none`` selects nothing; numbers naming no shown passage are dropped (counted
as ``invalid_selections``). Cost: ``samples`` LLM calls per query, each generating at most
``max_tokens`` (24) tokens.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrievo.errors import ConfigError, LLMError
from retrievo.llm.stage import LLMStageMixin
from retrievo.pipeline import Reranker, charge
from retrievo.rag.base import DEFAULT_LLM, passage_text, question_text
from retrievo.types import Rankings

_NUMBER = re.compile(r"\[\s*(\d+)\s*\]|\b(\d+)\b")


def parse_selection(reply: str, n: int) -> tuple[list[int], int]:
    """Positions (1-based, as shown) the reply selects, each once, and the count of numbers
    outside ``1..n``."""
    got: list[int] = []
    invalid = 0
    for a, b in _NUMBER.findall(reply):
        v = int(a or b)
        if not 1 <= v <= n:
            invalid += 1
        elif v not in got:
            got.append(v)
    return got, invalid


@dataclass
class UtilityFilter(LLMStageMixin, Reranker):
    """``utility(samples=3, window=10, min_votes=0.5)``."""

    index: Any = None
    model: str = DEFAULT_LLM
    cache: str = ""
    samples: int = 3
    window: int = 10
    min_votes: float = 0.5
    max_passage_tokens: int = 96
    max_tokens: int = 24
    seed: int = 0
    on_error: str = "raise"
    _state: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    name = "utility"
    kind = "filter"

    def __post_init__(self):
        for opt, value in (("samples", self.samples), ("window", self.window),
                           ("max_passage_tokens", self.max_passage_tokens), ("max_tokens", self.max_tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"utility: {opt} must be a whole number >= 1, got {value!r}")
        if not 0 < float(self.min_votes) <= 1:
            raise ConfigError(f"utility: min_votes must be in (0, 1], got {self.min_votes!r}")
        if self.on_error not in ("raise", "keep"):
            raise ConfigError(f"utility: on_error must be raise or keep, got {self.on_error!r}")
        from retrievo.llm.prompts import load_template

        self._state["template"] = load_template("utility", required={"passages", "question"})

    @classmethod
    def from_options(cls, ctx: Mapping[str, Any], index: Any = None, **options: Any):
        return cls(index=index if index is not None else ctx.get("index"), **options)

    def orders(self, n: int, qid: str) -> list[list[int]]:
        """The ``samples`` presentation orders (positions in rank order) for ``n`` passages."""
        import zlib

        rng = np.random.default_rng([int(self.seed), zlib.crc32(qid.encode())])
        out = [list(range(n))]
        for _ in range(int(self.samples) - 1):
            out.append([int(i) for i in rng.permutation(n)])
        return out

    def votes(self, question: str, qid: str, passages: list[str]) -> np.ndarray:
        """Share of samplings that selected each passage (rank order)."""
        t = self._state["template"]
        line = t.defaults.get("passage_line", "[{n}] {passage}")
        n = len(passages)
        counts = np.zeros(n)
        orders = self.orders(n, qid)
        prompts = [t.render(question=question, passages="\n".join(line.format(n=j + 1, passage=passages[i])
                                                                    for j, i in enumerate(order)))
                   for order in orders]
        from retrievo.llm.base import GenerationParams

        try:
            params = GenerationParams(max_tokens=int(self.max_tokens), stop=("\n\n",))
            replies = [c.text for c in self.llm.generate(prompts, params)]
        except LLMError:
            if self.on_error == "raise":
                raise
            charge(llm_errors=1)
            return np.ones(n)  # no judgment: keep everything rather than lose the evidence
        for order, reply in zip(orders, replies):
            if reply.strip().lower().startswith("none"):
                continue
            picked, invalid = parse_selection(reply, n)
            if invalid:
                charge(invalid_selections=invalid)
            for pos in picked:
                counts[order[pos - 1]] += 1
        return counts / len(orders)

    def transform(self, inp: Rankings) -> Rankings:
        lists = []
        for i, query in enumerate(inp.queries):
            lo, hi = int(inp.offsets[i]), int(inp.offsets[i + 1])
            ids = inp.doc_ids[lo:hi].tolist()[: int(self.window)]
            if not ids:
                lists.append(([], []))
                continue
            docs = self.index.documents(ids) if self.index is not None else None
            if docs is None:
                raise ConfigError("utility needs passage text: name an index with stored documents")
            passages = [self.llm.truncate(passage_text(d.title, d.text), int(self.max_passage_tokens)) for d in docs]
            share = self.votes(question_text(query), query.qid, passages)
            keep = [j for j in np.lexsort((np.arange(len(ids)), -share)) if share[j] >= float(self.min_votes) - 1e-9]
            charge(kept_passages=len(keep))
            lists.append(([ids[j] for j in keep], [float(share[j]) for j in keep]))
        return Rankings.from_lists(inp.queries, lists, costs=inp.costs)


__all__ = ["UtilityFilter", "parse_selection"]
