"""The stage contract: every registered stage — built in, or added through the
``retrievo.stages`` entry-point group — must keep these promises. Later stages (dense,
rerankers, readers) are covered automatically: the suite iterates over the registry.

* its input is never mutated;
* it appends a cost record named after it;
* ``(s % k)(q)`` equals ``s(q).cut(k)`` for stages that give rankings;
* ``parse(str(s))`` rebuilds an equivalent stage (same spec, same output);
* pickled into a fresh (spawned) process it gives identical output;
* an empty batch gives an empty batch of the declared kind;
* input of a kind it does not take is a typed error.
"""

from __future__ import annotations

import copy
import multiprocessing
import pickle
import sys

import numpy as np
import pytest

from retrievo.data import PydocCorpus
from retrievo.errors import RetrievoError, StageInputError
from retrievo.index import InvertedIndex
from retrievo.pipeline import Stage, as_queries, parse
from retrievo.registry import REGISTRY
from retrievo.types import Answers, Queries, Rankings

QUERIES = Queries.of({"c1": "how do I catch an exception", "c2": "list comprehension syntax",
                      "c3": "with statement context manager", "c4": "yield keyword generator"})


def _entries():
    return [e for e in REGISTRY]


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    # on disk, so specs name it by path (the way a service or a worker opens it)
    return InvertedIndex.build(PydocCorpus().iter_documents(), tmp_path_factory.mktemp("contract") / "pydoc.idx")


@pytest.fixture(scope="module")
def first_stage(index):
    return parse("bm25 % 30", {"index": index})(QUERIES)


@pytest.fixture(scope="module")
def pool():
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as p:
        yield p


# Stages that run a neural encoder over the whole corpus before their first batch use a
# shorter token limit here: every promise below is independent of it, and the 738 pydoc
# documents are then encoded in seconds instead of minutes (maxsim and muvera name the same
# options, so muvera reuses the token vectors maxsim cached beside the index).
CONTRACT_SPECS = {"splade": "splade(max_length=32)", "maxsim": "maxsim(max_length=32)",
                  "muvera": "muvera(max_length=32, candidates=50)"}
# LLM rerankers run the model once per candidate, pair or window, five times per promise
# check: short passages and the cheapest PRP variant keep the suite to seconds per stage on
# two cores; each method's own algorithm is tested in tests/rerank/ with scripted backends.
CONTRACT_SPECS.update({name: f"{name}(max_passage_tokens=16)"
                       for name in ("pointwise", "upr", "rankgpt", "first", "icr", "full")})
CONTRACT_SPECS["prp"] = "prp(method=sliding, top_k=1, max_passage_tokens=16)"
# Readers and generative rewriters generate text with the bundled SmolLM2: two short passages
# and a few generated tokens suffice for every promise (their methods are tested in tests/rag/).
_READ = "k=2, max_passage_tokens=16, max_tokens=4"
CONTRACT_SPECS.update({
    "read": f"read({_READ})", "alr2": f"alr2({_READ})", "closed_book": "closed_book(max_tokens=4)",
    "iter_retgen": f"iter_retgen(bm25 % 2, rounds=1, {_READ})",
    "self_ask": f"self_ask(bm25 % 2, max_hops=1, {_READ})",
    "rear": f"rear(scorer=pointwise(max_passage_tokens=16), {_READ})",
    "utility": "utility(samples=2, window=3, max_passage_tokens=16, max_tokens=4)",
    "hyde": "hyde(max_tokens=4)", "query2doc": "query2doc(max_tokens=4)", "think": "think(max_tokens=4)",
})


def _build(entry, index) -> Stage:
    spec = CONTRACT_SPECS.get(entry.name) or (entry.example if entry.variadic else entry.name)
    if entry.name == "cross_encoder":
        # its default model downloads, and no trained cross-encoder ships offline: an UNTRAINED one
        # (bundled MiniLM weights, random seeded head; built once per session) covers the plumbing
        from retrievo.rerank.cross_encoder import untrained_cross_encoder

        spec = f"cross_encoder(model={untrained_cross_encoder()})"
    return parse(spec, {"index": index})


def _input(stage: Stage, first_stage):
    if Queries in stage.takes or issubclass(Queries, stage.takes):
        return QUERIES
    if Rankings in stage.takes:
        # rerankers, filters and readers (LLM ones run a model per candidate or generate) get the
        # top 3, enough for every promise
        return first_stage.cut(3) if stage.kind in ("reranker", "filter", "reader") else first_stage
    pytest.skip(f"no contract input for a stage taking {stage.takes}")


def _snapshot(batch):
    if isinstance(batch, Queries):
        return (batch.ids, batch.texts, batch._terms_dicts(), batch.costs)
    if isinstance(batch, Rankings):
        return (batch.queries.ids, batch.doc_ids.copy(), batch.scores.copy(), batch.offsets.copy(), batch.costs)
    return (batch.queries.ids, batch.texts, batch.citations.copy(), batch.offsets.copy(), batch.costs)


def _same(a, b) -> None:
    assert type(a) is type(b)
    assert as_queries(a).ids == as_queries(b).ids
    if isinstance(a, Rankings):
        np.testing.assert_array_equal(a.offsets, b.offsets)
        np.testing.assert_array_equal(a.doc_ids, b.doc_ids)
        np.testing.assert_array_equal(a.scores, b.scores)
    elif isinstance(a, Queries):
        assert a.texts == b.texts and a._terms_dicts() == b._terms_dicts()
    else:
        assert a.texts == b.texts
        np.testing.assert_array_equal(a.citations, b.citations)


def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")
    return None if torch is None else torch.get_num_threads()


def _run_pickled(payload: bytes, threads: int | None = None) -> bytes:
    # the same CPU thread count as the parent: a neural stage's float reductions (and so its
    # last bits) depend on how its matrix products are split across threads
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    stage, batch = pickle.loads(payload)
    out = stage(batch)
    return pickle.dumps(out)


def test_the_registry_includes_the_entry_point_plugin():
    names = [e.name for e in REGISTRY]
    assert "demo_reciprocal" in names and "bm25" in names and "rm3" in names


@pytest.fixture(params=[e.name for e in _entries()])
def entry(request):
    return REGISTRY.entry(request.param)


def test_contract(entry, index, first_stage, pool):
    stage = _build(entry, index)
    inp = _input(stage, first_stage)
    before = copy.deepcopy(_snapshot(inp))

    out = stage(inp)
    assert isinstance(out, stage.gives)
    # input never mutated
    after = _snapshot(inp)
    for x, y in zip(before, after):
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y
    # cost recorded: the input's records come first, then at least one new one
    assert out.costs[: len(inp.costs)] == inp.costs
    assert len(out.costs) > len(inp.costs)
    assert all(c.seconds >= 0 and c.queries == len(inp) for c in out.costs[len(inp.costs):])
    # cut-off equivalence
    if issubclass(stage.gives, Rankings):
        for k in (1, 5):
            cut = (stage % k)(inp)
            _same(cut, out.cut(k))
    # the spec rebuilds an equivalent stage
    rebuilt = parse(str(stage))
    assert str(rebuilt) == str(stage)
    _same(rebuilt(inp), out)
    # pickled into a spawned process: identical output
    remote = pickle.loads(pool.apply(_run_pickled, (pickle.dumps((stage, inp)), _torch_threads())))
    _same(remote, out)
    # empty batch
    empty_q = Queries([], [])
    empty = empty_q if isinstance(inp, Queries) else Rankings(empty_q, [], [], [0])
    got = stage(empty)
    assert isinstance(got, stage.gives) and len(got) == 0
    # a kind it does not take, and input that is no batch at all: typed errors
    wrong = Answers.from_lists(QUERIES, [""] * len(QUERIES), [[] for _ in range(len(QUERIES))])
    if not issubclass(Answers, stage.takes):
        with pytest.raises(StageInputError):
            stage(wrong)
    with pytest.raises(RetrievoError):
        stage(12345)
