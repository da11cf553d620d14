"""Query-term highlighting and snippet selection for displayed results.

A token is highlighted when it analyses to one of the query's terms, so "running" matches
a query for "runs" exactly when the index would have matched it. The snippet is the
window of ``width`` tokens holding the most distinct query terms (ties: the earliest).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

BOLD = ("\x1b[1;33m", "\x1b[0m")
MARKDOWN = ("**", "**")
PLAIN = ("[", "]")


def highlight(text: str, query_terms: Iterable[str], analyzer, width: int = 40,
              marks: tuple[str, str] = PLAIN, ellipsis: str = "…") -> str:
    """Return the best ``width``-token window of ``text`` with query terms wrapped in ``marks``."""
    terms = set(query_terms)
    tokens = analyzer.analyze_with_offsets(text)
    if not tokens:
        return _shorten(text, width)
    hits = [i for i, (t, _, _) in enumerate(tokens) if t in terms]
    if not hits:
        return _shorten(text, width)
    start = _best_window(tokens, hits, width)
    end = min(len(tokens), start + width)
    a = tokens[start][1] if start > 0 else 0
    b = tokens[end - 1][2] if end < len(tokens) else len(text)
    pieces, pos = [], a
    for t, s, e in tokens[start:end]:
        if t in terms:
            pieces.append(text[pos:s])
            pieces.append(marks[0] + text[s:e] + marks[1])
            pos = e
    pieces.append(text[pos:b])
    snippet = " ".join("".join(pieces).split())
    return (ellipsis if a > 0 else "") + snippet + (ellipsis if b < len(text) else "")


def _best_window(tokens: list[tuple[str, int, int]], hits: list[int], width: int) -> int:
    best_start, best_score = max(0, hits[0] - width // 4), -1
    for h in hits:
        start = max(0, h - width // 4)
        window = {tokens[i][0] for i in hits if start <= i < start + width}
        if len(window) > best_score:
            best_start, best_score = start, len(window)
    return best_start


def _shorten(text: str, width: int) -> str:
    words = text.split()
    return " ".join(words[:width]) + (" …" if len(words) > width else "")


def highlighter(analyzer, query: str, **kwargs) -> Callable[[str], str]:
    """A function that highlights any text for ``query`` (analysed once)."""
    terms = set(analyzer(query))
    return lambda text: highlight(text, terms, analyzer, **kwargs)
