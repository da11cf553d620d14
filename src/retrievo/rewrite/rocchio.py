"""Rocchio feedback for dense queries: rankings → a moved query vector.

Rocchio (1971) moves the query towards the documents judged (here: assumed) relevant::

    q' = alpha * q + beta * mean(top fb_docs document vectors)

The vectors come from the same vector index a ``dense`` stage searches (the cache of the
pipeline's lexical index, or a vector index named directly), the query vector from the
same encoder, so ``bm25 % 10 >> rocchio >> dense`` or ``dense % 10 >> rocchio >> dense``
feeds back through one model. With a normalising encoder (all-MiniLM-L6-v2) the new vector
is normalised again, so scores stay cosines.

The result travels as :class:`~retrievo.types.Queries` whose ``meta`` carries the vector
(``"vector"``) and the encoder's identity (``"vector_model"``): ``dense`` uses such a vector
instead of encoding the text and refuses one from another model. The text is kept, so a
lexical stage after it still sees the original query.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrievo.errors import ConfigError
from retrievo.pipeline import Rewriter, spec_call
from retrievo.resources import is_memory_name, resource_name
from retrievo.retrieve.dense import VECTOR_META, VECTOR_MODEL_META, Dense
from retrievo.types import Queries, Rankings


@dataclass(eq=False)
class Rocchio(Rewriter):
    """Dense pseudo-relevance feedback (see the module docstring)."""

    index: Any
    model: str | None = None
    fb_docs: int = 10
    alpha: float = 1.0
    beta: float = 0.5
    _state: dict[str, Any] = field(default_factory=dict, repr=False)
    name = "rocchio"
    takes = (Rankings,)

    def __post_init__(self):
        if self.fb_docs < 1:
            raise ConfigError(f"fb_docs must be >= 1, got {self.fb_docs}")
        if self.alpha < 0 or self.beta < 0 or self.alpha + self.beta == 0:
            raise ConfigError(f"alpha and beta must be >= 0 and not both 0, got {self.alpha}, {self.beta}")
        # the dense stage owns encoder loading and the vector cache; feedback reuses them
        self._dense = Dense(self.index, model=self.model)

    @classmethod
    def from_options(cls, ctx: Mapping[str, Any], index: Any = None, **options: Any) -> "Rocchio":
        index = index if index is not None else ctx.get("index")
        if index is None:
            raise ConfigError("the rocchio stage needs an index: name one (rocchio(index='sf.idx')) "
                              "or pass ctx={'index': ...}")
        return cls(index, **options)

    @property
    def models(self) -> list[str]:
        return self._dense.models

    def transform(self, inp: Rankings) -> Queries:
        queries = inp.queries
        if not len(queries):
            return Queries([], [], costs=queries.costs)
        encoder = self._dense.encoder()
        vindex = self._dense._vectors()
        qv = self._dense.query_vectors(queries)
        metas = []
        for qi, ranked in enumerate(inp):
            feedback = [d for d in ranked.doc_ids[: self.fb_docs].tolist() if d in vindex]
            vec = self.alpha * qv[qi]
            if feedback:
                vec = vec + self.beta * vindex.vectors(feedback).mean(axis=0)
            if encoder.normalize:
                norm = float(np.linalg.norm(vec))
                if norm > 0:
                    vec = vec / norm
            meta = dict(queries[qi].meta)
            meta[VECTOR_META] = np.asarray(vec, dtype=np.float32).tolist()
            meta[VECTOR_MODEL_META] = encoder.identity()
            metas.append(meta)
        return Queries(queries.ids, queries.texts, metas, terms=queries.terms, costs=queries.costs)

    def spec(self, resources: bool = True) -> str:
        params: dict[str, Any] = {}
        if self.model is not None:
            params["model"] = self.model
        for key, default in (("fb_docs", 10), ("alpha", 1.0), ("beta", 0.5)):
            if getattr(self, key) != default:
                params[key] = getattr(self, key)
        if resources:
            params["index"] = resource_name(self.index, "index")
        return spec_call("rocchio", params)

    def resources(self) -> dict[str, Any]:
        name = resource_name(self.index, "index")
        return {name: self.index} if is_memory_name(name) else {}


__all__ = ["Rocchio"]
