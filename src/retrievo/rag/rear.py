"""Relevance-aware gating (after REAR, Wang et al. 2024): a relevance score per passage
decides which passages the reader sees — or that it answers without any.

REAR trains the generator to emit a relevance score before reading; here any reranker
gives the score (``scorer``, a sub-pipeline over rankings: ``pointwise`` by default, whose
score is log P(Yes) − log P(No), so ``threshold=0`` keeps the passages the model judges
more likely relevant than not). Passages scoring at least ``threshold`` are read, best
first, as ``read`` reads them; when the scorer rejects every passage the reader answers
**closed-book** (the model's own knowledge) instead of from passages it judged
irrelevant — counted as ``gated_closed_book`` in the cost record. The answer's
``contexts`` is the scored ranking (every candidate with the scorer's score).

Cost: the scorer's (counted in this record) plus one read or closed-book call per query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from retrievo.errors import ConfigError
from retrievo.pipeline import Stage, charge
from retrievo.rag.base import LLMReader, question_text, ranked, run_sub
from retrievo.types import Answers, Rankings


@dataclass
class REAR(LLMReader):
    """``rear(scorer=pointwise, threshold=0.0, k=5)``."""

    scorer: Any = None
    threshold: float = 0.0
    name = "rear"
    needs_abstain_text = False

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.scorer, Stage) or not issubclass(Rankings, self.scorer.takes) \
                or not issubclass(self.scorer.gives, Rankings):
            raise ConfigError("rear needs a scorer sub-pipeline from rankings to rankings (a reranker), "
                              "e.g. rear(scorer=pointwise)")
        if not np.isfinite(float(self.threshold)):
            raise ConfigError(f"rear: threshold must be a finite number, got {self.threshold!r}")

    @classmethod
    def from_options(cls, ctx, index=None, scorer=None, **options):
        from retrievo.pipeline import parse

        index = index if index is not None else ctx.get("index")
        if scorer is None:
            scorer = parse("pointwise", {"index": index})
        return cls(index=index, scorer=scorer, **options)

    def transform(self, inp: Rankings) -> Answers:
        scored = run_sub(self.scorer, inp)
        texts, cites = [], []
        for i, query in enumerate(inp.queries):
            q = question_text(query)
            ids, scores = ranked(scored, i)
            keep = [(d, s) for d, s in zip(ids, scores) if s >= self.threshold]
            if not keep:
                charge(gated_closed_book=1)
                r = self.closed_book(q)
            else:
                charge(gated_passages=len(keep))
                r = self.read(q, self.context(q, [d for d, _ in keep], [s for _, s in keep]))
            texts.append(r.text)
            cites.append(r.citations)
        contexts = Rankings(inp.queries, scored.doc_ids, scored.scores, scored.offsets)
        return Answers.from_lists(inp.queries, texts, cites, contexts=contexts, costs=inp.costs)


__all__ = ["REAR"]
