"""Think before retrieve: the LLM first reasons about what must be looked up, and retrieval
searches with the question plus that reasoning (the retrieval step of IRCoT-style
interleaving, done once, before any passage is read). The reasoning names the bridge
entities and attributes a multi-hop question leaves implicit.

Cost: one LLM call per query.
"""

from __future__ import annotations

from dataclasses import dataclass

from retrievo.rewrite.generative import GenerativeRewriter


@dataclass
class Think(GenerativeRewriter):
    """``think(max_tokens=64)``."""

    name = "think"
    template_name = "think"

    def combine(self, question: str, generated: str) -> str:
        return f"{question} {generated}"


__all__ = ["Think"]
