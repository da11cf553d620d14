"""Tests for retrievo.data (readers, writers, collections) and retrievo.text.chunk."""

from __future__ import annotations

import collections
import gzip
import inspect
import os
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest

from retrievo.data import (DEMO_QUERIES, BeirDataset, DocumentCollection, FolderCollection, IrDataset,
                           JsonlCorpus, PydocCorpus, documents_from_arrow, documents_from_pandas,
                           documents_to_arrow, documents_to_pandas, is_beir_dir, iter_jsonl,
                           load_ir_dataset, open_collection, read_beir_qrels, read_qrels, read_run,
                           read_judgments, read_queries, read_topics, read_tsv_queries, write_beir, write_jsonl, write_qrels,
                           write_run, write_tsv_queries)
from retrievo.data.folder import html_to_text, markdown_title
from retrievo.data.jsonl import atomic_writer, count_lines, is_gzip
from retrievo.errors import (ConfigError, DataFormatError, DuplicateIdError, MissingExtraError,
                             MissingFieldError, UnknownIdError)
from retrievo.text.chunk import passage_spans, split_passages
from retrievo.types import Document, Qrels, Queries, Rankings


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def assert_names(err: DataFormatError, path: Path, line: int | None) -> None:
    """The error object and its message both name the file (and line)."""
    assert err.path == str(path)
    assert err.line == line
    assert str(path) in str(err)
    if line is not None:
        assert f"{path}:{line}:" in str(err)


# --------------------------------------------------------------------------------------
# JSONL
# --------------------------------------------------------------------------------------


def test_iter_jsonl_skips_blank_lines_and_numbers_lines_like_an_editor(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", ['{"a": 1}', "", "   ", '{"a": 2}'])
    assert list(iter_jsonl(path)) == [(1, {"a": 1}), (4, {"a": 2})]
    assert count_lines(path) == 2


@pytest.mark.parametrize("name", ["c.jsonl.gz", "c.jsonl"])
def test_gzip_detected_by_magic_bytes_whatever_the_name(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(gzip.compress(b'{"x": "\xc3\xa9"}\n\n{"x": "b"}\n'))
    assert is_gzip(path)
    assert [r["x"] for _, r in iter_jsonl(path)] == ["é", "b"]


def test_gz_suffix_on_plain_text_still_reads(tmp_path):
    path = write_lines(tmp_path / "plain.jsonl.gz", ['{"x": 1}'])
    assert not is_gzip(path)
    assert list(iter_jsonl(path)) == [(1, {"x": 1})]


@pytest.mark.parametrize("bad_line, fragment", [('{"a": ', "malformed JSON"),
                                                ("[1, 2]", "expected a JSON object, got list"),
                                                ('"text"', "expected a JSON object, got str")])
def test_bad_json_line_names_file_and_line(tmp_path, bad_line, fragment):
    path = write_lines(tmp_path / "bad.jsonl", ['{"a": 1}', "", bad_line])
    with pytest.raises(DataFormatError, match=fragment) as info:
        list(iter_jsonl(path))
    assert_names(info.value, path, 3)


def test_invalid_utf8_and_truncated_gzip_are_data_format_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    with pytest.raises(DataFormatError, match="UTF-8") as info:
        list(iter_jsonl(bad))
    assert_names(info.value, bad, 2)
    truncated = tmp_path / "cut.jsonl.gz"
    full = gzip.compress(b"".join(b'{"a": %d}\n' % (i * 7919 % 100003) for i in range(5000)))
    truncated.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataFormatError, match="gzip"):
        list(iter_jsonl(truncated))


def test_missing_file_is_a_data_format_error(tmp_path):
    with pytest.raises(DataFormatError, match="no such file"):
        list(iter_jsonl(tmp_path / "nope.jsonl"))


def test_write_jsonl_round_trip_plain_and_gzip_deterministic(tmp_path):
    records = [{"_id": "1", "meta": types.MappingProxyType({"k": [1, 2]}), "n": np.int64(3)},
               {"_id": "2", "text": "ünïcode"}]
    assert write_jsonl(tmp_path / "a.jsonl", iter(records)) == 2
    expected = [{"_id": "1", "meta": {"k": [1, 2]}, "n": 3}, {"_id": "2", "text": "ünïcode"}]
    assert [r for _, r in iter_jsonl(tmp_path / "a.jsonl")] == expected
    write_jsonl(tmp_path / "a.jsonl.gz", records)
    first = (tmp_path / "a.jsonl.gz").read_bytes()
    write_jsonl(tmp_path / "a.jsonl.gz", records)
    assert first[:2] == b"\x1f\x8b" and (tmp_path / "a.jsonl.gz").read_bytes() == first
    assert [r for _, r in iter_jsonl(tmp_path / "a.jsonl.gz")] == expected


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    path = write_lines(tmp_path / "keep.jsonl", ['{"old": true}'])

    def records():
        yield {"new": 1}
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_jsonl(path, records())
    assert path.read_text() == '{"old": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.jsonl"]
    with atomic_writer(tmp_path / "new.txt") as f:
        f.write(b"x")
        assert not (tmp_path / "new.txt").exists()  # only visible once complete
    assert (tmp_path / "new.txt").read_bytes() == b"x"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_corpus_is_streamed_not_read_at_once(tmp_path):
    """Through a named pipe the writer only sends line 2 after the reader has produced
    document 1, so a reader that slurped the file first would time out."""
    pipe = tmp_path / "corpus.jsonl"
    os.mkfifo(pipe)
    first_seen = threading.Event()
    failures: list[str] = []

    def writer():
        with open(pipe, "w", encoding="utf-8") as f:
            f.write('{"_id": "d1", "text": "one"}\n')
            f.flush()
            if not first_seen.wait(timeout=10):
                failures.append("reader did not yield the first document before the rest arrived")
            f.write('{"_id": "d2", "text": "two"}\n')

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    documents = BeirDataset(tmp_path).iter_documents()
    assert inspect.isgenerator(documents)
    assert next(documents).doc_id == "d1"
    first_seen.set()
    assert [d.doc_id for d in documents] == ["d2"]
    thread.join(timeout=10)
    assert not failures


# --------------------------------------------------------------------------------------
# Passage splitting
# --------------------------------------------------------------------------------------


def words(n: int, stem: str = "w") -> str:
    return " ".join(f"{stem}{i}" for i in range(n))


def test_short_text_is_one_verbatim_passage_and_empty_text_none():
    text = "Hello world.\n\n  indented code\n"
    assert split_passages(text) == ["Hello world.\n\n  indented code"]
    assert split_passages("  \n\n ") == []


def test_long_paragraph_is_cut_between_words_into_even_pieces():
    text = words(450)
    passages = split_passages(text, max_words=200)
    assert [len(p.split()) for p in passages] == [150, 150, 150]
    assert " ".join(passages).split() == text.split()  # nothing lost, no word cut


def test_cut_prefers_a_sentence_end():
    text = words(80, "a") + ". " + words(60, "b")
    first, second = split_passages(text, max_words=100)
    assert first.endswith("a79.") and second.startswith("b0")


def test_paragraphs_are_packed_and_a_closing_heading_moves_forward():
    paragraphs = [words(60, "a"), words(60, "b"), "Next heading", words(90, "c")]
    passages = split_passages("\n\n".join(paragraphs), max_words=150)
    assert len(passages) == 2
    assert passages[0] == paragraphs[0] + "\n\n" + paragraphs[1]
    assert passages[1].startswith("Next heading\n\nc0")


def test_tiny_paragraphs_merge_and_tiny_tail_joins_previous():
    text = "\n\n".join(["one", "two", "three", words(20), "end"])
    assert len(split_passages(text, max_words=100)) == 1
    tail = split_passages(words(100) + "\n\nbye", max_words=100)
    assert len(tail) == 1 and tail[0].endswith("bye")


def test_overlap_repeats_the_end_of_the_previous_passage():
    text = words(300)
    plain = split_passages(text, max_words=100)
    overlapped = split_passages(text, max_words=100, overlap=10)
    assert len(plain) == len(overlapped) == 3
    assert overlapped[1].split()[:10] == plain[0].split()[-10:]
    assert overlapped[1].split()[10:] == plain[1].split()
    spans = passage_spans(text, max_words=100)
    assert [text[a:b] for a, b in spans] == plain


def test_chunk_invariants_on_random_texts():
    rng = np.random.default_rng(7)
    for _ in range(200):
        tokens = [str(t) for t in rng.integers(0, 50, size=int(rng.integers(0, 600)))]
        text = "".join(t + rng.choice([" ", " ", "\n", "\n\n", ". ", ".\n\n"]) for t in tokens)
        max_words = int(rng.integers(5, 120))
        passages = split_passages(text, max_words=max_words)
        assert " ".join(passages).split() == text.split()
        assert all(1 <= len(p.split()) <= max_words + max(1, max_words // 4) for p in passages)


@pytest.mark.parametrize("kwargs", [{"max_words": 0}, {"max_words": 10, "overlap": 10},
                                    {"max_words": 10, "min_words": 11}])
def test_chunk_rejects_impossible_settings(kwargs):
    with pytest.raises(ValueError):
        split_passages("text", **kwargs)


# --------------------------------------------------------------------------------------
# BEIR
# --------------------------------------------------------------------------------------


DOCS = [Document("d1", "first text", "First", types.MappingProxyType({"url": "http://x"})),
        Document("d2", "second text ünïcode"),
        Document("d3", "", "Only a title")]
QUERIES = Queries(["q1", "q2", "q3"], ["what first", "second?", "unjudged"],
                  [{"original_id": "001"}, {}, {}])
QRELS = {"test": Qrels(["q2", "q1", "q1"], ["d2", "d1", "d3"], [1, 2, 0]),
         "train": Qrels(["q3"], ["d3"], [1])}


@pytest.mark.parametrize("compress", [False, True])
def test_beir_write_read_round_trip(tmp_path, compress):
    folder = write_beir(tmp_path / "ds", iter(DOCS), QUERIES, QRELS, compress=compress)
    assert is_beir_dir(folder)
    assert (folder / ("corpus.jsonl.gz" if compress else "corpus.jsonl")).exists()
    ds = BeirDataset(folder)
    assert isinstance(ds, DocumentCollection)
    docs = list(ds.iter_documents())
    assert docs == DOCS and [dict(d.meta) for d in docs] == [dict(d.meta) for d in DOCS]
    assert ds.num_documents() == 3
    assert [len(b) for b in ds.iter_batches(2)] == [2, 1]
    assert ds.splits() == ["test", "train"]
    assert ds.queries() == QUERIES and dict(ds.queries()[0].meta) == {"original_id": "001"}
    assert ds.queries("test").ids == ("q1", "q2")  # queries.jsonl order, not qrels order
    assert ds.qrels("test") == QRELS["test"] and ds.qrels("test").qids.tolist() == ["q2", "q1", "q1"]
    assert ds.qrels("train") == QRELS["train"]


def test_beir_iter_documents_is_a_generator(tmp_path):
    ds = BeirDataset(write_beir(tmp_path, DOCS))
    assert inspect.isgenerator(ds.iter_documents())
    assert ds.splits() == []


def corpus(tmp_path: Path, lines: list[str]) -> BeirDataset:
    write_lines(tmp_path / "corpus.jsonl", lines)
    return BeirDataset(tmp_path)


@pytest.mark.parametrize("bad, error, fragment", [
    ('{"title": "t", "text": "x"}', MissingFieldError, "no id field"),
    ('{"_id": true, "text": "x"}', DataFormatError, "must be a string or an integer"),
    ('{"_id": ["a"], "text": "x"}', DataFormatError, "must be a string or an integer"),
    ('{"_id": "", "text": "x"}', DataFormatError, "is empty"),
    ('{"_id": "d9"}', MissingFieldError, "neither 'title' nor 'text'"),
    ('{"_id": "d9", "text": 5}', DataFormatError, "must be a string"),
])
def test_bad_corpus_lines_raise_typed_errors_with_line(tmp_path, bad, error, fragment):
    ds = corpus(tmp_path, ['{"_id": 1, "text": "int ids are fine"}', "", bad])
    with pytest.raises(error, match=fragment) as info:
        list(ds.iter_documents())
    assert_names(info.value, tmp_path / "corpus.jsonl", 3)


def test_duplicate_document_id_names_both_lines(tmp_path):
    ds = corpus(tmp_path, ['{"_id": "a", "text": "x"}', '{"_id": "b", "text": "y"}', '{"_id": "a", "text": "z"}'])
    with pytest.raises(DuplicateIdError, match="already appeared on line 1") as info:
        list(ds.iter_documents())
    assert_names(info.value, tmp_path / "corpus.jsonl", 3)


def test_duplicate_query_id_and_query_without_text(tmp_path):
    ds = corpus(tmp_path, ['{"_id": "a", "text": "x"}'])
    queries = write_lines(tmp_path / "queries.jsonl", ['{"_id": "q", "text": "x"}', '{"_id": "q", "text": "y"}'])
    with pytest.raises(DuplicateIdError, match="line 1") as info:
        ds.queries()
    assert_names(info.value, queries, 2)
    write_lines(queries, ['{"_id": "q"}'])
    with pytest.raises(MissingFieldError, match="no 'text'"):
        ds.queries()


def write_qrels_tsv(tmp_path: Path, lines: list[str]) -> Path:
    (tmp_path / "qrels").mkdir(exist_ok=True)
    return write_lines(tmp_path / "qrels" / "test.tsv", lines)


def test_beir_qrels_header_is_optional(tmp_path):
    ds = corpus(tmp_path, ['{"_id": "d1", "text": "x"}'])
    write_qrels_tsv(tmp_path, ["q1\td1\t1", "q1\td2\t0"])
    assert ds.qrels("test").to_dict() == {"q1": {"d1": 1, "d2": 0}}
    write_qrels_tsv(tmp_path, ["query-id\tcorpus-id\tscore", "q1\td1\t2"])
    assert ds.qrels("test").to_dict() == {"q1": {"d1": 2}}


@pytest.mark.parametrize("row, fragment", [("q1\td1\t1\t9", "TREC qrels"), ("q1\td1", "got 2"),
                                           ("q1\td1\thigh", "not an integer"), ("q1\td1\t0.5", "not an integer")])
def test_malformed_beir_qrels_rows(tmp_path, row, fragment):
    path = write_qrels_tsv(tmp_path, ["query-id\tcorpus-id\tscore", "q0\td0\t1", row])
    with pytest.raises(DataFormatError, match=fragment) as info:
        read_beir_qrels(path)
    assert_names(info.value, path, 3)


def test_unknown_split_lists_available_ones(tmp_path):
    ds = BeirDataset(write_beir(tmp_path, DOCS, QUERIES, QRELS))
    with pytest.raises(UnknownIdError, match="'dev'.*available splits: test, train"):
        ds.qrels("dev")
    with pytest.raises(KeyError):  # also catchable as the builtin
        ds.queries("dev")


def test_not_a_beir_folder(tmp_path):
    with pytest.raises(DataFormatError, match="corpus.jsonl"):
        BeirDataset(tmp_path)
    with pytest.raises(DataFormatError, match="no such folder"):
        BeirDataset(tmp_path / "missing")
    assert not is_beir_dir(tmp_path)


# --------------------------------------------------------------------------------------
# TREC
# --------------------------------------------------------------------------------------


def sample_rankings() -> Rankings:
    queries = Queries(["q1", "q2", "q3"], ["a", "b", "c"])
    return Rankings.from_lists(queries, [(["d3", "d1", "d2"], [2.5, 1.0 / 3, -0.125]),
                                         ([], []),
                                         (["x"], [1e-12])])


def test_trec_run_round_trip(tmp_path):
    run = sample_rankings()
    write_run(tmp_path / "run.txt", run, tag="bm25")
    assert (tmp_path / "run.txt").read_text().splitlines()[0] == "q1 Q0 d3 1 2.5 bm25"
    back = read_run(tmp_path / "run.txt", queries=run.queries)
    assert back.queries == run.queries
    assert back.to_dict() == run.to_dict()
    np.testing.assert_array_equal(back.offsets, run.offsets)
    np.testing.assert_array_equal(back.doc_ids, run.doc_ids)
    plain = read_run(tmp_path / "run.txt")
    assert plain.queries.ids == ("q1", "q3")  # queries without results are absent from the file
    write_run(tmp_path / "run.txt.gz", run)
    assert is_gzip(tmp_path / "run.txt.gz") and read_run(tmp_path / "run.txt.gz").to_dict() == plain.to_dict()


def test_trec_run_sorts_like_trec_eval(tmp_path):
    path = write_lines(tmp_path / "run", ["1 Q0 a 1 1.0 t", "1 Q0 c 2 3.0 t", "1 Q0 b 3 1.0 t", "1 Q0 d 4 2 t"])
    assert read_run(path)["1"].doc_ids.tolist() == ["c", "d", "b", "a"]  # score desc, ties docno desc
    assert read_run(path, sort=False)["1"].doc_ids.tolist() == ["a", "c", "b", "d"]


@pytest.mark.parametrize("row, error, fragment", [
    ("1 Q0 a 1 1.0", DataFormatError, "expected 6 columns"),
    ("1 Q0 a 1 high t", DataFormatError, "a number"),
    ("1 Q0 a one 1.0 t", DataFormatError, "an integer"),
    ("1 Q0 a 1 nan t", DataFormatError, "NaN"),
    ("1 Q0 z 9 0.5 t", DuplicateIdError, "line 1"),
])
def test_malformed_run_lines(tmp_path, row, error, fragment):
    path = write_lines(tmp_path / "run", ["1 Q0 z 1 1.0 t", "", row])
    with pytest.raises(error, match=fragment) as info:
        read_run(path)
    assert_names(info.value, path, 3)


def test_run_query_outside_given_queries(tmp_path):
    path = write_lines(tmp_path / "run", ["q9 Q0 a 1 1.0 t"])
    with pytest.raises(UnknownIdError, match="q9"):
        read_run(path, queries=Queries(["q1"], ["x"]))


def test_write_run_rejects_whitespace_in_ids(tmp_path):
    run = Rankings.from_lists(Queries(["q 1"], ["x"]), [(["d"], [1.0])])
    with pytest.raises(DataFormatError, match="whitespace"):
        write_run(tmp_path / "run", run)
    assert not list(tmp_path.iterdir())


def test_trec_qrels_round_trip_and_errors(tmp_path):
    qrels = Qrels(["1", "1", "2"], ["a", "b", "a"], [2, 0, -1])
    write_qrels(tmp_path / "qrels", qrels)
    assert (tmp_path / "qrels").read_text().splitlines()[0] == "1 0 a 2"
    back = read_qrels(tmp_path / "qrels")
    assert back == qrels and back.relevance.tolist() == [2, 0, -1]
    for row, fragment in [("1 0 a", "BEIR"), ("1 0 a x", "not an integer"), ("1 0 z 1", "line 1")]:
        path = write_lines(tmp_path / "bad", ["1 0 z 1", row])
        with pytest.raises(DataFormatError, match=fragment) as info:
            read_qrels(path)
        assert_names(info.value, path, 2)


TOPICS = """<top>
<num> Number: 301
<title> International Organized Crime

<desc> Description:
Identify organizations that participate in international
criminal activity.

<narr> Narrative:
A relevant document must as a minimum identify the organization.
</top>

<top>
<num> Number: 302 </num>
<title> Poliomyelitis and Post-Polio </title>
<desc> Description: Is the disease of poliomyelitis (polio) under control?
<dom> Domain: Medicine
</top>
"""


def test_trec_topics_fields(tmp_path):
    path = tmp_path / "topics.301"
    path.write_text(TOPICS)
    titles = read_topics(path)
    assert titles.ids == ("301", "302")
    assert titles.texts == ("International Organized Crime", "Poliomyelitis and Post-Polio")
    desc = read_topics(path, field="desc")
    assert desc.text("301") == "Identify organizations that participate in international criminal activity."
    both = read_topics(path, field="title+desc")
    assert both.text("302") == "Poliomyelitis and Post-Polio Is the disease of poliomyelitis (polio) under control?"
    assert set(titles[0].meta) == {"title", "desc", "narr"}
    assert titles[0].meta["narr"] == "A relevant document must as a minimum identify the organization."
    with pytest.raises(MissingFieldError, match="'302' has no narr") as info:
        read_topics(path, field="narr")
    assert_names(info.value, path, 13)
    with pytest.raises(ConfigError):
        read_topics(path, field="body")


def test_xml_style_topics(tmp_path):
    path = tmp_path / "wt.xml"
    path.write_text('<topic number="51" type="faceted">\n  <query>horse hooves</query>\n'
                    "  <description>Find information about horse hooves.</description>\n"
                    '  <subtopic number="1">care</subtopic>\n</topic>\n')
    queries = read_topics(path, field="title+desc")
    assert queries.ids == ("51",) and queries.texts == ("horse hooves Find information about horse hooves.",)


@pytest.mark.parametrize("content, line, fragment", [
    ("<top>\n<title> no number\n</top>\n", 1, "no <num>"),
    ("<top>\n<num> 1\n<title> a\n</top>\n<top>\n<num> 2\n<title> b\n", 5, "never closed"),
    ("<top>\n<num> 1\n<title> a\n<top>\n", 4, "opened before"),
    ("<num> 1\n", 1, "outside"),
    ("<top><num> 1 <title> a</top>\n\n<top><num> 1 <title> b</top>\n", 3, "already defined on line 1"),
])
def test_malformed_topics(tmp_path, content, line, fragment):
    path = tmp_path / "topics"
    path.write_text(content)
    with pytest.raises(DataFormatError, match=fragment) as info:
        read_topics(path)
    assert_names(info.value, path, line)


def test_tsv_queries_round_trip_and_errors(tmp_path):
    queries = Queries(["1", "q2"], ["first query", "second\twith tab\nand newline"])
    write_tsv_queries(tmp_path / "q.tsv", queries)
    back = read_tsv_queries(tmp_path / "q.tsv")
    assert back.ids == ("1", "q2") and back.texts == ("first query", "second with tab and newline")
    header = write_lines(tmp_path / "h.tsv", ["qid\tquery", "7\tseven"])
    assert read_tsv_queries(header).to_dict() == {"7": "seven"}
    for lines, error, fragment in [(["1\tok", "no tab here"], DataFormatError, "no tab"),
                                   (["1\tok", "2\t  "], MissingFieldError, "empty"),
                                   (["1\tok", "1\tagain"], DuplicateIdError, "line 1")]:
        path = write_lines(tmp_path / "bad.tsv", lines)
        with pytest.raises(error, match=fragment) as info:
            read_tsv_queries(path)
        assert_names(info.value, path, 2)


# --------------------------------------------------------------------------------------
# Folders of text files
# --------------------------------------------------------------------------------------


def make_folder(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "b.txt").write_text("Plain text file.\n\nSecond paragraph.")
    (root / "a.md").write_text("intro line\n\n# Markdown Title ##\n\nBody of the *note*.")
    (root / "sub" / "page.HTML").write_text(
        "<html><head><title>Web  Page</title><style>p {color: red}</style></head>"
        "<body><script>alert('x')</script><h1>Heading</h1><p>Para &amp; one</p><p>Para two</p></body></html>")
    (root / "sub" / "latin1.txt").write_bytes("café crème".encode("latin-1"))
    (root / ".hidden" / "secret.txt").write_text("hidden")
    (root / ".dotfile.txt").write_text("hidden")
    (root / "image.png").write_bytes(b"\x89PNG")
    (root / "empty.txt").write_text("   \n")
    return root


def test_folder_collection_reads_sorted_visible_files(tmp_path):
    collection = FolderCollection(make_folder(tmp_path / "notes"))
    docs = list(collection.iter_documents())
    assert [d.doc_id for d in docs] == ["a.md#1", "b.txt#1", "sub/latin1.txt#1", "sub/page.HTML#1"]
    by_id = {d.doc_id: d for d in docs}
    assert by_id["a.md#1"].title == "Markdown Title"
    assert by_id["b.txt#1"].title == "b" and by_id["b.txt#1"].text == "Plain text file.\n\nSecond paragraph."
    page = by_id["sub/page.HTML#1"]
    assert page.title == "Web Page" and page.text == "Heading\n\nPara & one\n\nPara two"
    assert "caf\ufffd cr\ufffdme" == by_id["sub/latin1.txt#1"].text
    assert dict(page.meta) == {"path": "sub/page.HTML", "passage": 1}
    assert collection.num_documents() == 4
    assert inspect.isgenerator(collection.iter_documents())


def test_folder_long_file_becomes_numbered_passages(tmp_path):
    (tmp_path / "long.txt").write_text("\n\n".join(words(50, f"p{i}x") for i in range(10)))
    docs = list(FolderCollection(tmp_path, max_words=100).iter_documents())
    assert [d.doc_id for d in docs] == [f"long.txt#{n}" for n in range(1, 6)]
    assert all(d.title == "long" for d in docs)


def test_folder_without_readable_files_is_an_error(tmp_path):
    with pytest.raises(DataFormatError, match=r"\.txt, \.md, \.markdown, \.html, \.htm") as info:
        FolderCollection(tmp_path)
    assert_names(info.value, tmp_path, None)
    (tmp_path / "x.png").write_bytes(b"")
    (tmp_path / ".notes.txt").write_text("hidden")
    with pytest.raises(DataFormatError, match="no readable files"):
        FolderCollection(tmp_path)


def test_html_and_markdown_helpers():
    assert html_to_text("<p>a<br>b</p><noscript>x</noscript><div>c</div>") == ("", "a\nb\n\nc")
    assert markdown_title("text\n## Second\n# First #\n") == "First"
    assert markdown_title("no heading") == ""


# --------------------------------------------------------------------------------------
# Built-in pydoc corpus
# --------------------------------------------------------------------------------------


def test_pydoc_corpus_is_large_and_deterministic():
    corpus = PydocCorpus()
    ids = [d.doc_id for d in corpus.iter_documents()]
    assert len(ids) > 500 and len(set(ids)) == len(ids)
    assert ids == [d.doc_id for d in PydocCorpus().iter_documents()]
    first = next(corpus.iter_documents())
    assert first.doc_id.startswith("pydoc:") and first.doc_id.endswith("#1")
    assert first.title == first.meta["topic"] and first.text
    try_docs = [d for d in corpus.iter_documents() if d.title == "try"]
    assert try_docs and "except" in try_docs[0].text
    assert len(DEMO_QUERIES) >= 5 and "catch an exception raised in a try block" in DEMO_QUERIES.texts
    assert corpus.queries() is DEMO_QUERIES


# --------------------------------------------------------------------------------------
# ir_datasets bridge (fake datasets: no network in tests)
# --------------------------------------------------------------------------------------


CranDoc = collections.namedtuple("CranDoc", ["doc_id", "title", "text", "author", "bib"])
TrecQuery = collections.namedtuple("TrecQuery", ["query_id", "title", "description", "narrative"])
GenericQuery = collections.namedtuple("GenericQuery", ["query_id", "text"])
TrecQrel = collections.namedtuple("TrecQrel", ["query_id", "doc_id", "relevance", "iteration"])


class FakeDataset:
    def __init__(self, queries):
        self._queries = queries

    def has_docs(self):
        return True

    def has_queries(self):
        return True

    def has_qrels(self):
        return True

    def docs_iter(self):
        yield CranDoc("1", "wings", "lift of wings", "smith", "j. aero")
        yield CranDoc("2", "flow", "boundary layer", "doe", "")

    def docs_count(self):
        return 2

    def queries_iter(self):
        return iter(self._queries)

    def qrels_iter(self):
        yield TrecQrel("1", "2", 3, "0")
        yield TrecQrel("1", "1", 0, "0")


def test_ir_dataset_bridge_maps_records(monkeypatch):
    fake_module = types.ModuleType("ir_datasets")
    fake_module.load = lambda name: FakeDataset([GenericQuery("1", "wing lift")]) if name == "fake/cran" else {}[name]
    monkeypatch.setitem(sys.modules, "ir_datasets", fake_module)
    ds = load_ir_dataset("fake/cran")
    docs = list(ds.iter_documents())
    assert docs[0] == Document("1", "lift of wings", "wings")
    assert dict(docs[0].meta) == {"author": "smith", "bib": "j. aero"}
    assert ds.num_documents() == 2 and [len(b) for b in ds.iter_batches(1)] == [1, 1]
    assert ds.queries().to_dict() == {"1": "wing lift"}
    assert ds.qrels().to_dict() == {"1": {"2": 3, "1": 0}}
    with pytest.raises(UnknownIdError, match="no dataset 'nope'"):
        load_ir_dataset("nope")
    with pytest.raises(ConfigError, match="fake/cran/test"):
        ds.queries("test")


def test_ir_dataset_trec_topics_use_title_and_keep_the_rest():
    ds = IrDataset(FakeDataset([TrecQuery("301", "crime", "find crime", "relevant if")]), "fake")
    query = ds.queries()[0]
    assert query.text == "crime" and dict(query.meta) == {"description": "find crime", "narrative": "relevant if"}


def test_missing_ir_datasets_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ir_datasets", None)
    with pytest.raises(MissingExtraError, match=r"retrievo\[datasets\]"):
        load_ir_dataset("beir/scifact")


@pytest.mark.parametrize("module, call", [
    ("pandas", lambda: documents_to_pandas(DOCS)),
    ("pyarrow", lambda: documents_to_arrow(DOCS)),
])
def test_missing_frame_libraries_are_typed_errors(monkeypatch, module, call):
    monkeypatch.setitem(sys.modules, module, None)  # import now fails as if not installed
    with pytest.raises(MissingExtraError, match=r"retrievo\[pandas\]"):
        call()


# --------------------------------------------------------------------------------------
# pandas / Arrow
# --------------------------------------------------------------------------------------


def test_pandas_round_trip():
    pytest.importorskip("pandas")
    frame = documents_to_pandas(DOCS)
    assert list(frame.columns) == ["docno", "title", "text", "url"]
    assert frame["url"].iloc[0] == "http://x" and frame["url"].isna().tolist() == [False, True, True]
    back = list(documents_from_pandas(frame))
    assert back == DOCS and dict(back[0].meta) == {"url": "http://x"} and dict(back[1].meta) == {}
    with pytest.raises(MissingFieldError, match="no column 'body'"):
        documents_from_pandas(frame, text="body")


def test_pandas_frame_with_other_column_names():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"id": [1, 2], "body": ["x", None], "year": [2020, 2021]})
    docs = list(documents_from_pandas(frame, id="id", text="body"))
    assert docs == [Document("1", "x"), Document("2", "")] and docs[0].meta["year"] == 2020


def test_arrow_round_trip():
    pytest.importorskip("pyarrow")
    table = documents_to_arrow(DOCS)
    assert table.column_names == ["docno", "title", "text", "url"]
    assert list(documents_from_arrow(table)) == DOCS
    with pytest.raises(MissingFieldError):
        documents_from_arrow(table, id="doc_id")


# --------------------------------------------------------------------------------------
# open_collection
# --------------------------------------------------------------------------------------


def test_open_collection_detects_each_layout(tmp_path):
    assert isinstance(open_collection(write_beir(tmp_path / "beir", DOCS)), BeirDataset)
    single = tmp_path / "docs.jsonl.gz"
    single.write_bytes(gzip.compress(b'{"id": 1, "text": "a"}\n{"doc_id": "x", "contents": "b", "title": "t"}\n'
                                     b'{"docno": "y", "text": "c", "lang": "en"}\n'))
    corpus_file = open_collection(single)
    assert isinstance(corpus_file, JsonlCorpus)
    docs = list(corpus_file.iter_documents())
    assert docs == [Document("1", "a"), Document("x", "b", "t"), Document("y", "c")]
    assert dict(docs[2].meta) == {"lang": "en"}
    assert isinstance(open_collection(make_folder(tmp_path / "notes")), FolderCollection)
    assert [d.doc_id for d in open_collection(tmp_path / "notes" / "b.txt").iter_documents()] == ["b.txt#1"]


def test_open_collection_errors(tmp_path):
    with pytest.raises(DataFormatError, match="no such file or folder"):
        open_collection(tmp_path / "missing")
    (tmp_path / "data.csv").write_text("a,b\n")
    for target in (tmp_path, tmp_path / "data.csv"):
        with pytest.raises(DataFormatError, match="nothing readable.*BEIR.*jsonl.*\\.txt"):
            open_collection(target)


# --------------------------------------------------------------------------------------
# Real data in ../shared/data
# --------------------------------------------------------------------------------------


def test_scifact(shared_data):
    ds = open_collection(shared_data / "scifact")
    assert isinstance(ds, BeirDataset) and ds.corpus.path.name == "corpus.jsonl.gz"
    assert ds.num_documents() == 5183
    ids = [d.doc_id for d in ds.iter_documents()]
    assert len(ids) == len(set(ids)) == 5183
    assert ds.splits() == ["test", "train"]
    test_queries = ds.queries("test")
    assert len(test_queries) == 300 and len(ds.qrels("test")) == 339
    assert len(ds.queries("train")) == 809 and len(ds.queries()) == 1109
    all_ids = ds.queries().ids
    positions = [all_ids.index(q) for q in test_queries.ids]
    assert positions == sorted(positions)  # file order kept
    assert set(ds.qrels("test").doc_ids.tolist()) <= set(ids)


def test_cranfield(shared_data):
    ds = BeirDataset(shared_data / "cranfield")
    docs = list(ds.iter_documents())
    assert len(docs) == 1400
    empty = [d.doc_id for d in docs if not d.text]
    assert empty == ["471", "995"]
    queries = ds.queries()
    assert len(queries) == 225 and queries[0].meta["original_id"] == "001"
    qrels = ds.qrels("test")
    assert len(qrels) == 1837 and int((qrels.relevance == 0).sum()) == 225
    assert set(qrels.relevance.tolist()) == {0, 1, 2, 3, 4}


def test_hotpotqa_beir_view(shared_data):
    ds = open_collection(shared_data / "hotpotqa")
    assert ds.num_documents() == 5913
    assert sum(1 for _ in ds.iter_documents()) == 5913
    assert len(ds.queries()) == 600 and len(ds.queries("test")) == 600
    assert len(ds.qrels("test")) == 1200


def test_llmjudge_trec_files(shared_data):
    folder = shared_data / "llmjudge"
    assert len(read_tsv_queries(folder / "queries.tsv")) == 50
    dev = read_qrels(folder / "qrels" / "dev_human.txt")
    assert len(dev) == 7263 and len(dev.query_ids) == 25
    assert len(read_qrels(folder / "qrels" / "test_human.txt")) == 4423


# --------------------------------------------------------------------------------------
# Format detection: read_queries / read_judgments
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, content, compress", [
    ("q.jsonl", '{"_id": "1", "text": "swept wings"}\n{"_id": "2", "text": "heat flux"}\n', False),
    ("q.jsonl.gz", '{"_id": "1", "text": "swept wings"}\n{"_id": "2", "text": "heat flux"}\n', True),
    ("renamed.txt", '{"_id": "1", "text": "swept wings"}\n{"_id": "2", "text": "heat flux"}\n', False),
    ("q.tsv", "qid\ttext\n1\tswept wings\n2\theat flux\n", False),
    ("q.txt", "1\tswept wings\n2\theat flux\n", False),
    ("topics.txt", "<top>\n<num> Number: 1\n<title> swept wings\n</top>\n"
                   "<top>\n<num> Number: 2\n<title> heat flux\n</top>\n", False),
    ("topics.tsv", "<top>\n<num> 1\n<title> swept wings\n</top>\n<top>\n<num> 2\n<title> heat flux\n</top>\n", False),
])
def test_read_queries_detects_format_from_content(tmp_path, name, content, compress):
    path = tmp_path / name
    path.write_bytes(gzip.compress(content.encode()) if compress else content.encode())
    queries = read_queries(path)
    assert list(queries.ids) == ["1", "2"] and list(queries.texts) == ["swept wings", "heat flux"]


def test_read_queries_rejects_what_it_cannot_classify(tmp_path):
    path = write_lines(tmp_path / "q.txt", ["just some words", "more words"])
    with pytest.raises(DataFormatError, match="cannot tell the query format") as info:
        read_queries(path)
    assert_names(info.value, path, None)
    with pytest.raises(DataFormatError, match="no such file"):
        read_queries(tmp_path / "missing.tsv")
    with pytest.raises(ConfigError, match="unknown query format"):
        read_queries(path, format="xml")
    topics = write_lines(tmp_path / "t.txt", ["<top>", "<num> 7", "<title> wings", "<desc> about wings", "</top>"])
    assert read_queries(topics, field="desc").texts == ("about wings",)


def test_read_judgments_accepts_trec_and_beir(tmp_path):
    trec = write_lines(tmp_path / "qrels.txt", ["1 0 d1 1", "1 0 d2 0", "2 0 d3 2"])
    beir = write_lines(tmp_path / "test.tsv", ["query-id\tcorpus-id\tscore", "1\td1\t1", "1\td2\t0", "2\td3\t2"])
    headless = write_lines(tmp_path / "plain.tsv", ["1\td1\t1", "1\td2\t0", "2\td3\t2"])
    expected = {"1": {"d1": 1, "d2": 0}, "2": {"d3": 2}}
    for path in (trec, beir, headless):
        assert read_judgments(path).to_dict() == expected
    bad = write_lines(tmp_path / "bad.txt", ["1 d1"])
    with pytest.raises(DataFormatError, match="cannot tell the qrels format") as info:
        read_judgments(bad)
    assert_names(info.value, bad, 1)
    with pytest.raises(DataFormatError, match="empty qrels file"):
        read_judgments(write_lines(tmp_path / "empty.txt", [""]))
    with pytest.raises(DataFormatError, match="expected 4 columns"):  # a forced format is strict
        read_judgments(beir, format="trec")
