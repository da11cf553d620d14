"""What the generative query rewriters share (HyDE, query2doc, think-before-retrieve): ask
the LLM one prompt per query, then build the new query text from the question and the
generation. Each method module defines its template and how the two are combined.

The rewritten :class:`~retrievo.types.Queries` keep their ids (so evaluation pairs them
with the original queries) and carry the original question in ``meta["question"]``, so a
reader later in the pipeline answers the *question*, not the expansion. An empty query is
an :class:`~retrievo.errors.EmptyQueryError`; a backend error propagates (``on_error=raise``)
or leaves the query unchanged (``on_error=keep``, counted as ``llm_errors``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from retrievo.errors import ConfigError, EmptyQueryError, LLMError
from retrievo.llm.stage import LLMStageMixin
from retrievo.pipeline import Rewriter, as_queries, charge
from retrievo.types import Queries

DEFAULT_LLM = "smollm2"


@dataclass
class GenerativeRewriter(LLMStageMixin, Rewriter):
    index: Any = None
    model: str = DEFAULT_LLM
    cache: str = ""
    max_tokens: int = 64
    on_error: str = "raise"
    _state: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    template_name = ""
    takes = (Queries,)

    def __post_init__(self):
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ConfigError(f"{self.name}: max_tokens must be a whole number >= 1, got {self.max_tokens!r}")
        if self.on_error not in ("raise", "keep"):
            raise ConfigError(f"{self.name}: on_error must be raise or keep, got {self.on_error!r}")
        from retrievo.llm.prompts import load_template

        self._state["template"] = load_template(self.template_name, required={"question"})

    @classmethod
    def from_options(cls, ctx: Mapping[str, Any], index: Any = None, **options: Any):
        return cls(index=None, **options)

    def combine(self, question: str, generated: str) -> str:
        """The new query text (each method's own rule)."""
        raise NotImplementedError

    def transform(self, inp) -> Queries:
        from retrievo.llm.base import GenerationParams

        queries = as_queries(inp)
        questions = []
        for q in queries:
            text = str(q.meta.get("question", q.text)).strip() if q.meta else q.text.strip()
            if not text:
                raise EmptyQueryError(f"query {q.qid!r} has no text: {self.name} needs a question")
            questions.append(text)
        prompts = [self._state["template"].render(question=t) for t in questions]
        params = GenerationParams(max_tokens=int(self.max_tokens), stop=("\n\n",))
        try:
            generated = [c.text.strip() for c in self.llm.generate(prompts, params)] if prompts else []
        except LLMError:
            if self.on_error == "raise":
                raise
            charge(llm_errors=len(prompts))
            generated = [""] * len(prompts)
        texts = [self.combine(q, g) if g else q for q, g in zip(questions, generated)]
        metas = [{**dict(q.meta or {}), "question": t} for q, t in zip(queries, questions)]
        return Queries(list(queries.ids), texts, metas, costs=inp.costs)


__all__ = ["GenerativeRewriter"]
