"""What every trainer does around its own model and loss: prepare the data once, keep the
training order in our hands, stop on a time budget, resume from checkpoints, and publish
the model with its manifest.

**Order.** Trainers hand the Hugging Face trainer a dataset already in training order
(:func:`retrievo.train.data.build_lists` shuffles it, one seeded generator) and read it
sequentially (:func:`sequential_batches`). So the order does not depend on a sampler's
internals, a curriculum can place easy lists first, and a resumed run skips exactly the
batches it had already seen.

**Checkpoints** go to ``OUT/checkpoints`` with the run's plan beside them. Running the
same command again after an interruption resumes from the newest checkpoint (optimizer,
scheduler, RNG states and position in the data, all restored by the trainer); another
plan there is refused (:func:`retrievo.train.manifest.check_same_plan`) unless
``restart`` discards them. Once the model is published the checkpoints are removed
(``keep_checkpoints`` keeps them), so ``OUT`` holds one model and its manifest, and a
pipeline naming ``OUT`` hashes only that.

**Time budget.** ``minutes`` stops training at the first step that ends past the budget
(counted from the start of this invocation); the model then is evaluated on dev like at
any other checkpoint, and the manifest says the budget stopped it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path
from typing import Any

from retrievo.errors import ConfigError, TokenizerMismatchError
from retrievo.train.data import DEFAULT_NEGATIVES, NegativePlan
from retrievo.train.manifest import check_same_plan, write_manifest, write_plan

CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class TrainingConfig:
    """What every trainer's hyperparameters share (each kind subclasses it with its own
    defaults and fields; all of them are recorded in the manifest)."""

    base: str = ""
    negatives: str = DEFAULT_NEGATIVES
    curriculum: bool = False
    epochs: int = 1
    batch_size: int = 8
    learning_rate: float = 5e-5
    warmup: float = 0.1
    seed: int = 1
    first_stage: str = "bm25"
    dev_fraction: float = 0.1
    dev_seed: int = 0
    evaluations: int = 2
    minutes: float | None = None

    #: integer fields and their smallest allowed value (subclasses extend it)
    MINIMUMS: ClassVar[tuple[tuple[str, int], ...]] = (("epochs", 1), ("batch_size", 1), ("evaluations", 1))

    def check(self) -> None:
        """Refuse bad values before any data is read or model loaded (``ConfigError``)."""
        for name, low in self.MINIMUMS:
            if int(getattr(self, name)) < low:
                raise ConfigError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.minutes is not None and not self.minutes > 0:
            raise ConfigError(f"minutes must be > 0, got {self.minutes}")
        NegativePlan.parse(self.negatives)


def sequential_batches(dataset, batch_size, drop_last, valid_label_columns=None, generator=None, seed=0):
    """A sentence-transformers batch sampler that reads the dataset in its stored order."""
    from sentence_transformers.base.sampler import DefaultBatchSampler
    from torch.utils.data import SequentialSampler

    return DefaultBatchSampler(SequentialSampler(dataset), batch_size=batch_size, drop_last=drop_last,
                               valid_label_columns=valid_label_columns, generator=generator, seed=seed)


def time_budget_callback(minutes: float | None):
    """A trainer callback that ends training (with a final evaluation and checkpoint) at the
    first step ending after ``minutes``; None: no budget."""
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        def __init__(self):
            self.start = time.monotonic()
            self.stopped = False

        def on_step_end(self, args, state, control, **kwargs):
            if minutes is not None and time.monotonic() - self.start > 60.0 * minutes:
                self.stopped = True
                control.should_training_stop = True
                control.should_evaluate = args.eval_strategy != "no"
                control.should_save = True
            return control

    return TimeBudget()


def quiet(trainer: Any, progress: bool) -> Any:
    """Without progress bars the Hugging Face trainer prints every log line to stdout
    instead; keep stdout for the caller's own output (``--json``)."""
    if not progress:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    return trainer


def prepare_checkpoints(out: Path, plan: Mapping[str, Any], restart: bool) -> bool:
    """Make ``OUT/checkpoints`` ready; True when a previous run of the same plan left a
    checkpoint to resume from."""
    folder = out / CHECKPOINTS
    if restart and folder.exists():
        shutil.rmtree(folder)
    if not restart and (out / "retrievo-training.json").is_file() and not folder.exists():
        raise ConfigError(f"{out} already holds a trained model; pass --restart to train it again, or choose "
                          "another --out")
    found = folder.is_dir() and any(p.name.startswith("checkpoint-") for p in folder.iterdir())
    if found:
        check_same_plan(folder, plan)
        return True
    write_plan(folder, plan)
    return False


def finish(out: Path, keep_checkpoints: bool) -> None:
    """Remove the checkpoints once the model is published (unless asked to keep them)."""
    if not keep_checkpoints:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)


def check_tokenizer(tokenizer: Any, config: Any, what: str) -> None:
    """Refuse a tokenizer whose ids reach past the model's embedding table: such a pair
    was never trained together (``TokenizerMismatchError``)."""
    vocab = getattr(config, "vocab_size", None)
    get_text = getattr(config, "get_text_config", None)
    if vocab is None and callable(get_text):
        vocab = getattr(get_text(), "vocab_size", None)
    if vocab is None:
        return
    size = len(tokenizer)
    if size > int(vocab):
        raise TokenizerMismatchError(f"{what}: its tokenizer has {size} tokens but the model's embeddings hold "
                                     f"{vocab}: the tokenizer belongs to another model")


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def use_bf16(dtype: str) -> bool:
    """bf16 mixed precision for ``dtype``: ``auto`` only where the hardware computes bf16
    natively (on AVX2-only CPUs PyTorch emulates it, slower than fp32); the weights stay
    fp32 either way and the saved model is fp32."""
    if dtype not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"dtype must be auto, fp32 or bf16, got {dtype!r}")
    if dtype != "auto":
        return dtype == "bf16"
    import torch

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    from retrievo.models.encoder import native_bf16

    return native_bf16()


@dataclass
class Outcome:
    """What a training run produced (also written into the manifest)."""

    out: Path
    steps: int
    seconds: float
    stopped_by_budget: bool
    dev_metric: float | None
    best_checkpoint_step: int | None
    resumed_from_step: int | None
    examples: int
    #: CPU seconds of this process over the run (all threads): on a shared machine the
    #: wall time says how busy it was, this says what the training cost
    cpu_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "seconds": round(self.seconds, 1), "cpu_seconds": round(self.cpu_seconds, 1),
                "stopped_by_budget": self.stopped_by_budget,
                "dev_metric": self.dev_metric, "best_checkpoint_step": self.best_checkpoint_step,
                "resumed_from_step": self.resumed_from_step, "training_examples": self.examples}


def resumed_step(out: Path) -> int | None:
    """The step of the newest checkpoint in ``OUT/checkpoints`` (None if none)."""
    folder = out / CHECKPOINTS
    steps = [int(p.name.split("-")[1]) for p in folder.glob("checkpoint-*") if p.name.split("-")[1].isdigit()]
    return max(steps) if steps else None


def best_step(trainer: Any) -> int | None:
    path = getattr(trainer.state, "best_model_checkpoint", None)
    if not path:
        return None
    tail = os.path.basename(str(path)).split("-")[-1]
    return int(tail) if tail.isdigit() else None


def train_and_record(trainer: Any, budget: Any, out: Path, plan: Mapping[str, Any], resume: bool,
                     save: Callable[[], None], examples: int, started: tuple[float, float], dev_metric_name: str,
                     keep_checkpoints: bool) -> Outcome:
    """What every trainer does once its Trainer is built: train (from ``OUT``'s newest
    checkpoint when ``resume``), ``save()`` the result, write the manifest with the
    outcome (wall and CPU time since ``started`` = ``(time.monotonic(), time.process_time())``
    at the run's start, the best dev checkpoint, ``examples`` training lists or pairs),
    then drop the checkpoints unless ``keep_checkpoints``."""
    from_step = resumed_step(out) if resume else None
    trainer.train(resume_from_checkpoint=True if resume else None)
    save()
    best = trainer.state.best_metric
    outcome = Outcome(out, int(trainer.state.global_step), time.monotonic() - started[0], budget.stopped,
                      None if best is None else float(best), best_step(trainer), from_step, examples,
                      time.process_time() - started[1])
    write_manifest(out, plan, {**outcome.as_dict(), "dev_metric_name": dev_metric_name})
    finish(out, keep_checkpoints)
    return outcome


__all__ = ["CHECKPOINTS", "Outcome", "TrainingConfig", "best_step", "check_tokenizer", "finish", "pick_device",
           "prepare_checkpoints", "quiet", "resumed_step", "sequential_batches", "time_budget_callback",
           "train_and_record", "use_bf16"]
