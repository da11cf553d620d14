"""Dense retrieval: the encoder against sentence-transformers, resumable encoding, the
vector index format on the life cycle (add/delete/merge, corruption, mismatches), exact
search against a brute-force reference, and the ``dense`` stage on a lexical index."""

from __future__ import annotations

import itertools
import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from retrievo.data import PydocCorpus  # noqa: E402
from retrievo.errors import (ConfigError, CorruptIndexError, DimensionMismatchError, DuplicateIdError,  # noqa: E402
                             ModelMismatchError, UnknownIdError)
from retrievo.index import InvertedIndex, open_index  # noqa: E402
from retrievo.index.vectors import VectorIndex  # noqa: E402
from retrievo.pipeline import parse  # noqa: E402
from retrievo.retrieve.exact import search_blocks  # noqa: E402
from retrievo.types import Document, Queries  # noqa: E402

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def docs():
    return list(itertools.islice(PydocCorpus().iter_documents(), 40))


@pytest.fixture(scope="module")
def encoder():
    from retrievo.models.encoder import load_encoder

    return load_encoder()


# ------------------------------------------------------------------------------ encoder
def test_encoder_matches_sentence_transformers(encoder, docs):
    from sentence_transformers import SentenceTransformer

    texts = [d.contents for d in docs[:24]] + ["short", "a somewhat longer query about exceptions"]
    ref = SentenceTransformer(str(encoder.folder), device="cpu").encode(texts, batch_size=8)
    ours = encoder.encode_documents(texts)
    assert ours.dtype == np.float32 and ours.shape == (len(texts), 384)
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    assert encoder.max_length == 256 and encoder.pooling == "mean" and encoder.normalize
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_encoder_options_and_identity(encoder):
    from retrievo.models.encoder import Encoder

    cls = Encoder(None, pooling="cls", normalize=False, max_length=16, query_prefix="query: ")
    assert cls.identity() != encoder.identity() and "pooling=cls" in cls.identity()
    a = cls.encode_queries(["exceptions"])
    b = cls.encode(["query: exceptions"])
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert abs(np.linalg.norm(a) - 1.0) > 1e-3  # not normalised
    last = Encoder(None, pooling="last")
    # last-token pooling takes the final attended position whatever the padding
    one = last.encode(["a b c"])
    both = last.encode(["a b c", "a much longer text than the first one here"])
    np.testing.assert_allclose(one[0], both[0], atol=1e-5)
    with pytest.raises(ConfigError):
        Encoder(None, pooling="max")
    with pytest.raises(ConfigError):
        Encoder(None, dtype="fp8")
    with pytest.raises(ConfigError):
        Encoder(None, colour="blue")
    assert encoder.encode([]).shape == (0, 384)


def test_interrupted_encoding_resumes(encoder, docs, tmp_path):
    texts = [d.contents for d in docs[:20]]
    calls = []

    class Stop(Exception):
        pass

    def stop_after_first(done, total):
        calls.append(done)
        if done == 8:
            raise Stop

    from retrievo.models.encoder import encoded_rows

    with pytest.raises(Stop):
        encoder.encode_to_file(texts, tmp_path / "enc", chunk=8, progress=False, on_chunk=stop_after_first)
    assert encoded_rows(tmp_path / "enc") == 8
    seen = []
    original = encoder._encode_sorted

    def counting(part, bar=None):
        seen.append(len(part))
        return original(part, bar)

    encoder._encode_sorted = counting
    try:
        out = encoder.encode_to_file(texts, tmp_path / "enc", chunk=8, progress=False)
    finally:
        del encoder._encode_sorted
    assert seen == [8, 4]  # the first chunk was not encoded again
    np.testing.assert_allclose(np.asarray(out), encoder.encode_documents(texts), atol=1e-6)
    # other texts start afresh instead of mixing in stale rows
    seen.clear()
    encoder._encode_sorted = counting
    try:
        encoder.encode_to_file(texts[:10], tmp_path / "enc", chunk=8, progress=False)
    finally:
        del encoder._encode_sorted
    assert seen == [8, 2]


# ------------------------------------------------------------------------------ exact search
def _brute(q, vecs, ids, k, live=None):
    out = []
    for row in q @ vecs.T:
        cands = [(-np.float32(s), ids[j], j) for j, s in enumerate(row) if live is None or live[j]]
        cands.sort()
        out.append([(ids[j], -s) for s, _, j in cands[:k]])
    return out


def test_exact_search_matches_brute_force_with_id_tie_break():
    rng = np.random.default_rng(7)
    vecs = rng.standard_normal((300, 16)).astype(np.float32)
    vecs[10] = vecs[20] = vecs[250]  # exact ties: order by id
    ids = np.array([f"d{(i * 37) % 300:03d}" for i in range(300)], dtype=object)
    q = np.vstack([vecs[10], rng.standard_normal((5, 16))]).astype(np.float32)
    rank = np.argsort(np.argsort(ids.astype(str), kind="stable")).astype(np.int32)
    by_rank = np.argsort(rank).astype(np.int32)
    live = np.ones(300, bool)
    live[[3, 77]] = False
    for threads, block in ((1, 64), (2, 1000)):
        blocks = [(0, vecs[:130]), (130, vecs[130:])]
        d, s, c = search_blocks(q, blocks, 300, live, rank, by_rank, 10, threads, block_docs=block)
        ref = _brute(q, vecs, ids, 10, live)
        for qi in range(len(q)):
            assert list(ids[d[qi, :c[qi]]]) == [r[0] for r in ref[qi]]
            np.testing.assert_allclose(s[qi, :c[qi]], [r[1] for r in ref[qi]], rtol=1e-5)
    top = ids[d[0, :3]].tolist()
    assert top == sorted([ids[10], ids[20], ids[250]])
    d, s, c = search_blocks(q, [(0, vecs)], 300, None, rank, by_rank, 1000, 1)
    assert (c == 300).all()


# ------------------------------------------------------------------------------ vector index
def _random_index(path=None, n=50, dim=8, seed=0, model="test-model"):
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    ids = [f"doc{i}" for i in range(n)]
    return VectorIndex.build(ids, vecs, path, model=model, model_spec="test"), vecs


def test_vector_index_life_cycle(tmp_path):
    path = tmp_path / "v.idx"
    index, vecs = _random_index(path)
    assert isinstance(index.parts[0].vectors, np.memmap)
    opened = open_index(path)
    assert isinstance(opened, VectorIndex) and len(opened) == 50 and opened.dim == 8
    assert opened.identity == index.identity and opened.model == "test-model"
    np.testing.assert_array_equal(opened.vectors(["doc3", "doc7"]), vecs[[3, 7]])
    extra = np.ones((2, 8), np.float32)
    assert opened.add(["new1", "new2"], extra) == 2
    assert opened.delete(["doc3"]) == 1
    again = VectorIndex.open(path)
    assert len(again) == 51 and "doc3" not in again and "new2" in again and len(again.parts) == 2
    assert again.identity == opened.identity != index.identity
    with pytest.raises(DuplicateIdError):
        again.add(["doc4"], extra[:1])
    with pytest.raises(DimensionMismatchError):
        again.add(["x"], np.ones((1, 9), np.float32))
    with pytest.raises(DimensionMismatchError):
        again.add(["x", "y"], np.ones((1, 8), np.float32))
    with pytest.raises(UnknownIdError):
        again.delete(["nope"])
    again.merge()
    merged = VectorIndex.open(path)
    assert len(merged.parts) == 1 and len(merged) == 51 and merged.live is None
    np.testing.assert_array_equal(merged.vectors(["new1", "doc49"]), np.vstack([extra[0], vecs[49]]))
    # garbage collection removed the replaced parts
    assert len(list((path / "vectors").iterdir())) == 1
    saved = merged.save(tmp_path / "copy.idx")
    assert saved.identity == merged.identity
    # in memory, with stored text
    mem = VectorIndex.build(["a", "b"], np.eye(2, dtype=np.float32), model="m",
                            documents=[Document("a", "alpha"), Document("b", "beta", "B")])
    assert mem.document("b").title == "B" and mem.path is None
    import pickle

    assert pickle.loads(pickle.dumps(mem)).identity == mem.identity
    assert pickle.loads(pickle.dumps(merged)).path == merged.path


def test_corrupted_vector_files_are_typed_errors(tmp_path):
    path = tmp_path / "v.idx"
    _random_index(path)
    part = next((path / "vectors").iterdir())
    data = (part / "vectors.npy").read_bytes()
    # a flipped value keeps the size: opening is cheap and trusts sizes, verify() re-hashes
    flipped = bytearray(data)
    flipped[-1] ^= 0xFF
    (part / "vectors.npy").write_bytes(bytes(flipped))
    with pytest.raises(CorruptIndexError, match="sha256"):
        VectorIndex.open(path).verify()
    # truncated
    (part / "vectors.npy").write_bytes(data[:-40])
    with pytest.raises(CorruptIndexError):
        VectorIndex.open(path)
    # a file of another shape with a matching recorded size
    bad = np.zeros((40, 10), np.float32)
    np.save(part / "vectors.npy", bad)
    meta = json.loads((part / "meta.json").read_text())
    meta["files"]["vectors.npy"] = (part / "vectors.npy").stat().st_size
    (part / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptIndexError):
        VectorIndex.open(path)


def test_model_and_dimension_mismatch_are_typed_errors(tmp_path, encoder):
    index, _ = _random_index(tmp_path / "v.idx", dim=384, model="another-model")
    with pytest.raises(ModelMismatchError):
        parse(f"dense(index='{tmp_path / 'v.idx'}', model='all-MiniLM-L6-v2')")
    with pytest.raises(ModelMismatchError):
        index.check_model(encoder.identity())
    with pytest.raises(DimensionMismatchError):
        index.check_dim(768)


# ------------------------------------------------------------------------------ the stage
@pytest.fixture(scope="module")
def small_index(tmp_path_factory, docs):
    return InvertedIndex.build(docs, tmp_path_factory.mktemp("dense") / "small.idx")


def test_dense_stage_on_a_lexical_index(small_index, encoder, docs):
    stage = parse("dense", {"index": small_index})
    folder = small_index.path.parent / "small.idx.dense"
    assert folder.is_dir() and len(list(folder.iterdir())) == 1
    queries = Queries.of({"a": "how do I catch an exception", "b": "list comprehension syntax"})
    out = stage(queries)
    assert len(out[0]) == len(docs)
    # scores are the cosine similarities sentence-transformers would give
    vecs = encoder.encode_documents([d.contents for d in docs])
    qv = encoder.encode_queries(list(queries.texts))
    best = int(np.argmax(vecs @ qv[0]))
    assert out[0].doc_ids[0] == docs[best].doc_id
    np.testing.assert_allclose(out[0].scores[0], float(vecs[best] @ qv[0]), atol=1e-5)
    # rankings in: candidates scored, same scores as retrieval
    first = parse("bm25 % 5", {"index": small_index})(queries)
    rescored = stage(first)
    assert sorted(rescored[0].doc_ids) == sorted(first[0].doc_ids)
    full = dict(zip(out[0].doc_ids, out[0].scores))
    for d, s in zip(rescored[0].doc_ids, rescored[0].scores):
        assert abs(full[d] - s) < 1e-5
    assert stage.models == [encoder.identity()]
    # the cache is reused: no document is encoded again when the spec is rebuilt
    from retrievo.retrieve import dense as dense_mod

    before = dense_mod.VectorIndex.build
    dense_mod.VectorIndex.build = None  # would fail if called
    try:
        parse(str(stage))
    finally:
        dense_mod.VectorIndex.build = before


def test_dense_cache_follows_lexical_changes(tmp_path, docs):
    lex = InvertedIndex.build(docs[:10], tmp_path / "lex.idx")
    stage = parse("dense", {"index": lex})
    assert len(stage._vectors()) == 10
    lex.add(docs[10:12])
    lex.delete([docs[0].doc_id])
    synced = parse(str(stage))._vectors()
    assert len(synced) == 11 and docs[0].doc_id not in synced and docs[11].doc_id in synced
    assert synced.source == lex.identity
    assert docs[0].doc_id not in parse("dense", {"index": lex})("exceptions")[0].doc_ids


def test_dense_query_vectors_from_meta(small_index, encoder):
    stage = parse("dense % 3", {"index": small_index})
    vec = encoder.encode_queries(["exceptions"])[0]
    q = Queries(["x"], ["ignored text"], [{"vector": vec.tolist(), "vector_model": encoder.identity()}])
    np.testing.assert_array_equal(stage(q)[0].doc_ids, stage(Queries.of({"x": "exceptions"}))[0].doc_ids)
    with pytest.raises(ModelMismatchError):
        stage(Queries(["x"], ["t"], [{"vector": vec.tolist(), "vector_model": "other"}]))
    with pytest.raises(DimensionMismatchError):
        stage(Queries(["x"], ["t"], [{"vector": [0.0] * 7}]))


@pytest.mark.slow
def test_scifact_slice_ranks_like_sentence_transformers(shared_data, encoder):
    """all-MiniLM-L6-v2 + exact cosine on a slice of SciFact (the relevant documents of 30 test
    queries and 150 others): the ``dense`` stage returns sentence-transformers' own ranking
    (its vectors, cosine in numpy), scores and nDCG@10 included. The full-corpus reference
    (test nDCG@10 0.6451, R@100 0.925) takes minutes to encode on a laptop, so it is checked
    by ``python bench/dense_beir.py ../shared/data/scifact`` (BENCHMARKS.md, "Dense
    retrieval on scifact"), not here."""
    import ir_measures
    from sentence_transformers import SentenceTransformer

    from retrievo.data.beir import BeirDataset
    from retrievo.evaluate.metrics import evaluate

    data = BeirDataset(shared_data / "scifact")
    queries, all_qrels = data.queries("test"), data.qrels("test")
    judged = set(all_qrels.query_ids)
    qids = [q for q in queries.ids if q in judged][:30]
    qrels = all_qrels.subset(qids)
    relevant = set(qrels.doc_ids.tolist())
    docs = [d for i, d in enumerate(data.iter_documents()) if d.doc_id in relevant or i < 150]
    assert len(docs) >= 180
    queries = queries.subset(qids)
    run = parse("dense % 10", {"index": InvertedIndex.build(docs)})(queries)

    model = SentenceTransformer(str(encoder.folder), device="cpu")
    doc_vecs = model.encode([d.contents for d in docs], batch_size=32, normalize_embeddings=True)
    query_vecs = model.encode(list(queries.texts), batch_size=32, normalize_embeddings=True)
    scores = query_vecs @ doc_vecs.T
    position = {d.doc_id: j for j, d in enumerate(docs)}
    ref = {}
    for qi, ranking in enumerate(run):
        order = np.argsort(-scores[qi], kind="stable")[:10]
        want = scores[qi][order]
        np.testing.assert_allclose(ranking.scores, want, atol=1e-5)
        # the same documents in the same order, except where two scores tie within float error
        got_ids, want_ids = list(ranking.doc_ids), [docs[j].doc_id for j in order]
        for r, (a, b) in enumerate(zip(got_ids, want_ids)):
            assert a == b or abs(want[r] - scores[qi][position[a]]) < 1e-5, (qids[qi], r)
        ref.update({(qids[qi], docs[j].doc_id): float(scores[qi][j]) for j in order})
    ours = evaluate(run, qrels, ["nDCG@10"])["nDCG@10"]
    theirs = ir_measures.calc_aggregate(
        [ir_measures.nDCG @ 10],
        [ir_measures.Qrel(q, d, r) for q, d, r in zip(qrels.qids, qrels.doc_ids, qrels.relevance.tolist())],
        [ir_measures.ScoredDoc(q, d, s) for (q, d), s in ref.items()])[ir_measures.nDCG @ 10]
    assert ours == pytest.approx(theirs, abs=1e-4) and ours > 0.5, (ours, theirs)


# ------------------------------------------------------------------------------ compressed codes
def test_int8_and_binary_codes_rescored(tmp_path):
    from retrievo.retrieve.exact import search_blocks
    from retrievo.retrieve.quantized import Codes, search_codes

    index, vecs = _random_index(tmp_path / "v.idx", n=400, dim=96, seed=3)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    index = VectorIndex.build([f"doc{i}" for i in range(400)], vecs, tmp_path / "n.idx", model="m")
    index.delete(["doc5"])
    q = np.random.default_rng(4).standard_normal((6, 96)).astype(np.float32)
    exact = search_blocks(q, index.blocks(), index.total_docs, index.live, index.id_rank, index.by_rank, 10)
    binary = Codes.build("binary", index.blocks(), 96)
    int8 = Codes.build("int8", index.blocks(), 96)
    assert binary.data.nbytes * 16 <= vecs.nbytes and binary.data.shape == (400, 2)
    assert int8.data.dtype == np.int8 and int8.data.nbytes * 4 == vecs.nbytes
    # rescoring every document gives the exact ranking, scores included
    for codes in (binary, int8):
        d, s, c = search_codes(codes, q, index, 10, rescore=40)
        np.testing.assert_array_equal(d, exact[0])
        np.testing.assert_allclose(s, exact[1], atol=1e-6)
        assert 5 not in d  # doc5 (global number 5) is deleted and never comes back
    # int8 alone already ranks nearly exactly; Hamming alone is coarse
    d8, s8, _ = search_codes(int8, q, index, 10, rescore=0)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(d8, exact[0])])
    assert overlap >= 0.8
    db, sb, _ = search_codes(binary, q, index, 10, rescore=0)
    assert (sb <= 0).all() and (np.diff(sb, axis=1) <= 0).all()
    with pytest.raises(ConfigError):
        Codes.build("pq", index.blocks(), 96)


def test_dense_stage_with_codes(small_index):
    exact = parse("dense", {"index": small_index})
    queries = Queries.of({"a": "how do I catch an exception", "b": "list comprehension syntax"})
    ref = exact(queries)
    for codes in ("int8", "binary"):
        stage = parse(f"dense(codes={codes}, k=5, rescore=8)", {"index": small_index})
        assert str(parse(str(stage))) == str(stage) and "k=5" in str(stage)
        out = stage(queries)
        assert [len(r) for r in out] == [5, 5]
        np.testing.assert_array_equal(out[0].doc_ids, ref[0].doc_ids[:5])
        cut = (stage % 2)(queries)  # a cut-off after codes never changes the candidates
        np.testing.assert_array_equal(cut.doc_ids, out.cut(2).doc_ids)


# ------------------------------------------------------------------------------ Rocchio
def test_rocchio_moves_the_query_vector(small_index, encoder):
    queries = Queries.of({"a": "how do I catch an exception", "b": "list comprehension syntax"})
    first = parse("dense % 3", {"index": small_index})(queries)
    rewritten = parse("rocchio(fb_docs=3, beta=0.5)", {"index": small_index})(first)
    assert rewritten.ids == queries.ids and rewritten.texts == queries.texts
    vindex = parse("dense", {"index": small_index})._vectors()
    expected = encoder.encode_queries([queries.texts[0]])[0] + 0.5 * vindex.vectors(first[0].doc_ids).mean(axis=0)
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(rewritten[0].meta["vector"], expected, atol=1e-5)
    assert rewritten[0].meta["vector_model"] == encoder.identity()
    pipeline = parse("dense % 3 >> rocchio >> dense % 5", {"index": small_index})
    out = pipeline(queries)
    assert [len(r) for r in out] == [5, 5] and out[0].scores[0] > 0
    with pytest.raises(ConfigError):
        parse("rocchio(alpha=0, beta=0)", {"index": small_index})
