"""Metadata filters: a small language, parsed properly, compiled to a document bitmap.

Grammar (keywords are case-insensitive, whitespace is free)::

    expr       := or
    or         := and ('or' and)*
    and        := unary ('and' unary)*
    unary      := 'not' unary | '(' expr ')' | comparison
    comparison := FIELD OP literal
                | FIELD ['not'] 'in' '(' literal (',' literal)* ')'
    OP         := '=' | '==' | '!=' | '<' | '<=' | '>' | '>='
    literal    := NUMBER | STRING ('...' or "...", backslash escapes) | 'true' | 'false'
    FIELD      := a name ([A-Za-z_][A-Za-z0-9_.]*, dots for nested metadata) or `any text`

e.g. ``year >= 2015 and source in ('pubmed', 'pmc') and not retracted = true``.

Semantics. A filter is evaluated against the metadata columns of the index
(:mod:`retrievo.index.columns`) and gives one boolean per document number, which every
retriever combines with the live bitmap *before* top-k selection — so a filtered search
returns ``min(k, matching documents)`` results, never padding. The literal's type picks
the column a field is compared with: numbers compare with number columns, strings with
keyword columns, ``true``/``false`` with boolean ones; a field that holds no value of
that type is a :class:`~retrievo.errors.FilterTypeError`, a field no document has an
:class:`~retrievo.errors.UnknownFieldError`, and a malformed expression a
:class:`~retrievo.errors.FilterSyntaxError` that points at the offending character.
Ranges (``<``, ``<=``, ``>``, ``>=``) apply to numbers and to dates: a keyword field all
of whose values are ISO 8601 dates (``2015-06-01``, ``2015-06-01T12:30:00``) is a date
field, and its values and the literal are compared as instants. A comparison with a
document that has no value for the field is false, and ``a != v`` means ``not (a = v)``
(so it keeps the documents without ``a``), which keeps ``not`` and ``!=`` consistent.
"""

from __future__ import annotations

import datetime as _dt
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrievo.errors import FilterSyntaxError, FilterTypeError, UnknownFieldError
from retrievo.index.columns import Columns, field_kinds

RANGE_OPS = ("<", "<=", ">", ">=")
OPS = ("=", "==", "!=", *RANGE_OPS)
KEYWORDS = ("and", "or", "not", "in", "true", "false")
MAX_DEPTH = 100  # nesting of parentheses / not: deeper expressions are refused, not recursed into


# ------------------------------------------------------------------------------ the tree
@dataclass(frozen=True)
class Compare:
    field: str
    op: str
    value: Any  # float, str or bool
    pos: int

    def __str__(self) -> str:
        return f"{_field_text(self.field)} {self.op} {_literal_text(self.value)}"


@dataclass(frozen=True)
class In:
    field: str
    values: tuple[Any, ...]
    negated: bool
    pos: int

    def __str__(self) -> str:
        word = "not in" if self.negated else "in"
        return f"{_field_text(self.field)} {word} ({', '.join(_literal_text(v) for v in self.values)})"


@dataclass(frozen=True)
class Not:
    inner: Any

    def __str__(self) -> str:
        return f"not ({self.inner})"


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    parts: tuple[Any, ...]

    def __str__(self) -> str:
        return "(" + f" {self.op} ".join(str(p) for p in self.parts) + ")"


def _field_text(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z_][\w.]*", name) and name.lower() not in KEYWORDS else f"`{name}`"


def _literal_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


# ------------------------------------------------------------------------------ parsing
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![\w.])
  | (?P<name>[A-Za-z_][\w.]*)
  | (?P<quoted_name>`[^`]*`)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<op><=|>=|==|!=|<|>|=)
  | (?P<punct>[(),])
""", re.VERBOSE)


def _tokens(text: str) -> list[tuple[str, Any, int]]:
    out: list[tuple[str, Any, int]] = []
    i = 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if m is None:
            if text[i] in "'\"":
                raise FilterSyntaxError("unterminated string", text, i)
            if text[i] == "`":
                raise FilterSyntaxError("unterminated `field name`", text, i)
            raise FilterSyntaxError(f"unexpected character {text[i]!r}", text, i)
        kind = m.lastgroup
        raw = m.group()
        if kind == "number":
            out.append(("literal", float(raw), i))
        elif kind == "name":
            low = raw.lower()
            if low in ("true", "false"):
                out.append(("literal", low == "true", i))
            elif low in KEYWORDS:
                out.append((low, low, i))
            else:
                out.append(("field", raw, i))
        elif kind == "quoted_name":
            if len(raw) == 2:
                raise FilterSyntaxError("empty `field name`", text, i)
            out.append(("field", raw[1:-1], i))
        elif kind == "string":
            out.append(("literal", re.sub(r"\\(.)", r"\1", raw[1:-1]), i))
        elif kind in ("op", "punct"):
            out.append((raw, raw, i))
        i = m.end()
    out.append(("end", None, len(text)))
    return out


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokens(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> tuple[str, Any, int]:
        return self.toks[self.i]

    def take(self) -> tuple[str, Any, int]:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def error(self, message: str, pos: int | None = None) -> FilterSyntaxError:
        return FilterSyntaxError(message, self.text, self.peek()[2] if pos is None else pos)

    def describe(self, tok: tuple[str, Any, int]) -> str:
        kind, value, _ = tok
        if kind == "end":
            return "the end of the filter"
        if kind == "literal":
            return f"the value {_literal_text(value)}"
        if kind == "field":
            return f"the name {value!r}"
        return f"{value!r}"

    def parse(self) -> Any:
        if self.peek()[0] == "end":
            raise self.error("empty filter: write a condition such as year >= 2015")
        node = self.or_()
        if self.peek()[0] != "end":
            raise self.error(f"expected 'and', 'or' or the end of the filter, found {self.describe(self.peek())}")
        return node

    def or_(self) -> Any:
        parts = [self.and_()]
        while self.peek()[0] == "or":
            self.take()
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else BoolOp("or", tuple(parts))

    def and_(self) -> Any:
        parts = [self.unary()]
        while self.peek()[0] == "and":
            self.take()
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else BoolOp("and", tuple(parts))

    def unary(self) -> Any:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"the filter nests deeper than {MAX_DEPTH} levels")
        try:
            kind = self.peek()[0]
            if kind == "not":
                self.take()
                return Not(self.unary())
            if kind == "(":
                self.take()
                node = self.or_()
                if self.peek()[0] != ")":
                    raise self.error(f"expected ')' to close the '(', found {self.describe(self.peek())}")
                self.take()
                return node
            return self.comparison()
        finally:
            self.depth -= 1

    def comparison(self) -> Any:
        kind, name, pos = self.take()
        if kind != "field":
            self.i -= 1
            raise self.error(f"expected a field name, found {self.describe(self.peek())}")
        tok = self.peek()
        if tok[0] in OPS:
            self.take()
            op = "=" if tok[0] == "==" else tok[0]
            return Compare(name, op, self.literal(), pos)
        negated = False
        if tok[0] == "not":
            self.take()
            negated = True
            if self.peek()[0] != "in":
                raise self.error(f"expected 'in' after '{name} not', found {self.describe(self.peek())}")
        if self.peek()[0] == "in":
            self.take()
            if self.peek()[0] != "(":
                raise self.error(f"expected '(' after 'in', found {self.describe(self.peek())}")
            self.take()
            values = [self.literal()]
            while self.peek()[0] == ",":
                self.take()
                values.append(self.literal())
            if self.peek()[0] != ")":
                raise self.error(f"expected ',' or ')' in the list of values, found {self.describe(self.peek())}")
            self.take()
            return In(name, tuple(values), negated, pos)
        raise self.error(f"expected an operator (=, !=, <, <=, >, >=, in) after {name!r}, "
                         f"found {self.describe(tok)}")

    def literal(self) -> Any:
        tok = self.peek()
        if tok[0] != "literal":
            raise self.error(f"expected a value (a number, 'text', true or false), found {self.describe(tok)}")
        self.take()
        return tok[1]


@functools.lru_cache(maxsize=256)
def parse_filter(text: str) -> Any:
    """The syntax tree of a filter expression (raises :class:`FilterSyntaxError`)."""
    if not isinstance(text, str):
        raise FilterSyntaxError(f"a filter is a string, got {type(text).__name__}")
    return _Parser(text).parse()


def canonical(text: str) -> str:
    """A normalised spelling of a filter (same tree, same text): the cache key."""
    return str(parse_filter(text))


# ------------------------------------------------------------------------------ dates
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")


def parse_date(value: str) -> np.datetime64 | None:
    """An ISO 8601 date or date-time as a UTC instant in microseconds, or None."""
    if not isinstance(value, str) or not _DATE.match(value):
        return None
    try:
        moment = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return np.datetime64(moment, "us")


# ------------------------------------------------------------------------------ compiling
_KIND_OF_LITERAL = {bool: "bool", str: "keyword", float: "number"}
_KIND_WORD = {"bool": "true/false", "keyword": "text ('quoted')", "number": "numbers"}


class _Compiler:
    def __init__(self, columns: Sequence[Columns | None], sizes: Sequence[int], text: str):
        self.columns, self.sizes, self.text = list(columns), list(sizes), text
        self.kinds = field_kinds(self.columns)
        self._dates: dict[str, bool] = {}

    def fail_type(self, message: str, pos: int) -> FilterTypeError:
        return FilterTypeError(f"{message} (in the filter {self.text!r}, at position {pos})")

    def is_date(self, name: str) -> bool:
        if name not in self._dates:
            values = [v for cols in self.columns if cols is not None
                      for v in cols.values.get((name, "keyword"), ())]
            self._dates[name] = bool(values) and all(parse_date(v) is not None for v in values)
        return self._dates[name]

    def check_field(self, name: str, kind: str, pos: int) -> None:
        have = self.kinds.get(name)
        if have is None:
            known = ", ".join(sorted(self.kinds)) or "none: no document has scalar metadata"
            raise UnknownFieldError(f"no document has the metadata field {name!r} (in the filter {self.text!r}, "
                                    f"at position {pos}); fields of this index: {known}")
        if kind not in have:
            held = " and ".join(_KIND_WORD[k] for k in sorted(have))
            raise self.fail_type(f"field {name!r} holds {held}, so it cannot be compared with "
                                 f"{_KIND_WORD[kind]}", pos)

    def mask(self, node: Any) -> np.ndarray:
        if isinstance(node, BoolOp):
            out = self.mask(node.parts[0])
            for part in node.parts[1:]:
                (np.logical_and if node.op == "and" else np.logical_or)(out, self.mask(part), out=out)
            return out
        if isinstance(node, Not):
            return ~self.mask(node.inner)
        if isinstance(node, Compare):
            if node.op == "!=":
                return ~self.mask(Compare(node.field, "=", node.value, node.pos))
            return self.leaf(node.field, node.pos, [node.value], node.op)
        if isinstance(node, In):
            kinds = {_KIND_OF_LITERAL[type(v)] for v in node.values}
            if len(kinds) > 1:
                raise self.fail_type(f"the values of '{node.field} in (...)' mix "
                                     f"{' and '.join(_KIND_WORD[k] for k in sorted(kinds))}", node.pos)
            out = self.leaf(node.field, node.pos, list(node.values), "in")
            return ~out if node.negated else out
        raise TypeError(f"not a filter node: {node!r}")  # pragma: no cover - the parser makes only these

    def leaf(self, name: str, pos: int, values: list[Any], op: str) -> np.ndarray:
        kind = _KIND_OF_LITERAL[type(values[0])]
        self.check_field(name, kind, pos)
        date = False
        if op in RANGE_OPS:
            if kind == "bool":
                raise self.fail_type(f"'{op}' compares numbers or dates, not true/false (field {name!r})", pos)
            if kind == "keyword":
                date = self.is_date(name)
                if not date:
                    raise self.fail_type(f"'{op}' compares numbers or dates; field {name!r} holds text that is "
                                         "not all ISO 8601 dates (use = or in for text)", pos)
                if parse_date(values[0]) is None:
                    raise self.fail_type(f"field {name!r} holds dates: compare it with an ISO 8601 date such as "
                                         f"'2015-06-01', not {values[0]!r}", pos)
        elif kind == "keyword" and self.is_date(name) and all(parse_date(v) is not None for v in values):
            date = True  # equality of instants: '2015-06-01' matches '2015-06-01T00:00:00'
        parts = []
        for cols, n in zip(self.columns, self.sizes):
            col = None if cols is None else cols.fields.get(name, {}).get(kind)
            if col is None:
                parts.append(np.zeros(n, dtype=bool))
                continue
            col = np.asarray(col)
            if kind == "keyword":
                dictionary = cols.values[(name, kind)]
                if date:
                    stamps = np.array([parse_date(v) for v in dictionary], dtype="datetime64[us]")
                    literal = np.array([parse_date(v) for v in values], dtype="datetime64[us]")
                    hits = _compare(stamps, op, literal)
                else:
                    hits = _compare(np.asarray(dictionary, dtype=object), op, np.asarray(values, dtype=object))
                codes = np.flatnonzero(hits)
                parts.append(np.isin(col, codes) if len(codes) else np.zeros(n, dtype=bool))
            elif kind == "bool":
                parts.append(np.isin(col, np.asarray([int(v) for v in values], dtype=np.int8)))
            else:
                parts.append(_compare(col, op, np.asarray(values, dtype=np.float64)))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


def _compare(column: np.ndarray, op: str, values: np.ndarray) -> np.ndarray:
    if op == "in" or op == "=":
        if column.dtype == object:
            wanted = set(values.tolist())
            return np.fromiter((v in wanted for v in column.tolist()), dtype=bool, count=len(column))
        return np.isin(column, values)
    v = values[0]
    with np.errstate(invalid="ignore"):  # NaN (missing) compares false
        if op == "<":
            return column < v
        if op == "<=":
            return column <= v
        if op == ">":
            return column > v
        return column >= v


def compile_filter(text: str, columns: Sequence[Columns | None], sizes: Sequence[int]) -> np.ndarray:
    """The bitmap (one bool per document, parts in order) of the documents ``text``
    selects, given each part's columns and document count. Deleted documents are not
    removed here: callers combine the result with the live bitmap."""
    tree = parse_filter(text)
    return _Compiler(columns, sizes, text).mask(tree)


def describe_fields(columns: Sequence[Columns | None]) -> dict[str, str]:
    """``{field: type}`` (keyword, date, number, bool, or several joined by '|')."""
    compiler = _Compiler(columns, [c.n_docs if c is not None else 0 for c in columns], "")
    out = {}
    for name, kinds in sorted(compiler.kinds.items()):
        names = sorted("date" if k == "keyword" and compiler.is_date(name) else k for k in kinds)
        out[name] = "|".join(names)
    return out


__all__ = ["BoolOp", "Compare", "In", "Not", "canonical", "compile_filter", "describe_fields", "parse_date",
           "parse_filter"]
