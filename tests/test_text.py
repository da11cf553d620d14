"""Tests for retrievo.text: the Lucene-compatible analyzer.

Most checks compare against real Lucene run through ``tests/reference/LuceneAnalyze.java``
(see :mod:`lucene_ref`): they skip when java/javac/the Lucene jars are missing, unless
``RETRIEVO_REQUIRE_LUCENE=1``.  Every Java run is batched (one JVM per fixture).  The
corpus checks also need ``../shared/data`` (see ``conftest.shared_data``).
"""

from __future__ import annotations

import gzip
import json
import pickle
import random
import re
from pathlib import Path

import pytest

import lucene_ref
from retrievo.text import (
    ENGLISH,
    LUCENE_ENGLISH,
    STANDARD,
    Analyzer,
    AnalyzerConfigError,
    get_analyzer,
    java_lower,
    load_stopwords,
    porter_stem,
    porter_stem_many,
    tokenize,
    tokenize_with_offsets,
)
from retrievo.text import tokenizer as tokenizer_module

# ---------------------------------------------------------------------------
# hand-written cases, all checked against Lucene

TRICKY = [
    "",
    " ",
    " \t\n\r\f\v \u00a0\u2003\u3000 ",
    # possessives: ' ’ ＇ and any case of s
    "John's book, JOHN'S BOOK, John’s, John＇s, JOHN’S, Jones' house, it's, its', 's alone, '' ''s",
    "the dogs' bowls and the children's toys; O'Neil's rock'n'roll",
    "U.S.A. u.s.a U.S.A.'s e.g. i.e. Ph.D. a.b.c. ... .5 5. .NET node.js",
    "3.14 1,000,000 1.000.000,00 1'000 10:30 1/2 3x4 -5 +1 $100 100% 2,5-dimethyl 0.05",
    "e-mail foo.bar@example.com http://www.example.com/path?q=1&x=y#frag https://x.org/a_b/c-d.html",
    "well-known state-of-the-art x-ray covid-19 COVID-19 SARS-CoV-2 IL-6 TGF-β p<0.05 N=1,234",
    "snake_case __init__ _lead trail_ a__b x86_64 foo_1_bar 1_000 _ __ _1",
    "don't can't won't I'm we'll 'quoted' \"double\" ''' rock''n'roll a'b'c a''b",
    "h2o H2O 5mg 10mg/kg 1st 2nd 3rd 4th 1990s 1980's mp3 b2b A1C",
    "中文分词测试 日本語のテキスト 漢字かなカタカナ ひらがな カタカナ・テスト ｶﾀｶﾅ ー",
    "한국어 텍스트 처리 안녕하세요",
    "ภาษาไทย การทดสอบ ພາສາລາວ မြန်မာဘာသာ ភាសាខ្មែរ",
    "עברית ד\"ר צה\"ל ג'ירפה שלום'ס א\"ב\"ג a.א' aא' א.ב'",
    "العربية ١٢٣ ٣٫١٤ हिन्दी देवनागरी ২০২০ Ελληνικά ΟΔΟΣ ΣΟΦΟΣ русский ТЕКСТ",
    "emoji 😀 👍🏻 👨‍👩‍👧‍👦 🇺🇸🇬🇧 1️⃣ #️⃣ *⃣ ©️ ® ™ ℹ️ Ⓜ️ 🏴󠁧󠁢󠁳󠁣󠁴󠁿 ☺ ☺️ ✋🏿 a😀b 😀😀 ‍😀 〰 〽",
    "combining: cafe\u0301 naïve re\u0301sume\u0301 \u0301lead a\u0308\u0304 ﬁnance ﬂ Æsir straße STRASSE",
    "İstanbul ISTANBUL ı I İ i̇ K Å Ω µm ÅNGSTRÖM Ǆ ǅ ǆ ᾈ ᾼ Ⅻ ⓐⒶ ＡＢＣ ０１２ Ꭰ Ᏸ 𐐀𐐨 𞤀",
    "soft\u00adhyphen zero\u200bwidth zw\u200cnj zw\u200dj bom\ufeffmark lrm\u200emark word\u2060joiner",
    "ctrl\x00nul\x01soh\x07bel\x1b[1mesc\x7fdel\x85nel\u2028ls\u2029ps",
    "tabs\tand\nnewlines\r\nand\x0bvt",
    "nnbsp 100\u202f000 word\u202fword fullwidth＇s Ｊｏｈｎ＇ｓ",
    "math 𝐀𝐁𝐂 𝑥 𝟏𝟐𝟑 ℝ ∑ ∞ ± × ÷ ≤ ≥ ° °C µ ‰ ′ ″ 5′-UTR 3′ end",
    "a" * 300,
    "b" * 255 + "'s " + "c" * 254 + ".d " + "e" * 600 + " tail",
    "1" * 254 + ",5 " + "x" * 253 + "'s",
    "\U00010428" * 200 + " " + "a" * 254 + "\U00010428b",
    "mixed abcабв abc123абв 123abc αβγ1 x²+y² H₂O CO₂ ½ ¼",
    "quotes “smart” ‘single’ «guillemets» „low“ ‹›",
    "ALL CAPS SHOUTING With Title Case And the Stop Words THE AND OF IN IS",
    "There are 33 stop words: a an and are as at be but by for if in into is it no not of on or such "
    "that the their then there these they this to was will with",
    "running runs ran easily fairly generalizations oscillators relational conditional rational "
    "valency hesitancy digitizer conformabli radicalli differentli vileli analogousli vietnamization "
    "predication operator feudalism decisiveness hopefulness callousness formaliti sensitiviti sensibiliti "
    "triplicate formative formalize electriciti electrical hopeful goodness revival allowance inference "
    "airliner gyroscopic adjustable defensible irritant replacement adjustment dependent adoption homologou "
    "communism activate angulariti homologous effective bowdlerize probate rate cease controll roll",
    "y yy yyy sky skies ies aed eed oed ion sion tion ying ay",
]


@pytest.fixture(scope="module")
def lucene_tricky():
    lucene_ref.require()
    return {
        "english": lucene_ref.english(TRICKY),
        "standard": lucene_ref.standard(TRICKY),
        "offsets": lucene_ref.english_offsets(TRICKY),
        "tokens": lucene_ref.tokens(TRICKY),
    }


@pytest.mark.parametrize("i", range(len(TRICKY)))
def test_tricky_english_vs_lucene(lucene_tricky, i):
    assert ENGLISH(TRICKY[i]) == lucene_tricky["english"][i], repr(TRICKY[i])


@pytest.mark.parametrize("i", range(len(TRICKY)))
def test_tricky_tokens_vs_lucene(lucene_tricky, i):
    text = TRICKY[i]
    want = [(t, lucene_ref.utf16_to_cp(text, s), lucene_ref.utf16_to_cp(text, e)) for t, s, e, _ in lucene_tricky["tokens"][i]]
    assert tokenize_with_offsets(text) == want
    assert tokenize(text) == [t for t, _, _ in want]


def test_tricky_standard_vs_lucene(lucene_tricky):
    got = [STANDARD(t) for t in TRICKY]
    assert got == lucene_tricky["standard"]


def test_tricky_offsets_vs_lucene(lucene_tricky):
    for text, ref in zip(TRICKY, lucene_tricky["offsets"]):
        want = [(t, lucene_ref.utf16_to_cp(text, s), lucene_ref.utf16_to_cp(text, e)) for t, s, e in ref]
        assert ENGLISH.analyze_with_offsets(text) == want, repr(text)


# ---------------------------------------------------------------------------
# hard-coded expectations (meaningful without Java; also checked above)


@pytest.mark.parametrize(
    "text, terms",
    [
        ("", []),
        ("   \n\t ", []),
        ("The quick brown fox's jumps", ["quick", "brown", "fox", "jump"]),
        ("John's JOHN'S John’s John＇s", ["john", "john", "john", "john"]),
        ("U.S.A. 3.14 1,000,000", ["u.s.a", "3.14", "1,000,000"]),
        ("don't stop", ["don't", "stop"]),
        ("foo.bar@example.com", ["foo.bar", "example.com"]),
        ("http://www.example.com/a_b", ["http", "www.example.com", "a_b"]),
        ("covid-19 h2o 5mg", ["covid", "19", "h2o", "5mg"]),
        ("中文", ["中", "文"]),
        ("generalizations relational running", ["gener", "relat", "run"]),
        ("İstanbul ΟΔΟΣ", ["istanbul", "οδοσ"]),
        ("this is not a test of the system", ["test", "system"]),
    ],
)
def test_english_expectations(text, terms):
    assert ENGLISH(text) == terms


def test_standard_expectations():
    assert STANDARD("The Dog's bowls, U.S.A.") == ["the", "dog's", "bowls", "u.s.a"]
    assert STANDARD.config()["stopwords"] == "none"  # Lucene 8 StandardAnalyzer: no stop words


def test_long_tokens_are_split_like_lucene():
    assert [len(t) for t in tokenize("a" * 600)] == [255, 255, 90]
    # the scanner sees the end of its 255-char buffer as end of input
    assert [len(t) for t in tokenize("a" * 254 + ".b")] == [254, 1]
    assert [len(t) for t in tokenize("a" * 300, max_token_length=100)] == [100, 100, 100]


def test_offsets_point_into_text():
    text = "Dogs' bowls — the DOG’s café\u0301!"
    out = ENGLISH.analyze_with_offsets(text)
    assert [t for t, _, _ in out] == ENGLISH(text)
    assert [text[s:e] for _, s, e in out] == ["Dogs", "bowls", "DOG’s", "café\u0301"]


def test_lowercase_matches_java_rules():
    assert java_lower("İ") == "i"  # Java simple mapping, not Python's "i̇"
    assert java_lower("ΣΟΦΟΣ") == "σοφοσ"  # no final-sigma context rule
    assert java_lower("ẞ") == "ß" and java_lower("ß") == "ß"
    assert java_lower("K") == "k"  # Kelvin sign
    assert java_lower("ABC") == "abc"


def test_stop_set_is_lucenes():
    assert len(LUCENE_ENGLISH) == 33
    assert {"the", "a", "such", "will", "with", "into"} <= LUCENE_ENGLISH
    assert "from" not in LUCENE_ENGLISH and "have" not in LUCENE_ENGLISH


def test_stop_sets_vs_lucene():
    lucene_ref.require()
    t = lucene_ref.tables()
    assert sorted(LUCENE_ENGLISH) == t["english_stop_words"]
    assert t["standard_stop_words"] == []


# ---------------------------------------------------------------------------
# the embedded character tables are what Lucene's scanner uses


def _embedded_block() -> str:
    src = Path(tokenizer_module.__file__).read_text(encoding="utf-8")
    m = re.search(r"# BEGIN GENERATED TABLES\n(.*?)# END GENERATED TABLES\n", src, re.S)
    assert m, "generated-table markers missing from tokenizer.py"
    return m.group(1)


def test_embedded_tables_match_lucene():
    lucene_ref.require()
    t = lucene_ref.tables()
    assert t["inconsistent"] == [], "a JFlex character class did not classify uniformly"
    # the header lines name the Lucene/Java versions; compare the data only
    want = lucene_ref.tables_source(t).split("\n", 2)[2]
    got = _embedded_block().split("\n", 2)[2]
    assert got == want, "regenerate with: cd tests && python lucene_ref.py tables"


def test_java_lower_every_code_point():
    lucene_ref.require()
    lower = dict(map(tuple, lucene_ref.tables()["lower"]))
    bad = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF and java_lower(chr(c)) != chr(lower.get(c, c))]
    assert bad == []


# ---------------------------------------------------------------------------
# randomised comparison of the tokenizer with Lucene's

_ALPHABET = list("aZs") + [
    "א", "ב", "1", "0", "٠", "ア", "ー", "_", ":", ".", ",", ";", "'", '"', "\u2019", "\uff07", "\u0301", "\u200d",
    "\ufe0e", "\ufe0f", "\u20e3", "#", "*", "😀", "👍", "🏻", "🇺", "🇸", "ก", "\u0e31", "中", "あ", "ℹ", "Ⓜ", "©",
    " ", "-", "\U000e0067", "\U000e007f", "가", "\u00ad", "𐐀", "\u200b", "\u3005", "\u202f", "™", "\u3030",
]


def _random_texts(seed: int, n: int, max_len: int, alphabet=_ALPHABET) -> list[str]:
    rnd = random.Random(seed)
    return ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, max_len))) for _ in range(n)]


def _random_code_points(seed: int, n: int) -> list[str]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        chars = []
        for _ in range(rnd.randint(1, 12)):
            c = rnd.choice((rnd.randint(0, 0x3000), rnd.randint(0, 0x2FFFF), rnd.randint(0, 0x10FFFF)))
            chars.append(chr(0x41 if 0xD800 <= c <= 0xDFFF else c))
        out.append("".join(chars))
    return out


@pytest.mark.parametrize("max_token_length", [None, 5])
def test_tokenizer_fuzz_vs_lucene(max_token_length):
    lucene_ref.require()
    texts = _random_texts(1, 6000, 14) + _random_code_points(2, 3000)
    limit = max_token_length or 255
    ref = lucene_ref.tokens(texts, max_token_length)
    bad = []
    for text, row in zip(texts, ref):
        want = [(t, lucene_ref.utf16_to_cp(text, s), lucene_ref.utf16_to_cp(text, e)) for t, s, e, _ in row]
        if tokenize_with_offsets(text, limit) != want or tokenize(text, limit) != [w[0] for w in want]:
            bad.append((text, want))
    assert not bad, f"{len(bad)} mismatches, e.g. {bad[:3]!r}"


# ---------------------------------------------------------------------------
# real corpora: every document and query analysed exactly as Lucene does


def _read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


CORPORA = ("scifact", "cranfield", "hotpotqa")


@pytest.fixture(scope="module")
def corpus_texts(shared_data) -> dict[str, list[str]]:
    out = {}
    for name in CORPORA:
        folder = shared_data / name
        path = folder / "corpus.jsonl" if (folder / "corpus.jsonl").exists() else folder / "corpus.jsonl.gz"
        docs = _read_jsonl(path)
        out[name] = [(d.get("title") or "") + " " + (d.get("text") or "") for d in docs]
        out[name + "/queries"] = [q.get("text") or "" for q in _read_jsonl(folder / "queries.jsonl")]
    return out


@pytest.fixture(scope="module")
def lucene_corpora(corpus_texts):
    lucene_ref.require()
    names = list(corpus_texts)
    flat = [t for n in names for t in corpus_texts[n]]
    english, standard = lucene_ref.english(flat), lucene_ref.standard(flat)
    out, i = {}, 0
    for n in names:
        k = len(corpus_texts[n])
        out[n] = {"english": english[i:i + k], "standard": standard[i:i + k]}
        i += k
    return out


def _mismatches(analyzer, texts, ref):
    return [i for i, (t, r) in enumerate(zip(texts, ref)) if analyzer(t) != r]


@pytest.mark.parametrize("name", [n + s for n in CORPORA for s in ("", "/queries")])
def test_corpus_english_vs_lucene(corpus_texts, lucene_corpora, name):
    texts = corpus_texts[name]
    bad = _mismatches(Analyzer(), texts, lucene_corpora[name]["english"])
    assert len(bad) == 0, f"{name}: {len(bad)} of {len(texts)} texts differ from Lucene, first {bad[:5]}"


@pytest.mark.parametrize("name", CORPORA)
def test_corpus_analyze_many_vs_lucene(corpus_texts, lucene_corpora, name):
    """The batch path indexing uses: texts in batches of 500, a cold cache, Lucene's terms."""
    texts, ref = corpus_texts[name], lucene_corpora[name]["english"]
    a = Analyzer()
    got = [terms for lo in range(0, len(texts), 500) for terms in a.analyze_many(texts[lo:lo + 500])]
    bad = [i for i, (g, r) in enumerate(zip(got, ref)) if g != r]
    assert len(got) == len(texts) and not bad, f"{name}: {len(bad)} texts differ from Lucene, first {bad[:5]}"


@pytest.mark.parametrize("name", CORPORA)
def test_corpus_standard_vs_lucene(corpus_texts, lucene_corpora, name):
    texts = corpus_texts[name]
    bad = _mismatches(get_analyzer("standard"), texts, lucene_corpora[name]["standard"])
    assert len(bad) == 0, f"{name}: {len(bad)} of {len(texts)} texts differ from Lucene StandardAnalyzer"


_SUFFIXES = (
    "ational tional enci anci izer bli alli entli eli ousli ization ation ator alism iveness fulness ousness "
    "aliti iviti biliti logi icate ative alize iciti ical ful ness al ance ence er ic able ible ant ement ment "
    "ent sion tion ion ou ism ate iti ous ive ize sses ies ss s eed ed ing at bl iz y e ll"
).split()


def test_porter_vs_lucene_on_corpus_vocabulary(corpus_texts):
    """The stemmer alone, on every distinct lower-cased token of the corpora."""
    lucene_ref.require()
    vocab = set()
    for name in CORPORA:
        for text in corpus_texts[name]:
            vocab.update(java_lower(t) for t in tokenize(text))
    vocab.update(["caresses", "ponies", "ties", "feed", "agreed", "disabled", "matting", "mating", "meeting",
                  "milling", "messing", "meetings", "ies", "aed", "eed", "ion", "yyy", "\U00010428\U00010428s"])
    # synthetic words: every suffix rule, stacked, after random stems (digits included)
    rnd = random.Random(0)
    for _ in range(20000):
        word = "".join(rnd.choice("aeiouyblcdgmnrstvzwx01") for _ in range(rnd.randint(0, 6)))
        for _ in range(rnd.randint(1, 3)):
            word += rnd.choice(_SUFFIXES)
        vocab.add(word)
    words = sorted(vocab)
    ref = lucene_ref.porter(words)
    bad = [(w, r, porter_stem(w)) for w, r in zip(words, ref) if porter_stem(w) != r]
    assert not bad, f"{len(bad)} of {len(words)} words stem differently, e.g. {bad[:10]}"
    # the batch kernel the analyzer indexes with, in one call and in shuffled chunks
    assert porter_stem_many(words) == ref
    order = list(range(len(words)))
    rnd.shuffle(order)
    for lo in range(0, len(order), 7919):
        chunk = order[lo:lo + 7919]
        assert porter_stem_many([words[i] for i in chunk]) == [ref[i] for i in chunk]


def test_porter_stem_many_edges():
    words = ["", "a", "ab", "abs", "\U00010428s", "x\U00010428ies", "caresses", "ponies", "running"]
    assert porter_stem_many(words) == [porter_stem(w) for w in words]
    assert porter_stem_many(words) == ["", "a", "ab", "ab", "\U00010428", "x\U00010428i", "caress", "poni", "run"]
    assert porter_stem_many([]) == []
    with pytest.raises(TypeError, match="stem_many takes strings, got int"):
        porter_stem_many(["ok", 1])
    with pytest.raises(TypeError, match="analyze_many takes strings, got NoneType"):
        Analyzer().analyze_many(["ok", None])
    with pytest.raises(TypeError, match="analyze_flat takes strings, got bytes"):
        Analyzer().analyze_flat(["ok", b"no"])


def test_porter_known_words():
    cases = {
        "caresses": "caress", "ponies": "poni", "ties": "ti", "caress": "caress", "cats": "cat",
        "feed": "feed", "agreed": "agre", "disabled": "disabl", "matting": "mat", "mating": "mate",
        "meeting": "meet", "milling": "mill", "messing": "mess", "meetings": "meet",
        "generalizations": "gener", "oscillators": "oscil", "is": "is", "a": "a", "sky": "sky",
        "happy": "happi", "relational": "relat", "hopefulness": "hope", "analogous": "analog",
    }
    assert {w: porter_stem(w) for w in cases} == cases


# ---------------------------------------------------------------------------
# configurable analyzer


def test_no_stemming():
    a = Analyzer(stemmer="none")
    assert a("The Running dogs' bowls") == ["running", "dogs", "bowls"]
    assert get_analyzer("none") == a


def test_snowball_french():
    import Stemmer

    a = get_analyzer("snowball:french")
    assert a.stemmer == "snowball:french" and a.stopwords == "none" and not a.possessive
    text = "Les chevaux mangeaient des pommes délicieuses à la maison"
    fr = Stemmer.Stemmer("french")
    assert a(text) == [fr.stemWord(java_lower(t)) for t in tokenize(text)]
    assert Analyzer(stemmer="french") == Analyzer(stemmer="snowball:french")


def test_snowball_english_differs_from_lucene_porter():
    a = Analyzer(stemmer="snowball:english")
    assert a("generalizations") == ["general"]
    assert ENGLISH("generalizations") == ["gener"]


def test_custom_stopwords(tmp_path):
    a = Analyzer(stopwords={"quick", "fox"})
    assert a("The quick brown fox") == ["the", "brown"]
    f = tmp_path / "stop.txt"
    f.write_text("# comment\nquick | snowball-style comment\n\nbrown fox\n", encoding="utf-8")
    words = load_stopwords(f)
    assert words == {"quick", "brown", "fox"}
    assert Analyzer(stopwords=words)("The quick brown fox jumps") == ["the", "jump"]
    assert Analyzer(stopwords=[]).stopwords == "none"


def test_lowercase_off():
    a = Analyzer(lowercase=False, stemmer="none")
    assert a("The Dog's THE the") == ["The", "Dog", "THE"]
    assert Analyzer(lowercase=False)("Running running") == ["Run", "run"]


def test_possessive_off():
    assert Analyzer(possessive=False, stemmer="none")("John's") == ["john's"]


def test_config_round_trip_and_equality():
    configs = [
        Analyzer(),
        STANDARD,
        Analyzer(stemmer="snowball:german", stopwords=["der", "die", "das"], lowercase=False, max_token_length=100),
        get_analyzer("snowball:english"),
    ]
    for a in configs:
        cfg = a.config()
        assert json.loads(json.dumps(cfg)) == cfg
        b = Analyzer.from_config(json.loads(json.dumps(cfg)))
        assert a == b and hash(a) == hash(b) and b.config() == cfg
        assert get_analyzer(cfg) == a
    assert ENGLISH == Analyzer() == get_analyzer() == get_analyzer("english") == get_analyzer("lucene")
    assert ENGLISH != STANDARD
    assert Analyzer.from_config({}) == ENGLISH  # missing keys take defaults


def test_pickle():
    for a in (ENGLISH, STANDARD, get_analyzer("snowball:french"), Analyzer(stopwords={"x"})):
        a("warm the cache up")
        b = pickle.loads(pickle.dumps(a))
        assert b == a and b("The dogs' bowls") == a("The dogs' bowls")


def test_immutable():
    with pytest.raises(AttributeError):
        ENGLISH.stemmer = "none"  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"stemmer": "klingon"},
        {"stemmer": 3},
        {"stopwords": "klingon"},
        {"stopwords": [""]},
        {"lowercase": "yes"},
        {"max_token_length": 0},
        {"max_token_length": 2_000_000},
    ],
)
def test_bad_config(kwargs):
    with pytest.raises(AnalyzerConfigError):
        Analyzer(**kwargs)


def test_bad_from_config():
    with pytest.raises(AnalyzerConfigError):
        Analyzer.from_config({"stemmer": "porter", "bogus": 1})
    with pytest.raises(AnalyzerConfigError):
        Analyzer.from_config({"version": 99})
    with pytest.raises(AnalyzerConfigError):
        get_analyzer("klingon")
    assert issubclass(AnalyzerConfigError, ValueError)


def test_cache_is_bounded():
    class Small(Analyzer):
        CACHE_LIMIT = 50

    a = Small()
    for i in range(40):
        a(" ".join(f"w{i}x{j}" for j in range(10)))
        assert a.cache_size <= 60
    assert a("w1x1 w1x2") == ["w1x1", "w1x2"]


def test_analyze_many_equals_one_by_one_with_a_small_cache():
    class Small(Analyzer):
        CACHE_LIMIT = 50

    texts = [" ".join(f"W{i}x{j}'s Running THE cells Cell's" for j in range(12)) for i in range(30)]
    for config in ({}, {"stemmer": "snowball:english"}, {"stemmer": "none", "lowercase": False},
                   {"stopwords": ["cells"], "possessive": False}):
        one = Analyzer(**config)
        expected = [one(t) for t in texts]
        small = Small(**config)
        assert small.analyze_many(texts) == expected
        assert small.analyze_many(texts[:3]) == expected[:3]  # over the limit: cleared, refilled
        assert [small(t) for t in texts] == expected
        assert small.analyze_many([]) == []
        assert small.analyze_many(["", "   "]) == [[], []]
        # the flat form indexing uses: every token's term ("" when removed), tokens per text
        flat, counts = Small(**config).analyze_flat(texts + ["", "the of"])
        assert counts == [len(one.tokenize(t)) for t in texts] + [0, 2]
        per_text = [flat[sum(counts[:i]):sum(counts[:i + 1])] for i in range(len(counts))]
        assert [[t for t in terms if t] for terms in per_text] == expected + [[], one("the of")]


def test_normalize_token():
    assert ENGLISH.normalize_token("Running") == "run"
    assert ENGLISH.normalize_token("THE") is None
    assert ENGLISH.normalize_token("John's") == "john"
