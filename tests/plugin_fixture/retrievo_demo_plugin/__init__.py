"""A third-party stage package, as a plugin author would write one (test fixture).

It is found only through the ``retrievo.stages`` entry-point group declared in the
neighbouring ``.dist-info`` folder, never imported by retrievo itself: the tests put this
folder on ``sys.path`` and check that the registry lists, checks, builds and pickles the
stage like a built-in one.
"""

from __future__ import annotations

import numpy as np

from retrievo.pipeline import Reranker, spec_call
from retrievo.registry import Option, StageEntry
from retrievo.types import Rankings


class ReciprocalRank(Reranker):
    """Replaces each score by ``weight / (offset + rank)``: the ranking is kept, the scores
    become comparable across queries (what a fusion of heterogeneous systems wants)."""

    name = "demo_reciprocal"

    def __init__(self, offset: int = 60, weight: float = 1.0):
        self.offset, self.weight = offset, weight

    @classmethod
    def from_options(cls, ctx, **options):
        return cls(**options)

    def transform(self, inp: Rankings) -> Rankings:
        ranks = np.arange(len(inp.doc_ids)) - np.repeat(inp.offsets[:-1], inp.lengths) + 1
        return Rankings(inp.queries, inp.doc_ids, self.weight / (self.offset + ranks), inp.offsets)

    def spec(self, resources: bool = True) -> str:
        params = {}
        if self.offset != 60:
            params["offset"] = self.offset
        if self.weight != 1.0:
            params["weight"] = self.weight
        return spec_call(self.name, params)


ENTRY = StageEntry(
    "demo_reciprocal", "retrievo_demo_plugin:ReciprocalRank.from_options",
    "test plugin: scores become weight / (offset + rank)", "reranker",
    (Option("offset", "int", 60, "rank offset", min=0), Option("weight", "float", 1.0, "scale", min=0)),
)
