"""Fine-tune a bi-encoder (dense retriever) on your own judgments, with
sentence-transformers' ``SentenceTransformerTrainer``.

Each example is a query, one judged positive and the hard negatives the plan draws from
the first stage's candidates (:mod:`retrievo.train.data`; default one from BM25's top 30).
Two losses:

contrastive (default)  ``MultipleNegativesRankingLoss``: the query must pick its positive
                       among every passage of the batch — the other examples' positives
                       and negatives are in-batch negatives, the mined ones hard negatives.
distillation           with ``teacher`` (a trained cross-encoder folder, e.g. from
                       ``retrievo train cross-encoder``): ``MarginMSELoss`` on the
                       teacher's score margins ``teacher(q, pos) - teacher(q, neg_i)``, so
                       the student learns how much better, not only which.

Model selection: at every checkpoint the encoder reranks each dev query's top 20
candidates (``RerankingEvaluator``, nDCG@10 by cosine), and the best checkpoint is
published. The output is a plain sentence-transformers folder (Transformer, Pooling,
Normalize), so ``dense(model=OUT)`` encodes with it and every vector index records it as
the index's model.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from retrievo.errors import ConfigError, EmptyTrainingSetError
from retrievo.train.cross_encoder import DEFAULT_BASE, resolve_base
from retrievo.train.cross_encoder import _require as _require_training
from retrievo.train.data import NegativePlan, Prepared, build_lists, prepare
from retrievo.train.manifest import base_model_identity
from retrievo.train.run import (Outcome, TrainingConfig, check_tokenizer, pick_device, prepare_checkpoints, quiet,
                                sequential_batches, time_budget_callback, train_and_record, use_bf16)

DEV_DEPTH = 20


@dataclass(frozen=True)
class BiEncoderConfig(TrainingConfig):
    """Hyperparameters of a bi-encoder run (all recorded in the manifest)."""

    base: str = DEFAULT_BASE
    negatives: str = "top30:1"
    teacher: str | None = None
    batch_size: int = 32
    learning_rate: float = 2e-5
    max_length: int = 256
    dtype: str = "auto"

    MINIMUMS = (("epochs", 1), ("batch_size", 2), ("max_length", 8), ("evaluations", 1))

    def check(self) -> None:
        super().check()
        if self.teacher is not None and not os.path.isdir(os.path.expanduser(self.teacher)):
            raise ConfigError(f"teacher {self.teacher!r} is not a folder (a trained cross-encoder)")


def load_base(name: str, max_length: int, seed: int) -> Any:
    """The base ``SentenceTransformer`` in fp32; a tokenizer that does not fit the model is
    a :class:`~retrievo.errors.TokenizerMismatchError`."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import set_seed

    from retrievo.errors import ModelNotFoundError

    set_seed(seed)
    try:
        model = SentenceTransformer(resolve_base(name), device=pick_device(), model_kwargs={"dtype": torch.float32})
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"cannot load base model {name!r} for a bi-encoder ({exc})") from exc
    model.max_seq_length = int(max_length)
    check_tokenizer(model.tokenizer, model[0].auto_model.config, f"base model {name!r}")
    return model


def training_dataset(data: Prepared, config: BiEncoderConfig):
    """(anchor, positive, negative_1..n) rows in training order, plus the teacher's
    margins as ``label`` when distilling; rows short of negatives are left out (every row
    of a dataset has the same columns)."""
    from datasets import Dataset

    plan = NegativePlan.parse(config.negatives)
    lists = [tl for tl in build_lists(data.train, data.candidates, data.doc_ids, plan, config.epochs, config.seed,
                                      config.curriculum) if len(tl.negatives) == plan.per_list]
    if not lists:
        raise EmptyTrainingSetError(f"no training example has the {plan.per_list} negative(s) {plan} asks for")
    texts = data.passages([d for tl in lists for d in (tl.positive, *tl.negatives)])
    query = {q.qid: q.text for q in data.train.queries}
    columns: dict[str, list] = {"anchor": [query[tl.qid] for tl in lists],
                                "positive": [texts[tl.positive] for tl in lists]}
    for i in range(plan.per_list):
        columns[f"negative_{i + 1}"] = [texts[tl.negatives[i]] for tl in lists]
    if config.teacher is not None:
        columns["label"] = teacher_margins(config.teacher, columns, plan.per_list)
    return Dataset.from_dict(columns), len(lists)


def teacher_margins(teacher: str, columns: dict[str, list], negatives: int) -> list[list[float]]:
    """``[teacher(q, pos) - teacher(q, neg_i)]`` per row, from a cross-encoder folder."""
    import numpy as np
    import torch

    from retrievo.rerank.cross_encoder import load_cross_encoder

    ce = load_cross_encoder(os.path.expanduser(teacher), 512)
    pairs = [(q, p) for q, p in zip(columns["anchor"], columns["positive"])]
    for i in range(negatives):
        pairs += [(q, n) for q, n in zip(columns["anchor"], columns[f"negative_{i + 1}"])]
    scores = np.asarray(ce.predict(pairs, batch_size=32, activation_fn=torch.nn.Identity(), convert_to_numpy=True,
                                   show_progress_bar=True), dtype=np.float64)
    n = len(columns["anchor"])
    pos = scores[:n]
    return [[float(pos[r] - scores[n * (i + 1) + r]) for i in range(negatives)] for r in range(n)]


def dev_evaluator(data: Prepared):
    """nDCG@10 of ranking each dev query's top candidates by cosine (None without dev)."""
    if data.dev is None:
        return None
    from sentence_transformers.sentence_transformer.evaluation import RerankingEvaluator

    samples = []
    ids = {q: data.candidates.get(q, [])[:DEV_DEPTH] for q in data.dev.queries.ids}
    texts = data.passages([d for q in ids for d in (*ids[q], *data.dev.positives[q])])
    for q in data.dev.queries:
        pos = set(data.dev.positives[q.qid])
        negatives = [texts[d] for d in ids[q.qid] if d not in pos]
        if negatives:
            samples.append({"query": q.text, "positive": [texts[d] for d in pos], "negative": negatives})
    if not samples:
        return None
    return RerankingEvaluator(samples, at_k=10, name="dev", write_csv=False, batch_size=32)


def train_bi_encoder(data_dir: str | os.PathLike, out: str | os.PathLike, *, split: str = "train",
                     config: BiEncoderConfig = BiEncoderConfig(), index: Any = None, restart: bool = False,
                     keep_checkpoints: bool = False, progress: bool = True, callbacks: tuple = ()) -> Outcome:
    """Fine-tune on ``split`` of the BEIR folder ``data_dir`` and publish the encoder in
    ``out`` with its manifest; resumes from ``out``'s checkpoints like every trainer."""
    _require_training()
    config.check()
    started = time.monotonic(), time.process_time()
    out = Path(out)
    plan_neg = NegativePlan.parse(config.negatives)
    data = prepare(data_dir, split, first_stage=config.first_stage, depth=max(plan_neg.depth, DEV_DEPTH),
                   dev_fraction=config.dev_fraction, dev_seed=config.dev_seed, index=index, progress=progress)
    teacher = None if config.teacher is None else base_model_identity(os.path.expanduser(config.teacher))
    plan = {"kind": "bi-encoder", "data": data.identity(), "seed": config.seed, "hyperparameters": asdict(config),
            "base_model": {"name": config.base, "identity": base_model_identity(resolve_base(config.base))},
            "teacher": teacher}
    out.mkdir(parents=True, exist_ok=True)
    resume = prepare_checkpoints(out, plan, restart)
    dataset, n_examples = training_dataset(data, config)
    model = load_base(config.base, config.max_length, config.seed)
    trainer, budget = _trainer(model, dataset, data, config, out, progress, callbacks)
    return train_and_record(trainer, budget, out, plan, resume, lambda: model.save(str(out)), n_examples, started,
                            f"nDCG@10 (dev, ranking the top {DEV_DEPTH} by cosine)", keep_checkpoints)


def _trainer(model, dataset, data: Prepared, config: BiEncoderConfig, out: Path, progress: bool, callbacks: tuple):
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MarginMSELoss, MultipleNegativesRankingLoss

    loss = MarginMSELoss(model) if config.teacher is not None else MultipleNegativesRankingLoss(model)
    steps = max(1, math.ceil(len(dataset) / config.batch_size))
    every = max(1, math.ceil(steps / config.evaluations))
    evaluator = dev_evaluator(data)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "checkpoints"), num_train_epochs=1, per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate, warmup_steps=config.warmup, seed=config.seed, data_seed=config.seed,
        eval_strategy="steps" if evaluator is not None else "no", eval_steps=every, save_strategy="steps",
        save_steps=every, save_total_limit=2, load_best_model_at_end=evaluator is not None,
        metric_for_best_model="eval_dev_ndcg@10" if evaluator is not None else None, greater_is_better=True,
        logging_steps=max(1, min(every, 10)), report_to="none", bf16=use_bf16(config.dtype),
        use_cpu=pick_device() == "cpu", dataloader_num_workers=0, disable_tqdm=not progress,
        batch_sampler=sequential_batches)
    budget = time_budget_callback(config.minutes)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss,
                                        evaluator=evaluator, callbacks=[budget, *callbacks])
    return quiet(trainer, progress), budget


__all__ = ["BiEncoderConfig", "load_base", "train_bi_encoder", "training_dataset"]
