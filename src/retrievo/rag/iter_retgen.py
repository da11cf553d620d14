"""Iter-RetGen (Shao et al., 2023): retrieval and generation in turns, ``rounds`` times.

Round 1 retrieves with the question and answers from those passages (as ``read`` does);
every further round retrieves with *the question followed by the previous round's answer*
— the generation names entities the question only implies (the bridge entity of a
multi-hop question), so the next retrieval can find the second hop — and answers again.
The last round's answer is the answer; its retrieved list is the answer's ``contexts``.

Exactly ``rounds`` retrieval rounds run, whatever the answers say (the cost record counts
them in ``retrieval_rounds``: one per query per round), and one LLM call per round, so the
cost is predictable. The retriever is any sub-pipeline that takes queries
(``iter_retgen(bm25 % 5, rounds=3)``); its work is counted in this stage's record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from retrievo.pipeline import charge
from retrievo.rag.base import (LLMReader, answers_from, check_count, check_retriever, question_text, ranked, run_sub,
                               with_retriever)
from retrievo.types import Answers, Queries, Rankings


@dataclass
class IterRetGen(LLMReader):
    """``iter_retgen(retriever=bm25 % 5, rounds=3, k=5)``."""

    retriever: Any = None
    rounds: int = 3
    name = "iter_retgen"
    takes = (Queries,)

    def __post_init__(self):
        super().__post_init__()
        check_retriever(self.retriever, "iter_retgen", "iter_retgen(bm25 % 5)")
        check_count(self.rounds, "iter_retgen", "rounds")

    @classmethod
    def from_options(cls, ctx, index=None, retriever=None, **options):
        return with_retriever(cls, ctx, index, retriever, options)

    def transform(self, inp: Queries) -> Answers:
        questions = [question_text(q) for q in inp]
        answers = [""] * len(inp)
        readings: list = [None] * len(inp)
        retrieved = None
        for _round in range(int(self.rounds)):
            texts = [q if not a or a == self.abstain else f"{q} {a}" for q, a in zip(questions, answers)]
            retrieved = run_sub(self.retriever, Queries(list(inp.ids), texts))
            charge(retrieval_rounds=len(inp))
            for i, q in enumerate(questions):
                ids, scores = ranked(retrieved, i)
                readings[i] = self.read(q, self.context(q, ids, scores))
                answers[i] = readings[i].text
        contexts = Rankings(inp, retrieved.doc_ids, retrieved.scores, retrieved.offsets) if len(inp) else None
        return answers_from(inp, readings, contexts, inp.costs)


__all__ = ["IterRetGen"]
