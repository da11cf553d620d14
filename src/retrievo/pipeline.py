"""The stage protocol, stage kinds and their algebra.

A stage maps one kind of batch to another. The kinds are data types of
:mod:`retrievo.types` — :class:`Queries`, :class:`Rankings`, :class:`Answers` — and every
stage declares what it takes and what it gives:

=========== ======================= =========== =========================================
kind        takes                   gives       examples
=========== ======================= =========== =========================================
retriever   Queries                 Rankings    bm25, dense, splade
rewriter    Queries or Rankings     Queries     rm3 (weighted terms), hyde, query2doc
reranker    Rankings                Rankings    cross-encoder, pointwise, rankgpt, first
reader      Rankings                Answers     read, iter_retgen
=========== ======================= =========== =========================================

**A retriever after a ranking scores only the candidates.** ``bm25 >> bm25(method=bm25l)``
re-scores the first stage's documents with the second model, as a reranker would (and as
PyTerrier's retrievers do when given results); it never silently retrieves afresh. A
retriever that cannot score given candidates does not take ``Rankings``, so placing it
after a ranking fails when the pipeline is built. To retrieve afresh with a rewritten
query, put a rewriter in between: ``bm25 >> rm3 >> bm25``.

Operators, borrowed from PyTerrier's algebra but over immutable columnar batches:

* ``a >> b`` — then; checked when built: ``a`` must give what ``b`` takes, else a
  :class:`~retrievo.errors.PipelineCompositionError` naming both stages;
* ``a % k``  — cut-off: keep the top ``k`` (pushed into ``a`` when ``a`` can stop early);
* ``a + b``  — CombSUM fusion; ``fuse(a, b, method="rrf")`` for reciprocal-rank fusion.

Costs: every leaf stage appends a :class:`~retrievo.types.Cost` (seconds, queries, and
whatever it charged with :func:`charge` while it ran: model calls, prompt/completion
tokens, forward passes) to the batch it returns, so every report can sum them per stage.

A pipeline is a value: ``str(p)`` prints a spec that :func:`parse` turns back into an
equivalent pipeline, naming its resources (``bm25(index='sf.idx')``), and pickling a
pipeline sends that spec (plus any in-memory resources by value), so it rebuilds in a
fresh process. The registry of stage names lives in :mod:`retrievo.registry`; this module
imports no method (``import retrievo.pipeline`` loads neither retrievers nor models).
"""

from __future__ import annotations

import contextvars
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrievo.errors import PipelineCompositionError, PipelineSpecError, StageInputError
from retrievo.types import Answers, Cost, Queries, Rankings

QueryInput = Queries | Rankings | Mapping[str, str] | Sequence[str] | str
Batch = Queries | Rankings | Answers

#: what each data type is called in messages
KIND_NAMES = {Queries: "queries", Rankings: "rankings", Answers: "answers"}


def as_queries(inp: QueryInput) -> Queries:
    """The queries of any batch (a ranking's or answer's queries, or user input)."""
    if isinstance(inp, (Rankings, Answers)):
        return inp.queries
    return Queries.of(inp)


def as_batch(inp: Any) -> Batch:
    """Accept the shapes users naturally pass: a batch as is; a string, list of strings,
    ``{qid: text}`` or ``(qid, text)`` pairs as queries; anything else is a typed error."""
    if isinstance(inp, (Queries, Rankings, Answers)):
        return inp
    try:
        return Queries.of(inp)
    except (TypeError, ValueError) as exc:
        raise StageInputError(f"a stage takes Queries, Rankings or Answers (or query strings), "
                              f"got {type(inp).__name__}: {exc}") from None


def _names(types: Sequence[type]) -> str:
    return " or ".join(KIND_NAMES.get(t, t.__name__) for t in types)


# --------------------------------------------------------------------------------------
# Cost metering
# --------------------------------------------------------------------------------------


class _Meter:
    __slots__ = ("calls", "prompt_tokens", "completion_tokens", "forward_passes", "extra")

    def __init__(self):
        self.calls = self.prompt_tokens = self.completion_tokens = self.forward_passes = 0
        self.extra: dict[str, float] = {}


_METER: contextvars.ContextVar[_Meter | None] = contextvars.ContextVar("retrievo_cost_meter", default=None)


def charge(calls: int = 0, prompt_tokens: int = 0, completion_tokens: int = 0, forward_passes: int = 0,
           **extra: float) -> None:
    """Count work in the cost record of the stage running now (in this thread or task).

    A stage's ``transform`` calls this for each model call it makes, e.g.
    ``charge(calls=1, prompt_tokens=812, completion_tokens=9)``; the counts land in the
    :class:`Cost` that ``Stage.__call__`` appends. Sub-pipelines a stage runs keep their
    own records. Outside a stage it does nothing.
    """
    meter = _METER.get()
    if meter is None:
        return
    meter.calls += int(calls)
    meter.prompt_tokens += int(prompt_tokens)
    meter.completion_tokens += int(completion_tokens)
    meter.forward_passes += int(forward_passes)
    for k, v in extra.items():
        meter.extra[k] = meter.extra.get(k, 0) + v


def _new_costs(before: tuple[Cost, ...], out_costs: tuple[Cost, ...]) -> tuple[Cost, ...]:
    """Costs a transform added to its output beyond those of its input."""
    if out_costs[: len(before)] == before:
        return out_costs[len(before):]
    return out_costs


# --------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------


class Stage(ABC):
    """Base of every pipeline stage. Subclasses implement :meth:`transform` and declare
    ``takes`` (the batch types they accept) and ``gives`` (the type they return); the
    kind base classes below (:class:`Retriever`, :class:`Rewriter`, :class:`Reranker`,
    :class:`Reader`) set both."""

    #: short name used in cost records and printed specs
    name: str = "stage"
    #: what the stage is, for listings and messages
    kind: str = "stage"
    takes: tuple[type, ...] = (Queries, Rankings)
    gives: type = Rankings

    @abstractmethod
    def transform(self, inp: Batch) -> Batch:
        """Return a new batch for ``inp``; never mutate it."""

    def __call__(self, inp: Any) -> Batch:
        data = self._accept(inp)
        meter = _Meter()
        token = _METER.set(meter)
        start = time.perf_counter()
        try:
            out = self.transform(data)
        finally:
            _METER.reset(token)
        seconds = time.perf_counter() - start
        if not isinstance(out, self.gives):
            raise TypeError(f"stage {self.spec(resources=False)!r} returned {type(out).__name__}, "
                            f"but declares that it gives {KIND_NAMES.get(self.gives, self.gives.__name__)}")
        cost = Cost(self.name, seconds, queries=len(data), calls=meter.calls, extra=dict(meter.extra),
                    prompt_tokens=meter.prompt_tokens, completion_tokens=meter.completion_tokens,
                    forward_passes=meter.forward_passes)
        return out.with_costs((*data.costs, *_new_costs(data.costs, out.costs), cost))

    def _accept(self, inp: Any) -> Batch:
        data = as_batch(inp)
        if not isinstance(data, self.takes):
            hint = ""
            if isinstance(data, Queries) and Rankings in self.takes:
                hint = f"; run a retriever first, e.g. 'bm25 >> {self.spec(resources=False)}'"
            raise StageInputError(f"{self.kind} {self.spec(resources=False)!r} takes {_names(self.takes)}, "
                                  f"got {KIND_NAMES.get(type(data), type(data).__name__)}{hint}")
        return data

    def search(self, query: str, k: int | None = None):
        """Convenience for one query string: its :class:`RankedList` (or :class:`Answer`)."""
        result = self(Queries(["q"], [query]))[0]
        return result if k is None or not hasattr(result, "top") else result.top(k)

    # algebra ------------------------------------------------------------------------
    def __rshift__(self, other: "Stage") -> "Stage":
        return Then.of(self, _stage(other))

    def __mod__(self, k: int) -> "Stage":
        return Then.of(self, CutOff(_cutoff_value(k)))

    def __add__(self, other: "Stage") -> "Stage":
        return Fuse((self, _stage(other)), method="sum")

    def with_cutoff(self, k: int) -> "Stage | None":
        """A copy that returns at most ``k`` results natively, or None if unsupported."""
        return None

    # identity -----------------------------------------------------------------------
    def spec(self, resources: bool = True) -> str:
        """The spec string that rebuilds this stage; ``resources=False`` leaves out the
        resources it names (index paths), for tables and labels."""
        return self.name

    def resources(self) -> dict[str, Any]:
        """In-memory resources this stage names in its spec, by name (see
        :mod:`retrievo.resources`); on-disk ones travel by their path in the spec."""
        return {}

    def record_spec(self) -> str:
        """The spec to write into a protocol: the full spec when every resource it names
        lives on disk (so the record rebuilds the pipeline), else the spec without
        resources — an in-memory index's name means nothing outside this process, and its
        content identity is recorded beside the spec."""
        return self.spec(resources=False) if self.resources() else self.spec()

    def rebuildable(self) -> bool:
        """Whether :func:`parse` can rebuild this stage from its spec (registered name)."""
        from retrievo.registry import REGISTRY

        return REGISTRY.knows(self.name)

    def __str__(self) -> str:
        return self.spec()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec()}>"

    def __copy__(self):
        # copy.copy must not go through __reduce_ex__ (that would rebuild from the spec)
        out = object.__new__(type(self))
        if hasattr(self, "__dict__"):
            out.__dict__.update(self.__dict__)
        return out

    def __reduce_ex__(self, protocol):
        """Pickle a rebuildable pipeline as its spec plus in-memory resources, so it
        rebuilds in another process without pickling caches, thread state or mmaps."""
        if self.rebuildable():
            return (_rebuild, (self.spec(), self.resources()))
        return super().__reduce_ex__(protocol)


def _rebuild(spec: str, memory: Mapping[str, Any]) -> "Stage":
    from retrievo.resources import register_memory

    for name, obj in memory.items():
        register_memory(name, obj)
    return parse(spec)


class Retriever(Stage):
    """Queries → rankings. A retriever that can score given candidates also takes
    rankings (see the module docstring); the default takes queries only."""

    kind = "retriever"
    takes = (Queries,)
    gives = Rankings


class Rewriter(Stage):
    """Queries (or a first-stage ranking, for feedback methods) → rewritten queries,
    possibly with weighted terms (:attr:`Queries.terms`)."""

    kind = "rewriter"
    takes = (Queries, Rankings)
    gives = Queries


class Reranker(Stage):
    """Rankings → rankings over the same candidates (reading document text from a store)."""

    kind = "reranker"
    takes = (Rankings,)
    gives = Rankings


class Reader(Stage):
    """Rankings → answers (text with cited document ids)."""

    kind = "reader"
    takes = (Rankings,)
    gives = Answers


def _stage(obj: Any) -> Stage:
    if isinstance(obj, Stage):
        return obj
    raise PipelineCompositionError(f"cannot compose a pipeline with {type(obj).__name__}; expected a Stage")


def _cutoff_value(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise PipelineSpecError(f"a cut-off needs a whole number >= 1, got {k!r}")
    return int(k)


def _fmt_value(v: Any) -> str:
    if isinstance(v, Stage):
        return v.spec()
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return repr(v)
    return str(v)


def spec_call(name: str, params: Mapping[str, Any]) -> str:
    """``name(key=value, ...)``, or just ``name`` when there are no parameters."""
    if not params:
        return name
    return f"{name}(" + ", ".join(f"{k}={_fmt_value(v)}" for k, v in params.items()) + ")"


@dataclass(frozen=True, eq=False)
class CutOff(Stage):
    k: int
    name = "cutoff"
    kind = "cutoff"
    takes = (Rankings,)
    gives = Rankings

    def __post_init__(self):
        _cutoff_value(self.k)

    def transform(self, inp):
        return inp.cut(self.k)

    def spec(self, resources: bool = True) -> str:
        return f"% {self.k}"

    def rebuildable(self) -> bool:
        return True


def check_composable(first: Stage, second: Stage) -> None:
    """Raise :class:`PipelineCompositionError` unless ``second`` takes what ``first`` gives."""
    if not issubclass(first.gives, second.takes):
        a, b = first.spec(resources=False), second.spec(resources=False)
        raise PipelineCompositionError(
            f"cannot run {second.kind} {b!r} after {a!r}: {a!r} gives {_names((first.gives,))}, "
            f"but {b!r} takes {_names(second.takes)}")


class _Composite:
    """What a stage made of stages (``Then``, ``Fuse``) derives from its parts."""

    stages: tuple[Stage, ...]

    def resources(self) -> dict[str, Any]:
        return {k: v for s in self.stages for k, v in s.resources().items()}

    def rebuildable(self) -> bool:
        return all(s.rebuildable() for s in self.stages)

    @property
    def models(self) -> list[Any]:
        """Identities of the models the parts use, each once (for protocols; BM25 has none)."""
        out: list[Any] = []
        for s in self.stages:
            models = getattr(s, "models", None)
            if models is None or callable(models) or isinstance(models, (str, bytes)):
                continue
            out.extend(m for m in models if m not in out)
        return out


@dataclass(frozen=True, eq=False)
class Then(_Composite, Stage):
    """Run stages in sequence; each gets the previous one's output."""

    stages: tuple[Stage, ...]
    name = "then"
    kind = "pipeline"

    def __post_init__(self):
        for a, b in zip(self.stages, self.stages[1:]):
            check_composable(a, b)

    @property
    def takes(self):  # type: ignore[override]
        return self.stages[0].takes

    @property
    def gives(self):  # type: ignore[override]
        return self.stages[-1].gives

    @classmethod
    def of(cls, first: Stage, second: Stage) -> Stage:
        left = first.stages if isinstance(first, Then) else (first,)
        right = second.stages if isinstance(second, Then) else (second,)
        stages = list(left)
        for s in right:
            # compile step: push a cut-off into the stage before it when it can stop early
            if isinstance(s, CutOff) and stages:
                check_composable(stages[-1], s)
                pushed = stages[-1].with_cutoff(s.k)
                if pushed is not None:
                    stages[-1] = pushed
                    continue
            if stages:
                check_composable(stages[-1], s)
            stages.append(s)
        return stages[0] if len(stages) == 1 else cls(tuple(stages))

    def __call__(self, inp: Any) -> Batch:
        data = self.stages[0]._accept(inp)
        for s in self.stages:
            data = s(data)
        return data

    def transform(self, inp):
        return self(inp)

    def with_cutoff(self, k: int) -> Stage | None:
        pushed = self.stages[-1].with_cutoff(k)
        return Then(self.stages[:-1] + (pushed,)) if pushed is not None else None

    def spec(self, resources: bool = True) -> str:
        parts: list[str] = []
        for s in self.stages:
            text = s.spec(resources)
            if isinstance(s, CutOff):
                parts[-1] = f"{parts[-1]} {text}"
            else:
                parts.append(f"({text})" if isinstance(s, Fuse) and s.method == "sum" else text)
        return " >> ".join(parts)


FUSION_METHODS = ("rrf", "sum", "max", "mnz")
NORMALIZATIONS = ("none", "minmax")


@dataclass(frozen=True, eq=False)
class Fuse(_Composite, Stage):
    """Fuse the rankings of several stages run on the same input.

    ``rrf``: sum of ``w / (k + rank)`` (Cormack et al., 2009, ranks from 1);
    ``sum`` (CombSUM), ``max`` (CombMAX), ``mnz`` (CombMNZ) over the raw or, with
    ``normalize="minmax"``, per-query min-max normalised scores; ``weights`` scale each
    branch. Ties are broken by document id so fusion is deterministic.
    """

    stages: tuple[Stage, ...]
    method: str = "rrf"
    k: int = 60
    weights: tuple[float, ...] | None = None
    normalize: str | None = None
    name = "fuse"
    kind = "fusion"
    gives = Rankings

    def __post_init__(self):
        if self.method not in FUSION_METHODS:
            raise PipelineSpecError(f"unknown fusion method {self.method!r}; choose from {', '.join(FUSION_METHODS)}")
        if self.weights is not None and len(self.weights) != len(self.stages):
            raise PipelineSpecError(f"{len(self.weights)} weights for {len(self.stages)} fused stages")
        if self.normalize not in (None, *NORMALIZATIONS):
            raise PipelineSpecError(f"unknown normalisation {self.normalize!r}; use 'minmax' or none")
        if len(self.stages) < 2:
            raise PipelineSpecError("fusion needs at least two stages")
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 0:
            raise PipelineSpecError(f"the rrf constant k must be a whole number >= 0, got {self.k!r}")
        for s in self.stages:
            if not issubclass(s.gives, Rankings):
                raise PipelineCompositionError(
                    f"cannot fuse {s.spec(resources=False)!r}: it gives {_names((s.gives,))}, fusion needs rankings")
        if not self.takes:
            raise PipelineCompositionError("the fused stages take no common input kind: "
                                           + "; ".join(f"{s.spec(resources=False)!r} takes {_names(s.takes)}"
                                                       for s in self.stages))

    @property
    def takes(self):  # type: ignore[override]
        common = [t for t in (Queries, Rankings, Answers) if all(issubclass(t, s.takes) for s in self.stages)]
        return tuple(common)

    def __add__(self, other: Stage) -> Stage:
        if self.method == "sum" and self.weights is None and self.normalize is None:
            return Fuse((*self.stages, _stage(other)), method="sum")
        return super().__add__(other)

    def __call__(self, inp: Any) -> Rankings:
        data = self._accept(inp)
        branches = [s(data) for s in self.stages]
        fuse_start = time.perf_counter()
        fused = fuse_rankings(branches, self.method, self.k, self.weights, self.normalize)
        before = data.costs
        costs = list(before)
        for b in branches:
            costs.extend(_new_costs(before, b.costs))
        costs.append(Cost("fuse", time.perf_counter() - fuse_start, queries=len(data)))
        return fused.with_costs(costs)

    def transform(self, inp):
        return self(inp)

    def spec(self, resources: bool = True) -> str:
        if self.method == "sum" and self.weights is None and self.normalize is None:
            return " + ".join(s.spec(resources) for s in self.stages)
        params: dict[str, Any] = {}
        if self.method == "rrf" and self.k != 60:
            params["k"] = self.k
        if self.weights is not None:
            params["weights"] = "/".join(str(w) for w in self.weights)
        if self.normalize:
            params["normalize"] = self.normalize
        extra = "".join(f", {k}={_fmt_value(v) if not isinstance(v, str) else v}" for k, v in params.items())
        return f"{self.method}(" + ", ".join(s.spec(resources) for s in self.stages) + extra + ")"


def fuse(*stages: Stage, method: str = "rrf", k: int = 60, weights: Sequence[float] | None = None,
         normalize: str | None = None) -> Fuse:
    if normalize == "none":
        normalize = None
    return Fuse(tuple(_stage(s) for s in stages), method, k, None if weights is None else tuple(weights), normalize)


def fuse_rankings(branches: Sequence[Rankings], method: str = "rrf", k: int = 60,
                  weights: Sequence[float] | None = None, normalize: str | None = None) -> Rankings:
    """Fuse rankings of the same queries (see :class:`Fuse`)."""
    queries = branches[0].queries
    for b in branches[1:]:
        if b.queries.ids != queries.ids:
            raise ValueError("fused rankings must answer the same queries in the same order")
    weights = [1.0] * len(branches) if weights is None else list(weights)
    lists = []
    for qi in range(len(queries)):
        docs_parts, val_parts = [], []
        for w, b in zip(weights, branches):
            r = b[qi]
            if not len(r):
                continue
            if method == "rrf":
                vals = w / (k + np.arange(1, len(r) + 1, dtype=np.float64))
            else:
                vals = r.scores.astype(np.float64)
                if normalize == "minmax":
                    lo, hi = vals.min(), vals.max()
                    vals = (vals - lo) / (hi - lo) if hi > lo else np.ones_like(vals)
                vals = w * vals
            docs_parts.append(r.doc_ids)
            val_parts.append(vals)
        if not docs_parts:
            lists.append((np.empty(0, object), np.empty(0)))
            continue
        docs = np.concatenate(docs_parts).astype(str)
        vals = np.concatenate(val_parts)
        uniq, inv = np.unique(docs, return_inverse=True)
        if method == "max":
            fused = np.full(len(uniq), -np.inf)
            np.maximum.at(fused, inv, vals)
        else:
            fused = np.bincount(inv, weights=vals, minlength=len(uniq))
            if method == "mnz":
                fused *= np.bincount(inv, minlength=len(uniq))
        order = np.lexsort((uniq, -fused))
        lists.append((uniq[order].astype(object), fused[order]))
    return Rankings.from_lists(queries, lists)


# --------------------------------------------------------------------------------------
# Spec strings (the parser and registry live in retrievo.spec / retrievo.registry)
# --------------------------------------------------------------------------------------


def parse(spec: "str | Stage", ctx: Mapping[str, Any] | None = None, registry=None) -> Stage:
    """Build a pipeline from a spec string such as ``"bm25 % 100 >> rm3 >> bm25"``.

    The whole spec is checked first — stage names, option names and values, sub-pipelines
    and resource names — and only then are stages built, so a typo costs nothing.
    ``ctx`` supplies default resources to stages that do not name theirs (e.g.
    ``{"index": idx}``).
    """
    if isinstance(spec, Stage):
        return spec
    from retrievo.spec import build, parse_spec

    return build(parse_spec(spec, registry), {} if ctx is None else ctx, registry)


def __getattr__(name: str):
    # the registry moved to retrievo.registry; keep the old import paths working lazily
    if name in ("REGISTRY", "Registry", "register"):
        import retrievo.registry as _registry

        return getattr(_registry, name)
    raise AttributeError(f"module 'retrievo.pipeline' has no attribute {name!r}")


__all__ = ["Stage", "Retriever", "Rewriter", "Reranker", "Reader", "CutOff", "Then", "Fuse", "fuse",
           "fuse_rankings", "parse", "charge", "check_composable", "as_queries", "as_batch", "spec_call",
           "FUSION_METHODS", "KIND_NAMES"]
