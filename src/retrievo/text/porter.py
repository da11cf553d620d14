"""Port of Lucene's ``org.apache.lucene.analysis.en.PorterStemmer``.

Algorithm: M. F. Porter, "An algorithm for suffix stripping", *Program* 14(3),
130-137, 1980, as implemented in Martin Porter's reference C/Java code
(release 3, https://tartarus.org/martin/PorterStemmer/) from which Lucene's
class is derived.

Why a hand-written port instead of PyStemmer / Snowball's ``porter``?  The
goal is to produce exactly the terms Lucene's ``EnglishAnalyzer`` (and so
Anserini / Pyserini BM25 indexes) produce, and Lucene's stemmer is *not* the
Snowball "porter" algorithm.  It follows the reference implementation, which
differs from the 1980 paper and from Snowball in several places:

* words of one or two characters are never stemmed;
* step 2 (here ``step3``) maps ``-bli`` to ``-ble`` (the paper has
  ``-abli`` -> ``-able``) and has the extra rule ``-logi`` -> ``-log``;
* the rules are tried with the reference code's "switch on the penultimate
  letter" dispatch, so only the first suffix that *matches* in a group is
  considered even when its measure condition then fails;
* ``y`` is a consonant at the start of a word or after a vowel, otherwise a
  vowel, and every character other than ``aeiouy`` -- digits, accented or
  non-Latin letters -- counts as a consonant;
* it works on UTF-16 code units (relevant only for lengths of words with
  supplementary characters).

On the 38,655 distinct lower-cased tokens of SciFact, Snowball's ``porter``
(PyStemmer) disagrees with Lucene on 131 (``psychology``: Lucene
``psycholog``, Snowball ``psychologi``; ``assembly``: ``assembl`` vs
``assembli``; ``us``: ``us`` vs ``u``) and Snowball ``english`` (Porter2) on
1,603, so neither can reproduce Lucene indexes.  ``tests/test_text.py``
checks this port against Lucene itself on the full vocabularies of the test
corpora plus synthetic words exercising every rule.

Why compiled (numba): building an index stems every distinct word of the collection
once, and a pure-Python port spent ~5 microseconds a word -- the largest share of
single-core indexing after the tokenizer (see BENCHMARKS.md, issue 12). The kernel below
follows Lucene's class line by line on UTF-16 code units, stems a whole batch of words
in one call (:func:`stem_many`, what the analyzer uses while indexing) and is compiled
once per installation (numba's on-disk cache).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["stem", "stem_many", "PorterStemmer"]


def _kernel():
    from retrievo.text import porter_kernel  # numba loads here, not when the analyzer is imported

    return porter_kernel


def stem_many(words: Sequence[str]) -> list[str]:
    """:func:`stem` of every word, in one compiled call."""
    if not words:
        return []
    try:
        joined = "".join(words)
    except TypeError:
        bad = next(w for w in words if not isinstance(w, str))
        raise TypeError(f"stem_many takes strings, got {type(bad).__name__}") from None
    units = np.frombuffer(joined.encode("utf-16-le", "surrogatepass"), dtype=np.uint16)
    bmp = len(units) == len(joined)
    if bmp:
        lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    else:  # lengths in UTF-16 units, as Java counts them
        lengths = np.fromiter((len(w.encode("utf-16-le", "surrogatepass")) // 2 for w in words),
                              dtype=np.int64, count=len(words))
    out = np.empty_like(units)
    out_lengths = np.empty_like(lengths)
    total = _kernel().stem_all(units, lengths, out, out_lengths)
    ends = np.cumsum(out_lengths).tolist()
    if bmp:
        text = out[:total].tobytes().decode("utf-16-le")
        return [text[a:e] for a, e in zip([0, *ends[:-1]], ends)]
    data = out[:total].tobytes()
    return [data[2 * a:2 * e].decode("utf-16-le", "surrogatepass") for a, e in zip([0, *ends[:-1]], ends)]


def stem(word: str) -> str:
    """Stem ``word`` exactly like Lucene's ``PorterStemmer.stem(char[], int, int)``.

    The input is expected to be lower-cased already (as in ``EnglishAnalyzer``);
    upper-case letters are treated as consonants, like Lucene does.
    """
    if len(word) < 2 or word[-1] not in _RULE_ENDINGS:
        return word
    units = np.frombuffer(word.encode("utf-16-le", "surrogatepass"), dtype=np.uint16).copy()
    if len(units) <= 2:
        return word
    k = _kernel().stem_word(units, len(units) - 1)
    return units[:k + 1].tobytes().decode("utf-16-le", "surrogatepass")


# Every rule of every step needs the word to end in one of these letters: step 1 in
# s / -ed / -ing, step 1c in y, the suffix tables of steps 2-4 and step 5's e / ll
# all end in them, and a step can only create a new ending after one has applied.
# A word ending in anything else (a, o, x, a digit, a non-Latin letter...) is its own stem.
_RULE_ENDINGS = frozenset("sdgylirnmectu")


class PorterStemmer:
    """Callable wrapper with the interface of a stemmer object (``stemWord``)."""

    __slots__ = ()

    def __call__(self, word: str) -> str:
        return stem(word)

    def stemWord(self, word: str) -> str:  # noqa: N802 - PyStemmer-compatible name
        return stem(word)

    def stemWords(self, words):  # noqa: N802 - PyStemmer-compatible name
        return stem_many(list(words))

    def __reduce__(self):
        return (PorterStemmer, ())
