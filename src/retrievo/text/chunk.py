"""Split long texts into passages for indexing.

Retrieval works best on units of a few hundred words: whole books drown the matching
paragraph, single lines lose their context. The splitter packs consecutive paragraphs
(separated by blank lines) into passages of at most ``max_words`` words, cuts a paragraph
that alone is too long into near-equal pieces (at a sentence end where one is near), and glues a tiny piece (a heading, a
one-line paragraph) onto the text that follows it instead of emitting it alone.

Cuts happen only between words, and a passage is a verbatim slice of the input, so line
breaks and indentation (code samples) survive and character offsets map back to the source.
"""

from __future__ import annotations

import math
import re

_WORD = re.compile(r"\S+")


def passage_spans(text: str, max_words: int = 200, overlap: int = 0,
                  min_words: int | None = None) -> list[tuple[int, int]]:
    """Character ``(start, end)`` spans of the passages of ``text``.

    Each passage holds at most ``max_words`` words of its own, preceded (from the second
    passage on) by up to ``overlap`` words repeated from the end of the previous one.
    A run shorter than ``min_words`` (default ``max_words // 4``) is merged into the
    following text, or at the end of the text into the previous passage, which may then
    reach ``max_words + min_words`` words.
    """
    if max_words < 1:
        raise ValueError("max_words must be at least 1")
    if not 0 <= overlap < max_words:
        raise ValueError("overlap must be >= 0 and smaller than max_words")
    min_words = max(1, max_words // 4) if min_words is None else min_words
    if not 0 <= min_words <= max_words:
        raise ValueError("min_words must be between 0 and max_words")

    words = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    if not words:
        return []
    # Word indices where a paragraph starts: the gap before them holds a blank line.
    starts = [0] + [i for i in range(1, len(words))
                    if text.count("\n", words[i - 1][1], words[i][0]) >= 2]
    paragraphs = list(zip(starts, starts[1:] + [len(words)]))

    def ends_sentence(i: int) -> bool:
        word = text[words[i][0]:words[i][1]].rstrip("\"')]}\u201d\u2019")
        return word.endswith((".", "!", "?"))

    def cut_point(begin: int, end: int) -> int:
        """Where to cut a too-long run: aim for near-equal pieces, but take the sentence
        end nearest to that aim if one keeps the piece between half and full size."""
        pieces = math.ceil((end - begin) / max_words)
        size = math.ceil((end - begin) / pieces)
        target = begin + size
        sentence_cuts = [cut for cut in range(begin + max(1, size // 2), begin + max_words + 1)
                         if ends_sentence(cut - 1)]
        return min(sentence_cuts, key=lambda cut: abs(cut - target), default=target)

    ranges: list[tuple[int, int]] = []
    begin = end = last_para = 0  # the passage being built is words[begin:end]
    for para_start, para_end in paragraphs:
        pending = end - begin
        if pending >= min_words and pending + (para_end - para_start) > max_words:
            # A short closing paragraph (a heading, "For example:") introduces what
            # follows, so it moves on to the next passage.
            if last_para - begin >= min_words and end - last_para < min_words:
                ranges.append((begin, last_para))
                begin = last_para
            else:
                ranges.append((begin, end))
                begin = para_start
        end, last_para = para_end, para_start
        while end - begin > max_words:
            cut = cut_point(begin, end)
            ranges.append((begin, cut))
            begin = cut
        last_para = max(last_para, begin)
    if end > begin:
        if ranges and end - begin < min_words and end - ranges[-1][0] <= max_words + min_words:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((begin, end))

    spans = []
    for n, (first, stop) in enumerate(ranges):
        if n and overlap:
            first = max(ranges[n - 1][0], first - overlap)
        spans.append((words[first][0], words[stop - 1][1]))
    return spans


def split_passages(text: str, max_words: int = 200, overlap: int = 0,
                   min_words: int | None = None) -> list[str]:
    """The passages of ``text`` as strings (see :func:`passage_spans` for the rules)."""
    return [text[a:b] for a, b in passage_spans(text, max_words, overlap, min_words)]


__all__ = ["passage_spans", "split_passages"]
