"""The training manifest: what a trained model was made from, so a number can be traced
back to its run and the run repeated.

Every trainer writes ``retrievo-training.json`` beside the weights it saves. It records

- **data identity**: the dataset folder, the split, and the SHA-256 of each file read
  (corpus, queries, qrels of the split), plus how many queries went to training and how
  many to the dev split — the same files give the same hashes wherever they are copied;
- **seed** and every **hyperparameter** of the run (loss, negatives, epochs, learning rate,
  first-stage pipeline, time budget, ...);
- **library versions** (retrievo, torch, transformers, sentence-transformers, peft, ...);
- the **base model**: its name and the content hash :meth:`ModelSpec.identity` gives
  (for a local folder, a hash over its weight, configuration and tokenizer files);
- what happened: steps run, seconds taken, whether the time budget stopped it, the dev
  metric of the model kept.

A checkpoint folder holds the same *plan* (everything but what happened), and a resumed
run refuses a checkpoint whose plan differs (:func:`check_same_plan`): continuing another
run's optimizer state on other data or another base model would produce a model that no
manifest describes.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from retrievo.errors import AdapterMismatchError, ConfigError
from retrievo.llm.transformers_backend import file_sha256

MANIFEST_NAME = "retrievo-training.json"
PLAN_NAME = "retrievo-training-plan.json"
FORMAT = 1
#: packages whose versions can change what a trainer produces
LIBRARIES = ("retrievo", "torch", "transformers", "sentence-transformers", "peft", "datasets", "accelerate",
             "numpy", "tokenizers", "safetensors")


def data_identity(files: Mapping[str, str | os.PathLike]) -> dict[str, str]:
    """``{role: "sha256:<hex>"}`` for the data files a run read (role: corpus, queries, qrels)."""
    return {role: "sha256:" + file_sha256(path) for role, path in sorted(files.items())}


def library_versions() -> dict[str, str]:
    """Installed versions of the packages that shape a trained model (absent ones are left out)."""
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def base_model_identity(name: str) -> str:
    """The base model's identity as :class:`~retrievo.models.spec.ModelSpec` gives it: a
    content hash for a local folder, ``name@revision`` for a hub name."""
    from retrievo.models.spec import ModelSpec

    return ModelSpec.parse(name).identity()


def write_json(path: Path, record: Mapping[str, Any]) -> None:
    """Write ``record`` as indented JSON, atomically (a crash leaves the old file or none)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest stored with a trained model, or None when the folder has none."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable training manifest ({exc})") from exc


def write_manifest(folder: str | os.PathLike, plan: Mapping[str, Any], outcome: Mapping[str, Any]) -> Path:
    """Store the plan and what happened as ``retrievo-training.json`` in ``folder``."""
    path = Path(folder) / MANIFEST_NAME
    write_json(path, {"format": FORMAT, **plan, "outcome": dict(outcome), "libraries": library_versions()})
    return path


def write_plan(folder: str | os.PathLike, plan: Mapping[str, Any]) -> None:
    """Record the plan a checkpoint folder belongs to (read back by :func:`check_same_plan`)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    write_json(Path(folder) / PLAN_NAME, {"format": FORMAT, **plan})


def check_same_plan(folder: str | os.PathLike, plan: Mapping[str, Any]) -> None:
    """Refuse to resume the checkpoints in ``folder`` with another plan: a different base
    model is an :class:`AdapterMismatchError`, other data or hyperparameters a
    :class:`ConfigError` naming what differs."""
    path = Path(folder) / PLAN_NAME
    if not path.is_file():
        raise ConfigError(f"{folder} holds checkpoints without a training plan; they were not written by this "
                          "trainer. Train into another --out folder, or pass --restart to discard them")
    stored = json.loads(path.read_text(encoding="utf-8"))
    stored.pop("format", None)
    now = json.loads(json.dumps(dict(plan), default=str))
    if stored.get("base_model") != now.get("base_model"):
        raise AdapterMismatchError(f"the checkpoints in {folder} were trained from base model "
                                   f"{stored.get('base_model')}, not {now.get('base_model')}; resuming them on "
                                   "another base is refused (pass --restart to discard them)")
    differ = sorted(k for k in set(stored) | set(now) if stored.get(k) != now.get(k))
    if differ:
        raise ConfigError(f"the checkpoints in {folder} belong to a run with other settings ({', '.join(differ)} "
                          "differ); resume with the same command, or pass --restart to discard them")


__all__ = ["MANIFEST_NAME", "PLAN_NAME", "base_model_identity", "check_same_plan", "data_identity", "file_sha256",
           "library_versions", "read_manifest", "write_manifest", "write_plan"]
