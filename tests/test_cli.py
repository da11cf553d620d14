"""The command line: the README's main job, index/search/eval round trips, help and errors."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from retrievo.cli.main import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_help_explains_every_command():
    out = invoke("--help")
    assert out.exit_code == 0
    for cmd in ("demo", "index", "search", "eval", "compare", "info", "delete", "merge", "pipelines"):
        assert cmd in out.stdout
    for cmd in ("index", "search", "eval"):
        sub = invoke(cmd, "--help")
        assert sub.exit_code == 0 and "Usage" in sub.stdout and len(sub.stdout) > 300


def test_demo_on_builtin_corpus():
    out = invoke("demo", "-k", "2")
    assert out.exit_code == 0, out.stdout
    assert "Indexed" in out.stdout and "Python documentation" in out.stdout
    assert "Query demo1: catch an exception raised in a try block" in out.stdout
    assert "pydoc:try#" in out.stdout  # the try statement's documentation answers it
    assert "[" in out.stdout  # highlighted query terms


def test_demo_on_a_folder(tmp_path):
    (tmp_path / "cats.md").write_text("# Cats\n\nCats purr and sleep most of the day.\n")
    (tmp_path / "dogs.txt").write_text("Dogs bark at the postman.\n")
    (tmp_path / "page.html").write_text("<html><title>Birds</title><body><p>Birds sing at dawn.</p></body></html>")
    out = invoke("demo", str(tmp_path), "--query", "sleeping cats")
    assert out.exit_code == 0, out.stdout
    assert "cats.md#1" in out.stdout and "[sleep]" in out.stdout


def test_index_search_delete_merge_round_trip(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, text in enumerate(["vector databases store embeddings", "lexical search with BM25 scoring",
                              "BM25 is a bag of words model", "rerankers reorder candidates"]):
        (folder / f"d{i}.txt").write_text(text)
    idx = tmp_path / "idx"
    out = invoke("index", str(folder), str(idx), "--segment-docs", "2", "--no-merge")
    assert out.exit_code == 0 and "Indexed 4 documents" in out.stdout
    assert json.loads(invoke("info", str(idx)).stdout)["segments"] == 2
    out = invoke("search", str(idx), "bm25 scoring", "--json", "-k", "5")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["doc_id"] for r in rows[0]["results"]] == ["d1.txt#1", "d2.txt#1"]
    run = tmp_path / "run.trec"
    out = invoke("search", str(idx), "bm25", "--output", str(run))
    assert out.exit_code == 0 and run.read_text().split()[2] in {"d1.txt#1", "d2.txt#1"}
    assert invoke("delete", str(idx), "d1.txt#1").exit_code == 0
    out = invoke("search", str(idx), "bm25 scoring", "--json")
    assert [r["doc_id"] for r in json.loads(out.stdout)["results"]] == ["d2.txt#1"]
    assert "1 segment" in invoke("merge", str(idx)).stdout
    info = json.loads(invoke("info", str(idx)).stdout)
    assert info["documents"] == 3 and info["deleted"] == 0
    (folder / "extra").mkdir()
    (folder / "extra" / "e.txt").write_text("another BM25 note")
    assert invoke("index", str(folder / "extra"), str(idx), "--add").exit_code == 0
    assert json.loads(invoke("info", str(idx)).stdout)["documents"] == 4


def test_errors_are_reported_not_raised(tmp_path):
    out = runner.invoke(app, ["search", str(tmp_path / "missing"), "query"])
    assert out.exit_code == 2 and "error:" in out.output
    out = runner.invoke(app, ["demo", "--pipeline", "bm42"])
    assert out.exit_code == 2 and "unknown pipeline stage 'bm42'" in out.output
    out = runner.invoke(app, ["eval", str(tmp_path)])
    assert out.exit_code == 2 and "corpus.jsonl" in out.output
    idx = tmp_path / "idx"
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("hello world")
    invoke("index", str(tmp_path / "d"), str(idx))
    out = runner.invoke(app, ["delete", str(idx), "nope"])
    assert out.exit_code == 2 and "unknown document id" in out.output
    out = runner.invoke(app, ["search", str(idx), "   "])
    assert out.exit_code == 2 and "empty" in out.output


def test_eval_and_compare_on_scifact(shared_data, tmp_path):
    out = invoke("eval", str(shared_data / "scifact"), "-m", "nDCG@10", "-m", "P@5")
    assert out.exit_code == 0 and "nDCG@10" in out.stdout and "P@5" in out.stdout
    out = invoke("compare", str(shared_data / "scifact"), "-p", "bm25", "-p", "bm25(k1=1.2,b=0.75)",
                 "-m", "nDCG@10", "--out", str(tmp_path / "cmp"))
    assert out.exit_code == 0, out.stdout
    assert (tmp_path / "cmp" / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert "bm25(k1=1.2,b=0.75)" in json.dumps(data)


def test_eval_on_an_ir_datasets_id(monkeypatch):
    """`irds:<id>` goes through the ir_datasets bridge (a stand-in module: no download here)."""
    import collections
    import sys
    import types

    Doc = collections.namedtuple("Doc", ["doc_id", "title", "text"])
    Query = collections.namedtuple("Query", ["query_id", "text"])
    Qrel = collections.namedtuple("Qrel", ["query_id", "doc_id", "relevance", "iteration"])

    class Dataset:
        def docs_iter(self):
            return iter([Doc("d1", "wings", "lift of swept wings"), Doc("d2", "flow", "boundary layer flow"),
                         Doc("d3", "heat", "heat transfer at high speed")])

        def queries_iter(self):
            return iter([Query("q1", "lift of wings"), Query("q2", "boundary layer")])

        def qrels_iter(self):
            return iter([Qrel("q1", "d1", 1, "0"), Qrel("q2", "d2", 1, "0")])

    fake = types.ModuleType("ir_datasets")
    fake.load = lambda name: Dataset() if name == "toy/test" else {}[name]
    monkeypatch.setitem(sys.modules, "ir_datasets", fake)
    out = invoke("eval", "irds:toy/test", "--json", "-m", "nDCG@10")
    assert json.loads(out.stdout) == {"nDCG@10": 1.0}
    out = runner.invoke(app, ["eval", "irds:nope", "--json"])
    assert out.exit_code == 2 and "no dataset 'nope'" in out.output
