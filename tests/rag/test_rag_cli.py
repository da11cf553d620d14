"""``retrievo ask`` and ``retrievo rag-eval`` on a tiny QA folder: a scripted backend (put in
place of the model loader) for exact output, and one short end-to-end run with the bundled
SmolLM2 — streaming included — for the real backend's plumbing (a few passages of a few
tokens, a few generated tokens; it skips, saying why, where the model cannot load)."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from retrievo.cli.main import app  # noqa: E402
from retrievo.llm.base import ScriptedLLM  # noqa: E402
from retrievo.qa_workflows import SUMMARY_KEYS, evaluate_rag  # noqa: E402

CORPUS = [
    {"_id": "d0", "title": "Paris", "text": "Paris is the capital of France."},
    {"_id": "d1", "title": "Berlin", "text": "Berlin is the capital of Germany."},
    {"_id": "d2", "title": "Seine", "text": "The Seine flows through Paris."},
]
QA = [
    {"_id": "q1", "question": "What is the capital of France?", "answers": ["Paris"], "gold_doc_ids": ["d0"]},
    {"_id": "q2", "question": "What is the capital of Germany?", "answers": ["Berlin"], "gold_doc_ids": ["d1"]},
]
READ = "bm25 % 3 >> read(k=2, max_passage_tokens=16, max_tokens=6)"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("qa")
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in CORPUS))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q["_id"], "text": q["question"]}) + "\n"
                                                for q in QA))
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q['_id']}\t{q['gold_doc_ids'][0]}\t1\n" for q in QA))
    (root / "qa.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QA))
    return root


@pytest.fixture
def scripted(monkeypatch):
    """Every LLM stage gets a backend that answers with the first passage's title and cites [1]."""
    import re

    def reply(prompt):
        m = re.search(r"^\[1\] (\w+):", prompt, flags=re.M)
        return f" {m.group(1)} [1]" if m else " Paris"

    llm = ScriptedLLM(generate_fn=reply)
    monkeypatch.setattr("retrievo.llm.load.load_llm", lambda *a, **k: llm)
    return llm


def test_rag_eval_json_has_exactly_the_keys(folder, scripted):
    res = CliRunner().invoke(app, ["rag-eval", str(folder), "--pipeline", READ, "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert list(got) == list(SUMMARY_KEYS)
    assert got["EM"] == 1.0 and got["F1"] == 1.0 and got["accuracy"] == 1.0
    assert got["evidence_R@5"] == 1.0 and got["citation_precision"] == 1.0
    assert got["llm_calls"] == 1.0 and got["seconds_per_question"] > 0


def test_rag_eval_limit_and_closed_book(folder, scripted):
    run = evaluate_rag(folder, "closed_book", limit=1)
    assert run.report.qids == ["q1"] and run.summary["EM"] == 1.0
    assert run.summary["evidence_R@10"] is None and run.summary["citation_precision"] is None
    res = CliRunner().invoke(app, ["rag-eval", str(folder), "--pipeline", "bm25 % 3", "--json"])
    assert res.exit_code != 0 and "reader" in res.output  # rankings are no answers: a typed error
    res = CliRunner().invoke(app, ["rag-eval", str(folder), "--pipeline", READ, "--limit", "0"])
    assert res.exit_code != 0


def test_ask_streams_and_lists_cited_sources(folder, scripted):
    res = CliRunner().invoke(app, ["ask", "What is the capital of France?", "--index", str(folder),
                                   "--pipeline", READ])
    assert res.exit_code == 0, res.output
    assert "Answer: Paris" in res.output and "[1] d0  Paris" in res.output
    res = CliRunner().invoke(app, ["ask", "What is the capital of France?", "--index", str(folder),
                                   "--pipeline", "iter_retgen(bm25 % 2, rounds=2, k=1)", "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["answer"] == "Paris" and got["sources"][0]["doc_id"] == "d0"


def test_ask_refuses_an_empty_question(folder, scripted):
    res = CliRunner().invoke(app, ["ask", "  ", "--index", str(folder)])
    assert res.exit_code != 0 and "no text" in res.output


def test_smollm2_end_to_end_with_streaming(folder):
    """The real backend: streamed pieces concatenate to the generated text, citations
    name only passages that were shown, and rag-eval runs through the CLI."""
    from retrievo.errors import MissingExtraError, ModelNotFoundError
    from retrievo.llm.base import GenerationParams
    from retrievo.llm.load import load_llm

    try:
        llm = load_llm("smollm2")
    except (MissingExtraError, ModelNotFoundError, ImportError) as exc:
        pytest.skip(f"the bundled SmolLM2 cannot be loaded here: {exc}")
    params = GenerationParams(max_tokens=6)
    pieces = list(llm.stream("Name a colour.", params))
    assert "".join(pieces) == llm.generate(["Name a colour."], params)[0].text
    assert len(pieces) >= 2  # token by token, not one block
    res = CliRunner().invoke(app, ["rag-eval", str(folder), "--pipeline", READ, "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert list(got) == list(SUMMARY_KEYS) and got["llm_calls"] == 1.0
    res = CliRunner().invoke(app, ["ask", "What is the capital of France?", "--index", str(folder), "--pipeline",
                                   READ, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert {s["doc_id"] for s in out["sources"]} <= {"d0", "d1", "d2"}
