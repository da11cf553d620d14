"""Retrieve-then-read: answer from the top passages of the ranking the reader receives.

``bm25 % 10 >> read(k=5)`` — the retriever's top ten are the reader's input (and its
``contexts`` in the :class:`~retrievo.types.Answers`, for evidence recall); at most ``k``
of them, deduplicated, truncated and within the token budget, are shown to the model with
markers ``[n]``; the reply's ``[n]`` become the cited document ids. Everything but the
prompt is :class:`~retrievo.rag.base.LLMReader`'s, documented there.

Cost: one LLM call per query (none for an empty ranking with ``on_empty='abstain'``).
"""

from __future__ import annotations

from dataclasses import dataclass

from retrievo.rag.base import LLMReader


@dataclass
class Read(LLMReader):
    """``read(k=5, order=rank, abstain='insufficient evidence', prompt=read)``."""

    name = "read"
    streams = True


__all__ = ["Read"]
