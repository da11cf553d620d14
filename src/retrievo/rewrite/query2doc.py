"""query2doc (Wang et al., 2023): expand the query with a generated pseudo-document.

For sparse retrieval the paper repeats the query ``repeat`` times (5) before the
pseudo-document, so the original terms keep their weight against the longer generated
text; for dense retrieval it joins query and document once (``repeat=1``). The paper
prompts with few-shot examples from MS MARCO; the bundled template has none (small models
copy examples verbatim), which is a deviation to keep in mind when comparing numbers.

Cost: one LLM call per query.
"""

from __future__ import annotations

from dataclasses import dataclass

from retrievo.errors import ConfigError
from retrievo.rewrite.generative import GenerativeRewriter


@dataclass
class Query2Doc(GenerativeRewriter):
    """``query2doc(repeat=5, max_tokens=64)``."""

    repeat: int = 5
    name = "query2doc"
    template_name = "query2doc"

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.repeat, bool) or not isinstance(self.repeat, int) or self.repeat < 1:
            raise ConfigError(f"query2doc: repeat must be a whole number >= 1, got {self.repeat!r}")

    def combine(self, question: str, generated: str) -> str:
        return " ".join([question] * int(self.repeat) + [generated])


__all__ = ["Query2Doc"]
