"""Prompt templates as data: one TOML file per template, filled in by the methods.

A method's wording is part of its definition — it changes the numbers — so it lives in a
file a user can read, diff and replace, not in a string inside the code. A template file
has ``system`` (optional), ``user`` and ``assistant_prefix`` (optional) strings with
``{placeholders}``, plus optional ``[defaults]`` for placeholders and a ``description``::

    description = "pointwise relevance: does the passage answer the query?"
    system = "You judge search results."
    user = '''Query: {query}
    Passage: {passage}
    Does the passage answer the query? Answer Yes or No.'''
    assistant_prefix = ""

Methods take a ``prompt=`` option: a bundled template's name (``pointwise_yes_no``) or the
path of a user's TOML file. Filling in a placeholder the template lacks, or leaving one
unfilled, is a typed error (:class:`~retrievo.errors.ConfigError`), so a typo never sends a
prompt with ``{query}`` still in it.
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrievo.errors import ConfigError
from retrievo.llm.base import Prompt

FOLDER = Path(__file__).parent


def passage_text(title: str, text: str) -> str:
    """How a document reads in a prompt (a reranker's or a reader's): ``title: text``, or
    just one of them."""
    title, text = (title or "").strip(), (text or "").strip()
    if title and text:
        return f"{title}: {text}"
    return title or text


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


@dataclass(frozen=True)
class PromptTemplate:
    """A chat prompt with placeholders (see the module docstring for the file format)."""

    name: str
    user: str
    system: str = ""
    assistant_prefix: str = ""
    description: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def fields(self) -> set[str]:
        return _fields(self.user) | _fields(self.system) | _fields(self.assistant_prefix)

    def render(self, **values: Any) -> Prompt:
        """The :class:`Prompt` with every placeholder filled in."""
        merged = {**self.defaults, **values}
        missing = self.fields - set(merged)
        if missing:
            raise ConfigError(f"prompt template {self.name!r} needs {', '.join(sorted(missing))}")
        try:
            return Prompt.chat(self.user.format_map(merged), system=self.system.format_map(merged) or None,
                               assistant_prefix=self.assistant_prefix.format_map(merged))
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"prompt template {self.name!r} could not be filled in: {exc}") from None

    def fill(self, part: str, **values: Any) -> str:
        """One part (``user``, ``system`` or ``assistant_prefix``) filled in, for methods
        that place the pieces themselves (attention-based reranking)."""
        return getattr(self, part).format_map({**self.defaults, **values})

    def with_prefix(self, prefix: str) -> "PromptTemplate":
        return PromptTemplate(self.name, self.user, self.system, prefix, self.description, self.defaults, self.source)


def bundled() -> list[str]:
    """Names of the templates that ship with retrievo."""
    return sorted(p.stem for p in FOLDER.glob("*.toml"))


def load_template(name_or_path: "str | Path | PromptTemplate", required: set[str] | frozenset[str] = frozenset()
                  ) -> PromptTemplate:
    """A bundled template by name, or a TOML file by path; ``required`` placeholders must
    all appear (a method's own template contract), else :class:`ConfigError`."""
    if isinstance(name_or_path, PromptTemplate):
        template = name_or_path
    else:
        text = str(name_or_path)
        path = Path(text) if (text.endswith(".toml") or "/" in text) else FOLDER / f"{text}.toml"
        if not path.is_file():
            raise ConfigError(f"no prompt template {text!r}: give a bundled name ({', '.join(bundled())}) "
                              f"or the path of a .toml file")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"prompt template {path}: not valid TOML ({exc})") from None
        unknown = set(data) - {"user", "system", "assistant_prefix", "description", "defaults"}
        if unknown or "user" not in data:
            raise ConfigError(f"prompt template {path}: needs a 'user' string; unknown keys: "
                              f"{', '.join(sorted(unknown)) or 'none'}")
        template = PromptTemplate(path.stem, data["user"], data.get("system", ""), data.get("assistant_prefix", ""),
                                  data.get("description", ""), dict(data.get("defaults", {})), str(path))
    missing = set(required) - template.fields
    if missing:
        raise ConfigError(f"prompt template {template.name!r} lacks the placeholders {', '.join(sorted(missing))} "
                          f"that this method fills in")
    return template


__all__ = ["PromptTemplate", "bundled", "load_template", "passage_text"]
