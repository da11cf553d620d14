"""Closed-book answering: the model answers from what it knows, reading no passage.

The baseline of every retrieval-augmented method (and what relevance gating falls back
to when it rejects every passage). It takes queries — or a ranking, whose passages it
ignores, so ``bm25 % 5 >> closed_book`` and ``closed_book`` answer alike; its answers have
no citations and no contexts.

Cost: one LLM call per query.
"""

from __future__ import annotations

from dataclasses import dataclass

from retrievo.pipeline import as_queries
from retrievo.rag.base import LLMReader, question_text
from retrievo.types import Answers, Queries, Rankings


@dataclass
class ClosedBook(LLMReader):
    """``closed_book(model=smollm2, max_tokens=32)``."""

    name = "closed_book"
    takes = (Queries, Rankings)
    needs_abstain_text = False
    streams = True

    def transform(self, inp) -> Answers:
        queries = as_queries(inp)
        texts = [self.closed_book(question_text(q)).text for q in queries]
        return Answers.from_lists(queries, texts, [[] for _ in texts], contexts=None, costs=inp.costs)

    def stream_answer(self, query, doc_ids=(), scores=None):
        """Streams the closed-book reply (any passages given are ignored)."""
        from retrievo.rag.base import AnswerStream

        return AnswerStream(self, question_text(query), [])

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "on_empty", "closed_book")


__all__ = ["ClosedBook"]
