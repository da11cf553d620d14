"""The command line: the README's main job, index/search/eval round trips, help and errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from retrievo.cli.main import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_help_explains_every_command():
    out = invoke("--help")
    assert out.exit_code == 0
    for cmd in ("demo", "index", "search", "eval", "evaluate", "compare", "info", "delete", "merge", "pipelines"):
        assert cmd in out.stdout
    assert "--version" in out.stdout
    for cmd in ("index", "search", "eval", "evaluate", "compare"):
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
    assert json.loads(invoke("info", str(idx), "--json").stdout)["segments"] == 2
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
    info = json.loads(invoke("info", str(idx), "--json").stdout)
    assert info["documents"] == 3 and info["deleted"] == 0
    (folder / "extra").mkdir()
    (folder / "extra" / "e.txt").write_text("another BM25 note")
    assert invoke("index", str(folder / "extra"), str(idx), "--add").exit_code == 0
    assert json.loads(invoke("info", str(idx), "--json").stdout)["documents"] == 4


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


def install_fake_ir_datasets(monkeypatch):
    """A stand-in ir_datasets module with one tiny dataset, 'toy/test' (no download here)."""
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


def test_eval_on_an_ir_datasets_id(monkeypatch):
    """`irds:<id>` goes through the ir_datasets bridge (a stand-in module: no download here)."""
    install_fake_ir_datasets(monkeypatch)
    out = invoke("eval", "irds:toy/test", "--json", "-m", "nDCG@10")
    assert json.loads(out.stdout) == {"nDCG@10": 1.0}
    out = runner.invoke(app, ["eval", "irds:nope", "--json"])
    assert out.exit_code == 2 and "no dataset 'nope'" in out.output


# --------------------------------------------------------------------------------------
# new commands and options
# --------------------------------------------------------------------------------------


def small_beir(tmp_path):
    """A BEIR folder small enough for compare/eval round trips in a second."""
    from retrievo.data import write_beir
    from retrievo.types import Document, Qrels, Queries

    docs = [Document("d1", "lift of swept wings at high angle", "wings"),
            Document("d2", "boundary layer flow over a flat plate", "flow"),
            Document("d3", "heat transfer to a blunt body at high speed", "heat"),
            Document("d4", "swept wings and boundary layer transition", "transition"),
            Document("q1", "a document whose id equals a query id", "self")]
    queries = Queries(["q1", "q2", "q3"], ["lift of swept wings", "boundary layer", "heat transfer"])
    qrels = Qrels.from_dict({"q1": {"d1": 1, "d4": 1}, "q2": {"d2": 2}, "q3": {"d3": 1}})
    write_beir(tmp_path / "beir", docs, queries, {"test": qrels})
    return tmp_path / "beir"


def test_version():
    from retrievo import __version__

    out = invoke("--version")
    assert out.exit_code == 0 and out.stdout.strip() == f"retrievo {__version__}"


def test_evaluate_a_run_file_like_trec_eval(tmp_path):
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d1 1 3.0 sys\nq1 Q0 d2 2 2.0 sys\nq2 Q0 d9 1 1.0 sys\nq2 Q0 d3 2 0.5 sys\n")
    trec_qrels = tmp_path / "qrels.txt"
    trec_qrels.write_text("q1 0 d1 1\nq2 0 d3 1\nq3 0 d7 1\n")
    beir_qrels = tmp_path / "test.tsv"
    beir_qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\nq3\td7\t1\n")
    for qrels in (trec_qrels, beir_qrels):
        out = invoke("evaluate", str(run), str(qrels), "-m", "RR", "-m", "P@1", "--per-query")
        assert out.exit_code == 0, out.output
        rows = [line.split("\t") for line in out.stdout.splitlines() if "\t" in line]
        table = {(m.strip(), q): v for m, q, v in rows}
        # q3 is judged but missing from the run: it counts as 0 (trec_eval -c)
        assert table[("RR", "q1")] == "1.0000" and table[("RR", "q2")] == "0.5000" and table[("RR", "q3")] == "0.0000"
        assert table[("RR", "all")] == "0.5000" and table[("P@1", "all")] == "0.3333"
        assert table[("num_q", "all")] == "3"
        assert "protocol:" in out.stdout and "sha256 qrels" in out.stdout
    out = invoke("evaluate", str(run), str(beir_qrels), "-m", "RR", "--json", "--judged-only",
                 "--protocol", str(tmp_path / "p.json"))
    assert json.loads(out.stdout) == {"RR": 0.75}  # stdout is pure JSON ...
    assert out.stderr.startswith("protocol:")  # ... the protocol line goes to stderr
    manifest = json.loads((tmp_path / "p.json").read_text())
    assert manifest["data"]["run"]["path"] == str(run) and manifest["options"]["metrics"] == ["RR"]
    out = invoke("evaluate", str(run), str(trec_qrels), "-m", "RR", "--json", "--per-query")
    assert json.loads(out.stdout)["per_query"]["RR"] == {"q1": 1.0, "q2": 0.5, "q3": 0.0}


def test_evaluate_errors_are_one_line(tmp_path):
    run = tmp_path / "run.trec"
    run.write_text("x1 Q0 d1 1 3.0 sys\n")
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("q1 0 d1 1\n")
    out = runner.invoke(app, ["evaluate", str(run), str(qrels)])
    assert out.exit_code == 2 and "error: the run and the qrels have no query in common" in out.output
    out = runner.invoke(app, ["evaluate", str(tmp_path / "missing.trec"), str(qrels)])
    assert out.exit_code == 2 and out.output.startswith("error:") and "no such file" in out.output
    out = runner.invoke(app, ["evaluate", str(run), str(qrels), "-m", "nDCG@x"])
    assert out.exit_code == 2 and "error: unknown metric" in out.output
    assert out.exception is None or isinstance(out.exception, SystemExit)


def test_search_runs_file_queries_and_extra_queries(tmp_path):
    beir = small_beir(tmp_path)
    queries = tmp_path / "queries.tsv"
    queries.write_text("q1\tboundary layer\nq2\theat transfer\n")
    out = invoke("search", str(beir), "--queries", str(queries), "swept wings", "--json", "-k", "2")
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["qid"], r["query"]) for r in rows] == [("q1", "boundary layer"), ("q2", "heat transfer"),
                                                      ("q3", "swept wings")]  # q1, q2 taken by the file
    assert rows[2]["results"][0]["doc_id"] in {"d1", "d4"}
    topics = tmp_path / "topics.txt"
    topics.write_text("<top>\n<num> Number: 7\n<title> heat transfer\n</top>\n")
    out = invoke("search", str(beir), "--queries", str(topics), "--json")
    assert json.loads(out.stdout)["qid"] == "7"


def test_search_writes_tagged_run_with_protocol(tmp_path):
    beir = small_beir(tmp_path)
    run = tmp_path / "run.trec"
    out = invoke("search", str(beir), "boundary layer", "-o", str(run), "--tag", "myrun")
    assert out.exit_code == 0, out.output
    assert {line.split()[5] for line in run.read_text().splitlines()} == {"myrun"}
    manifest = json.loads((tmp_path / "run.trec.protocol.json").read_text())
    assert manifest["options"]["self_hits"] == "kept" and manifest["models"] == []
    assert manifest["pipelines"] and manifest["options"]["num_queries"] == 1
    out = runner.invoke(app, ["search", str(beir), "x", "-o", str(run), "--tag", "two words"])
    assert out.exit_code == 2 and "error: " in out.output and "run tag" in out.output


def test_eval_save_run_writes_tag_and_protocol(tmp_path):
    beir = small_beir(tmp_path)
    run = tmp_path / "out.trec"
    out = invoke("eval", str(beir), "-m", "nDCG@10", "--save-run", str(run), "--tag", "bm25base", "--json")
    assert out.exit_code == 0, out.output
    metrics = json.loads(out.stdout)
    assert list(metrics) == ["nDCG@10"]  # metrics stay top-level, nothing else on stdout
    assert "protocol:" in out.stderr and "self-hits dropped" in out.stderr
    lines = run.read_text().splitlines()
    assert lines and all(line.split()[5] == "bm25base" for line in lines)
    assert not any(line.split()[0] == line.split()[2] for line in lines)  # self-hit q1/q1 dropped
    manifest = json.loads((tmp_path / "out.trec.protocol.json").read_text())
    assert manifest["data"]["corpus"]["sha256"] and manifest["data"]["qrels"]["path"].endswith("test.tsv")
    assert manifest["options"]["split"] == "test" and manifest["options"]["num_queries"] == 3
    # the saved run scores the same with `retrievo evaluate`
    again = invoke("evaluate", str(run), str(beir / "qrels" / "test.tsv"), "-m", "nDCG@10", "--json")
    assert json.loads(again.stdout)["nDCG@10"] == pytest.approx(metrics["nDCG@10"])
    out = invoke("eval", str(beir), "-m", "nDCG@10")
    assert out.stdout.splitlines()[-1].startswith("protocol: retrievo ")


def test_compare_json_index_and_saved_runs(tmp_path):
    beir = small_beir(tmp_path)
    idx = tmp_path / "idx"
    assert invoke("index", str(beir), str(idx)).exit_code == 0
    out = invoke("compare", str(beir), "-p", "bm25", "-p", "bm25(k1=1.2,b=0.75)", "-m", "nDCG@10",
                 "--index", str(idx), "--json", "--save-runs", str(tmp_path / "runs"), "--out", str(tmp_path / "o"))
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert [s["name"] for s in data["systems"]] == ["bm25", "bm25(k1=1.2,b=0.75)"]
    assert data["protocol"]["options"]["systems"] == ["bm25", "bm25(k1=1.2,b=0.75)"]
    assert data["protocol"]["index"]["path"] == str(idx)
    assert "protocol:" in out.stderr
    runs = sorted((tmp_path / "runs").glob("*.trec"))
    assert [r.name for r in runs] == ["01-bm25.trec", "02-bm25_k1=1.2,b=0.75.trec"]
    assert runs[1].read_text().split()[5] == "bm25(k1=1.2,b=0.75)"
    for r in runs:
        assert json.loads((r.parent / (r.name + ".protocol.json")).read_text())["options"]["system"]
    assert json.loads((tmp_path / "o" / "protocol.json").read_text())["options"]["test"] == "t"


def test_compare_rejects_duplicate_pipelines(tmp_path):
    beir = small_beir(tmp_path)
    out = runner.invoke(app, ["compare", str(beir), "-p", "bm25", "-p", "bm25"])
    assert out.exit_code == 2 and "error: pipeline 'bm25' is given twice" in out.output
    out = runner.invoke(app, ["compare", str(beir), "-p", "bm25", "-p", "bm25(k1=0.9)"])
    assert out.exit_code == 2 and "are the same pipeline" in out.output


def test_compare_on_an_ir_datasets_id(monkeypatch):
    install_fake_ir_datasets(monkeypatch)
    out = invoke("compare", "irds:toy/test", "-p", "bm25", "-p", "bm25(k1=1.2)", "-m", "nDCG@10", "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["protocol"]["data"] == {"irds": "toy/test"} and len(data["systems"]) == 2


def test_missing_extra_is_an_error_line_not_a_traceback(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ir_datasets", None)
    out = runner.invoke(app, ["eval", "irds:beir/scifact/test"])
    assert out.exit_code == 2 and "error: ir_datasets is not installed" in out.output
    assert "retrievo[datasets]" in out.output and "Traceback" not in out.output


def test_info_is_readable_and_json_for_machines(tmp_path):
    beir = small_beir(tmp_path)
    idx = tmp_path / "idx"
    invoke("index", str(beir), str(idx))
    invoke("delete", str(idx), "d2")
    out = invoke("info", str(idx))
    assert out.exit_code == 0
    fields = dict(line.split(":", 1) for line in out.stdout.splitlines())
    assert fields["documents"].strip() == "4" and fields["deleted"].strip().startswith("1")
    assert fields["segments"].strip() == "1" and "stemmer=porter" in fields["analyzer"]
    assert fields["size on disk"].strip().endswith(("KiB", "MiB", "B"))
    facts = json.loads(invoke("info", str(idx), "--json").stdout)
    for key in ("documents", "deleted", "terms", "segments", "generation", "format", "analyzer",
                "size_on_disk_bytes", "identity", "path"):
        assert key in facts
    assert facts["documents"] == 4 and facts["deleted"] == 1 and facts["size_on_disk_bytes"] > 0


def test_first_search_announces_jit_compilation(tmp_path, monkeypatch):
    import retrievo.retrieve.topk as topk

    beir = small_beir(tmp_path)
    monkeypatch.setattr(topk, "kernels_cached", lambda parallel=False: False)
    out = invoke("search", str(beir), "heat", "--json")
    assert "note: compiling the search kernels" in out.stderr and json.loads(out.stdout)["qid"] == "q1"
    monkeypatch.setattr(topk, "kernels_cached", lambda parallel=False: True)
    out = invoke("search", str(beir), "heat", "--json")
    assert "compiling" not in out.stderr and json.loads(out.stdout)["qid"] == "q1"


def test_kernel_cache_detection(tmp_path):
    """Cold: a fresh numba cache folder holds nothing; warm: compiled in this process."""
    import subprocess
    import sys

    from retrievo.retrieve.topk import kernels_cached

    code = "from retrievo.retrieve.topk import kernels_cached; print(kernels_cached(), kernels_cached(True))"
    env = {**__import__("os").environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stderr
    invoke("search", str(small_beir(tmp_path)), "heat", "--json")  # compiles or loads _run_chunk here
    assert kernels_cached() is True


def test_compare_without_matplotlib_still_writes_the_tables(tmp_path, monkeypatch):
    import sys

    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)
    out = invoke("compare", str(small_beir(tmp_path)), "-p", "bm25", "-p", "bm25(b=0.5)", "-m", "AP",
                 "--out", str(tmp_path / "o"))
    assert out.exit_code == 0 and "(no plot: plot needs matplotlib" in out.stderr
    assert (tmp_path / "o" / "results.md").is_file() and not (tmp_path / "o" / "results.png").exists()
