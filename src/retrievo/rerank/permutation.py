"""Reading a ranking that a language model wrote, and repairing it into a permutation.

Listwise methods (RankGPT's sliding window, full ranking) ask a model to answer with the
identifiers of a window's passages, most relevant first: ``[2] > [1] > [3]``. Small models
answer sloppily — brackets missing, ids repeated or invented, explanations around the list,
nothing at all — so :func:`parse_permutation` never fails: it reads what it can and repairs
the rest into a permutation of the window:

1. identifiers are read in the order written; bracketed ones (``[12]``, ``[ B ]``) when the
   answer has any, else bare ones (``2 > 1 > 3``, ``B, A``; in an answer with ``>`` only
   the identifier nearest each ``>`` counts, so "I think B > A" reads as ``B, A``);
2. an identifier that names no passage of the window is dropped (*invalid*);
3. a repeated identifier keeps its first place (*duplicate*);
4. passages the answer never names follow, in their incoming order (*missing*).

Identifiers are matched exactly, then case-insensitively where that is unambiguous, and
numeric ones by value (``[02]`` is ``[2]``). :func:`charge_repairs` counts what a repair
did in the running stage's cost record (``repaired_permutations``, ``invalid_ids``,
``duplicate_ids``, ``missing_ids``), so a run shows how often the model's answer was not a
clean permutation.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_BRACKETED = re.compile(r"\[\s*([A-Za-z0-9]{1,8})\s*\]")
_BARE = re.compile(r"(?<![A-Za-z0-9])([A-Za-z0-9]{1,8})(?![A-Za-z0-9])")


@dataclass(frozen=True)
class Permutation:
    """A repaired permutation of ``range(n)`` and what was repaired to get it."""

    order: tuple[int, ...]
    invalid: int = 0
    duplicates: int = 0
    missing: int = 0

    @property
    def repaired(self) -> bool:
        return bool(self.invalid or self.duplicates or self.missing)


def numeric_labels(n: int) -> list[str]:
    """RankGPT's identifiers for a window of ``n`` passages: ``"1"`` … ``str(n)``."""
    return [str(i + 1) for i in range(n)]


def _lookup(labels: Sequence[str]) -> dict[str, int]:
    table = {label: i for i, label in enumerate(labels)}
    aliases: dict[str, int | None] = {}
    for label, i in list(table.items()):
        for alias in {label.lower(), label.upper()}:
            if alias in table:
                continue
            aliases[alias] = None if alias in aliases else i  # None: two labels share it
    table.update({a: i for a, i in aliases.items() if i is not None})
    return table


def _normal(token: str, numeric: bool) -> str:
    if numeric and token.isdigit():
        return str(int(token))
    return token


def _tokens(text: str, numeric: bool, longest: int) -> list[str]:
    bracketed = _BRACKETED.findall(text)
    if bracketed:
        return bracketed

    def bare(part: str) -> list[str]:  # words shaped like an identifier (not "the", "passage")
        return [t for t in _BARE.findall(part) if (t.isdigit() if numeric else len(t) <= longest)]

    if ">" not in text:
        return bare(text)
    out: list[str] = []
    parts = text.split(">")
    for k, part in enumerate(parts):
        found = bare(part)
        if found:
            # the identifier next to the '>' on each side: the last one before the first '>',
            # the first one after every other '>'
            out.append(found[-1] if k == 0 else found[0])
    return out


def parse_permutation(text: object, labels: Sequence[str]) -> Permutation:
    """The permutation of ``range(len(labels))`` that ``text`` writes with ``labels`` as
    identifiers (``labels[i]`` names position ``i`` of the window), repaired as the module
    docstring says. Never raises, whatever ``text`` is."""
    n = len(labels)
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    numeric = all(label.isdigit() for label in labels) if labels else False
    table = _lookup(labels)
    if numeric:
        table.update({str(int(label)): i for i, label in enumerate(labels)})
    order: list[int] = []
    seen: set[int] = set()
    invalid = duplicates = 0
    longest = max((len(label) for label in labels), default=1)
    for token in _tokens(text, numeric, longest):
        i = table.get(_normal(token, numeric))
        if i is None:
            invalid += 1
        elif i in seen:
            duplicates += 1
        else:
            seen.add(i)
            order.append(i)
    missing = [i for i in range(n) if i not in seen]
    return Permutation(tuple(order + missing), invalid, duplicates, len(missing))


def charge_repairs(perm: Permutation) -> None:
    """Count a repaired permutation in the running stage's cost record (nothing outside a
    stage, nothing for a clean answer)."""
    if not perm.repaired:
        return
    from retrievo.pipeline import charge

    charge(repaired_permutations=1, invalid_ids=perm.invalid, duplicate_ids=perm.duplicates,
           missing_ids=perm.missing)


__all__ = ["Permutation", "charge_repairs", "numeric_labels", "parse_permutation"]
