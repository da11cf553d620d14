"""Pipeline spec strings: parse, check, build.

Grammar (whitespace is free)::

    pipeline := plus ('>>' plus)*                     then
    plus     := cut ('+' cut)*                        CombSUM fusion
    cut      := atom ('%' INT)*                       cut-off (INT >= 1)
    atom     := '(' pipeline ')' | NAME [ '(' args ')' ]
    args     := arg (',' arg)*
    arg      := NAME '=' VALUE | pipeline             option, or a positional sub-pipeline

An option ``VALUE`` is read as raw text up to the next ``,`` or ``)`` outside brackets
and quotes, then converted by the option's declared type (see
:class:`retrievo.registry.Option`): so values are whatever a user would type — ``bm25+``,
``../models/x``, ``sentence-transformers/all-MiniLM-L6-v2``, ``'a quoted string'``,
``1.0/0.5`` — and a ``pipeline`` option takes a whole sub-pipeline
(``iter_retgen(bm25 % 5, rounds=3)``; positional sub-pipelines fill ``pipeline`` options
in order, or the stage list of a fusion).

:func:`parse_spec` checks everything it can without building anything — stage names (with
suggestions), option names, value types and ranges, resource names, and whether adjacent
stages fit (what one gives, the next takes) — so a typo fails in milliseconds, before an
index is built or a model loaded. :func:`build` then imports the stages' modules, opens
resources through the per-process cache and builds the stages.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from retrievo.errors import PipelineCompositionError, PipelineSpecError, ResourceError
from retrievo.pipeline import Fuse, Stage, fuse
from retrievo.registry import REGISTRY, Option, Registry, StageEntry

_NAME = re.compile(r"[A-Za-z_][\w.\-]*")
_INT = re.compile(r"\d+")
_NUMBER = re.compile(r"-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")
MAX_DEPTH = 64  # nesting levels of parentheses and sub-pipelines; deeper specs are refused, not recursed into


# --------------------------------------------------------------------------------------
# The tree a spec parses into
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    name: str
    options: tuple[tuple[str, Any], ...]
    args: tuple[Any, ...]  # positional sub-pipelines (nodes)
    pos: int


@dataclass(frozen=True)
class Chain:
    parts: tuple[Any, ...]


@dataclass(frozen=True)
class Sum:
    parts: tuple[Any, ...]


@dataclass(frozen=True)
class Cut:
    node: Any
    k: int


@dataclass(frozen=True)
class PipelineSpec:
    """A checked spec: its text and tree. Build it with :func:`build`."""

    text: str
    node: Any

    def stage_names(self) -> list[str]:
        out: list[str] = []
        _walk(self.node, lambda c: out.append(c.name))
        return out

    def resources(self, kind: str = "index") -> list[str]:
        """Names of the resources of ``kind`` the spec names itself (e.g. index paths)."""
        out: list[str] = []
        for call in self.calls():
            for _, v in call.options:
                if isinstance(v, _Resource) and v.kind == kind and v.name not in out:
                    out.append(v.name)
        return out

    def calls(self) -> list[Call]:
        out: list[Call] = []
        _walk(self.node, out.append)
        return out

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class _Resource:
    kind: str
    name: str


@dataclass(frozen=True)
class _Sub:
    """A ``pipeline``-typed option's value: a parsed sub-pipeline."""

    node: Any


def _walk(node: Any, visit) -> None:
    if isinstance(node, Call):
        visit(node)
        for a in node.args:
            _walk(a, visit)
        for _, v in node.options:
            if isinstance(v, _Sub):
                _walk(v.node, visit)
    elif isinstance(node, (Chain, Sum)):
        for p in node.parts:
            _walk(p, visit)
    elif isinstance(node, Cut):
        _walk(node.node, visit)


# --------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str, registry: Registry, offset: int = 0, full: str | None = None, depth: int = 0):
        self.s, self.i, self.registry = text, 0, registry
        self.offset, self.full = offset, full if full is not None else text
        self.depth = depth

    # low level ---------------------------------------------------------------------------
    def error(self, message: str, at: int | None = None) -> PipelineSpecError:
        pos = self.offset + (self.i if at is None else at)
        shown = self.full
        if len(shown) > 100:  # a long spec is quoted around the problem, not in full
            lo = max(0, pos - 40)
            shown = ("…" if lo else "") + shown[lo:lo + 80] + ("…" if lo + 80 < len(shown) else "")
        return PipelineSpecError(f"pipeline spec {shown!r}, at position {pos}: {message}")

    def ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i].isspace():
            self.i += 1

    def at(self, literal: str) -> bool:
        self.ws()
        return self.s.startswith(literal, self.i)

    def expect(self, literal: str) -> None:
        if not self.at(literal):
            got = repr(self.s[self.i:self.i + 12]) if self.i < len(self.s) else "the end of the spec"
            raise self.error(f"expected {literal!r}, got {got}")
        self.i += len(literal)

    def name(self) -> tuple[str, int]:
        self.ws()
        m = _NAME.match(self.s, self.i)
        if not m:
            got = repr(self.s[self.i:self.i + 12]) if self.i < len(self.s) else "the end of the spec"
            raise self.error(f"expected a stage name, got {got}")
        self.i = m.end()
        return m.group(), m.start()

    # grammar -----------------------------------------------------------------------------
    def parse(self) -> Any:
        self.ws()
        if self.i >= len(self.s):
            raise self.error("empty pipeline spec")
        node = self.pipeline()
        self.ws()
        if self.i < len(self.s):
            raise self.error(f"unexpected {self.s[self.i:self.i + 12]!r}")
        return node

    def pipeline(self) -> Any:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"the spec nests more than {MAX_DEPTH} levels deep")
        parts = [self.plus()]
        while self.at(">>"):
            self.i += 2
            parts.append(self.plus())
        self.depth -= 1
        return parts[0] if len(parts) == 1 else Chain(tuple(parts))

    def plus(self) -> Any:
        parts = [self.cut()]
        while self.at("+"):
            self.i += 1
            parts.append(self.cut())
        return parts[0] if len(parts) == 1 else Sum(tuple(parts))

    def cut(self) -> Any:
        node = self.atom()
        while self.at("%"):
            self.i += 1
            self.ws()
            m = re.compile(r"-?[\w.]+").match(self.s, self.i)
            text = m.group() if m else ""
            if not _INT.fullmatch(text) or not 1 <= int(text) < 2**31:
                raise self.error(f"a cut-off needs a whole number >= 1 (and below 2**31), got {text or 'nothing'!r}")
            self.i = m.end()
            node = Cut(node, int(text))
        return node

    def atom(self) -> Any:
        if self.at("("):
            self.i += 1
            node = self.pipeline()
            self.expect(")")
            return node
        name, pos = self.name()
        entry = self.registry.entry(name)
        raw_options: list[tuple[str, str, int]] = []
        args: list[Any] = []
        if self.at("("):
            self.i += 1
            while not self.at(")"):
                self.ws()
                m = _NAME.match(self.s, self.i)
                after = self.s[m.end():].lstrip() if m else ""
                if m and after.startswith("=") and not after.startswith("=="):
                    self.i = m.end()
                    self.expect("=")
                    key = m.group()
                    if any(k == key for k, _, _ in raw_options):
                        raise self.error(f"option {key!r} of {name!r} is given twice", m.start())
                    raw_options.append((key, *self.raw_value()))
                else:
                    args.append(self.pipeline())
                if self.at(","):
                    self.i += 1
                elif not self.at(")"):
                    raise self.error(f"expected ',' or ')' in the options of {name!r}")
            self.expect(")")
        return _check_call(self, entry, name, pos, raw_options, args)

    def raw_value(self) -> tuple[str, int]:
        self.ws()
        start = self.i
        if self.i < len(self.s) and self.s[self.i] in "'\"":
            quote = self.s[self.i]
            end = self.s.find(quote, self.i + 1)
            if end < 0:
                raise self.error("unterminated quoted value", start)
            self.i = end + 1
            return self.s[start:self.i], start
        depth = 0
        while self.i < len(self.s):
            c = self.s[self.i]
            if c in "'\"":
                end = self.s.find(c, self.i + 1)
                if end < 0:
                    raise self.error("unterminated quoted value", self.i)
                self.i = end + 1
                continue
            if c in "([{":
                depth += 1
            elif c in ")]}":
                if depth == 0:
                    break
                depth -= 1
            elif c == "," and depth == 0:
                break
            self.i += 1
        text = self.s[start:self.i].strip()
        if not text:
            raise self.error("an option needs a value after '='", start)
        return text, start


def _unquote(text: str) -> tuple[str, bool]:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1], True
    return text, False


def _literal(text: str) -> Any:
    """An untyped option value: number, bool, none, or text."""
    value, quoted = _unquote(text)
    if quoted:
        return value
    if _NUMBER.match(value):
        return float(value) if any(c in value for c in ".eE") else int(value)
    return {"true": True, "false": False, "none": None}.get(value.lower(), value)


def _convert(parser: _Parser, entry: StageEntry, opt: Option, text: str, pos: int) -> Any:
    value, quoted = _unquote(text)
    where = f"option {opt.name!r} of {entry.name!r}"

    def bad(what: str) -> PipelineSpecError:
        return parser.error(f"{where} takes {what}, got {text!r}", pos)

    if not quoted and value.lower() in ("none", "null") and opt.default is None and opt.type != "pipeline":
        return None
    if opt.type == "int":
        if not re.fullmatch(r"-?\d+", value) or not -2**63 <= int(value) < 2**63:
            raise bad("a whole number (64-bit)")
        out: Any = int(value)
    elif opt.type == "float":
        if not _NUMBER.match(value):
            raise bad("a number")
        if not math.isfinite(float(value)):  # 1e400 overflows to inf
            raise bad("a finite number")
        out = float(value)
    elif opt.type == "bool":
        low = value.lower()
        if low not in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            raise bad("true or false")
        return low in ("true", "yes", "on", "1")
    elif opt.type == "choice":
        match = next((c for c in opt.choices if str(c).lower() == value.lower()), None)
        if match is None:
            raise bad("one of " + ", ".join(str(c) for c in opt.choices))
        return match
    elif opt.type == "floats":
        parts = [p for p in re.split(r"[/;\s]+", value.strip("[]")) if p]
        if not parts or not all(_NUMBER.match(p) and math.isfinite(float(p)) for p in parts):
            raise bad("finite numbers separated by '/', e.g. 1.0/0.5")
        return tuple(float(p) for p in parts)
    elif opt.type == "pipeline":
        sub = _Parser(value, parser.registry, parser.offset + pos + (1 if quoted else 0), parser.full,
                      parser.depth)
        return _Sub(sub.parse())
    elif opt.type in ("index",):
        try:
            from retrievo.resources import check_resource

            check_resource(opt.type, value)
        except ResourceError as exc:
            raise parser.error(f"{where}: {exc}", pos) from None
        return _Resource(opt.type, value)
    else:  # str, model, path: any token
        return value
    if opt.min is not None and out < opt.min:
        raise parser.error(f"{where} must be >= {opt.min:g}, got {out}", pos)
    if opt.max is not None and out > opt.max:
        raise parser.error(f"{where} must be <= {opt.max:g}, got {out}", pos)
    return out


def _check_call(parser: _Parser, entry: StageEntry, name: str, pos: int,
                raw_options: list[tuple[str, str, int]], args: list[Any]) -> Call:
    options: list[tuple[str, Any]] = []
    if not entry.typed:
        if args:
            raise parser.error(f"stage {name!r} takes keyword options only, e.g. {name}(option=value)", pos)
        return Call(name, tuple((k, _literal(t)) for k, t, _ in raw_options), (), pos)
    known = [o.name for o in entry.options]
    for key, text, at in raw_options:
        opt = entry.option(key)
        if opt is None and entry.extra is not None:
            opt = dataclasses.replace(entry.extra, name=key)
        if opt is None:
            import difflib

            close = difflib.get_close_matches(key, known, n=2)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            listing = ", ".join(known) if known else "no options"
            raise parser.error(f"{name!r} has no option {key!r}{hint} ({name} takes {listing})", at)
        options.append((key, _convert(parser, entry, opt, text, at)))
    if args and not entry.variadic:
        free = [o for o in entry.options if o.type == "pipeline" and all(o.name != k for k, _ in options)]
        if len(args) > len(free):
            raise parser.error(f"stage {name!r} takes {len(free) or 'no'} positional sub-pipeline(s), "
                               f"got {len(args)}; give options as name=value", pos)
        options.extend((o.name, _Sub(a)) for o, a in zip(free, args))
        args = []
    if entry.variadic and len(args) < 2:
        raise parser.error(f"{name}() fuses two or more pipelines, e.g. {name}(bm25, bm25(method=bm25l))", pos)
    call = Call(name, tuple(options), tuple(args), pos)
    _io(call, parser.registry)  # composition inside sub-pipelines is checked as they are parsed
    return call


# --------------------------------------------------------------------------------------
# What each part takes and gives, checked before anything is built
# --------------------------------------------------------------------------------------

def _io(node: Any, registry: Registry) -> tuple[tuple[str, ...], str] | None:
    """(takes, gives) of a node, or None when unknown (untyped ad-hoc stages)."""
    if isinstance(node, Call):
        entry = registry.entry(node.name)
        if entry.kind == "fusion":
            ios = [_io(a, registry) for a in node.args]
            if any(io is None for io in ios):
                return None
            for a, io in zip(node.args, ios):
                if io[1] != "rankings":
                    raise PipelineCompositionError(f"cannot fuse a stage that gives {io[1]}; fusion needs rankings")
            takes = tuple(t for t in ("queries", "rankings") if all(t in io[0] for io in ios))
            if not takes:
                raise PipelineCompositionError(f"the stages fused by {node.name}() take no common input kind")
            return takes, "rankings"
        return entry.io()
    if isinstance(node, Cut):
        io = _io(node.node, registry)
        if io is not None and io[1] != "rankings":
            raise PipelineCompositionError(f"a cut-off needs rankings, but the stage before it gives {io[1]}")
        return io
    if isinstance(node, Sum):
        return _io(Call("sum", (), node.parts, 0), registry) if all(_io(p, registry) for p in node.parts) else None
    if isinstance(node, Chain):
        ios = [_io(p, registry) for p in node.parts]
        for (a, ia), (b, ib) in zip(zip(node.parts, ios), zip(node.parts[1:], ios[1:])):
            if ia is not None and ib is not None and ia[1] not in ib[0]:
                raise PipelineCompositionError(
                    f"cannot run {_label(b)!r} after {_label(a)!r}: it gives {ia[1]}, "
                    f"but {_label(b)!r} takes {' or '.join(ib[0])}")
        if ios[0] is None or ios[-1] is None:
            return None
        return ios[0][0], ios[-1][1]
    return None


def _label(node: Any) -> str:
    if isinstance(node, Call):
        return node.name
    if isinstance(node, Cut):
        return f"{_label(node.node)} % {node.k}"
    if isinstance(node, Chain):
        return " >> ".join(_label(p) for p in node.parts)
    if isinstance(node, Sum):
        return " + ".join(_label(p) for p in node.parts)
    return str(node)


def parse_spec(spec: str | PipelineSpec, registry: Registry | None = None) -> PipelineSpec:
    """Parse and check ``spec`` without building anything (see the module docstring)."""
    if isinstance(spec, PipelineSpec):
        return spec
    if not isinstance(spec, str):
        raise PipelineSpecError(f"a pipeline spec is a string, got {type(spec).__name__}")
    registry = registry or REGISTRY
    node = _Parser(spec, registry).parse()
    _io(node, registry)
    return PipelineSpec(spec, node)


# --------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------


def build(spec: PipelineSpec | str, ctx: Mapping[str, Any] | None = None, registry: Registry | None = None) -> Stage:
    """Build the stages of a checked spec (imports their modules, opens resources)."""
    registry = registry or REGISTRY
    spec = parse_spec(spec, registry)
    return _build(spec.node, {} if ctx is None else ctx, registry)


def _value(v: Any, ctx: Mapping[str, Any], registry: Registry) -> Any:
    if isinstance(v, _Sub):
        return _build(v.node, ctx, registry)
    if isinstance(v, _Resource):
        from retrievo.resources import open_resource

        return open_resource(v.kind, v.name)
    return v


def _build(node: Any, ctx: Mapping[str, Any], registry: Registry) -> Stage:
    if isinstance(node, Chain):
        stage = _build(node.parts[0], ctx, registry)
        for part in node.parts[1:]:
            stage = stage >> _build(part, ctx, registry)
        return stage
    if isinstance(node, Sum):
        stage = _build(node.parts[0], ctx, registry)
        for part in node.parts[1:]:
            stage = stage + _build(part, ctx, registry)
        return stage
    if isinstance(node, Cut):
        return _build(node.node, ctx, registry) % node.k
    assert isinstance(node, Call)
    entry = registry.entry(node.name)
    kwargs = {k: _value(v, ctx, registry) for k, v in node.options}
    if entry.variadic:
        stages = [_build(a, ctx, registry) for a in node.args]
        try:
            return entry.factory()(ctx, *stages, **kwargs)
        except TypeError as exc:
            raise PipelineSpecError(f"bad arguments for {node.name}(): {exc}") from exc
    return registry.build(node.name, ctx, kwargs)


def _fusion(method: str):
    def factory(ctx: Mapping[str, Any], *stages: Stage, k: int = 60, weights=None, normalize=None) -> Fuse:
        return fuse(*stages, method=method, k=k, weights=weights, normalize=normalize)

    factory.__name__ = f"{method}_factory"
    return factory


_FUSION_FACTORIES = {m: _fusion(m) for m in ("rrf", "sum", "max", "mnz")}


rrf_factory = _FUSION_FACTORIES["rrf"]
sum_factory = _FUSION_FACTORIES["sum"]
max_factory = _FUSION_FACTORIES["max"]
mnz_factory = _FUSION_FACTORIES["mnz"]

__all__ = ["PipelineSpec", "build", "parse_spec", "rrf_factory", "sum_factory", "max_factory", "mnz_factory"]
