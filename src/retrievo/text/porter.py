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
"""

from __future__ import annotations

import re
from array import array

__all__ = ["stem", "PorterStemmer"]

_VOWEL_MAP = str.maketrans("aeiou", "00000")
_NOT_VOWEL = re.compile("[^aeiouy]")


def _flags(chars: str, prev: str) -> str:
    """Consonant flags ('1' consonant, '0' vowel) for ``chars``.

    ``prev`` is the flag of the character before ``chars`` ('' at the start of
    the word, where ``y`` is a consonant).  ``y`` is a vowel exactly when it
    follows a consonant.
    """
    f = _NOT_VOWEL.sub("1", chars).translate(_VOWEL_MAP)
    if "y" not in f:
        return f
    out = []
    for ch in f:
        if ch == "y":
            ch = "0" if prev == "1" else "1"
        out.append(ch)
        prev = ch
    return "".join(out)


# step 3 / step 4 / step 5 rule tables, keyed by the dispatch character
_STEP3 = {
    "a": (("ational", "ate"), ("tional", "tion")),
    "c": (("enci", "ence"), ("anci", "ance")),
    "e": (("izer", "ize"),),
    "l": (("bli", "ble"), ("alli", "al"), ("entli", "ent"), ("eli", "e"), ("ousli", "ous")),
    "o": (("ization", "ize"), ("ation", "ate"), ("ator", "ate")),
    "s": (("alism", "al"), ("iveness", "ive"), ("fulness", "ful"), ("ousness", "ous")),
    "t": (("aliti", "al"), ("iviti", "ive"), ("biliti", "ble")),
    "g": (("logi", "log"),),
}
_STEP4 = {
    "e": (("icate", "ic"), ("ative", ""), ("alize", "al")),
    "i": (("iciti", "ic"),),
    "l": (("ical", "ic"), ("ful", "")),
    "s": (("ness", ""),),
}
_STEP5 = {
    "a": ("al",),
    "c": ("ance", "ence"),
    "e": ("er",),
    "i": ("ic",),
    "l": ("able", "ible"),
    "n": ("ant", "ement", "ment", "ent"),
    "o": ("ion", "ou"),  # "ion" only after s or t (special-cased below)
    "s": ("ism",),
    "t": ("ate", "iti"),
    "u": ("ous",),
    "v": ("ive",),
    "z": ("ize",),
}
# any suffix of a group, for a single str.endswith fast reject
_STEP3_ANY = {c: tuple(s for s, _ in rules) for c, rules in _STEP3.items()}
_STEP4_ANY = {c: tuple(s for s, _ in rules) for c, rules in _STEP4.items()}


class _Word:
    """Mutable stemming state: buffer ``b`` (chars up to index ``k`` are the
    word), consonant flags ``f`` and the stem end ``j`` set by :meth:`ends`."""

    __slots__ = ("b", "f", "k", "j")

    def __init__(self, word: str) -> None:
        self.b = word
        self.f = _flags(word, "")
        self.k = len(word) - 1
        self.j = 0

    # -- predicates (flags: '1' consonant, '0' vowel) ------------------------
    def m(self) -> int:
        """Number of vowel-consonant sequences in b[0..j]."""
        return self.f.count("01", 0, self.j + 1)

    def vowelinstem(self) -> bool:
        return self.f.find("0", 0, self.j + 1) >= 0

    def doublec(self, j: int) -> bool:
        if j < 1:
            return False
        b = self.b
        return b[j] == b[j - 1] and self.f[j] == "1"

    def cvc(self, i: int) -> bool:
        if i < 2:
            return False
        f = self.f
        if f[i] != "1" or f[i - 1] == "1" or f[i - 2] != "1":
            return False
        return self.b[i] not in "wxy"

    def ends(self, s: str) -> bool:
        k = self.k
        if self.b.endswith(s, 0, k + 1):
            self.j = k - len(s)
            return True
        return False

    # -- edits --------------------------------------------------------------
    def setto(self, s: str) -> None:
        j = self.j
        head = self.b[: j + 1]
        self.b = head + s
        self.f = self.f[: j + 1] + _flags(s, self.f[j] if j >= 0 else "")
        self.k = j + len(s)

    def r(self, s: str) -> None:
        if self.m() > 0:
            self.setto(s)

    # -- steps --------------------------------------------------------------
    def step1(self) -> None:
        """Plurals and -ed / -ing (steps 1a and 1b of the paper)."""
        if self.b[self.k] == "s":
            if self.ends("sses"):
                self.k -= 2
            elif self.ends("ies"):
                self.setto("i")
            elif self.b[self.k - 1] != "s":
                self.k -= 1
        if not self.b.endswith(("ed", "ing"), 0, self.k + 1):
            return
        if self.ends("eed"):
            if self.m() > 0:
                self.k -= 1
        elif (self.ends("ed") or self.ends("ing")) and self.vowelinstem():
            self.k = self.j
            if self.ends("at"):
                self.setto("ate")
            elif self.ends("bl"):
                self.setto("ble")
            elif self.ends("iz"):
                self.setto("ize")
            elif self.doublec(self.k):
                ch = self.b[self.k]
                self.k -= 1
                if ch in "lsz":
                    self.k += 1
            elif self.m() == 1 and self.cvc(self.k):
                self.setto("e")

    def step2(self) -> None:
        """Terminal y -> i when the stem has a vowel (step 1c)."""
        if self.ends("y") and self.vowelinstem():
            k = self.k
            self.b = self.b[:k] + "i"
            self.f = self.f[:k] + "0"

    def step3(self) -> None:
        k = self.k
        if k == 0:
            return
        c = self.b[k - 1]
        if c not in _STEP3 or not self.b.endswith(_STEP3_ANY[c], 0, k + 1):
            return
        for suffix, repl in _STEP3[c]:
            if self.ends(suffix):
                self.r(repl)
                return

    def step4(self) -> None:
        c = self.b[self.k]
        if c not in _STEP4 or not self.b.endswith(_STEP4_ANY[c], 0, self.k + 1):
            return
        for suffix, repl in _STEP4[c]:
            if self.ends(suffix):
                self.r(repl)
                return

    def step5(self) -> None:
        if self.k == 0:
            return
        c = self.b[self.k - 1]
        rules = _STEP5.get(c)
        if rules is None or not self.b.endswith(rules, 0, self.k + 1):
            return
        for suffix in rules:
            if self.ends(suffix):
                if suffix == "ion":
                    j = self.j
                    if not (j >= 0 and self.b[j] in "st"):
                        continue
                break
        else:
            return
        if self.m() > 1:
            self.k = self.j

    def step6(self) -> None:
        self.j = self.k
        if self.b[self.k] == "e":
            a = self.m()
            if a > 1 or (a == 1 and not self.cvc(self.k - 1)):
                self.k -= 1
        if self.b[self.k] == "l" and self.doublec(self.k) and self.m() > 1:
            self.k -= 1

    def result(self) -> str:
        return self.b[: self.k + 1]


def _stem_units(word: str) -> str:
    if len(word) <= 2:
        return word
    w = _Word(word)
    w.step1()
    w.step2()
    w.step3()
    w.step4()
    w.step5()
    w.step6()
    return w.result()


# Every rule of every step needs the word to end in one of these letters: step 1 in
# s / -ed / -ing, step 1c in y, the suffix tables of steps 2-4 and step 5's e / ll
# all end in them, and a step can only create a new ending after one has applied.
# A word ending in anything else (a, o, x, a digit, a non-Latin letter...) is its own
# stem, which spares the rule machinery about one word in five.
_RULE_ENDINGS = frozenset("sdgylirnmectu")


def stem(word: str) -> str:
    """Stem ``word`` exactly like Lucene's ``PorterStemmer.stem(char[], int, int)``.

    The input is expected to be lower-cased already (as in ``EnglishAnalyzer``);
    upper-case letters are treated as consonants, like Lucene does.
    """
    if not word or word[-1] not in _RULE_ENDINGS:
        return word
    if word.isascii() or max(word) <= "\uffff":
        return _stem_units(word)
    # supplementary characters: work on UTF-16 code units like Java does
    units = "".join(map(chr, array("H", word.encode("utf-16-le", "surrogatepass"))))
    return _stem_units(units).encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


class PorterStemmer:
    """Callable wrapper with the interface of a stemmer object (``stemWord``)."""

    __slots__ = ()

    def __call__(self, word: str) -> str:
        return stem(word)

    def stemWord(self, word: str) -> str:  # noqa: N802 - PyStemmer-compatible name
        return stem(word)

    def stemWords(self, words):  # noqa: N802 - PyStemmer-compatible name
        return [stem(w) for w in words]

    def __reduce__(self):
        return (PorterStemmer, ())
