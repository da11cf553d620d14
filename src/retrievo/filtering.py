"""Apply one metadata filter to every retriever of a built pipeline (``--filter``).

A filter is an option of each retriever that supports it (``bm25(filter=...)``,
``dense(filter=...)``, ``bm25f(filter=...)``), because each applies it inside its own
top-k selection. The command line takes one ``--filter`` for the whole pipeline; this
module hands it to every stage that has a ``filter`` option, walking sequences and
fusions, so ``retrievo search IDX -p "bm25 + dense" --filter "year >= 2015"`` filters both
branches before they are fused. Stages are values: the pipeline is copied, never changed.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from retrievo.errors import ConfigError


def _filtered(stage: Any, expression: str, found: list[Any]) -> Any:
    parts = getattr(stage, "stages", None)
    if isinstance(parts, tuple) and dataclasses.is_dataclass(stage):
        return dataclasses.replace(stage, stages=tuple(_filtered(s, expression, found) for s in parts))
    if dataclasses.is_dataclass(stage) and any(f.name == "filter" for f in dataclasses.fields(stage)):
        if getattr(stage, "filter", None) not in (None, expression):
            raise ConfigError(f"{stage.spec(resources=False)} already has a filter; give the filter once "
                              "(in the spec or with --filter, not both)")
        clone = copy.copy(stage)  # shares the stage's search arrays: nothing is recomputed
        clone.filter = expression
        clone.index.filter_mask(expression)  # fail now on an unknown field or a wrong type
        found.append(clone)
        return clone
    return stage


def with_filter(stage: Any, expression: str | None) -> Any:
    """A copy of ``stage`` whose retrievers all apply ``expression`` (unchanged when it is
    None); a pipeline with no retriever that can filter is a :class:`ConfigError`."""
    if expression is None:
        return stage
    found: list[Any] = []
    out = _filtered(stage, expression, found)
    if not found:
        raise ConfigError(f"no stage of {stage.spec(resources=False)!r} takes a filter (bm25, bm25f and dense do)")
    return out


__all__ = ["with_filter"]
