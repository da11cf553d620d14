"""HyDE (Gao et al., 2023): search with a hypothetical document instead of the question.

The LLM writes a short passage answering the question; its facts may be wrong, but its
wording resembles the documents that hold the real answer, so a dense (or lexical)
retriever matches documents to it better than to the short question. The paper encodes
several generated documents and the query and averages their vectors; at the text level,
as here, the new query is the question followed by the generated passage (one generation:
its encoder sees both, the question anchoring the hypothetical text), e.g.
``hyde >> dense % 10 >> read``.

Cost: one LLM call per query.
"""

from __future__ import annotations

from dataclasses import dataclass

from retrievo.rewrite.generative import GenerativeRewriter


@dataclass
class HyDE(GenerativeRewriter):
    """``hyde(model=smollm2, max_tokens=64)``."""

    name = "hyde"
    template_name = "hyde"

    def combine(self, question: str, generated: str) -> str:
        return f"{question}\n{generated}"


__all__ = ["HyDE"]
