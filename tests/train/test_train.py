"""Training on your own judgments: data preparation, the three trainers, checkpoints that
resume, seeds that reproduce, manifests, and the typed errors for what cannot work.

Everything runs on a tiny synthetic BEIR folder (train_fixtures.py) with a few optimizer
steps at short sequence lengths, on a 2-layer random BERT and a 2-layer random Llama (with
the bundled MiniLM tokenizer), so the mechanics are tested in seconds; the quality numbers
come from bench/train_scifact.py, not from here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("datasets")
pytest.importorskip("peft")

from retrievo.errors import (AdapterMismatchError, ConfigError, EmptyTrainingSetError,  # noqa: E402
                             TokenizerMismatchError)
from retrievo.train.data import (Judgments, NegativePlan, build_lists, carve_dev,  # noqa: E402
                                 load_judgments)
from retrievo.types import Queries  # noqa: E402

from train_fixtures import write_tiny_beir, write_tiny_bert, write_tiny_causal_lm  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def tiny_ce_config(base: Path, **changes):
    from retrievo.train.cross_encoder import CrossEncoderConfig

    settings = dict(base=str(base), negatives="top5:2,random:1", batch_size=2, max_length=32, dev_fraction=0.0,
                    evaluations=3, learning_rate=1e-3)
    return CrossEncoderConfig(**{**settings, **changes})


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def same_weights(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def tiny_index(tiny_beir):
    from retrievo.train.data import open_index

    return open_index(tiny_beir, None, progress=False)


@pytest.fixture(scope="module")
def uninterrupted(tiny_beir, tiny_index, tiny_bert, tmp_path_factory):
    """One complete tiny cross-encoder run (seed 1) that other tests compare against."""
    from retrievo.train.cross_encoder import train_cross_encoder

    out = tmp_path_factory.mktemp("ce") / "full"
    outcome = train_cross_encoder(tiny_beir, out, config=tiny_ce_config(tiny_bert), index=tiny_index,
                                  progress=False)
    return out, outcome


# ---------------------------------------------------------------------------------- data


def test_negative_plan_reads_bands_hardest_first():
    plan = NegativePlan.parse("top20:3,top100:2,random:2")
    assert [(t.lo, t.hi, t.count) for t in plan.tiers] == [(0, 20, 3), (20, 100, 2), (0, None, 2)]
    assert plan.depth == 100 and plan.per_list == 7 and str(plan) == "top20:3,top100:2,random:2"
    for bad in ("top20", "top100:1,top20:1", "random:1,top20:1", "top20:0", "", "bottom5:1"):
        with pytest.raises(ConfigError):
            NegativePlan.parse(bad)


def test_dev_split_is_by_query_seeded_and_disjoint():
    ids = [f"q{i}" for i in range(50)]
    train, dev = carve_dev(ids, 0.2, seed=0)
    assert len(dev) == 10 and len(train) == 40 and not set(train) & set(dev)
    assert (train, dev) == carve_dev(list(reversed(ids)), 0.2, seed=0)  # input order does not matter
    assert carve_dev(ids, 0.2, seed=1)[1] != dev
    assert carve_dev(ids, 0.0, seed=0) == (sorted(ids), [])
    with pytest.raises(EmptyTrainingSetError):
        carve_dev(["q1"], 0.5, seed=0)


def _judgments(n: int = 6) -> Judgments:
    queries = Queries.of({f"q{i}": f"query {i}" for i in range(n)})
    return Judgments(queries, {f"q{i}": [f"p{i}"] for i in range(n)})


def test_lists_never_use_positives_and_respect_the_bands():
    judged = _judgments()
    ranked = {q: [f"p{i}"] + [f"h{i}_{r}" for r in range(5)] + [f"m{i}_{r}" for r in range(20)]
              for i, q in enumerate(judged.queries.ids)}
    corpus = [d for docs in ranked.values() for d in docs]
    lists = build_lists(judged, ranked, corpus, NegativePlan.parse("top6:2,top26:1,random:1"), epochs=2, seed=3)
    assert len(lists) == 12
    for tl in lists:
        i = tl.qid[1:]
        assert tl.positive == f"p{i}" and f"p{i}" not in tl.negatives and len(set(tl.negatives)) == 4
        assert all(n.startswith(f"h{i}_") for n in tl.negatives[:2])
        assert tl.negatives[2].startswith(f"m{i}_")
        assert not any(n.startswith("p") and n != tl.positive for n in tl.negatives[:3])
    assert lists == build_lists(judged, ranked, corpus, NegativePlan.parse("top6:2,top26:1,random:1"), 2, 3)
    assert lists != build_lists(judged, ranked, corpus, NegativePlan.parse("top6:2,top26:1,random:1"), 2, 4)


def test_curriculum_starts_easy_and_ends_with_the_plan():
    judged = _judgments(30)
    ranked = {q: [f"h{q}_{r}" for r in range(5)] for q in judged.queries.ids}
    corpus = [f"x{r}" for r in range(500)]
    plan = NegativePlan.parse("top5:2,random:1")
    lists = build_lists(judged, ranked, corpus, plan, epochs=1, seed=0, curriculum=True)
    first, last = lists[:10], lists[-10:]
    assert all(n.startswith("x") for tl in first for n in tl.negatives)  # random only at first
    assert all(tl.negatives[0].startswith("h") and tl.negatives[1].startswith("h") for tl in last)


def test_empty_training_split_is_a_typed_error(tiny_bert, tmp_path):
    from retrievo.train.cross_encoder import train_cross_encoder

    folder = write_tiny_beir(tmp_path / "data")
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0_0\t0\n", encoding="utf-8")
    with pytest.raises(EmptyTrainingSetError, match="no query with a positive"):
        load_judgments(folder, "train")
    with pytest.raises(EmptyTrainingSetError):
        train_cross_encoder(folder, tmp_path / "out", config=tiny_ce_config(tiny_bert), progress=False)


def test_scifact_train_split_and_dev(shared_data):
    judged = load_judgments(shared_data / "scifact", "train")
    train, dev = carve_dev(judged.queries.ids, 0.1, seed=0)
    assert len(judged.queries) == 809 and len(dev) == 81 and len(train) == 728
    assert not set(dev) & set(load_judgments(shared_data / "scifact", "test").queries.ids)


# --------------------------------------------------------------------------- cross-encoder


def test_cross_encoder_output_loads_in_a_pipeline_with_its_manifest(uninterrupted, tiny_beir, tiny_index):
    from retrievo.data.beir import BeirDataset
    from retrievo.models.spec import ModelSpec
    from retrievo.pipeline import parse
    from retrievo.train.manifest import file_sha256

    out, outcome = uninterrupted
    assert outcome.steps == 6 and not (out / "checkpoints").exists()
    manifest = json.loads((out / "retrievo-training.json").read_text())
    assert manifest["kind"] == "cross-encoder" and manifest["seed"] == 1
    assert manifest["data"]["files"]["qrels"] == "sha256:" + file_sha256(tiny_beir / "qrels" / "train.tsv")
    assert manifest["data"]["split"] == "train" and manifest["data"]["train_queries"] == 12
    assert manifest["base_model"]["identity"] == ModelSpec(manifest["base_model"]["name"]).identity()
    assert manifest["base_model"]["identity"].startswith("sha256:")
    assert manifest["hyperparameters"]["negatives"] == "top5:2,random:1"
    assert {"torch", "transformers", "sentence-transformers", "peft"} <= set(manifest["libraries"])
    queries = BeirDataset(tiny_beir).queries("test")
    first = parse("bm25 % 5", {"index": tiny_index})(queries)
    ranked = parse(f"cross_encoder(model='{out}', max_length=32)", {"index": tiny_index})(first)
    assert [sorted(r.doc_ids.tolist()) for r in ranked] == [sorted(r.doc_ids.tolist()) for r in first]


def test_fixed_seed_reproduces_the_same_model(uninterrupted, tiny_beir, tiny_index, tiny_bert, tmp_path):
    from retrievo.train.cross_encoder import train_cross_encoder

    full, _ = uninterrupted
    train_cross_encoder(tiny_beir, tmp_path / "again", config=tiny_ce_config(tiny_bert), index=tiny_index,
                        progress=False)
    assert same_weights(weights(full), weights(tmp_path / "again"))
    train_cross_encoder(tiny_beir, tmp_path / "seed2", config=tiny_ce_config(tiny_bert, seed=2), index=tiny_index,
                        progress=False)
    assert not same_weights(weights(full), weights(tmp_path / "seed2"))


def test_training_resumes_after_an_interruption_to_the_same_model(uninterrupted, tiny_beir, tiny_index, tiny_bert,
                                                                 tmp_path):
    from transformers import TrainerCallback

    from retrievo.train.cross_encoder import train_cross_encoder

    class Crash(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise KeyboardInterrupt("simulated interruption after the step-2 checkpoint")

    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        train_cross_encoder(tiny_beir, out, config=tiny_ce_config(tiny_bert), index=tiny_index, progress=False,
                            callbacks=(Crash(),))
    assert (out / "checkpoints" / "checkpoint-2").is_dir() and not (out / "model.safetensors").exists()
    with pytest.raises(ConfigError, match="seed"):  # another plan does not continue these checkpoints
        train_cross_encoder(tiny_beir, out, config=tiny_ce_config(tiny_bert, seed=5), index=tiny_index,
                            progress=False)
    outcome = train_cross_encoder(tiny_beir, out, config=tiny_ce_config(tiny_bert), index=tiny_index,
                                  progress=False)
    assert outcome.resumed_from_step == 2 and outcome.steps == 6
    assert same_weights(weights(uninterrupted[0]), weights(out))


def test_resuming_on_another_base_model_is_refused(tiny_beir, tiny_index, tiny_bert, tmp_path):
    from retrievo.train.cross_encoder import train_cross_encoder
    from retrievo.train.manifest import write_plan

    out = tmp_path / "out"
    (out / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    write_plan(out / "checkpoints", {"base_model": {"name": "another", "identity": "sha256:0000000000000000"}})
    with pytest.raises(AdapterMismatchError, match="trained from base model"):
        train_cross_encoder(tiny_beir, out, config=tiny_ce_config(tiny_bert), index=tiny_index, progress=False)


def test_tokenizer_of_another_model_is_refused(tiny_beir, tiny_index, tmp_path):
    from retrievo.train.bi_encoder import BiEncoderConfig, train_bi_encoder
    from retrievo.train.cross_encoder import train_cross_encoder

    base = write_tiny_bert(tmp_path / "base", extra_tokens=tuple(f"newtoken{i}" for i in range(20)))
    with pytest.raises(TokenizerMismatchError, match="another model"):
        train_cross_encoder(tiny_beir, tmp_path / "out", config=tiny_ce_config(base), index=tiny_index,
                            progress=False)
    with pytest.raises(TokenizerMismatchError, match="another model"):
        train_bi_encoder(tiny_beir, tmp_path / "bi", config=BiEncoderConfig(base=str(base), negatives="top5:1"),
                         index=tiny_index, progress=False)


def test_pointwise_loss_and_curriculum_train_too(tiny_beir, tiny_index, tiny_bert, tmp_path):
    from retrievo.train.cross_encoder import train_cross_encoder

    outcome = train_cross_encoder(tiny_beir, tmp_path / "bce", config=tiny_ce_config(tiny_bert, 
        loss="pointwise", curriculum=True, dev_fraction=0.25, dev_depth=5, evaluations=2), index=tiny_index,
        progress=False)
    assert outcome.dev_metric is not None and outcome.best_checkpoint_step in (2, 3, 4, 5)
    manifest = json.loads((tmp_path / "bce" / "retrievo-training.json").read_text())
    assert manifest["data"]["dev_queries"] == 3 and manifest["hyperparameters"]["curriculum"] is True


def test_one_hot_listwise_target_trains_another_model(uninterrupted, tiny_beir, tiny_index, tiny_bert, tmp_path):
    from retrievo.train.cross_encoder import train_cross_encoder, training_dataset
    from retrievo.train.data import prepare

    config = tiny_ce_config(tiny_bert, positive_label=10.0)
    data = prepare(tiny_beir, "train", depth=5, dev_fraction=0.0, index=tiny_index, progress=False)
    dataset, _ = training_dataset(data, config)
    assert all(labels[0] == 10.0 and not any(labels[1:]) for labels in dataset["labels"])
    train_cross_encoder(tiny_beir, tmp_path / "onehot", config=config, index=tiny_index, progress=False)
    assert not same_weights(weights(uninterrupted[0]), weights(tmp_path / "onehot"))
    with pytest.raises(ConfigError):
        tiny_ce_config(tiny_bert, positive_label=0.0).check()


def test_teacher_values_standardise_the_first_stage_and_floor_the_rest():
    from retrievo.train.data import teacher_values

    got = teacher_values(["a", "b", "c"], [3.0, 2.0, 1.0], ["c", "a", "zz"])
    z = (1.0 - 2.0) / (2.0 / 3.0) ** 0.5
    assert got == pytest.approx([z, -z, z])  # "zz" ranked below every candidate: the lowest value
    assert teacher_values(["a", "b"], [1.0, 1.0], ["a", "x"]) == [0.0, 0.0]
    assert teacher_values([], [], ["a"]) == [0.0]


def test_teacher_targets_order_the_negatives_by_the_first_stage(tiny_beir, tiny_index, tiny_bert, tmp_path):
    from retrievo.train.cross_encoder import train_cross_encoder, training_dataset
    from retrievo.train.data import NegativePlan, build_lists, prepare

    config = tiny_ce_config(tiny_bert, positive_label=2.0, teacher_weight=0.5)
    data = prepare(tiny_beir, "train", depth=5, dev_fraction=0.0, index=tiny_index, progress=False)
    dataset, _ = training_dataset(data, config)
    lists = build_lists(data.train, data.candidates, data.doc_ids, NegativePlan.parse(config.negatives),
                        config.epochs, config.seed)
    for tl, labels in zip(lists, dataset["labels"]):
        docs = [tl.positive, *tl.negatives]
        ranked = dict(zip(data.candidates[tl.qid], data.scores[tl.qid]))
        expected = [(2.0 if i == 0 else 0.0) + 0.5 * v for i, v in enumerate(data.teacher(tl.qid, docs))]
        assert labels == pytest.approx(expected)
        # a better first-stage score never gets a lower target among the negatives
        negs = sorted((ranked.get(d, float("-inf")), t) for d, t in zip(docs[1:], labels[1:]))
        assert all(a[1] <= b[1] + 1e-12 for a, b in zip(negs, negs[1:]))
    assert any(len(set(labels[1:])) > 1 for labels in dataset["labels"])
    outcome = train_cross_encoder(tiny_beir, tmp_path / "teacher", config=config, index=tiny_index, progress=False)
    manifest = json.loads((tmp_path / "teacher" / "retrievo-training.json").read_text())
    assert outcome.steps > 0 and manifest["hyperparameters"]["teacher_weight"] == 0.5
    with pytest.raises(ConfigError):
        tiny_ce_config(tiny_bert, teacher_weight=-1.0).check()
    with pytest.raises(ConfigError):
        tiny_ce_config(tiny_bert, teacher_weight=1.0, loss="pointwise").check()


def test_time_budget_stops_the_run(tiny_beir, tiny_index, tiny_bert, tmp_path):
    from retrievo.train.cross_encoder import train_cross_encoder

    outcome = train_cross_encoder(tiny_beir, tmp_path / "budget", config=tiny_ce_config(tiny_bert, minutes=1e-4),
                                  index=tiny_index, progress=False)
    assert outcome.stopped_by_budget and outcome.steps == 1
    assert (tmp_path / "budget" / "model.safetensors").is_file()


# ----------------------------------------------------------------------------- bi-encoder


def test_bi_encoder_output_works_as_dense(tiny_beir, tiny_index, tiny_bert, tmp_path):
    import numpy as np

    from retrievo.data.beir import BeirDataset
    from retrievo.models.encoder import Encoder
    from retrievo.pipeline import parse
    from retrievo.train.bi_encoder import BiEncoderConfig, train_bi_encoder

    out = tmp_path / "bi"
    config = BiEncoderConfig(base=str(tiny_bert), negatives="top5:1", batch_size=4, max_length=32,
                             dev_fraction=0.25, evaluations=2, learning_rate=1e-3)
    outcome = train_bi_encoder(tiny_beir, out, config=config, index=tiny_index, progress=False)
    assert outcome.steps == 3 and outcome.dev_metric is not None
    assert json.loads((out / "retrievo-training.json").read_text())["kind"] == "bi-encoder"
    queries = BeirDataset(tiny_beir).queries("test")
    ranked = parse(f"dense(model='{out}', k=5)", {"index": tiny_index})(queries)
    assert all(len(r) == 5 for r in ranked)
    trained, base = Encoder(str(out)), Encoder(str(tiny_bert))
    text = ["protein folding chaperone"]
    assert trained.max_length == 32 and trained.pooling == "mean"
    assert not np.allclose(trained.encode_queries(text), base.encode_queries(text))


def test_distillation_from_a_cross_encoder_teacher(uninterrupted, tiny_beir, tiny_index, tiny_bert, tmp_path):
    from retrievo.train.bi_encoder import BiEncoderConfig, train_bi_encoder

    teacher, _ = uninterrupted
    config = BiEncoderConfig(base=str(tiny_bert), negatives="top5:2", batch_size=4, max_length=32, dev_fraction=0.0, evaluations=1,
                             teacher=str(teacher))
    outcome = train_bi_encoder(tiny_beir, tmp_path / "student", config=config, index=tiny_index, progress=False)
    assert outcome.steps == 3
    manifest = json.loads((tmp_path / "student" / "retrievo-training.json").read_text())
    assert manifest["teacher"].startswith("sha256:")


# --------------------------------------------------------------------------------- LoRA


@pytest.fixture(scope="module")
def lora_adapter(tiny_beir, tiny_index, tiny_causal_lm, tmp_path_factory):
    from retrievo.train.lora_pointwise import LoraConfig, train_lora_pointwise

    out = tmp_path_factory.mktemp("lora") / "adapter"
    config = LoraConfig(base=str(tiny_causal_lm), negatives="top5:2", lists=8, batch_size=2, max_passage_tokens=32,
                        dev_fraction=0.25, dev_queries=3, dev_depth=5, learning_rate=5e-3)
    outcome = train_lora_pointwise(tiny_beir, out, config=config, index=tiny_index, progress=False)
    return out, outcome, config


def test_lora_adapter_loads_beside_its_base_and_scores_as_trained(lora_adapter, tiny_beir, tiny_index,
                                                                  tiny_causal_lm):
    import numpy as np

    from retrievo.data.beir import BeirDataset
    from retrievo.llm.load import build_llm
    from retrievo.pipeline import parse
    from retrievo.train.lora_pointwise import Scorer, collate

    out, outcome, config = lora_adapter
    assert outcome.steps == 4 and outcome.dev_metric is not None
    assert {"adapter_config.json", "retrievo-adapter.json", "retrievo-training.json"} <= {p.name for p in
                                                                                          out.iterdir()}
    queries = BeirDataset(tiny_beir).queries("test")
    first = parse("bm25 % 4", {"index": tiny_index})(queries)
    base_stage = parse(f"pointwise(model='{tiny_causal_lm}', max_passage_tokens=32)", {"index": tiny_index})
    tuned_stage = parse(f"pointwise(model='{tiny_causal_lm}?adapter={out}', max_passage_tokens=32)",
                        {"index": tiny_index})
    base, tuned = base_stage(first), tuned_stage(first)
    assert tuned_stage.llm.identity != base_stage.llm.identity and "lora:sha256:" in tuned_stage.llm.identity
    assert not np.allclose(base[0].scores, tuned[0].scores)
    # the training-time score is the stage's score: same prompt, tokens and answer ids
    llm = build_llm(f"{tiny_causal_lm}?adapter={out}")
    scorer = Scorer(llm, config)
    doc_ids = tuned[0].doc_ids.tolist()
    texts = {d.doc_id: f"{d.title}: {d.text}" for d in tiny_index.documents(doc_ids)}
    enc = [scorer.encode(queries[0].text, texts[d]) for d in doc_ids]
    import torch

    with torch.inference_mode():
        batch = collate(llm.pad_id)([{"input_ids": [e[0] for e in enc], "yes": [e[1] for e in enc],
                                      "no": [e[2] for e in enc], "labels": [0.0] * len(enc)}])
        scores = scorer.log_odds(llm.model, batch).numpy()
    assert np.allclose(scores, tuned[0].scores, atol=1e-4)


def test_lora_training_resumes_after_an_interruption_to_the_same_adapter(lora_adapter, tiny_beir, tiny_index,
                                                                         tmp_path):
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from retrievo.train.lora_pointwise import train_lora_pointwise

    class Crash(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise KeyboardInterrupt("simulated interruption after the first checkpoint")

    full, _, config = lora_adapter
    out = tmp_path / "adapter"
    with pytest.raises(KeyboardInterrupt):
        train_lora_pointwise(tiny_beir, out, config=config, index=tiny_index, progress=False, callbacks=(Crash(),))
    outcome = train_lora_pointwise(tiny_beir, out, config=config, index=tiny_index, progress=False)
    assert outcome.resumed_from_step == 2 and outcome.steps == 4
    assert same_weights(load_file(str(full / "adapter_model.safetensors")),
                        load_file(str(out / "adapter_model.safetensors")))


def test_adapter_on_another_base_or_tokenizer_is_refused(lora_adapter, tmp_path):
    from retrievo.llm.load import build_llm

    out, _, _ = lora_adapter
    other_weights = write_tiny_causal_lm(tmp_path / "other", seed=7)
    with pytest.raises(AdapterMismatchError, match="trained on base model"):
        build_llm(f"{other_weights}?adapter={out}")
    other_tokens = write_tiny_causal_lm(tmp_path / "tokens", extra_tokens=("chaperonin",))
    with pytest.raises(TokenizerMismatchError):
        build_llm(f"{other_tokens}?adapter={out}")
    with pytest.raises(ConfigError, match="not a LoRA adapter"):
        build_llm(f"{other_weights}?adapter={tmp_path}")


# ---------------------------------------------------------------------------------- CLI


def test_cli_train_help_and_typed_failure(tmp_path):
    from typer.testing import CliRunner

    from retrievo.cli.main import app

    runner = CliRunner()
    for kind in ("cross-encoder", "bi-encoder", "lora-pointwise"):
        shown = runner.invoke(app, ["train", kind, "--help"])
        assert shown.exit_code == 0 and "--out" in shown.output and "--seed" in shown.output
    folder = write_tiny_beir(tmp_path / "data")
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n", encoding="utf-8")
    failed = runner.invoke(app, ["train", "cross-encoder", str(folder), "--out", str(tmp_path / "out"), "--json"])
    assert failed.exit_code == 2 and "nothing to train on" in failed.output
    for kind in ("cross-encoder", "bi-encoder", "lora-pointwise"):  # options reach each kind's configuration
        refused = runner.invoke(app, ["train", kind, str(folder), "--out", str(tmp_path / kind), "--batch-size", "0"])
        assert refused.exit_code == 2, refused.output
        assert re.search(r"batch_size must be >= [12], got 0", refused.output)  # the bi-encoder needs 2
        assert not (tmp_path / kind).exists()  # refused before anything is written


def test_cli_trains_a_cross_encoder(tiny_beir, tiny_bert, tmp_path):
    from typer.testing import CliRunner

    from retrievo.cli.main import app

    out = tmp_path / "cli"
    args = ["train", "cross-encoder", str(tiny_beir), "--out", str(out), "--base", str(tiny_bert), "--negatives",
            "top5:1", "--batch-size",
            "4", "--max-length", "32", "--dev-fraction", "0", "--evaluations", "1", "--seed", "3", "--json"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    record = json.loads(done.output[done.output.index('{"out"'):].splitlines()[0])
    assert "'loss'" not in done.output  # no trainer log lines in the JSON output
    assert record["steps"] == 3 and record["out"] == str(out)
    again = CliRunner().invoke(app, args)  # a finished model is not silently overwritten
    assert again.exit_code == 2 and "--restart" in again.output
