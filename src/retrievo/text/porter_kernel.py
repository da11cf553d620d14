"""Compiled kernel of :mod:`retrievo.text.porter` (Lucene's ``PorterStemmer``).

Kept apart so that importing the analyzer does not import numba: this module loads on the
first word that needs the rule machinery. The functions follow Lucene's class step by
step, with its rule order and its quirks (listed in :mod:`retrievo.text.porter`), on UTF-16
code units (``uint16`` arrays); :func:`stem_all` stems a batch of words laid back to back.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_a, _e, _i, _o, _u, _y = (ord(c) for c in "aeiouy")

# Every suffix the rules test or write, one table: _SUF[_OFF[n]:_OFF[n + 1]] is suffix n.
_WORDS = (
    "sses ies eed ed ing at bl iz y "  # 0-8: step 1, step 1c
    "ational tional enci anci izer bli alli entli eli ousli ization ation ator alism iveness fulness ousness "
    "aliti iviti biliti logi "  # 9-29: step 2 (here step3), Lucene's order
    "icate ative alize iciti ical ful ness "  # 30-36: step 3 (here step4)
    "al ance ence er ic able ible ant ement ment ent ion ou ism ate iti ous ive ize "  # 37-55: step 4 (step5)
    "i ate ble ize e tion ence ance ize ble al ent e ous ate al ive ful ous al ive ble log ic"  # 56-: replacements
).split()
_SUF = np.array([ord(c) for w in _WORDS for c in w], dtype=np.uint16)
_OFF = np.cumsum([0] + [len(w) for w in _WORDS]).astype(np.int64)


def _n(word: str, after: int = 0) -> int:
    """Table index of ``word`` (the first occurrence at or after ``after``)."""
    return _WORDS.index(word, after)


_R = _WORDS.index("i")  # replacements start here (56)
# step 2 (Lucene step3): (suffix, replacement) ids grouped by the penultimate letter
_S3 = {"a": (("ational", "ate"), ("tional", "tion")), "c": (("enci", "ence"), ("anci", "ance")),
       "e": (("izer", "ize"),),
       "l": (("bli", "ble"), ("alli", "al"), ("entli", "ent"), ("eli", "e"), ("ousli", "ous")),
       "o": (("ization", "ize"), ("ation", "ate"), ("ator", "ate")),
       "s": (("alism", "al"), ("iveness", "ive"), ("fulness", "ful"), ("ousness", "ous")),
       "t": (("aliti", "al"), ("iviti", "ive"), ("biliti", "ble")), "g": (("logi", "log"),)}
_S4 = {"e": (("icate", "ic"), ("ative", ""), ("alize", "al")), "i": (("iciti", "ic"),),
       "l": (("ical", "ic"), ("ful", "")), "s": (("ness", ""),)}
_S5 = {"a": ("al",), "c": ("ance", "ence"), "e": ("er",), "i": ("ic",), "l": ("able", "ible"),
       "n": ("ant", "ement", "ment", "ent"), "o": ("ion", "ou"), "s": ("ism",), "t": ("ate", "iti"),
       "u": ("ous",), "v": ("ive",), "z": ("ize",)}


def _rules(table: dict, pairs: bool) -> np.ndarray:
    """Rows ``(letter, suffix id, replacement id or -1 for "")`` in Lucene's order."""
    rows = []
    for letter, rules in table.items():
        for rule in rules:
            suffix, repl = rule if pairs else (rule, None)
            rid = -1 if not repl else _n(repl, _R)
            rows.append((ord(letter), _n(suffix), rid))
    return np.array(rows, dtype=np.int64)


_STEP3 = _rules(_S3, True)
_STEP4 = _rules(_S4, True)
_STEP5 = _rules(_S5, False)
_ION = _n("ion")
_SSES, _IES, _EED, _ED, _ING, _AT, _BL, _IZ, _Y = range(9)
_I, _ATE, _BLE, _IZE, _E = (_n(w, _R) for w in ("i", "ate", "ble", "ize", "e"))


@njit(cache=True, nogil=True)
def _cons(b, i):
    """Lucene's ``cons(i)``: ``y`` is a consonant at the start or after a vowel; the
    recursion of the original over a run of ``y`` is unrolled into a parity."""
    c = b[i]
    if c == _a or c == _e or c == _i or c == _o or c == _u:
        return False
    if c != _y:
        return True
    p = i
    while p >= 0 and b[p] == _y:
        p -= 1
    if p < 0:  # the run starts the word: cons(0) is True, then it alternates
        return (i % 2) == 0
    c = b[p]
    base = not (c == _a or c == _e or c == _i or c == _o or c == _u)
    return base if (i - p) % 2 == 0 else not base


@njit(cache=True, nogil=True)
def _m(b, j):
    """Number of vowel-consonant sequences in ``b[0..j]`` (Lucene's ``m()``): the
    vowel-to-consonant transitions."""
    n = 0
    if j < 0:
        return 0
    prev = _cons(b, 0)
    for i in range(1, j + 1):
        c = _cons(b, i)
        if c and not prev:
            n += 1
        prev = c
    return n


@njit(cache=True, nogil=True)
def _vowelinstem(b, j):
    for i in range(j + 1):
        if not _cons(b, i):
            return True
    return False


@njit(cache=True, nogil=True)
def _doublec(b, j):
    if j < 1 or b[j] != b[j - 1]:
        return False
    return _cons(b, j)


@njit(cache=True, nogil=True)
def _cvc(b, i):
    if i < 2 or not _cons(b, i) or _cons(b, i - 1) or not _cons(b, i - 2):
        return False
    c = b[i]
    return not (c == 119 or c == 120 or c == _y)  # w x y


@njit(cache=True, nogil=True)
def _ends(b, k, s):
    """j (the stem end) when ``b[0..k]`` ends with suffix ``s``, else -2."""
    lo, hi = _OFF[s], _OFF[s + 1]
    o = k - (hi - lo) + 1
    if o < 0:
        return -2
    for t in range(hi - lo):
        if b[o + t] != _SUF[lo + t]:
            return -2
    return o - 1


@njit(cache=True, nogil=True)
def _setto(b, j, s):
    """Write suffix ``s`` after ``b[j]``; the new k."""
    lo, hi = _OFF[s], _OFF[s + 1]
    for t in range(hi - lo):
        b[j + 1 + t] = _SUF[lo + t]
    return j + hi - lo


@njit(cache=True, nogil=True)
def stem_word(b, k):
    """Stem ``b[0..k]`` in place (Lucene's steps 1-6, k > 1); the new k."""
    # step 1: plurals, -eed, -ed, -ing
    if b[k] == 115:  # s
        j = _ends(b, k, _SSES)
        if j != -2:
            k -= 2
        else:
            j = _ends(b, k, _IES)
            if j != -2:
                k = _setto(b, j, _I)
            elif b[k - 1] != 115:
                k -= 1
    j = _ends(b, k, _EED)
    if j != -2:
        if _m(b, j) > 0:
            k -= 1
    else:
        j = _ends(b, k, _ED)
        if j == -2:
            j = _ends(b, k, _ING)
        if j != -2 and _vowelinstem(b, j):
            k = j
            j = _ends(b, k, _AT)
            if j != -2:
                k = _setto(b, j, _ATE)
            else:
                j = _ends(b, k, _BL)
                if j != -2:
                    k = _setto(b, j, _BLE)
                else:
                    j = _ends(b, k, _IZ)
                    if j != -2:
                        k = _setto(b, j, _IZE)
                    elif _doublec(b, k):
                        c = b[k]
                        if not (c == 108 or c == 115 or c == 122):  # l s z stay
                            k -= 1
                    elif _m(b, k) == 1 and _cvc(b, k):
                        k = _setto(b, k, _E)
    # step 1c: y -> i when the stem has a vowel
    j = _ends(b, k, _Y)
    if j != -2 and _vowelinstem(b, j):
        b[k] = _i
    # step 2 (Lucene step3): the first suffix of the letter's group that matches decides
    if k > 0:
        c = b[k - 1]
        for r in range(_STEP3.shape[0]):
            if _STEP3[r, 0] == c:
                j = _ends(b, k, _STEP3[r, 1])
                if j != -2:
                    if _m(b, j) > 0:
                        k = _setto(b, j, _STEP3[r, 2])
                    break
    # step 3 (Lucene step4)
    c = b[k]
    for r in range(_STEP4.shape[0]):
        if _STEP4[r, 0] == c:
            j = _ends(b, k, _STEP4[r, 1])
            if j != -2:
                if _m(b, j) > 0:
                    k = j if _STEP4[r, 2] < 0 else _setto(b, j, _STEP4[r, 2])
                break
    # step 4 (Lucene step5): -ion only after s or t
    if k > 0:
        c = b[k - 1]
        found = -2
        for r in range(_STEP5.shape[0]):
            if _STEP5[r, 0] == c:
                j = _ends(b, k, _STEP5[r, 1])
                if j != -2:
                    if _STEP5[r, 1] == _ION and not (j >= 0 and (b[j] == 115 or b[j] == 116)):
                        continue
                    found = j
                    break
        if found != -2 and _m(b, found) > 1:
            k = found
    # step 5 (Lucene step6): final -e, -ll; both measures are taken up to the k step 5
    # starts with (Lucene's j = k), even after the -e is gone
    j = k
    if b[k] == _e:
        a = _m(b, j)
        if a > 1 or (a == 1 and not _cvc(b, k - 1)):
            k -= 1
    if b[k] == 108 and _doublec(b, k) and _m(b, j) > 1:
        k -= 1
    return k


@njit(cache=True, nogil=True)
def stem_all(units, lengths, out, out_lengths):
    """Stem each word of ``units`` (UTF-16 code units, the words back to back, ``lengths``
    units each) into ``out``, back to back; each stem's length into ``out_lengths``."""
    work = np.empty(max(1, lengths.max() if lengths.size else 1), dtype=units.dtype)
    pos = 0
    dst = 0
    for w in range(lengths.size):
        n = lengths[w]
        for t in range(n):
            work[t] = units[pos + t]
        k = n - 1
        if k > 1:
            k = stem_word(work, k)
        for t in range(k + 1):
            out[dst + t] = work[t]
        out_lengths[w] = k + 1
        dst += k + 1
        pos += n
    return dst
