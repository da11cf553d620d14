"""Stop word sets.

``LUCENE_ENGLISH`` is Lucene's ``EnglishAnalyzer.ENGLISH_STOP_WORDS_SET``
(the 33 words also used by Anserini/Pyserini BM25 indexes).  Lucene 8's
``StandardAnalyzer`` uses *no* stop words by default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Union

__all__ = ["LUCENE_ENGLISH", "load_stopwords"]

LUCENE_ENGLISH: frozenset = frozenset(
    """
    a an and are as at be but by for if in into is it no not of on or such
    that the their then there these they this to was will with
    """.split()
)


def load_stopwords(source: Union[str, "os.PathLike[str]", Iterable[str]], *, encoding: str = "utf-8") -> frozenset:
    """Load a stop word list.

    ``source`` is a path to a text file or an iterable of lines/words.  One
    word per line; surrounding whitespace is stripped, empty lines and lines
    starting with ``#`` are ignored, and anything after ``|`` on a line is a
    comment (the Snowball stop-list format used by Lucene's
    ``WordlistLoader.getSnowballWordSet``; plain one-word-per-line files load
    the same way).  Words are kept as written: the analyzer matches them
    against terms after lower-casing (when enabled), so list them lower-case.
    """
    if isinstance(source, (str, os.PathLike)):
        lines: Iterable[str] = Path(source).read_text(encoding=encoding).splitlines()
    else:
        lines = source
    words = set()
    for line in lines:
        line = line.split("|", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        words.update(line.split())
    return frozenset(words)
