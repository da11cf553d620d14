"""Bad input and careless use (issue 6, cases 1, 4 and 6): every failure is a typed
error — on the command line one ``error: ...`` line with exit code 2, never a traceback —
and nothing odd passes silently."""

from __future__ import annotations

import errno
import gzip
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from retrievo.cli.main import app
from retrievo.data import read_judgments
from retrievo.errors import (ConfigError, CorruptIndexError, DataFormatError, DiskFullError, EvaluationError,
                             PipelineSpecError)
from retrievo.index import InvertedIndex, open_index
from retrievo.index import atomic
from retrievo.retrieve import BM25
from retrievo.spec import parse_spec
from retrievo.types import Document, Queries
from retrievo.workflows import evaluate_pipeline

runner = CliRunner()

DOCS = [Document(f"d{i}", text) for i, text in enumerate([
    "cancer therapy with antibodies", "radiation therapy for tumours", "gene expression in yeast",
    "stem cells and cancer", "protein folding dynamics", "immune response to therapy"])]


def cli(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def beir_folder(root: Path, qrels_rows: list[tuple[str, str, str]]) -> Path:
    root.mkdir()
    with open(root / "corpus.jsonl", "w") as fh:
        for d in DOCS:
            fh.write(json.dumps({"_id": d.doc_id, "title": "", "text": d.text}) + "\n")
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n"
                                                for q, t in [("q1", "cancer therapy"), ("q2", "yeast genes")]))
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                             "".join(f"{a}\t{b}\t{c}\n" for a, b, c in qrels_rows))
    return root


@pytest.fixture()
def idx(tmp_path) -> Path:
    InvertedIndex.build(DOCS, tmp_path / "idx")
    return tmp_path / "idx"


# ---------------------------------------------------------------- case 1
def test_an_index_without_current_is_an_error_not_a_corpus(idx, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(idx, broken)
    (broken / "CURRENT").unlink()
    for args in (["search", str(broken), "cancer therapy"], ["demo", str(broken)], ["info", str(broken)],
                 ["index", str(broken), str(tmp_path / "out")]):
        result = cli(*args)
        assert result.exit_code == 2 and "no CURRENT file" in result.output and "damaged" in result.output, args
    with pytest.raises(CorruptIndexError):
        open_index(broken)


# ---------------------------------------------------------------- case 4
def test_eval_whose_qrels_match_no_query_is_an_error(tmp_path, idx):
    data = beir_folder(tmp_path / "beir", [("zzz", "d0", "1")])
    with pytest.raises(EvaluationError, match="none of the queries"):
        evaluate_pipeline(data, "bm25", index=idx)
    result = cli("eval", str(data), "--index", str(idx))
    # (a first run may print the JIT-compilation note on stderr before the error line)
    assert result.exit_code == 2 and any(line.startswith("error: none of the queries")
                                         for line in result.output.splitlines())


def test_bm25_of_no_queries_is_empty(idx):
    assert len(BM25(open_index(idx))(Queries.of([]))) == 0


def test_truncated_gzip_corpus_is_a_data_error(tmp_path):
    data = b"".join(json.dumps({"_id": f"d{i}", "text": "word " * 50}).encode() + b"\n" for i in range(2000))
    packed = gzip.compress(data)
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "corpus.jsonl.gz").write_bytes(packed[: len(packed) // 2])
    result = cli("search", str(folder), "word")
    assert result.exit_code == 2 and "truncated gzip" in result.output and "Aborted" not in result.output


def test_document_id_with_carriage_return_round_trips(tmp_path):
    docs = [Document("a\rb", "hello world"), Document("c", "foo bar")]
    memory = InvertedIndex.build(docs)
    disk = InvertedIndex.build(docs, tmp_path / "cr")
    reopened = open_index(tmp_path / "cr")
    assert list(reopened.doc_ids) == list(memory.doc_ids) == ["a\rb", "c"]
    assert reopened.document("a\rb").text == "hello world" and len(disk) == 2


@pytest.mark.parametrize("spec", [
    "bm25(k1=abc)", "rrf(bm25, bm25, k=abc)", "bm25(k=2.5)", "bm25(threads=-1)", "(" * 1000 + "bm25" + ")" * 1000,
    "rrf(" * 300 + "bm25, bm25" + ")" * 300, "bm25(k1=inf)", "bm25(k1=nan)", "bm25(k1=1e400)", "bm25(b=-inf)",
    "rrf(bm25, bm25, k=-1)", "rrf(bm25, bm25, weights=1e400/1)", "bm25 % 99999999999999999999",
    "bm25(k=99999999999999999999)",
])
def test_bad_spec_values_are_spec_errors(spec, idx):
    with pytest.raises(PipelineSpecError):
        parse_spec(spec)
    result = cli("search", str(idx), "cancer", "-p", spec, "--json")
    assert result.exit_code == 2 and result.output.startswith("error: pipeline spec")


def test_unquoted_weights_parse():
    assert dict(parse_spec("rrf(bm25, bm25, weights=1/2)").node.options)["weights"] == (1.0, 2.0)


@pytest.mark.parametrize("rel", ["99999999999999999999", "1e30", "-99999999999999999999"])
def test_huge_relevance_is_a_data_error(tmp_path, rel):
    trec = tmp_path / "q.qrels"
    trec.write_text(f"1 0 d1 {rel}\n")
    beir = tmp_path / "q.tsv"
    beir.write_text(f"query-id\tcorpus-id\tscore\n1\td1\t{rel}\n")
    for path in (trec, beir):
        with pytest.raises(DataFormatError, match="out of range|not an integer"):
            read_judgments(path)


@pytest.mark.parametrize("value", ["-5", "0"])
def test_segment_docs_below_one_is_refused(tmp_path, value):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"_id": "a", "text": "x"}) + "\n")
    result = cli("index", str(corpus), str(tmp_path / "out"), "--segment-docs", value)
    assert result.exit_code == 2 and "segment_docs must be" in result.output
    with pytest.raises(ConfigError):
        InvertedIndex.build(DOCS, segment_docs=int(value))


@pytest.mark.parametrize("manifest", [[1, 2, 3], "text", None, {"generation": 1}])
def test_a_manifest_of_the_wrong_shape_is_corruption(idx, manifest):
    (idx / "gen-00000001.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptIndexError):
        open_index(idx)
    result = cli("search", str(idx), "cancer")
    assert result.exit_code == 2 and "error:" in result.output
    from retrievo.index import lifecycle
    from retrievo.index.atomic import write_lock

    with write_lock(idx):
        assert lifecycle.collect_garbage(idx) == []  # never guesses from a manifest it cannot read


# ---------------------------------------------------------------- case 6
@pytest.mark.parametrize("command", ["demo", "search"])
@pytest.mark.parametrize("k", ["-1", "0"])
def test_k_below_one_is_refused(idx, command, k):
    args = [command, str(idx), "-k", k] + (["-q", "cancer"] if command == "demo" else ["cancer"])
    result = cli(*args)
    assert result.exit_code == 2 and "-k must be at least 1" in result.output


def test_json_output_is_always_json(idx):
    result = cli("search", str(idx), "cancer therapy", "-p", "rrf(bm25, bm25(method=bm25l), k=0)", "--json")
    assert result.exit_code == 0
    for line in result.output.splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


def test_eval_on_an_index_of_another_collection(tmp_path, idx):
    other = InvertedIndex.build([Document("x1", "cancer"), Document("x2", "yeast")], tmp_path / "other")
    data = beir_folder(tmp_path / "beir", [("q1", "d0", "1"), ("q2", "d2", "1")])
    with pytest.raises(EvaluationError, match="another collection"):
        evaluate_pipeline(data, "bm25", index=tmp_path / "other")
    result = cli("eval", str(data), "--index", str(tmp_path / "other"))
    assert result.exit_code == 2 and "another collection" in result.output and other.identity[:12] in result.output
    partial = InvertedIndex.build(DOCS[:1], tmp_path / "partial")
    with pytest.warns(UserWarning, match="lacks 1 of the 2"):
        evaluate_pipeline(data, "bm25", index=partial.path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate_pipeline(data, "bm25", index=idx)  # the right index: no warning


def test_metadata_keeps_its_types(tmp_path):
    meta = {"tags": {"b", "a"}, "n": np.int64(5), "x": np.float32(0.5), "v": np.arange(3), "t": (1, 2)}
    idx = InvertedIndex.build([Document("a", "text", meta=meta)], tmp_path / "m")
    assert open_index(idx.path).document("a").meta == {"tags": ["a", "b"], "n": 5, "x": 0.5, "v": [0, 1, 2],
                                                       "t": [1, 2]}
    with pytest.raises(DataFormatError, match="cannot be stored"):
        InvertedIndex.build([Document("a", "text", meta={"o": object()})])


def test_add_with_another_analyzer_is_refused(tmp_path, idx):
    corpus = tmp_path / "more.jsonl"
    corpus.write_text(json.dumps({"_id": "new", "text": "more cancer"}) + "\n")
    result = cli("index", str(corpus), str(idx), "--add", "--analyzer", "standard")
    assert result.exit_code == 2 and "differs from the analyzer" in result.output
    assert "new" not in open_index(idx)
    result = cli("index", str(corpus), str(idx), "--add", "--analyzer", "english")  # the same one is fine
    assert result.exit_code == 0 and "new" in open_index(idx)


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"),
                                     OSError("510936 requested and 217056 written")])
def test_out_of_space_names_the_path_and_says_the_disk_is_full(tmp_path, idx, monkeypatch, failure):
    index = open_index(idx)
    real = atomic.HashingWriter.write

    def full(self, data):
        if self.fh is not None:
            raise failure
        return real(self, data)

    monkeypatch.setattr(atomic.HashingWriter, "write", full)
    with pytest.raises(DiskFullError, match="the disk is full") as raised:
        index.add([Document("new", "more cancer")])
    assert raised.value.path and str(idx) in raised.value.path
    monkeypatch.setattr(atomic.HashingWriter, "write", real)
    assert not [p for p in idx.rglob("*") if atomic.TMP_MARK in p.name]
    assert len(open_index(idx)) == len(DOCS)


@pytest.mark.parametrize("options", [{"k": None}, {"k": -1}, {"threads": 0}])
def test_bad_first_stage_numbers_fail_at_construction(idx, options):
    # a required number left unset is refused when the stage is made, not at its first search
    with pytest.raises(ConfigError, match=next(iter(options))):
        BM25(open_index(idx), **options)
    assert BM25(open_index(idx), threads=None).threads is None  # unset threads: every core


def test_check_at_least_names_the_option():
    from retrievo.retrieve.first_stage import check_at_least

    check_at_least(1, ("threads",), k=3, threads=None)
    with pytest.raises(ConfigError, match="ef must be an integer >= 1, got None"):
        check_at_least(1, m=8, ef=None)
    with pytest.raises(ConfigError, match="rescore must be >= 0, got -2"):
        check_at_least(0, rescore=-2)
