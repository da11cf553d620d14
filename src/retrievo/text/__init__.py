"""Text analysis: a Python reproduction of Lucene's ``EnglishAnalyzer``.

``ENGLISH`` (the default analyzer) yields exactly the terms Lucene 8's
``EnglishAnalyzer`` -- and so Anserini / Pyserini BM25 indexes -- produce:
``StandardTokenizer`` (UAX #29) -> English possessive filter -> lower case ->
Lucene's 33 English stop words -> Lucene's Porter stemmer.

>>> from retrievo.text import ENGLISH, get_analyzer
>>> ENGLISH("The quick brown fox's jumps")
['quick', 'brown', 'fox', 'jump']
>>> get_analyzer("standard")("The quick brown fox's jumps")
['the', 'quick', 'brown', "fox's", 'jumps']
"""

from .analyzer import (
    CONFIG_VERSION,
    ENGLISH,
    STANDARD,
    Analyzer,
    AnalyzerConfigError,
    get_analyzer,
)
from .porter import PorterStemmer
from .porter import stem as porter_stem
from .porter import stem_many as porter_stem_many
from .stopwords import LUCENE_ENGLISH, load_stopwords
from .tokenizer import (
    DEFAULT_MAX_TOKEN_LENGTH,
    iter_token_spans,
    java_lower,
    tokenize,
    tokenize_with_offsets,
)

__all__ = [
    "Analyzer",
    "AnalyzerConfigError",
    "CONFIG_VERSION",
    "DEFAULT_MAX_TOKEN_LENGTH",
    "ENGLISH",
    "LUCENE_ENGLISH",
    "PorterStemmer",
    "STANDARD",
    "get_analyzer",
    "iter_token_spans",
    "java_lower",
    "load_stopwords",
    "porter_stem",
    "porter_stem_many",
    "tokenize",
    "tokenize_with_offsets",
]
