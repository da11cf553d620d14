"""The stage protocol and its algebra.

A stage maps a batch of queries (or of ranked candidates) to ranked candidates. Stages
compose with operators borrowed from PyTerrier's algebra but over immutable columnar
:class:`~retrievo.types.Rankings`, so no frame is copied or mutated along the way:

* ``a >> b``  — then: ``b`` reranks what ``a`` retrieved;
* ``a % k``   — cut-off: keep the top ``k`` (pushed into ``a`` when ``a`` can stop early);
* ``a + b``   — CombSUM fusion; ``fuse(a, b, method="rrf")`` for reciprocal-rank fusion.

Every leaf stage records a :class:`~retrievo.types.Cost` (wall time, query count) that
flows down the pipeline, so an experiment can report what each step spent. A pipeline is a
value: ``str(p)`` prints its spec, and :func:`parse` turns a spec back into a pipeline.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrievo.errors import PipelineSpecError
from retrievo.types import Cost, Queries, Rankings

QueryInput = Queries | Rankings | Mapping[str, str] | Sequence[str] | str


def as_queries(inp: QueryInput) -> Queries:
    return inp.queries if isinstance(inp, Rankings) else Queries.of(inp)


class Stage(ABC):
    """Base of every pipeline stage. Subclasses implement :meth:`transform`."""

    #: short name used in cost records and printed specs
    name: str = "stage"

    @abstractmethod
    def transform(self, inp: Queries | Rankings) -> Rankings:
        """Return new rankings for ``inp``; never mutate it."""

    def __call__(self, inp: QueryInput) -> Rankings:
        data = inp if isinstance(inp, Rankings) else Queries.of(inp)
        start = time.perf_counter()
        out = self.transform(data)
        cost = Cost(self.name, time.perf_counter() - start, queries=len(data))
        before = data.costs if isinstance(data, Rankings) else ()
        return out.with_costs((*before, cost))

    def search(self, query: str, k: int | None = None):
        """Convenience for one query string: its :class:`RankedList`."""
        ranked = self(Queries(["q"], [query]))[0]
        return ranked if k is None else ranked.top(k)

    # algebra ------------------------------------------------------------------------
    def __rshift__(self, other: "Stage") -> "Stage":
        return Then.of(self, _stage(other))

    def __mod__(self, k: int) -> "Stage":
        return Then.of(self, CutOff(int(k)))

    def __add__(self, other: "Stage") -> "Stage":
        return Fuse((self, _stage(other)), method="sum")

    def with_cutoff(self, k: int) -> "Stage | None":
        """A copy that returns at most ``k`` results natively, or None if unsupported."""
        return None

    def spec(self) -> str:
        return self.name

    def __str__(self) -> str:
        return self.spec()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec()}>"


def _stage(obj: Any) -> Stage:
    if isinstance(obj, Stage):
        return obj
    raise TypeError(f"cannot compose a pipeline with {type(obj).__name__}; expected a Stage")


def _fmt_value(v: Any) -> str:
    return repr(v) if isinstance(v, str) else str(v)


def spec_call(name: str, params: Mapping[str, Any]) -> str:
    """``name(key=value, ...)``, or just ``name`` when there are no parameters."""
    if not params:
        return name
    return f"{name}(" + ",".join(f"{k}={_fmt_value(v)}" for k, v in params.items()) + ")"


@dataclass(frozen=True, eq=False)
class CutOff(Stage):
    k: int
    name = "cutoff"

    def __post_init__(self):
        if self.k < 0:
            raise PipelineSpecError(f"cut-off must be >= 0, got {self.k}")

    def transform(self, inp):
        if not isinstance(inp, Rankings):
            raise TypeError("a cut-off needs ranked input; put it after a retriever")
        return inp.cut(self.k)

    def spec(self) -> str:
        return f"% {self.k}"


@dataclass(frozen=True, eq=False)
class Then(Stage):
    """Run stages in sequence; each gets the previous one's rankings."""

    stages: tuple[Stage, ...]
    name = "then"

    @classmethod
    def of(cls, first: Stage, second: Stage) -> Stage:
        left = first.stages if isinstance(first, Then) else (first,)
        right = second.stages if isinstance(second, Then) else (second,)
        stages = list(left)
        for s in right:
            # compile step: push a cut-off into the stage before it when it can stop early
            if isinstance(s, CutOff) and stages:
                pushed = stages[-1].with_cutoff(s.k)
                if pushed is not None:
                    stages[-1] = pushed
                    continue
            stages.append(s)
        return stages[0] if len(stages) == 1 else cls(tuple(stages))

    def __call__(self, inp: QueryInput) -> Rankings:
        data: Queries | Rankings = inp if isinstance(inp, Rankings) else Queries.of(inp)
        for s in self.stages:
            data = s(data)
        assert isinstance(data, Rankings)
        return data

    def transform(self, inp):
        return self(inp)

    def with_cutoff(self, k: int) -> Stage | None:
        pushed = self.stages[-1].with_cutoff(k)
        return Then(self.stages[:-1] + (pushed,)) if pushed is not None else None

    def spec(self) -> str:
        parts = []
        for s in self.stages:
            text = s.spec()
            if isinstance(s, CutOff):
                parts[-1] = f"{parts[-1]} {text}"
            else:
                parts.append(f"({text})" if isinstance(s, Fuse) and s.method == "sum" else text)
        return " >> ".join(parts)


FUSION_METHODS = ("rrf", "sum", "max", "mnz")


@dataclass(frozen=True, eq=False)
class Fuse(Stage):
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

    def __post_init__(self):
        if self.method not in FUSION_METHODS:
            raise PipelineSpecError(f"unknown fusion method {self.method!r}; choose from {', '.join(FUSION_METHODS)}")
        if self.weights is not None and len(self.weights) != len(self.stages):
            raise PipelineSpecError(f"{len(self.weights)} weights for {len(self.stages)} fused stages")
        if self.normalize not in (None, "none", "minmax"):
            raise PipelineSpecError(f"unknown normalisation {self.normalize!r}; use 'minmax' or none")
        if len(self.stages) < 2:
            raise PipelineSpecError("fusion needs at least two stages")

    def __add__(self, other: Stage) -> Stage:
        if self.method == "sum" and self.weights is None and self.normalize is None:
            return Fuse((*self.stages, _stage(other)), method="sum")
        return super().__add__(other)

    def __call__(self, inp: QueryInput) -> Rankings:
        data = inp if isinstance(inp, Rankings) else Queries.of(inp)
        branches = [s(data) for s in self.stages]
        fuse_start = time.perf_counter()
        fused = fuse_rankings(branches, self.method, self.k, self.weights, self.normalize)
        before = data.costs if isinstance(data, Rankings) else ()
        costs = list(before)
        for b in branches:
            costs.extend(b.costs[len(before):])
        costs.append(Cost("fuse", time.perf_counter() - fuse_start, queries=len(data)))
        return fused.with_costs(costs)

    def transform(self, inp):
        return self(inp)

    def spec(self) -> str:
        if self.method == "sum" and self.weights is None and self.normalize is None:
            return " + ".join(s.spec() for s in self.stages)
        params: dict[str, Any] = {}
        if self.method == "rrf" and self.k != 60:
            params["k"] = self.k
        if self.weights is not None:
            params["weights"] = "/".join(str(w) for w in self.weights)
        if self.normalize:
            params["normalize"] = self.normalize
        extra = "".join(f", {k}={_fmt_value(v)}" for k, v in params.items())
        return f"{self.method}(" + ", ".join(s.spec() for s in self.stages) + extra + ")"


def fuse(*stages: Stage, method: str = "rrf", k: int = 60, weights: Sequence[float] | None = None,
         normalize: str | None = None) -> Fuse:
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
# Spec strings: "bm25", "bm25(k1=1.2,b=0.75) % 100", "rrf(bm25, bm25(k1=1.5))"
# --------------------------------------------------------------------------------------

StageFactory = Callable[..., Stage]


@dataclass
class Registry:
    """Named stage factories. A factory gets the context mapping and the spec's keyword
    arguments, e.g. ``factory(ctx, k1=1.2)``; the context carries shared resources such
    as an index, so specs stay plain strings."""

    factories: dict[str, tuple[StageFactory, str]] = field(default_factory=dict)

    def register(self, name: str, factory: StageFactory, help: str = "") -> None:
        self.factories[name] = (factory, help)

    def build(self, name: str, ctx: Mapping[str, Any], kwargs: Mapping[str, Any]) -> Stage:
        if name not in self.factories and self is REGISTRY:
            import retrievo.retrieve  # noqa: F401  (built-in stages register themselves on import)
        if name not in self.factories:
            known = ", ".join(sorted(self.factories)) or "(none registered)"
            raise PipelineSpecError(f"unknown pipeline stage {name!r}; known stages: {known}")
        try:
            return self.factories[name][0](ctx, **kwargs)
        except TypeError as exc:
            raise PipelineSpecError(f"bad arguments for stage {name!r}: {exc}") from exc

    def describe(self) -> dict[str, str]:
        if self is REGISTRY:
            import retrievo.retrieve  # noqa: F401
        return {n: h for n, (_, h) in sorted(self.factories.items())}


REGISTRY = Registry()
register = REGISTRY.register

_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_][\w.\-/:]*)"
    r"|(?P<str>'[^']*'|\"[^\"]*\")|(?P<op>>>|[%+(),=]))"
)


def _tokenize(spec: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    spec = spec.rstrip()
    while pos < len(spec):
        m = _TOKEN.match(spec, pos)
        if not m or m.end() == pos:
            raise PipelineSpecError(f"cannot parse pipeline spec at position {pos}: {spec[pos:pos + 20]!r}")
        kind = m.lastgroup
        out.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, spec: str, ctx: Mapping[str, Any], registry: Registry):
        self.spec, self.ctx, self.registry = spec, ctx, registry
        self.toks = _tokenize(spec)
        self.i = 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, value: str | None = None, kind: str | None = None) -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value) or (kind is not None and tok[0] != kind):
            want = value or kind or "more input"
            got = "end of spec" if tok is None else repr(tok[1])
            raise PipelineSpecError(f"pipeline spec {self.spec!r}: expected {want}, got {got}")
        self.i += 1
        return tok

    def parse(self) -> Stage:
        if not self.toks:
            raise PipelineSpecError("empty pipeline spec")
        stage = self.then()
        if self.peek() is not None:
            raise PipelineSpecError(f"pipeline spec {self.spec!r}: unexpected {self.peek()[1]!r}")
        return stage

    def then(self) -> Stage:
        stage = self.plus()
        while self.peek() and self.peek()[1] == ">>":
            self.take(">>")
            stage = stage >> self.plus()
        return stage

    def plus(self) -> Stage:
        stage = self.cut()
        while self.peek() and self.peek()[1] == "+":
            self.take("+")
            stage = stage + self.cut()
        return stage

    def cut(self) -> Stage:
        stage = self.atom()
        while self.peek() and self.peek()[1] == "%":
            self.take("%")
            k = self.take(kind="num")[1]
            if not k.isdigit():
                raise PipelineSpecError(f"cut-off needs a whole number, got {k!r}")
            stage = stage % int(k)
        return stage

    def atom(self) -> Stage:
        tok = self.peek()
        if tok and tok[1] == "(":
            self.take("(")
            stage = self.then()
            self.take(")")
            return stage
        name = self.take(kind="name")[1]
        args: list[Stage] = []
        kwargs: dict[str, Any] = {}
        if self.peek() and self.peek()[1] == "(":
            self.take("(")
            while self.peek() and self.peek()[1] != ")":
                if self.peek()[0] == "name" and self.i + 1 < len(self.toks) and self.toks[self.i + 1][1] == "=":
                    key = self.take(kind="name")[1]
                    self.take("=")
                    kwargs[key] = self.value()
                else:
                    args.append(self.then())
                if self.peek() and self.peek()[1] == ",":
                    self.take(",")
            self.take(")")
        if name in FUSION_METHODS and args:
            weights = kwargs.pop("weights", None)
            if isinstance(weights, str):
                weights = [float(w) for w in weights.split("/")]
            elif weights is not None:
                weights = [float(weights)]
            try:
                return fuse(*args, method=name, weights=weights, **kwargs)
            except TypeError as exc:
                raise PipelineSpecError(f"bad arguments for {name}(): {exc}") from exc
        if args:
            raise PipelineSpecError(f"stage {name!r} takes keyword options only, e.g. {name}(k1=1.2)")
        return self.registry.build(name, self.ctx, kwargs)

    def value(self) -> Any:
        kind, text, _ = self.take()
        if kind == "num":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind == "str":
            return text[1:-1]
        if kind == "name":
            return {"true": True, "false": False, "none": None}.get(text.lower(), text)
        raise PipelineSpecError(f"pipeline spec {self.spec!r}: expected a value, got {text!r}")


def parse(spec: str, ctx: Mapping[str, Any] | None = None, registry: Registry | None = None) -> Stage:
    """Build a pipeline from a spec string such as ``"bm25 % 100"``.

    ``ctx`` supplies shared resources to stage factories (e.g. ``{"index": idx}``).
    """
    if isinstance(spec, Stage):
        return spec
    return _Parser(spec, ctx or {}, registry or REGISTRY).parse()


__all__ = ["Stage", "CutOff", "Then", "Fuse", "fuse", "fuse_rankings", "parse", "register", "REGISTRY",
           "Registry", "as_queries", "spec_call"]
