"""Core types and the stage algebra: immutability, composition, fusion, spec strings."""

from __future__ import annotations

import numpy as np
import pytest

from retrievo.errors import DuplicateIdError, PipelineSpecError, UnknownIdError
from retrievo.pipeline import CutOff, Fuse, Reranker, Retriever, Then, as_queries, fuse, fuse_rankings, parse
from retrievo.registry import Registry
from retrievo.types import Qrels, Queries, Rankings


class Fixed(Retriever):
    """Returns the same list for every query; records how it was cut."""

    name = "fixed"

    def __init__(self, docs, scores=None, k=None):
        self.docs, self.k = list(docs), k
        self.scores = list(scores) if scores is not None else list(range(len(self.docs), 0, -1))

    def transform(self, inp):
        q = as_queries(inp)
        n = self.k if self.k is not None else len(self.docs)
        return Rankings.from_lists(q, [(self.docs[:n], self.scores[:n])] * len(q))

    def with_cutoff(self, k):
        return Fixed(self.docs, self.scores, k)

    def spec(self, resources=True):
        return "fixed" if self.k is None else f"fixed % {self.k}"


class Reverse(Reranker):
    """A 'reranker': reverses each list (needs ranked input)."""

    name = "reverse"

    def transform(self, inp):
        assert isinstance(inp, Rankings)
        lists = [(r.doc_ids[::-1], np.arange(len(r), 0, -1.0)) for r in inp]
        return Rankings.from_lists(inp.queries, lists)


Q = Queries.of({"q1": "first", "q2": "second"})


def test_queries_and_rankings_are_columnar_and_read_only():
    r = Fixed(["a", "b", "c"])(Q)
    assert len(r) == 2 and r.lengths.tolist() == [3, 3]
    assert r["q2"].doc_ids.tolist() == ["a", "b", "c"]
    with pytest.raises(ValueError):
        r.scores[0] = 99
    with pytest.raises(ValueError):
        r.doc_ids[0] = "z"
    assert r.cut(1).to_dict() == {"q1": {"a": 3.0}, "q2": {"a": 3.0}}
    assert r.to_dict()["q1"] == {"a": 3.0, "b": 2.0, "c": 1.0}  # the cut did not touch r
    with pytest.raises(UnknownIdError):
        r["nope"]
    with pytest.raises(DuplicateIdError):
        Queries(["x", "x"], ["a", "b"])


def test_pandas_round_trip():
    pytest.importorskip("pandas")
    r = Fixed(["a", "b"])(Q)
    frame = r.to_pandas()
    assert list(frame.columns) == ["qid", "query", "docno", "rank", "score"]
    back = Rankings.from_pandas(frame)
    assert back.to_dict() == r.to_dict() and back.queries == r.queries
    assert Queries.from_pandas(Q.to_pandas()) == Q
    qrels = Qrels.from_dict({"q1": {"a": 1, "b": 0}})
    assert Qrels.from_pandas(qrels.to_pandas()) == qrels


def test_drop_self_hits():
    r = Rankings.from_lists(Queries.of({"d1": "x", "q2": "y"}), [(["d1", "d2"], [2, 1]), (["d1"], [1])])
    assert r.drop_self_hits().to_dict() == {"d1": {"d2": 1.0}, "q2": {"d1": 1.0}}


def test_then_and_cutoff_pushdown():
    p = Fixed(["a", "b", "c", "d"]) % 2 >> Reverse()
    assert isinstance(p, Then) and p.stages[0].k == 2  # the cut-off went into the retriever
    assert not any(isinstance(s, CutOff) for s in p.stages)
    out = p(Q)
    assert out["q1"].doc_ids.tolist() == ["b", "a"]
    # a cut-off after a stage that cannot push it stays a stage of its own
    q = Fixed(["a", "b", "c"]) >> Reverse() % 1
    assert isinstance(q.stages[-1], CutOff)
    assert q(Q)["q1"].doc_ids.tolist() == ["c"]
    assert [c.stage for c in q(Q).costs] == ["fixed", "reverse", "cutoff"]


def test_input_is_never_mutated():
    first = Fixed(["a", "b", "c"])(Q)
    before = (first.doc_ids.copy(), first.scores.copy())
    Reverse()(first)
    (Reverse() % 1)(first)
    assert (first.doc_ids == before[0]).all() and (first.scores == before[1]).all()


def test_fusion_methods():
    a = Fixed(["x", "y", "z"], [3.0, 2.0, 1.0])
    b = Fixed(["y", "w"], [10.0, 5.0])
    rrf = fuse(a, b, method="rrf", k=60)(Q)["q1"]
    expected = {"y": 1 / 62 + 1 / 61, "x": 1 / 61, "w": 1 / 62, "z": 1 / 63}
    assert dict(rrf) == pytest.approx(expected)
    assert rrf.doc_ids.tolist() == ["y", "x", "w", "z"]
    combsum = (a + b)(Q)["q1"]
    assert dict(combsum) == {"y": 12.0, "w": 5.0, "x": 3.0, "z": 1.0}
    mnz = fuse(a, b, method="mnz")(Q)["q1"]
    assert dict(mnz)["y"] == 24.0
    mx = fuse(a, b, method="max", normalize="minmax")(Q)["q1"]
    assert dict(mx) == {"y": 1.0, "x": 1.0, "w": 0.0, "z": 0.0}
    assert mx.doc_ids.tolist() == ["x", "y", "w", "z"]  # ties broken by id
    weighted = fuse(a, b, method="sum", weights=[1.0, 0.1])(Q)["q1"]
    assert dict(weighted)["y"] == pytest.approx(3.0)
    with pytest.raises(PipelineSpecError):
        fuse(a, b, method="bogus")
    with pytest.raises(PipelineSpecError):
        fuse(a)


def test_fuse_rankings_rejects_different_queries():
    a = Fixed(["x"])(Q)
    b = Fixed(["x"])(Queries.of({"other": "q"}))
    with pytest.raises(ValueError):
        fuse_rankings([a, b])


def test_spec_parsing_round_trip():
    reg = Registry()
    made = []

    def factory(ctx, **kw):
        made.append(kw)
        return Fixed(ctx["docs"])

    reg.register("fixed", factory)
    reg.register("reverse", lambda ctx: Reverse())
    ctx = {"docs": ["a", "b", "c"]}
    p = parse("fixed(alpha=1.5, name='x', flag=true) % 2 >> reverse", ctx, reg)
    assert made[-1] == {"alpha": 1.5, "name": "x", "flag": True}
    assert p(Q)["q1"].doc_ids.tolist() == ["b", "a"]
    assert str(p) == "fixed % 2 >> reverse"
    f = parse("rrf(fixed, fixed % 1, k=10)", ctx, reg)
    assert isinstance(f, Fuse) and f.k == 10 and str(f) == "rrf(fixed, fixed % 1, k=10)"
    assert isinstance(parse("fixed + fixed", ctx, reg), Fuse)
    assert parse("(fixed + fixed) >> reverse", ctx, reg)(Q)["q2"].doc_ids.tolist() == ["c", "b", "a"]
    for bad in ["", "fixed >>", "fixed % x", "fixed % 1.5", "fixed(", "nothing", "fixed ) ", "reverse(unknown=1)",
                "fixed(fixed)"]:
        with pytest.raises(PipelineSpecError):
            parse(bad, ctx, reg)


def test_costs_flow_through_fusion():
    out = fuse(Fixed(["a"]), Fixed(["b"]))(Q)
    assert [c.stage for c in out.costs] == ["fixed", "fixed", "fuse"]
    assert all(c.queries == 2 and c.seconds >= 0 for c in out.costs)
