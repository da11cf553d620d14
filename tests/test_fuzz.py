"""Property-based fuzzing (hypothesis) of the spec parser and of the data readers:
whatever the input, the only exceptions that escape are retrievo's typed errors."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from retrievo.data import read_judgments, read_queries  # noqa: E402
from retrievo.data.jsonl import iter_jsonl  # noqa: E402
from retrievo.data.trec import read_run  # noqa: E402
from retrievo.errors import RetrievoError  # noqa: E402
from retrievo.spec import parse_spec  # noqa: E402

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOKENS = ["bm25", "rrf", "sum", "rm3", "(", ")", ",", "=", ">>", "+", "%", "k1", "b", "k", "weights", "method",
          "index", "threads", "1", "0", "-1", "2.5", "1e400", "inf", "nan", "abc", "'q'", '"', "1/2", " ", "[",
          "]", "bm25+", "none", "true", "99999999999999999999"]


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=30))
def test_spec_parser_raises_only_typed_errors_on_token_soup(tokens):
    try:
        parse_spec("".join(tokens))
    except RetrievoError:
        pass


@FUZZ
@given(st.text(max_size=80))
def test_spec_parser_raises_only_typed_errors_on_any_text(text):
    try:
        parse_spec(text)
    except RetrievoError:
        pass


@FUZZ
@given(st.integers(min_value=1, max_value=400), st.sampled_from(["(", "rrf(bm25, ", "bm25(k1="]))
def test_deep_nesting_is_a_spec_error(depth, opener):
    try:
        parse_spec(opener * depth + "bm25" + ")" * depth)
    except RetrievoError:
        pass


LINE_PARTS = ['{"_id": "1", "text": "a"}', '{"_id": 1}', '{"text": "x"}', "[1,2]", "{", "q1\tsome text",
              "1 0 d1 1", "1 Q0 d1 1 2.5 tag", "query-id\tcorpus-id\tscore", "q1\td1\t99999999999999999999",
              "1 0 d1 1e30", "<top>", "<num> 1", "<title> x", "</top>", "\ufeff", "\x00", "nan", "1 0 d1 -1",
              "q\td\t1.5", "1 Q0 d1 x y z", "\r", '{"_id": "a\\rb", "text": "t"}']


def _lines():
    return st.lists(st.one_of(st.sampled_from(LINE_PARTS), st.text(max_size=20)), max_size=12)


def _bytes_of(lines: list[str], mode: str) -> bytes:
    data = "\n".join(lines).encode("utf-8", "surrogatepass") if lines else b""
    if mode == "gzip":
        return gzip.compress(data)
    if mode == "truncated-gzip":
        packed = gzip.compress(data)
        return packed[: max(1, len(packed) // 2)]
    if mode == "latin1":
        return data + b"\xff\xfe"
    return data


@FUZZ
@given(_lines(), st.sampled_from(["plain", "gzip", "truncated-gzip", "latin1"]),
       st.sampled_from(["queries.jsonl", "topics.txt", "q.tsv", "qrels.txt", "test.tsv", "run.trec", "c.jsonl.gz"]))
def test_readers_raise_only_typed_errors(lines, mode, name):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        try:
            path.write_bytes(_bytes_of(lines, mode))
        except UnicodeEncodeError:
            return
        for reader in (read_queries, read_judgments, read_run, lambda p: list(iter_jsonl(p))):
            try:
                reader(path)
            except RetrievoError:
                pass
