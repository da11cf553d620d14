"""Train a cross-encoder reranker on your own judgments, with sentence-transformers'
``CrossEncoderTrainer``.

The base is any encoder (all-MiniLM-L6-v2, bundled offline, by default); a one-label
head is put on it (seeded) unless it already is a one-label cross-encoder. Each training
list is one query, one judged positive and the negatives the plan draws from the first
stage's candidates (:mod:`retrievo.train.data`). Two losses:

``listwise`` (default)  ListNet: a softmax over the list's scores against the labels'
                        softmax — the positive must outscore its own negatives. It trains
                        where pointwise does not in a short CPU budget. The positive's label
                        is ``positive_label`` (negatives 0): 1 gives ListNet's soft target
                        (the positive gets e/(e+n) of the mass: a loss that moves little
                        from ln(n+1)); a large value (e.g. 10) makes the target one-hot, i.e.
                        softmax cross-entropy of the positive against its negatives.
                        ``teacher_weight`` > 0 adds that times the first stage's score of
                        each document, standardised over the query's candidates, to its
                        target, so the targets also order the negatives among themselves
                        (distillation from the first stage; measured on SciFact dev in
                        BENCHMARKS.md).
``pointwise``           binary cross-entropy on each (query, passage) pair, the positive
                        weighted by the negatives per list so both classes weigh the same.
                        With hard negatives and about one epoch it was seen to collapse to
                        a constant score; kept for longer runs and easier negatives.

Model selection: at every checkpoint the model reranks the dev queries' top
``dev_depth`` candidates (:class:`~sentence_transformers.cross_encoder.evaluation.CrossEncoderRerankingEvaluator`,
nDCG@10, positives not injected), and the best checkpoint is the one published. The
published folder is a plain sentence-transformers cross-encoder in fp32 (the head is never
stored in bf16, whose coarse logits tie), loadable as ``cross_encoder(model=OUT)``.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from retrievo.errors import ConfigError, EmptyTrainingSetError, MissingExtraError
from retrievo.train.data import NegativePlan, Prepared, TrainingList, build_lists, prepare
from retrievo.train.manifest import base_model_identity
from retrievo.train.run import (Outcome, TrainingConfig, check_tokenizer, pick_device, prepare_checkpoints, quiet,
                                sequential_batches, time_budget_callback, train_and_record, use_bf16)

LOSSES = ("listwise", "pointwise")
DEFAULT_BASE = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class CrossEncoderConfig(TrainingConfig):
    """Hyperparameters of a cross-encoder run (all recorded in the manifest)."""

    base: str = DEFAULT_BASE
    loss: str = "listwise"
    positive_label: float = 1.0
    teacher_weight: float = 0.0
    # the best recipe measured on SciFact's dev split (BENCHMARKS.md, "Cross-encoder recipes"):
    # one epoch at 256 tokens and lr 1e-4 took ~25 idle minutes on 2 CPU cores
    learning_rate: float = 1e-4
    max_length: int = 256
    dev_depth: int = 20
    dtype: str = "auto"

    MINIMUMS = TrainingConfig.MINIMUMS + (("max_length", 8), ("dev_depth", 1))

    def check(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not self.positive_label > 0:
            raise ConfigError(f"positive_label must be > 0, got {self.positive_label}")
        if not self.teacher_weight >= 0:
            raise ConfigError(f"teacher_weight must be >= 0, got {self.teacher_weight}")
        if self.teacher_weight and self.loss != "listwise":
            raise ConfigError("teacher_weight needs the listwise loss (its targets are the labels of a list)")
        super().check()


def resolve_base(name: str) -> str:
    """``all-MiniLM-L6-v2`` (or its hub name) → the bundled offline copy when installed."""
    from retrievo.models.encoder import resolve_model_name

    if name in (DEFAULT_BASE, "sentence-transformers/all-MiniLM-L6-v2"):
        return resolve_model_name(None)
    return os.path.expanduser(name) if os.path.exists(os.path.expanduser(name)) else name


def _require():
    try:
        import datasets  # noqa: F401
        import torch  # noqa: F401
        from sentence_transformers.cross_encoder import CrossEncoder  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(f"training needs sentence-transformers, datasets and accelerate ({exc}); "
                                "install them with `pip install 'retrievo[train]'`") from exc


def load_base(name: str, max_length: int, seed: int) -> Any:
    """The base as a one-label ``CrossEncoder`` in fp32, its new head seeded; a tokenizer
    that does not fit the model is a :class:`~retrievo.errors.TokenizerMismatchError`."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder
    from transformers import set_seed

    from retrievo.errors import ModelNotFoundError

    set_seed(seed)
    try:
        model = CrossEncoder(resolve_base(name), num_labels=1, max_length=int(max_length),
                             model_kwargs={"dtype": torch.float32}, device=pick_device())
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"cannot load base model {name!r} for a cross-encoder ({exc})") from exc
    check_tokenizer(model.tokenizer, model.model.config, f"base model {name!r}")
    return model


def training_dataset(data: Prepared, config: CrossEncoderConfig):
    """The run's lists as a ``datasets.Dataset`` in training order: (query, docs, labels)
    for listwise, flattened (query, doc, label) rows for pointwise."""
    from datasets import Dataset

    plan = NegativePlan.parse(config.negatives)
    lists = build_lists(data.train, data.candidates, data.doc_ids, plan, config.epochs, config.seed,
                        config.curriculum)
    texts = data.passages([d for tl in lists for d in (tl.positive, *tl.negatives)])
    query = {q.qid: q.text for q in data.train.queries}
    if config.loss == "listwise":
        return Dataset.from_dict({
            "query": [query[tl.qid] for tl in lists],
            "docs": [[texts[tl.positive], *(texts[d] for d in tl.negatives)] for tl in lists],
            "labels": [list_targets(data, tl, config) for tl in lists]}), len(lists)
    rows: dict[str, list] = {"query": [], "doc": [], "label": []}
    for tl in lists:
        for d, label in ((tl.positive, 1.0), *((n, 0.0) for n in tl.negatives)):
            rows["query"].append(query[tl.qid])
            rows["doc"].append(texts[d])
            rows["label"].append(label)
    return Dataset.from_dict(rows), len(lists)


def list_targets(data: Prepared, tl: TrainingList, config: CrossEncoderConfig) -> list[float]:
    """ListNet targets of one list (positive first): ``positive_label`` for the positive,
    0 for the negatives, plus ``teacher_weight`` times the first stage's standardised
    score of each document (:meth:`~retrievo.train.data.Prepared.teacher`)."""
    targets = [float(config.positive_label)] + [0.0] * len(tl.negatives)
    if config.teacher_weight:
        teacher = data.teacher(tl.qid, [tl.positive, *tl.negatives])
        targets = [t + config.teacher_weight * v for t, v in zip(targets, teacher)]
    return targets


def dev_evaluator(data: Prepared, depth: int, batch_size: int = 32):
    """nDCG@10 of reranking each dev query's top ``depth`` candidates (None without dev)."""
    if data.dev is None:
        return None
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator

    ids = {q: data.candidates.get(q, [])[:depth] for q in data.dev.queries.ids}
    texts = data.passages([d for q in ids for d in (*ids[q], *data.dev.positives[q])])
    samples = [{"query": q.text, "positive": [texts[d] for d in data.dev.positives[q.qid]],
                "documents": [texts[d] for d in ids[q.qid]]} for q in data.dev.queries if ids[q.qid]]
    if not samples:
        return None
    return CrossEncoderRerankingEvaluator(samples, at_k=10, always_rerank_positives=False, name="dev",
                                          batch_size=batch_size, show_progress_bar=False, write_csv=False)


def train_cross_encoder(data_dir: str | os.PathLike, out: str | os.PathLike, *, split: str = "train",
                        config: CrossEncoderConfig = CrossEncoderConfig(), index: Any = None,
                        restart: bool = False, keep_checkpoints: bool = False, progress: bool = True,
                        callbacks: tuple = ()) -> Outcome:
    """Train on ``split`` of the BEIR folder ``data_dir`` and publish the cross-encoder in
    ``out`` with its manifest; resumes from ``out``'s checkpoints when a previous run of
    the same plan was interrupted (see :mod:`retrievo.train.run`)."""
    _require()
    config.check()
    started = time.monotonic(), time.process_time()
    out = Path(out)
    plan_neg = NegativePlan.parse(config.negatives)
    data = prepare(data_dir, split, first_stage=config.first_stage, depth=max(plan_neg.depth, config.dev_depth),
                   dev_fraction=config.dev_fraction, dev_seed=config.dev_seed, index=index, progress=progress)
    plan = {"kind": "cross-encoder", "data": data.identity(), "seed": config.seed,
            "hyperparameters": asdict(config), "base_model": {"name": config.base,
                                                              "identity": base_model_identity(resolve_base(config.base))}}
    out.mkdir(parents=True, exist_ok=True)
    resume = prepare_checkpoints(out, plan, restart)
    dataset, n_lists = training_dataset(data, config)
    if len(dataset) == 0:
        raise EmptyTrainingSetError("the training split gave no training list")
    model = load_base(config.base, config.max_length, config.seed)
    trainer, budget = _trainer(model, dataset, data, config, out, progress, callbacks)
    return train_and_record(trainer, budget, out, plan, resume, lambda: model.save_pretrained(str(out)), n_lists,
                            started, f"nDCG@10 (dev, reranking top {config.dev_depth})", keep_checkpoints)


def _trainer(model, dataset, data: Prepared, config: CrossEncoderConfig, out: Path, progress: bool,
             callbacks: tuple):
    import math

    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss, ListNetLoss

    plan = NegativePlan.parse(config.negatives)
    if config.loss == "listwise":
        loss = ListNetLoss(model)
        batch = config.batch_size
    else:
        import torch

        loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(plan.per_list)))
        batch = config.batch_size * (1 + plan.per_list)
    steps = max(1, math.ceil(len(dataset) / batch))
    every = max(1, math.ceil(steps / config.evaluations))
    evaluator = dev_evaluator(data, config.dev_depth)
    args = CrossEncoderTrainingArguments(
        output_dir=str(out / "checkpoints"), num_train_epochs=1, per_device_train_batch_size=batch,
        learning_rate=config.learning_rate, warmup_steps=config.warmup, seed=config.seed, data_seed=config.seed,
        eval_strategy="steps" if evaluator is not None else "no", eval_steps=every, save_strategy="steps",
        save_steps=every, save_total_limit=2, load_best_model_at_end=evaluator is not None,
        metric_for_best_model="eval_dev_ndcg@10" if evaluator is not None else None, greater_is_better=True,
        logging_steps=max(1, min(every, 10)), report_to="none", bf16=use_bf16(config.dtype),
        use_cpu=pick_device() == "cpu", dataloader_num_workers=0, disable_tqdm=not progress,
        batch_sampler=sequential_batches)
    budget = time_budget_callback(config.minutes)
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=dataset, loss=loss, evaluator=evaluator,
                                  callbacks=[budget, *callbacks])
    return quiet(trainer, progress), budget


__all__ = ["CrossEncoderConfig", "DEFAULT_BASE", "LOSSES", "dev_evaluator", "list_targets", "load_base", "resolve_base",
           "train_cross_encoder", "training_dataset"]
