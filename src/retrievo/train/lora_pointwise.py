"""Fine-tune the pointwise yes/no LLM reranker with LoRA (peft), on your own judgments.

The reranker (:mod:`retrievo.rerank.pointwise`) scores a passage by the log-odds of the
next token being ``Yes`` rather than ``No`` after its prompt. Training uses *that very
score*: the same template, the same chat rendering, the same truncation of passages to
``max_passage_tokens`` and the same answer tokens as the backend reads at inference
(:class:`~retrievo.llm.transformers_backend.TransformersLLM`), so what is optimised is what
the stage will compute. Two losses over the log-odds ``s``:

``listwise`` (default)  softmax cross-entropy over one positive and its negatives: the
                        positive's ``s`` must be the largest of its list.
``pointwise``           binary cross-entropy of ``sigmoid(s)`` against the label, the
                        positive weighted by the negatives per list.

Only the adapter trains (rank ``rank`` on the attention's query and value projections);
the base stays frozen in fp32 — on CPUs without native bf16, bf16 runs several times
slower. The Hugging Face ``Trainer`` runs the optimisation, the checkpoints and their
resumption; selection is by nDCG@10 of reranking the first ``dev_queries`` dev queries'
top ``dev_depth`` candidates. The adapter folder holds ``adapter_config.json``, the
adapter weights, ``retrievo-adapter.json`` (the base model's identity and tokenizer
fingerprint, checked when it is loaded) and the training manifest; it loads beside its
base as ``pointwise(model=BASE?adapter=OUT)``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from retrievo.errors import ConfigError, EmptyTrainingSetError, MissingExtraError
from retrievo.train.data import NegativePlan, Prepared, build_lists, prepare
from retrievo.train.run import (Outcome, TrainingConfig, check_tokenizer, prepare_checkpoints, quiet,
                                time_budget_callback, train_and_record)

LOSSES = ("listwise", "pointwise")


@dataclass(frozen=True)
class LoraConfig(TrainingConfig):
    """Hyperparameters of a LoRA pointwise run (all recorded in the manifest)."""

    base: str = "smollm2"
    loss: str = "listwise"
    negatives: str = "top20:2,top100:1"
    lists: int | None = 300
    batch_size: int = 2
    learning_rate: float = 2e-4
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    max_passage_tokens: int = 96
    prompt: str = "pointwise_yes_no"
    yes: str = "Yes"
    no: str = "No"
    dev_queries: int = 20
    dev_depth: int = 10

    MINIMUMS = TrainingConfig.MINIMUMS + (("rank", 1), ("alpha", 1), ("max_passage_tokens", 1), ("dev_queries", 1),
                                          ("dev_depth", 1))

    def check(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.lists is not None and self.lists < 1:
            raise ConfigError(f"lists must be >= 1 (or None for all), got {self.lists}")
        super().check()


def _require():
    try:
        import datasets  # noqa: F401
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(f"LoRA training needs peft, datasets, transformers and torch ({exc}); install "
                                "them with `pip install 'retrievo[train]'`") from exc


class Scorer:
    """Prompts → token ids, and the yes/no log-odds, exactly as the pointwise stage and the
    local backend compute them."""

    def __init__(self, llm: Any, config: LoraConfig):
        from retrievo.llm.prompts import load_template
        from retrievo.rerank.pointwise import REQUIRED

        self.llm, self.config = llm, config
        self.template = load_template(config.prompt, required=REQUIRED)
        if not llm.first_tokens_distinct([config.yes, config.no]):
            raise ConfigError(f"yes={config.yes!r} and no={config.no!r} start with the same token in {llm.identity}")

    def encode(self, query: str, passage: str) -> tuple[list[int], int, int]:
        """Token ids of the prompt, and the ids of the yes and no answer tokens after it."""
        from retrievo.llm.base import as_prompt

        prompt = as_prompt(self.template.render(query=query, passage=self.llm.truncate(
            passage, self.config.max_passage_tokens)))
        rendered = self.llm.render(prompt)
        ids = list(self.llm.tokenizer(rendered, add_special_tokens=prompt.is_raw)["input_ids"])
        return (ids, self.llm._first_token_after(rendered, self.config.yes),
                self.llm._first_token_after(rendered, self.config.no))

    def log_odds(self, model: Any, batch: dict) -> Any:
        """``log P(yes) - log P(no)`` at each sequence's last token (log-softmax in fp32)."""
        import torch

        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        last = batch["attention_mask"].sum(dim=1) - 1
        logits = out.logits[torch.arange(len(last)), last].float()
        lp = torch.log_softmax(logits, dim=-1)
        return lp.gather(1, batch["yes"][:, None])[:, 0] - lp.gather(1, batch["no"][:, None])[:, 0]


def collate(pad_id: int):
    """Pad every sequence of every list of a batch into one tensor (right padding)."""

    def fn(rows: list[dict]) -> dict:
        import torch

        seqs = [s for r in rows for s in r["input_ids"]]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        return {"input_ids": ids, "attention_mask": mask,
                "yes": torch.tensor([y for r in rows for y in r["yes"]]),
                "no": torch.tensor([n for r in rows for n in r["no"]]),
                "labels": torch.tensor([lab for r in rows for lab in r["labels"]], dtype=torch.float32),
                "sizes": torch.tensor([len(r["input_ids"]) for r in rows])}

    return fn


def training_dataset(data: Prepared, scorer: Scorer, config: LoraConfig):
    """The run's lists (the first ``config.lists`` of the seeded order) tokenised as the
    reranker reads them: per list, the positive's prompt first, then its negatives'."""
    from datasets import Dataset
    from tqdm.auto import tqdm

    plan = NegativePlan.parse(config.negatives)
    lists = build_lists(data.train, data.candidates, data.doc_ids, plan, config.epochs, config.seed,
                        config.curriculum)
    if config.lists is not None:
        lists = lists[:config.lists]
    texts = data.passages([d for tl in lists for d in (tl.positive, *tl.negatives)])
    query = {q.qid: q.text for q in data.train.queries}
    rows: dict[str, list] = {"input_ids": [], "yes": [], "no": [], "labels": []}
    for tl in tqdm(lists, desc="tokenising lists", disable=not _progress_wanted()):
        encoded = [scorer.encode(query[tl.qid], texts[d]) for d in (tl.positive, *tl.negatives)]
        rows["input_ids"].append([e[0] for e in encoded])
        rows["yes"].append([e[1] for e in encoded])
        rows["no"].append([e[2] for e in encoded])
        rows["labels"].append([1.0] + [0.0] * len(tl.negatives))
    if not rows["input_ids"]:
        raise EmptyTrainingSetError("the training split gave no training list")
    return Dataset.from_dict(rows), len(lists)


_PROGRESS = {"on": True}


def _progress_wanted() -> bool:
    return _PROGRESS["on"]


def dev_ndcg(model: Any, scorer: Scorer, data: Prepared, config: LoraConfig) -> float | None:
    """nDCG@10 of reranking the first ``dev_queries`` dev queries' top ``dev_depth``."""
    if data.dev is None:
        return None
    import torch

    from retrievo.evaluate.metrics import evaluate
    from retrievo.types import Qrels, Rankings

    queries = data.dev.queries.subset(data.dev.queries.ids[:config.dev_queries])
    texts = data.passages([d for q in queries.ids for d in data.candidates.get(q, [])[:config.dev_depth]])
    pad = collate(scorer.llm.pad_id)
    lists = []
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for q in queries:
            ids = data.candidates.get(q.qid, [])[:config.dev_depth]
            enc = [scorer.encode(q.text, texts[d]) for d in ids]
            scores: list[float] = []
            for i in range(0, len(enc), 8):
                part = enc[i:i + 8]
                batch = pad([{"input_ids": [e[0] for e in part], "yes": [e[1] for e in part],
                              "no": [e[2] for e in part], "labels": [0.0] * len(part)}])
                scores += scorer.log_odds(model, batch).tolist()
            order = sorted(range(len(ids)), key=lambda i: (-scores[i], i))
            lists.append(([ids[i] for i in order], [scores[i] for i in order]))
    model.train(was_training)
    qrels = Qrels.from_dict({q: {d: 1 for d in data.dev.positives[q]} for q in queries.ids})
    return float(evaluate(Rankings.from_lists(queries, lists), qrels, ["nDCG@10"])["nDCG@10"])


def train_lora_pointwise(data_dir: str | os.PathLike, out: str | os.PathLike, *, split: str = "train",
                         config: LoraConfig = LoraConfig(), index: Any = None, restart: bool = False,
                         keep_checkpoints: bool = False, progress: bool = True, callbacks: tuple = ()) -> Outcome:
    """Train a LoRA adapter for the pointwise reranker of ``config.base`` on ``split`` of
    the BEIR folder ``data_dir``; publish it in ``out`` with its manifest (resuming from
    ``out``'s checkpoints like every trainer)."""
    _require()
    config.check()
    _PROGRESS["on"] = progress
    started = time.monotonic(), time.process_time()
    out = Path(out)
    plan_neg = NegativePlan.parse(config.negatives)
    from retrievo.llm.load import build_llm
    from retrievo.llm.transformers_backend import ADAPTER_MARKER, TransformersLLM, tokenizer_fingerprint

    llm = build_llm(config.base, dtype="fp32")
    if not isinstance(llm, TransformersLLM):
        raise ConfigError(f"LoRA training needs a local model, not {config.base!r}")
    check_tokenizer(llm.tokenizer, llm.model.config, f"base model {config.base!r}")
    data = prepare(data_dir, split, first_stage=config.first_stage, depth=max(plan_neg.depth, config.dev_depth),
                   dev_fraction=config.dev_fraction, dev_seed=config.dev_seed, index=index, progress=progress)
    base = {"name": config.base, "identity": llm.base_identity, "tokenizer": tokenizer_fingerprint(llm.tokenizer)}
    plan = {"kind": "lora-pointwise", "data": data.identity(), "seed": config.seed,
            "hyperparameters": asdict(config), "base_model": base}
    out.mkdir(parents=True, exist_ok=True)
    resume = prepare_checkpoints(out, plan, restart)
    scorer = Scorer(llm, config)
    dataset, n_lists = training_dataset(data, scorer, config)
    model = _peft_model(llm.model, config)
    trainer, budget = _trainer(model, scorer, dataset, data, config, out, progress, callbacks)

    def save() -> None:
        trainer.model.save_pretrained(str(out))
        (out / ADAPTER_MARKER).write_text(json.dumps({"base_model": base["identity"], "tokenizer": base["tokenizer"],
                                                      "base_name": config.base}, indent=1), encoding="utf-8")

    return train_and_record(trainer, budget, out, plan, resume, save, n_lists, started,
                            f"nDCG@10 (first {config.dev_queries} dev queries, reranking the top {config.dev_depth})",
                            keep_checkpoints)


def _peft_model(model: Any, config: LoraConfig) -> Any:
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from transformers import set_seed

    set_seed(config.seed)
    model.requires_grad_(False)
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [m for m in config.target_modules if m not in names]
    if missing:
        raise ConfigError(f"the base model has no module named {', '.join(missing)} for LoRA; it has e.g. "
                          f"{', '.join(sorted(names)[:12])}")
    peft_config = PeftLoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                                 target_modules=list(config.target_modules), task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, peft_config)
    peft_model.train()
    return peft_model


def _trainer(model, scorer: Scorer, dataset, data: Prepared, config: LoraConfig, out: Path, progress: bool,
             callbacks: tuple):
    import torch
    from transformers import Trainer, TrainingArguments

    plan = NegativePlan.parse(config.negatives)

    class YesNoTrainer(Trainer):
        """The Hugging Face trainer with the reranker's loss and its dev metric."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            s = scorer.log_odds(model, inputs)
            labels, sizes = inputs["labels"], inputs["sizes"].tolist()
            if config.loss == "pointwise":
                weight = torch.where(labels > 0, float(plan.per_list), 1.0)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(s, labels, weight=weight)
            else:
                parts, start = [], 0
                for n in sizes:
                    parts.append(-torch.log_softmax(s[start:start + n], dim=0)[0])  # the positive comes first
                    start += n
                loss = torch.stack(parts).mean()
            return (loss, {"scores": s}) if return_outputs else loss

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            value = dev_ndcg(self.model, scorer, data, config)
            metrics = {} if value is None else {f"{metric_key_prefix}_dev_ndcg@10": value}
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

    steps = max(1, math.ceil(len(dataset) / config.batch_size))
    every = max(1, math.ceil(steps / config.evaluations))
    selecting = data.dev is not None
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"), num_train_epochs=1, per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate, warmup_steps=config.warmup, seed=config.seed, data_seed=config.seed,
        eval_strategy="steps" if selecting else "no", eval_steps=every, save_strategy="steps", save_steps=every,
        save_total_limit=2, load_best_model_at_end=selecting,
        metric_for_best_model="eval_dev_ndcg@10" if selecting else None, greater_is_better=True,
        logging_steps=max(1, min(every, 10)), report_to="none", use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0, disable_tqdm=not progress, remove_unused_columns=False,
        train_sampling_strategy="sequential")
    budget = time_budget_callback(config.minutes)
    # the trainer insists on an eval dataset for step-wise evaluation; evaluate() above
    # ignores it and reranks the dev queries instead
    trainer = YesNoTrainer(model=model, args=args, train_dataset=dataset,
                           eval_dataset=dataset.select(range(1)) if selecting else None,
                           data_collator=collate(scorer.llm.pad_id), callbacks=[budget, *callbacks])
    return quiet(trainer, progress), budget


__all__ = ["LoraConfig", "Scorer", "dev_ndcg", "train_lora_pointwise", "training_dataset"]
