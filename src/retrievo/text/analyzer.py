"""Configurable analyzer; the default reproduces Lucene's ``EnglishAnalyzer``.

Lucene 8's ``EnglishAnalyzer`` (used by Anserini / Pyserini for BM25 indexes)
is the chain::

    StandardTokenizer -> EnglishPossessiveFilter -> LowerCaseFilter
        -> StopFilter(ENGLISH_STOP_WORDS_SET) -> PorterStemFilter

:class:`Analyzer` runs the same chain with each stage configurable:

* ``possessive``  -- strip a trailing ``'s`` / ``’s`` / ``＇s`` (``s`` or ``S``),
  checked on the token as written, before lower-casing (as in Lucene);
* ``lowercase``   -- ``java.lang.Character.toLowerCase`` per code point;
* ``stopwords``   -- ``"lucene"`` (Lucene's 33 English words), ``"none"`` or
  a custom collection of words (compared after lower-casing);
* ``stemmer``     -- ``"porter"`` (faithful port of Lucene's PorterStemmer),
  ``"none"``, or ``"snowball:<language>"`` (any PyStemmer / Snowball
  algorithm, e.g. ``"snowball:english"``, ``"snowball:french"``; a bare
  language name is accepted and normalised to that form);
* ``max_token_length`` -- Lucene's ``StandardTokenizer`` limit (default 255
  UTF-16 units; longer words are split, not dropped).

Every stage but tokenization works on one token at a time, so the analyzer
keeps a cache ``raw token -> final term``, and one ``normalised word -> stem``
so that case and possessive variants of a word are stemmed once.  Each cache
is cleared when it passes ``CACHE_LIMIT`` entries.  Tokens missing from the
cache are normalised together and their words stemmed in one call to the
stemmer (:meth:`Analyzer.analyze_many` does this for a whole batch of texts,
which is how indexing runs: one compiled Porter call per batch instead of a
Python call per new word).

An analyzer is immutable; :meth:`Analyzer.config` returns a JSON-serialisable
dict from which :meth:`Analyzer.from_config` rebuilds an equal analyzer
(index manifests store it).  Analyzers pickle by config.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from retrievo.errors import AnalyzerConfigError

from .porter import stem_many as porter_stem_many
from .stopwords import LUCENE_ENGLISH
from .tokenizer import DEFAULT_MAX_TOKEN_LENGTH, iter_token_spans, java_lower, tokenize

__all__ = [
    "Analyzer",
    "AnalyzerConfigError",
    "ENGLISH",
    "STANDARD",
    "get_analyzer",
    "CONFIG_VERSION",
]

CONFIG_VERSION = 1
MAX_TOKEN_LENGTH_LIMIT = 1024 * 1024  # StandardTokenizer.MAX_TOKEN_LENGTH_LIMIT
_CONFIG_KEYS = frozenset(
    {"type", "version", "tokenizer", "lowercase", "possessive", "stopwords", "stemmer", "max_token_length"}
)
_TYPE = "retrievo.text.Analyzer"
_TOKENIZER = "lucene-standard"
_POSSESSIVE_QUOTES = "'\u2019\uff07"


def _snowball_algorithms() -> Tuple[str, ...]:
    try:
        import Stemmer  # PyStemmer
    except ImportError:  # pragma: no cover - PyStemmer is a dependency
        return ()
    return tuple(Stemmer.algorithms())


def _normalize_stemmer(stemmer: Any) -> str:
    if stemmer is None or stemmer is False:
        return "none"
    if not isinstance(stemmer, str):
        raise AnalyzerConfigError(f"stemmer must be a string, got {type(stemmer).__name__}")
    name = stemmer.strip().lower()
    if name in ("none", ""):
        return "none"
    if name in ("porter", "lucene", "lucene-porter"):
        return "porter"
    lang = name[len("snowball:"):] if name.startswith("snowball:") else name
    algorithms = _snowball_algorithms()
    if lang not in algorithms:
        raise AnalyzerConfigError(
            f"unknown stemmer {stemmer!r}: use 'porter' (Lucene), 'none' or 'snowball:<language>' with "
            f"<language> one of {', '.join(sorted(algorithms)) or '(PyStemmer is not installed)'}"
        )
    return f"snowball:{lang}"


def _normalize_stopwords(stopwords: Any) -> Union[str, Tuple[str, ...]]:
    if stopwords is None or stopwords is False:
        return "none"
    if isinstance(stopwords, str):
        name = stopwords.strip().lower()
        if name in ("lucene", "english", "en", "default"):
            return "lucene"
        if name in ("none", ""):
            return "none"
        raise AnalyzerConfigError(
            f"unknown stop word set {stopwords!r}: use 'lucene', 'none' or a collection of words "
            "(retrievo.text.load_stopwords reads a file)"
        )
    try:
        words = tuple(sorted(set(stopwords)))
    except TypeError as exc:
        raise AnalyzerConfigError(f"stopwords must be 'lucene', 'none' or a collection of words: {exc}") from None
    for w in words:
        if not isinstance(w, str) or not w:
            raise AnalyzerConfigError(f"stop words must be non-empty strings, got {w!r}")
    return words if words else "none"


def _make_stemmer(name: str) -> Optional[Callable[[List[str]], List[str]]]:
    """A function stemming a list of words (None: no stemming)."""
    if name == "none":
        return None
    if name == "porter":
        return porter_stem_many
    import Stemmer

    # our own cache already memoises per token
    return Stemmer.Stemmer(name[len("snowball:"):], 0).stemWords


def _lower_all(words: List[str]) -> List[str]:
    """:func:`java_lower` of each word; ASCII batches in one ``str.lower`` call."""
    if not words:
        return []
    joined = "\x00".join(words)
    if joined.isascii() and joined.count("\x00") == len(words) - 1:
        return joined.lower().split("\x00")
    return [w.lower() if w.isascii() else java_lower(w) for w in words]


def _rebuild(config: Mapping[str, Any]) -> "Analyzer":
    return Analyzer.from_config(config)


class Analyzer:
    """Text -> terms, Lucene-compatible.  Default: Lucene ``EnglishAnalyzer``.

    >>> Analyzer()("The U.S.A.'s running dogs")
    ['u.s.a', 'run', 'dog']
    """

    CACHE_LIMIT = 2_000_000

    __slots__ = (
        "_lowercase",
        "_possessive",
        "_stopwords",
        "_stemmer",
        "_max_token_length",
        "_stopset",
        "_stem_many",
        "_cache",
        "_stems",
        "_key",
    )

    def __init__(
        self,
        *,
        lowercase: bool = True,
        possessive: bool = True,
        stopwords: Union[str, Iterable[str], None] = "lucene",
        stemmer: Optional[str] = "porter",
        max_token_length: int = DEFAULT_MAX_TOKEN_LENGTH,
    ) -> None:
        if not isinstance(lowercase, bool):
            raise AnalyzerConfigError(f"lowercase must be a bool, got {lowercase!r}")
        if not isinstance(possessive, bool):
            raise AnalyzerConfigError(f"possessive must be a bool, got {possessive!r}")
        if isinstance(max_token_length, bool) or not isinstance(max_token_length, int):
            raise AnalyzerConfigError(f"max_token_length must be an int, got {max_token_length!r}")
        if not 2 <= max_token_length <= MAX_TOKEN_LENGTH_LIMIT:
            raise AnalyzerConfigError(
                f"max_token_length must be in [2, {MAX_TOKEN_LENGTH_LIMIT}], got {max_token_length}"
            )
        sw = _normalize_stopwords(stopwords)
        st = _normalize_stemmer(stemmer)
        s = object.__setattr__
        s(self, "_lowercase", lowercase)
        s(self, "_possessive", possessive)
        s(self, "_stopwords", sw)
        s(self, "_stemmer", st)
        s(self, "_max_token_length", max_token_length)
        s(self, "_stopset", LUCENE_ENGLISH if sw == "lucene" else frozenset(() if sw == "none" else sw))
        s(self, "_stem_many", _make_stemmer(st))
        s(self, "_cache", {})
        s(self, "_stems", {})
        s(self, "_key", json.dumps(self.config(), sort_keys=True, ensure_ascii=False))

    # -- immutability / identity ---------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Analyzer is immutable; build a new one (e.g. Analyzer.from_config)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Analyzer is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Analyzer):
            return NotImplemented
        return self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __reduce__(self):
        return (_rebuild, (self.config(),))

    def __copy__(self) -> "Analyzer":
        return self

    def __deepcopy__(self, memo: Dict[int, Any]) -> "Analyzer":
        return self

    def __repr__(self) -> str:
        sw = self._stopwords if isinstance(self._stopwords, str) else f"<{len(self._stopwords)} words>"
        return (
            f"Analyzer(lowercase={self._lowercase}, possessive={self._possessive}, stopwords={sw!r}, "
            f"stemmer={self._stemmer!r}, max_token_length={self._max_token_length})"
        )

    # -- configuration -------------------------------------------------------
    @property
    def lowercase(self) -> bool:
        return self._lowercase

    @property
    def possessive(self) -> bool:
        return self._possessive

    @property
    def stopwords(self) -> Union[str, Tuple[str, ...]]:
        """``"lucene"``, ``"none"`` or a sorted tuple of custom words."""
        return self._stopwords

    @property
    def stopword_set(self) -> frozenset:
        return self._stopset

    @property
    def stemmer(self) -> str:
        """``"porter"``, ``"none"`` or ``"snowball:<language>"``."""
        return self._stemmer

    @property
    def max_token_length(self) -> int:
        return self._max_token_length

    def config(self) -> Dict[str, Any]:
        """JSON-serialisable description; ``Analyzer.from_config`` inverts it."""
        sw = self._stopwords
        return {
            "type": _TYPE,
            "version": CONFIG_VERSION,
            "tokenizer": _TOKENIZER,
            "lowercase": self._lowercase,
            "possessive": self._possessive,
            "stopwords": sw if isinstance(sw, str) else list(sw),
            "stemmer": self._stemmer,
            "max_token_length": self._max_token_length,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "Analyzer":
        """Rebuild an analyzer from :meth:`config` output (missing keys take defaults)."""
        if isinstance(config, Analyzer):
            return config
        if not isinstance(config, Mapping):
            raise AnalyzerConfigError(f"analyzer config must be a mapping, got {type(config).__name__}")
        unknown = set(config) - _CONFIG_KEYS
        if unknown:
            raise AnalyzerConfigError(f"unknown analyzer config keys: {sorted(unknown)}")
        if config.get("type", _TYPE) != _TYPE:
            raise AnalyzerConfigError(f"not a retrievo analyzer config: type={config.get('type')!r}")
        version = config.get("version", CONFIG_VERSION)
        if not isinstance(version, int) or version > CONFIG_VERSION or version < 1:
            raise AnalyzerConfigError(f"unsupported analyzer config version {version!r} (this is {CONFIG_VERSION})")
        if config.get("tokenizer", _TOKENIZER) != _TOKENIZER:
            raise AnalyzerConfigError(f"unknown tokenizer {config.get('tokenizer')!r} (only {_TOKENIZER!r})")
        options = ("lowercase", "possessive", "stopwords", "stemmer", "max_token_length")
        kwargs = {k: config[k] for k in options if k in config}
        return cls(**kwargs)

    # -- analysis ------------------------------------------------------------
    def normalize_token(self, token: str) -> Optional[str]:
        """Final term for one raw tokenizer token, or None if it is a stop word."""
        term = self._cache.get(token)
        if term is None:
            term = self._fill(token)
        return term or None

    def _fill(self, token: str) -> str:
        if len(self._cache) >= self.CACHE_LIMIT:
            self._cache.clear()
        self._fill_many((token,))
        return self._cache[token]

    def _fill_many(self, tokens: Iterable[str]) -> None:
        """Cache the final terms of raw ``tokens`` (none cached yet): possessive, lower
        case and stop words per token, then every word the stem cache lacks in one call
        to the stemmer; "" marks a stop word."""
        raw = list(tokens)
        words = raw
        if self._possessive:
            quotes = _POSSESSIVE_QUOTES
            words = [t[:-2] if len(t) >= 2 and t[-1] in "sS" and t[-2] in quotes else t for t in words]
        if self._lowercase:
            words = _lower_all(words)
        stop = self._stopset
        if self._stem_many is None:
            terms = ["" if w in stop else w for w in words]
        else:
            # stems are cached per normalised word too: "Cell", "CELL" and "cell's" stem once
            stems = self._stems
            new = {w for w in words if w not in stems and w not in stop}
            if new:
                if len(stems) + len(new) > self.CACHE_LIMIT:
                    stems.clear()
                    new = {w for w in words if w not in stop}
                todo = list(new)
                stems.update(zip(todo, self._stem_many(todo)))
            terms = ["" if w in stop else stems[w] for w in words]
        self._cache.update(zip(raw, terms))

    def _ensure(self, tokens: Iterable[str]) -> None:
        """Make every raw token of ``tokens`` a key of the cache."""
        cache = self._cache
        wanted = set(tokens)
        missing = wanted.difference(cache)
        if missing:
            if len(cache) + len(missing) > self.CACHE_LIMIT:
                cache.clear()
                missing = wanted
            self._fill_many(missing)

    def tokenize(self, text: str) -> List[str]:
        """Raw tokens (Lucene StandardTokenizer), before any filter."""
        return tokenize(text, self._max_token_length)

    def __call__(self, text: str) -> List[str]:
        """Terms of ``text`` in order, stop words removed."""
        tokens = tokenize(text, self._max_token_length)
        get = self._cache.__getitem__
        try:
            return list(filter(None, map(get, tokens)))
        except KeyError:
            self._ensure(tokens)
        return list(filter(None, map(get, tokens)))

    def _batch_tokens(self, texts: Iterable[str], caller: str) -> List[List[str]]:
        """Raw tokens of each text, every one of them made a key of the cache (the
        batch's new words normalised and stemmed together)."""
        limit = self._max_token_length
        token_lists = []
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"{caller} takes strings, got {type(text).__name__}")
            token_lists.append(tokenize(text, limit))
        self._ensure(itertools.chain.from_iterable(token_lists))
        return token_lists

    def analyze_many(self, texts: Iterable[str]) -> List[List[str]]:
        """``[self(text) for text in texts]``, with the batch's new tokens normalised and
        stemmed together."""
        token_lists = self._batch_tokens(texts, "analyze_many")
        get = self._cache.__getitem__
        return [list(filter(None, map(get, tokens))) for tokens in token_lists]

    def analyze_flat(self, texts: Iterable[str]) -> Tuple[List[str], List[int]]:
        """The terms of all ``texts`` in one list, a removed token (stop word) kept as
        ``""``, and each text's number of tokens: :meth:`analyze_many` without a list per
        text, for indexing, which maps the whole batch to term ids in one pass."""
        token_lists = self._batch_tokens(texts, "analyze_flat")
        get = self._cache.__getitem__
        return list(map(get, itertools.chain.from_iterable(token_lists))), list(map(len, token_lists))

    analyze = __call__

    def analyze_with_offsets(self, text: str) -> List[Tuple[str, int, int]]:
        """``(term, start, end)`` for each term; ``text[start:end]`` is the raw
        token the term came from (possessive suffix included, as in Lucene)."""
        out = []
        get = self._cache.get
        for s, e in iter_token_spans(text, self._max_token_length):
            tok = text[s:e]
            term = get(tok)
            if term is None:
                term = self._fill(tok)
            if term:
                out.append((term, s, e))
        return out

    def clear_cache(self) -> None:
        self._cache.clear()
        self._stems.clear()

    @property
    def cache_size(self) -> int:
        return len(self._cache)


#: Lucene ``EnglishAnalyzer`` (default constructor) -- Anserini/Pyserini BM25.
ENGLISH = Analyzer()
#: Lucene 8 ``StandardAnalyzer`` (default constructor): tokenizer + lower case,
#: no stop words (Lucene 8 removed the English default), no stemming.
STANDARD = Analyzer(possessive=False, stopwords="none", stemmer="none")

_NAMED = {
    "english": ENGLISH,
    "lucene": ENGLISH,
    "lucene-english": ENGLISH,
    "default": ENGLISH,
    "standard": STANDARD,
    "lucene-standard": STANDARD,
}


def get_analyzer(spec: Union[None, str, Mapping[str, Any], Analyzer] = None) -> Analyzer:
    """Resolve an analyzer from a name, a config dict or an instance.

    * ``None``, ``"english"``, ``"lucene"``, ``"default"`` -> :data:`ENGLISH`
    * ``"standard"`` -> :data:`STANDARD` (Lucene 8 StandardAnalyzer)
    * ``"snowball:<language>"`` -> tokenizer + lower case + Snowball stemmer
      via PyStemmer; ``snowball:english`` / ``snowball:porter`` also keep the
      possessive filter and Lucene's English stop words, other languages use
      no stop words (pass a config dict for custom lists)
    * ``"none"`` / ``"nostem"`` -> English analyzer without stemming
    * a dict -> :meth:`Analyzer.from_config`
    """
    if spec is None:
        return ENGLISH
    if isinstance(spec, Analyzer):
        return spec
    if isinstance(spec, Mapping):
        return Analyzer.from_config(spec)
    if not isinstance(spec, str):
        raise AnalyzerConfigError(f"cannot build an analyzer from {type(spec).__name__}")
    name = spec.strip().lower()
    if name in _NAMED:
        return _NAMED[name]
    if name in ("none", "nostem", "english-nostem"):
        return Analyzer(stemmer="none")
    if name.startswith("snowball:"):
        stemmer = _normalize_stemmer(name)
        english = stemmer in ("snowball:english", "snowball:porter")
        return Analyzer(possessive=english, stopwords="lucene" if english else "none", stemmer=stemmer)
    raise AnalyzerConfigError(
        f"unknown analyzer {spec!r}: use 'english' (Lucene EnglishAnalyzer), 'standard', "
        "'snowball:<language>' or a config dict"
    )
