"""The local backend: any Hugging Face causal LM (a hub name, a local folder) or a GGUF file,
run in this process with transformers — the only backend that exposes attention weights.

GGUF files load through transformers' ``gguf_file=`` support, which dequantises every
tensor (SmolLM2-135M: ~16 s, Qwen2.5-0.5B: ~37 s). The dequantised weights and the
tokenizer are therefore saved once as a safetensors folder under
``$RETRIEVO_CACHE_DIR/llm/gguf/<sha256 of the GGUF>`` (written to a temporary folder and
renamed into place, so a crash never leaves half a copy) and loaded from there next time
(under a second). The copy keeps the exact float32 values the dequantisation produced.

Options (keyword arguments, or ``?key=value`` in a model spec given to
:func:`retrievo.llm.load.load_llm`):

``dtype``       ``auto`` (default), ``fp32`` or ``bf16``. ``auto`` is bf16 only where the hardware
                computes it natively (a CUDA GPU with bf16, or a CPU with AVX512-BF16/AMX);
                on an AVX2-only CPU PyTorch emulates bf16 and SmolLM2 runs ~7x *slower* than
                in fp32 (measured on this project's machines), so it stays fp32. Whatever
                the dtype, the final projection to the vocabulary and the log-softmax are
                computed in float32.
``device``      ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:1``...
``context_length``  override the model's ``max_position_embeddings``.
``max_batch``   prompts per batched forward pass (default 8).
``prefix_reuse_min``  shortest shared token prefix (default 32) worth running once and
                reusing through its KV cache (see below); ``0`` turns reuse off.
``adapter``     a LoRA adapter folder (peft) to apply to the base model, e.g. one written by
                ``retrievo train lora-pointwise``: ``smollm2?adapter=/models/lora``. Its
                weights are merged into the base once at load time (same numbers as running
                the adapter beside it, no per-call overhead). An adapter that records the
                base and tokenizer it was trained with (``retrievo-adapter.json``) is refused
                on another base (:class:`~retrievo.errors.AdapterMismatchError`) or another
                tokenizer (:class:`~retrievo.errors.TokenizerMismatchError`); the backend's
                identity names the adapter's content hash, so cached responses never mix.
``threads``     torch's CPU threads (process-wide: ``torch.set_num_threads``); default: leave
                torch's choice. On a machine whose cores other processes share, 1 thread can
                be many times faster than 2 spinning against each other (measured: 20x
                for a SmolLM2 forward pass at a load average of 8 on 2 cores).

Prefix reuse: when a batch of scoring requests (``next_token_logprobs``,
``continuation_logprobs``) shares a token prefix — one prompt with many continuations, or
many prompts with one long instruction in front — the prefix runs once, its KV cache is
copied to every sequence, and only the remainders run. The numbers equal a full forward
pass to float tolerance (tested to 1e-4).

Attention: models load with ``sdpa`` attention; :meth:`segment_attention` switches the
model to ``eager`` for its one forward pass (sdpa never materialises the weights) and back.
The weights are reduced layer by layer as they are computed (forward hooks), so memory
stays one layer's ``heads x L x L`` rather than all layers at once.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from retrievo.errors import (AdapterMismatchError, ConfigError, ContextLengthError, LLMError, MissingExtraError,
                             ModelNotFoundError, TokenizerMismatchError)
from retrievo.llm.base import CAPABILITIES, LLM, Completion, GenerationParams, Prompt, Scored, as_prompt

DTYPES = ("auto", "fp32", "bf16")
DEQUANTISED_MARKER = "retrievo-dequantised.json"
#: what an adapter folder records about the base it was trained on (written by the trainer)
ADAPTER_MARKER = "retrievo-adapter.json"
_CHUNK = 1 << 20
_MARK = "\u2063RETRIEVO-CONTENT\u2063"  # placeholder that no chat template alters


def _require_torch():
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(f"the local LLM backend needs torch and transformers ({exc}); "
                                "install them with `pip install 'retrievo[llm]'`") from exc
    return torch


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def llm_cache_root() -> Path | None:
    """``<cache root>/llm`` (see :func:`retrievo.retrieve.dense.cache_root`), or None when
    on-disk caching is turned off."""
    from retrievo.retrieve.dense import cache_root

    root = cache_root()
    return None if root is None else root / "llm"


def dequantised_folder(sha256: str) -> Path | None:
    """Where the dequantised copy of the GGUF file with this content hash lives."""
    root = llm_cache_root()
    return None if root is None else root / "gguf" / sha256[:32]


def has_dequantised(sha256: str) -> bool:
    folder = dequantised_folder(sha256)
    return folder is not None and (folder / DEQUANTISED_MARKER).is_file()


def _native_bf16() -> bool:
    from retrievo.models.encoder import native_bf16

    return native_bf16()


_GGUF_PATCH_LOCK = threading.Lock()


@contextlib.contextmanager
def _gguf_parsed_once():
    """While transformers loads one GGUF file, parse it once instead of three times (config,
    tokenizer and weights each open their own ``GGUFReader``, and reading SmolLM2's
    49k-entry vocabulary takes seconds each time) and build gguf's tensor-name map once
    instead of once per tensor. Only memoises what the ``gguf`` package returns; restored
    afterwards."""
    try:
        import gguf
    except ImportError:
        yield
        return
    with _GGUF_PATCH_LOCK:
        reader_cls, name_map_fn = gguf.GGUFReader, getattr(gguf, "get_tensor_name_map", None)
        readers: dict[Any, Any] = {}
        maps: dict[Any, Any] = {}

        def reader(path, *args, **kwargs):
            key = (os.fspath(path), args, tuple(sorted(kwargs.items())))
            if key not in readers:
                readers[key] = reader_cls(path, *args, **kwargs)
            return readers[key]

        def name_map(*args, **kwargs):
            key = (args, tuple(sorted(kwargs.items())))
            if key not in maps:
                maps[key] = name_map_fn(*args, **kwargs)
            return maps[key]

        gguf.GGUFReader = reader
        if name_map_fn is not None:
            gguf.get_tensor_name_map = name_map
        try:
            yield
        finally:
            gguf.GGUFReader = reader_cls
            if name_map_fn is not None:
                gguf.get_tensor_name_map = name_map_fn


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """``sha256:<hex>`` of a tokenizer's vocabulary (token → id, added tokens included):
    equal for the same tokenizer wherever it was loaded from, different for another one."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return "sha256:" + hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def attach_adapter(model: Any, tokenizer: Any, adapter: str | os.PathLike, base_identity: str) -> tuple[Any, str]:
    """``model`` with the LoRA adapter in folder ``adapter`` merged into its weights, and
    the adapter's content hash. Checks first what the adapter recorded about its base
    (:data:`ADAPTER_MARKER`): another base model or tokenizer is refused."""
    from retrievo.models.spec import ModelSpec

    folder = Path(os.fspath(adapter)).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise ModelNotFoundError(f"{str(folder)!r} is not a LoRA adapter folder (no adapter_config.json)")
    marker = folder / ADAPTER_MARKER
    if marker.is_file():
        recorded = json.loads(marker.read_text(encoding="utf-8"))
        if recorded.get("tokenizer") and recorded["tokenizer"] != tokenizer_fingerprint(tokenizer):
            raise TokenizerMismatchError(f"the adapter {str(folder)!r} was trained with tokenizer "
                                         f"{recorded['tokenizer']}, this model's is {tokenizer_fingerprint(tokenizer)}")
        if recorded.get("base_model") and recorded["base_model"] != base_identity:
            raise AdapterMismatchError(f"the adapter {str(folder)!r} was trained on base model "
                                       f"{recorded['base_model']}, not on {base_identity}")
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise MissingExtraError(f"LoRA adapters need peft ({exc}); install it with `pip install 'retrievo[train]'`") \
            from exc
    try:
        merged = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    except (RuntimeError, ValueError, KeyError) as exc:  # shapes or module names of another architecture
        raise AdapterMismatchError(f"the adapter {str(folder)!r} does not fit this base model ({exc})") from exc
    return merged, ModelSpec(str(folder)).identity()


@dataclass
class TokenInfo:
    """One generated (or scored) token: its id, text, log-probability and the top
    alternatives (text, logprob) — what an OpenAI-style ``logprobs`` answer carries."""

    id: int
    text: str
    logprob: float | None
    top: list[tuple[str, float]]


class TransformersLLM(LLM):
    """A causal LM run in this process (CPU or CUDA).

    ``TransformersLLM("HuggingFaceTB/SmolLM2-135M-Instruct")``, ``TransformersLLM("/models/x")``
    or ``TransformersLLM("/path/model.gguf")``. See the module docstring for the options.
    ``gguf_sha256`` (the file's known hash, e.g. already verified by the loader) saves
    hashing the file again.
    """

    capabilities = frozenset(CAPABILITIES)

    def __init__(self, model: str | os.PathLike, *, revision: str | None = None, gguf_file: str | None = None,
                 dtype: str = "auto", device: str = "auto", context_length: int | None = None,
                 max_batch: int = 8, prefix_reuse_min: int = 32, trust_remote_code: bool = False,
                 threads: int | None = None, cache: Any = None, identity: str | None = None,
                 gguf_sha256: str | None = None, adapter: str | os.PathLike | None = None):
        torch = _require_torch()
        if threads is not None:
            if int(threads) < 1:
                raise ConfigError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(int(threads))
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if int(max_batch) < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
        self.device = self._pick_device(torch, device)
        self.dtype_name = self._pick_dtype(torch, dtype, self.device)
        torch_dtype = torch.float32 if self.dtype_name == "fp32" else torch.bfloat16
        self.max_batch = int(max_batch)
        self.prefix_reuse_min = int(prefix_reuse_min)
        #: how many batches reused a shared prefix's KV cache (for tests and diagnostics)
        self.prefix_reuse_count = 0
        #: seconds the weights took to load, and whether they came from the dequantised cache
        self.load_seconds = 0.0
        self.loaded_from_cache = False
        start = time.perf_counter()

        path = Path(os.fspath(model)).expanduser()
        if gguf_file is None and path.suffix.lower() == ".gguf":
            if not path.is_file():
                raise ModelNotFoundError(f"GGUF file {str(path)!r} does not exist")
            gguf_file, folder = path.name, path.parent
        else:
            folder = path if path.exists() else None
        if gguf_file is not None:
            gguf_path = (folder or path) / gguf_file
            if not gguf_path.is_file():
                raise ModelNotFoundError(f"GGUF file {str(gguf_path)!r} does not exist")
            sha = gguf_sha256 or file_sha256(gguf_path)
            mdl, tok = self._load_gguf(gguf_path, sha, torch_dtype)
            base_identity = f"gguf:sha256:{sha[:16]}"
        else:
            name = str(path) if folder is not None else os.fspath(model)
            mdl, tok = self._load_hf(name, revision, torch_dtype, trust_remote_code, local=folder is not None)
            marker = (folder / DEQUANTISED_MARKER) if folder is not None else None
            if marker is not None and marker.is_file():  # our own dequantised copy of a GGUF file
                self.loaded_from_cache = True
                base_identity = "gguf:sha256:" + json.loads(marker.read_text(encoding="utf-8"))["sha256"][:16]
            elif identity is None:
                from retrievo.models.spec import ModelSpec

                base_identity = ModelSpec(name, revision).identity()
            else:
                base_identity = identity
        #: the base weights' identity (without dtype or adapter): what an adapter records
        self.base_identity = base_identity
        if adapter is not None and str(adapter):
            mdl, adapter_identity = attach_adapter(mdl, tok, adapter, base_identity)
            base_identity = f"{base_identity}+lora:{adapter_identity}"
        self.load_seconds = time.perf_counter() - start
        self._setup(mdl, tok, context_length)
        LLM.__init__(self, identity or f"{base_identity}?dtype={self.dtype_name}", cache)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, *, identity: str = "in-memory", cache: Any = None,
                   context_length: int | None = None, max_batch: int = 8,
                   prefix_reuse_min: int = 32) -> TransformersLLM:
        """Wrap a model and tokenizer already in memory (tests, notebooks)."""
        torch = _require_torch()
        self = cls.__new__(cls)
        self.device = str(next(model.parameters()).device)
        self.dtype_name = "fp32" if next(model.parameters()).dtype == torch.float32 else "bf16"
        self.max_batch, self.prefix_reuse_min, self.prefix_reuse_count = int(max_batch), int(prefix_reuse_min), 0
        self.load_seconds, self.loaded_from_cache = 0.0, False
        self.base_identity = identity
        self._setup(model, tokenizer, context_length)
        LLM.__init__(self, identity, cache)
        return self

    @staticmethod
    def _pick_device(torch, device: str) -> str:
        if device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asked for, but no CUDA device is available")
        return device

    @staticmethod
    def _pick_dtype(torch, dtype: str, device: str) -> str:
        if dtype != "auto":
            return dtype
        if device.startswith("cuda"):
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if _native_bf16() else "fp32"

    def _load_gguf(self, gguf_path: Path, sha: str, torch_dtype):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = dequantised_folder(sha)
        if folder is not None and (folder / DEQUANTISED_MARKER).is_file():
            try:
                tok = AutoTokenizer.from_pretrained(folder)
                mdl = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype, attn_implementation="sdpa")
                self.loaded_from_cache = True
                return mdl, tok
            except (OSError, ValueError):  # a damaged copy: dequantise again below
                shutil.rmtree(folder, ignore_errors=True)
        try:
            with _gguf_parsed_once():
                tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
                mdl = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                           dtype=_require_torch().float32,
                                                           attn_implementation="sdpa")
        except ImportError as exc:
            raise MissingExtraError(f"loading GGUF files needs the gguf and accelerate packages ({exc}); "
                                    "install them with `pip install 'retrievo[llm]'`") from exc
        mdl.hf_quantizer = None
        if hasattr(mdl.config, "quantization_config"):
            del mdl.config.quantization_config
        for attr in ("is_quantized", "quantization_method"):
            if getattr(mdl, attr, None):
                try:
                    setattr(mdl, attr, None if attr == "quantization_method" else False)
                except AttributeError:
                    pass
        if folder is not None:
            self._save_dequantised(mdl, tok, folder, gguf_path, sha)
        return mdl.to(torch_dtype), tok

    @staticmethod
    def _save_dequantised(mdl, tok, folder: Path, gguf_path: Path, sha: str) -> None:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            mdl.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            (tmp / DEQUANTISED_MARKER).write_text(json.dumps(
                {"source": gguf_path.name, "sha256": sha, "dtype": "float32"}, indent=1), encoding="utf-8")
            try:
                os.rename(tmp, folder)
            except OSError:  # another process published it first: keep theirs
                pass
        except OSError:
            pass  # a read-only or full cache: the model still works, only the next load is slow
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def _load_hf(name: str, revision: str | None, torch_dtype, trust_remote_code: bool, local: bool):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
        try:
            tok = AutoTokenizer.from_pretrained(name, **kwargs)
            try:
                mdl = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype, attn_implementation="sdpa",
                                                           **kwargs)
            except ValueError as exc:
                if "sdpa" not in str(exc).lower():
                    raise
                mdl = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype, **kwargs)
        except (OSError, ValueError, KeyError) as exc:
            where = (f"the local folder {name!r}" if local else
                     f"{name!r} on the Hugging Face hub" + (" (HF_HUB_OFFLINE is set: no download)"
                                                           if os.environ.get("HF_HUB_OFFLINE") == "1" else ""))
            raise ModelNotFoundError(f"could not load a causal language model from {where}: {exc}") from exc
        return mdl, tok

    def _setup(self, mdl, tok, context_length: int | None) -> None:
        torch = _require_torch()
        mdl.eval()
        mdl.requires_grad_(False)
        if str(next(mdl.parameters()).device) != self.device:
            mdl = mdl.to(self.device)
        self.model, self.tokenizer = mdl, tok
        self._torch = torch
        self._lock = threading.RLock()
        cfg = mdl.config
        get_text = getattr(cfg, "get_text_config", None)
        text_cfg = get_text() if callable(get_text) else cfg
        ctx = context_length or next((getattr(text_cfg, a) for a in ("max_position_embeddings", "n_positions",
                                                                      "max_sequence_length", "seq_length")
                                      if isinstance(getattr(text_cfg, a, None), int)), 2048)
        self.context_length = int(ctx)
        self._base = getattr(mdl, mdl.base_model_prefix, None) or mdl.get_decoder()
        self._head = mdl.get_output_embeddings()
        self._softcap = getattr(text_cfg, "final_logit_softcapping", None)
        self._logit_scale = getattr(text_cfg, "logit_scale", None)
        self._head_fp32: Any = None
        params = inspect.signature(self._base.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.pad_id = int(pad if pad is not None else 0)
        eos: set[int] = set()
        for source in (tok.eos_token_id, getattr(getattr(mdl, "generation_config", None), "eos_token_id", None)):
            if isinstance(source, int):
                eos.add(source)
            elif isinstance(source, (list, tuple)):
                eos.update(int(x) for x in source)
        self.eos_ids = frozenset(eos)
        self._first_token_cached = lru_cache(maxsize=65536)(self._first_token_after_uncached)

    # ------------------------------------------------------------------ text and tokens
    def render(self, prompt: Prompt | str) -> str:
        """The exact text the model reads for ``prompt``: the chat template applied
        (generation prompt included) and the assistant prefix appended; a raw prompt as is."""
        p = as_prompt(prompt)
        if p.is_raw:
            return p.raw_text or ""
        msgs = [{"role": m.role, "content": m.content} for m in p.messages]
        return self._apply_template(msgs) + p.assistant_prefix

    def _apply_template(self, msgs: list[dict[str, str]]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        # no template (a base model): plain paragraphs, then the reply
        return "".join(f"{m['content']}\n\n" for m in msgs)

    def encode(self, prompt: Prompt | str) -> list[int]:
        """Token ids of a rendered prompt. Chat prompts carry their special tokens in the
        template's text, so none are added; raw prompts get the tokenizer's usual ones
        (e.g. a BOS token), as a completion server would."""
        p = as_prompt(prompt)
        return list(self.tokenizer(self.render(p), add_special_tokens=p.is_raw)["input_ids"])

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def truncate(self, text: str, max_tokens: int) -> str:
        if max_tokens <= 0:
            return ""
        if not getattr(self.tokenizer, "is_fast", False):
            return super().truncate(text, max_tokens)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        if len(offsets) <= max_tokens:
            return text
        n = max_tokens
        while n > 0:  # cut where token n starts; re-tokenising the cut may merge differently
            cut = text[:offsets[n][0]].rstrip()
            if self.count_tokens(cut) <= max_tokens:
                return cut
            n -= 1
        return ""

    def prompt_tokens(self, prompt: Prompt | str) -> int:
        return len(self.encode(prompt))

    def chat_frame(self, system: str | None = None) -> tuple[str, str]:
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": _MARK}]
        text = self._apply_template(msgs)
        before, _, after = text.partition(_MARK)
        return before, after

    def first_token(self, text: str) -> Any:
        """The id of ``text``'s first token as the model generates it at the start of an
        assistant reply (after the template's generation prompt)."""
        return self._first_token_after(self.chat_frame()[1], text)

    def _first_token_after(self, context: str, text: str) -> int:
        return self._first_token_cached(context[-256:], text)

    def _first_token_after_uncached(self, context: str, text: str) -> int:
        """First token of ``text`` when it follows ``context``: tokenise both together and
        take the token after the context's own tokens (so a SentencePiece model's
        word-initial marker, or a byte-level BPE's leading space, is what the model would
        really produce); if the two merge across the boundary, ``text`` tokenised alone."""
        if not text:
            raise ConfigError("a candidate must not be empty")
        tok = self.tokenizer
        ctx_ids = tok(context, add_special_tokens=False)["input_ids"] if context else []
        full = tok(context + text, add_special_tokens=False)["input_ids"]
        if len(full) > len(ctx_ids) and full[:len(ctx_ids)] == ctx_ids:
            return int(full[len(ctx_ids)])
        alone = tok(text, add_special_tokens=False)["input_ids"]
        return int(alone[0])

    def _continuation_ids(self, rendered: str, prompt_ids: list[int], continuation: str,
                          add_special: bool) -> list[int]:
        """Tokens of ``continuation`` after a prompt: tokenise prompt + continuation together
        and keep what follows the prompt's tokens; where the two merge across the boundary,
        the continuation tokenised alone (after the same context)."""
        if not continuation:
            return []
        full = self.tokenizer(rendered + continuation, add_special_tokens=add_special)["input_ids"]
        if len(full) > len(prompt_ids) and full[:len(prompt_ids)] == prompt_ids:
            return list(full[len(prompt_ids):])
        anchor = rendered[-256:]
        a_ids = self.tokenizer(anchor, add_special_tokens=False)["input_ids"]
        both = self.tokenizer(anchor + continuation, add_special_tokens=False)["input_ids"]
        if len(both) > len(a_ids) and both[:len(a_ids)] == a_ids:
            return list(both[len(a_ids):])
        return list(self.tokenizer(continuation, add_special_tokens=False)["input_ids"])

    def token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([int(token_id)])

    # ------------------------------------------------------------------ forward passes
    def _forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, use_cache=False):
        """Hidden states of the base model (no vocabulary projection) and its KV cache."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
                  "use_cache": use_cache}
        if cache is not None:
            kwargs[self._cache_kw] = cache
        out = self._base(**kwargs)
        new_cache = out.cache if self._cache_kw == "cache" else getattr(out, "past_key_values", None)
        return out.last_hidden_state, new_cache

    def _log_softmax(self, hidden):
        """Log-probabilities over the vocabulary from final hidden states, in float32."""
        torch = self._torch
        if self._head_fp32 is None:
            w = self._head.weight
            b = getattr(self._head, "bias", None)
            self._head_fp32 = (w.float() if w.dtype != torch.float32 else w,
                               None if b is None else b.float())
        w, b = self._head_fp32
        with torch.inference_mode():
            logits = hidden.float() @ w.T
            if b is not None:
                logits = logits + b
            if self._logit_scale:
                logits = logits * float(self._logit_scale)
            if self._softcap:
                logits = torch.tanh(logits / self._softcap) * self._softcap
            return torch.log_softmax(logits, dim=-1)

    def _check_length(self, n: int, what: str = "prompt") -> None:
        if n > self.context_length:
            raise ContextLengthError(f"the {what} has {n} tokens, more than the model's context of "
                                     f"{self.context_length} tokens")

    def _hidden_at(self, seqs: list[list[int]], wants: list[list[int]]):
        """For each sequence, the final hidden states at the wanted positions (position t
        predicts token t+1), as a list of ``(len(wants[i]), hidden)`` tensors. Sequences
        sharing a long enough token prefix run it once and reuse its KV cache."""
        torch = self._torch
        for s in seqs:
            self._check_length(len(s))
        prefix = 0
        if len(seqs) > 1 and self.prefix_reuse_min > 0:
            first = seqs[0]
            prefix = min(len(s) for s in seqs)
            for s in seqs[1:]:
                i = 0
                while i < prefix and s[i] == first[i]:
                    i += 1
                prefix = i
            lowest = min((min(w) for w in wants if w), default=0)
            prefix = min(prefix, lowest + 1)
            if prefix < self.prefix_reuse_min:
                prefix = 0
        dev = self.device
        out: list[Any] = [None] * len(seqs)
        with torch.inference_mode():
            cache, prefix_last = None, None
            if prefix:
                self.prefix_reuse_count += 1
                ids = torch.tensor([seqs[0][:prefix]], device=dev)
                hidden, cache = self._forward(ids, attention_mask=torch.ones_like(ids), use_cache=True)
                prefix_last = hidden[0, -1]
            rows = [i for i, s in enumerate(seqs) if len(s) > prefix]
            hidden_rows = None
            if rows:
                longest = max(len(seqs[i]) - prefix for i in rows)
                ids = torch.full((len(rows), longest), self.pad_id, dtype=torch.long, device=dev)
                mask = torch.zeros((len(rows), prefix + longest), dtype=torch.long, device=dev)
                mask[:, :prefix] = 1
                for r, i in enumerate(rows):  # right padding: a sequence's own positions are untouched
                    rest = seqs[i][prefix:]
                    ids[r, :len(rest)] = torch.tensor(rest, device=dev)
                    mask[r, prefix:prefix + len(rest)] = 1
                pos = (torch.arange(longest, device=dev) + prefix).unsqueeze(0).expand(len(rows), -1)
                run_cache = None
                if cache is not None:
                    run_cache = copy.deepcopy(cache)
                    if len(rows) > 1:
                        run_cache.batch_repeat_interleave(len(rows))
                hidden_rows, _ = self._forward(ids, attention_mask=mask, position_ids=pos, cache=run_cache,
                                               use_cache=run_cache is not None)
            row_of = {i: r for r, i in enumerate(rows)}
            for i, w in enumerate(wants):
                vecs = []
                for t in w:
                    if t == prefix - 1:
                        vecs.append(prefix_last)
                    else:
                        vecs.append(hidden_rows[row_of[i], t - prefix])
                out[i] = torch.stack(vecs) if vecs else None
        return out

    # ------------------------------------------------------------------ capabilities
    def _next_token_logprobs(self, prompts: list[Prompt], candidates: list[str]) -> Scored:
        torch = self._torch
        seqs, cand_ids = [], []
        for p in prompts:
            rendered = self.render(p)
            seqs.append(list(self.tokenizer(rendered, add_special_tokens=p.is_raw)["input_ids"]))
            cand_ids.append([self._first_token_after(rendered, c) for c in candidates])
        with self._lock:
            hidden = self._hidden_at(seqs, [[len(s) - 1] for s in seqs])
            with torch.inference_mode():
                lp = self._log_softmax(torch.cat(hidden))
        idx = torch.tensor(cand_ids, device=lp.device)
        values = torch.gather(lp, 1, idx).double().cpu().numpy()
        return Scored(values, sum(len(s) for s in seqs))

    def _continuation_logprobs(self, prompts: list[Prompt], continuations: list[str]) -> Scored:
        torch = self._torch
        seqs, wants, targets = [], [], []
        for p, c in zip(prompts, continuations):
            rendered = self.render(p)
            p_ids = list(self.tokenizer(rendered, add_special_tokens=p.is_raw)["input_ids"])
            c_ids = self._continuation_ids(rendered, p_ids, c, p.is_raw)
            if not p_ids:
                raise ConfigError("continuation_logprobs needs a non-empty prompt")
            seqs.append(p_ids + c_ids)
            wants.append(list(range(len(p_ids) - 1, len(p_ids) + len(c_ids) - 1)))
            targets.append(c_ids)
        values = np.zeros(len(seqs), dtype=np.float64)
        with self._lock:
            hidden = self._hidden_at(seqs, wants)
            with torch.inference_mode():
                for i, h in enumerate(hidden):
                    if h is None:
                        continue
                    lp = self._log_softmax(h)
                    tgt = torch.tensor(targets[i], device=lp.device)
                    values[i] = float(lp.gather(1, tgt[:, None]).sum().double())
        return Scored(values, sum(len(s) for s in seqs))

    def token_logprobs(self, ids: list[int], top: int = 0) -> list[TokenInfo]:
        """Per token of ``ids``: its log-probability given the tokens before it (None for
        the first) and the ``top`` most likely alternatives at that position — what a
        completion server echoes as prompt logprobs. Not cached, not charged."""
        torch = self._torch
        if not ids:
            return []
        infos = [TokenInfo(int(ids[0]), self.token_text(ids[0]), None, [])]
        if len(ids) == 1:
            return infos
        with self._lock:
            hidden = self._hidden_at([list(ids)], [list(range(len(ids) - 1))])[0]
            with torch.inference_mode():
                for start in range(0, hidden.shape[0], 256):  # bounded memory for big vocabularies
                    lp = self._log_softmax(hidden[start:start + 256])
                    for j in range(lp.shape[0]):
                        t = start + j
                        nxt = int(ids[t + 1])
                        infos.append(TokenInfo(nxt, self.token_text(nxt), float(lp[j, nxt]), self._top(lp[j], top)))
        return infos

    def _top(self, lp_row, k: int) -> list[tuple[str, float]]:
        if k <= 0:
            return []
        vals, idx = self._torch.topk(lp_row, k)
        return [(self.token_text(int(i)), float(v)) for v, i in zip(vals.tolist(), idx.tolist())]

    def _generate(self, prompts: list[Prompt], params: GenerationParams, top_logprobs: int) -> list[Completion]:
        return [c for c, _ in self.generate_detailed(prompts, params, top_logprobs)]

    def generate_detailed(self, prompts: Sequence[Prompt | str], params: GenerationParams | None = None,
                          top_logprobs: int = 0) -> list[tuple[Completion, list[TokenInfo]]]:
        """Generate, returning each completion with its tokens (id, text, logprob, top
        alternatives). Not cached, not charged (the server and :meth:`generate` use it)."""
        params = params or GenerationParams()
        ps = [as_prompt(p) for p in prompts]
        seqs = [self.encode(p) for p in ps]
        for s in seqs:
            self._check_length(len(s))
            if not s:
                raise ConfigError("cannot generate from an empty prompt")
        out: list[tuple[Completion, list[TokenInfo]]] = []
        with self._lock:
            for start in range(0, len(seqs), self.max_batch):
                out.extend(self._generate_batch(seqs[start:start + self.max_batch], params, top_logprobs))
        return out

    def _generate_batch(self, seqs: list[list[int]], params: GenerationParams, top_k: int):
        torch = self._torch
        dev = self.device
        n, longest = len(seqs), max(len(s) for s in seqs)
        max_new = min(params.max_tokens, self.context_length - longest)
        if max_new < 1:
            raise ContextLengthError(f"the prompt has {longest} tokens: no room to generate within the "
                                     f"model's context of {self.context_length} tokens")
        ids = torch.full((n, longest), self.pad_id, dtype=torch.long, device=dev)
        mask = torch.zeros((n, longest), dtype=torch.long, device=dev)
        for i, s in enumerate(seqs):  # left padding: every row's next token is at the last column
            ids[i, longest - len(s):] = torch.tensor(s, device=dev)
            mask[i, longest - len(s):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        gen = None
        if params.temperature > 0 and params.seed is not None:
            gen = torch.Generator(device=dev).manual_seed(int(params.seed))
        tokens: list[list[TokenInfo]] = [[] for _ in range(n)]
        finish = ["length"] * n
        texts = [""] * n
        steps = [0] * n  # tokens each row generated (an end-of-sequence token counts)
        active = list(range(n))
        cache = None
        with torch.inference_mode():
            cur_ids, cur_pos = ids, pos
            for _step in range(max_new):
                hidden, cache = self._forward(cur_ids, attention_mask=mask, position_ids=cur_pos, cache=cache,
                                              use_cache=True)
                lp = self._log_softmax(hidden[:, -1])
                if params.temperature == 0:
                    nxt = lp.argmax(-1)
                else:
                    nxt = self._sample(lp, params, gen)
                still = []
                for i in active:
                    t = int(nxt[i])
                    steps[i] += 1
                    if t in self.eos_ids:
                        finish[i] = "stop"
                        continue
                    tokens[i].append(TokenInfo(t, self.token_text(t), float(lp[i, t]), self._top(lp[i], top_k)))
                    text = self.tokenizer.decode([x.id for x in tokens[i]], skip_special_tokens=True)
                    cut = min((text.find(s) for s in params.stop if s and s in text), default=-1)
                    if cut >= 0:
                        texts[i], finish[i] = text[:cut], "stop"
                        continue
                    texts[i] = text
                    still.append(i)
                active = still
                if not active:
                    break
                nxt = nxt.clone()
                for i in range(n):
                    if i not in active:
                        nxt[i] = self.pad_id
                cur_ids = nxt[:, None]
                mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=dev)], dim=1)
                cur_pos = cur_pos[:, -1:] + 1
        results = []
        for i in range(n):
            top = tuple({t: v for t, v in info.top} for info in tokens[i]) if top_k else ()
            results.append((Completion(texts[i], len(seqs[i]), steps[i], finish[i], top), tokens[i]))
        return results

    def _stream(self, prompt: Prompt, params: GenerationParams, holder: list[Completion]):
        """Greedy or sampled decoding of one prompt, yielding each newly decoded piece of
        text as its token is generated (the same decoding as :meth:`_generate_batch`, one
        row, so the pieces concatenate to what ``generate`` returns). Text that could still
        become a stop string is held back until it cannot."""
        torch = self._torch
        seq = self.encode(prompt)
        if not seq:
            raise ConfigError("cannot generate from an empty prompt")
        self._check_length(len(seq))
        max_new = min(params.max_tokens, self.context_length - len(seq))
        if max_new < 1:
            raise ContextLengthError(f"the prompt has {len(seq)} tokens: no room to generate within the "
                                     f"model's context of {self.context_length} tokens")
        gen = None
        if params.temperature > 0 and params.seed is not None:
            gen = torch.Generator(device=self.device).manual_seed(int(params.seed))
        hold = max((len(s) - 1 for s in params.stop if s), default=0)
        ids: list[int] = []
        text, sent, steps, finish = "", 0, 0, "length"
        with self._lock, torch.inference_mode():
            cur = torch.tensor([seq], dtype=torch.long, device=self.device)
            pos = torch.arange(len(seq), device=self.device)[None, :]
            mask = torch.ones_like(cur)
            cache = None
            for _step in range(max_new):
                hidden, cache = self._forward(cur, attention_mask=mask, position_ids=pos, cache=cache,
                                              use_cache=True)
                lp = self._log_softmax(hidden[:, -1])
                nxt = lp.argmax(-1) if params.temperature == 0 else self._sample(lp, params, gen)
                t = int(nxt[0])
                steps += 1
                if t in self.eos_ids:
                    finish = "stop"
                    break
                ids.append(t)
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                cut = min((text.find(s) for s in params.stop if s and s in text), default=-1)
                if cut >= 0:
                    text, finish = text[:cut], "stop"
                    break
                safe = len(text) - hold
                if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the rest
                    safe = min(safe, len(text) - 1)
                if safe > sent:
                    yield text[sent:safe]
                    sent = safe
                cur = nxt[:, None]
                mask = torch.cat([mask, torch.ones((1, 1), dtype=mask.dtype, device=self.device)], dim=1)
                pos = pos[:, -1:] + 1
        if len(text) > sent:
            yield text[sent:]
        holder.append(Completion(text, len(seq), steps, finish))

    def _sample(self, lp, params: GenerationParams, gen):
        torch = self._torch
        logits = lp / params.temperature
        if params.top_p < 1:
            sorted_l, order = torch.sort(logits, descending=True, dim=-1)
            probs = torch.softmax(sorted_l, dim=-1)
            keep = probs.cumsum(-1) - probs < params.top_p  # the smallest set reaching top_p
            sorted_l = sorted_l.masked_fill(~keep, float("-inf"))
            logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_l)
        probs = torch.softmax(logits, dim=-1)
        return torch.multinomial(probs, 1, generator=gen).squeeze(-1)

    def _segment_attention(self, segments: list[str], query_segment: int) -> Scored:
        torch = self._torch
        pieces = [list(self.tokenizer(s, add_special_tokens=False)["input_ids"]) if s else [] for s in segments]
        if not pieces[query_segment]:
            raise ConfigError("the query segment has no tokens")
        ids = [t for p in pieces for t in p]
        self._check_length(len(ids))
        labels = torch.tensor([j for j, p in enumerate(pieces) for _ in p], device=self.device)
        q_start = sum(len(p) for p in pieces[:query_segment])
        q_end = q_start + len(pieces[query_segment])
        per_layer: dict[int, Any] = {}

        def hook_for(layer: int):
            def hook(_module, _args, output):
                weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
                if weights is None:
                    raise LLMError("the attention module returned no weights (eager attention needed)")
                # (batch, heads, L, L): mean over heads, sum over query tokens, then per segment
                paid = weights[0].float().mean(0)[q_start:q_end].sum(0)
                sums = torch.zeros(len(segments), dtype=torch.float64, device=paid.device)
                sums.index_add_(0, labels, paid.double())
                per_layer[layer] = sums.cpu()
            return hook

        attn_modules = [m for m in self._base.modules()
                        if type(m).__name__.endswith("Attention") and hasattr(m, "layer_idx")]
        if not attn_modules:
            raise LLMError(f"found no attention layers in {type(self.model).__name__}")
        with self._lock:
            previous = self.model.config._attn_implementation
            handles = []
            try:
                if previous != "eager":
                    self.model.set_attn_implementation("eager")
                handles = [m.register_forward_hook(hook_for(k)) for k, m in enumerate(attn_modules)]
                with torch.inference_mode():
                    t = torch.tensor([ids], device=self.device)
                    self._forward(t, attention_mask=torch.ones_like(t))
            finally:
                for h in handles:
                    h.remove()
                if previous != "eager":
                    self.model.set_attn_implementation(previous)
        values = np.stack([per_layer[k].numpy() for k in range(len(attn_modules))])
        return Scored(values, len(ids))

    def _context_attention(self, context: list[str], queries: list[str]) -> tuple[list[list[np.ndarray]], int]:
        from retrievo.llm.attention import context_attention

        n_ctx = sum(self.count_tokens(c) for c in context)
        self._check_length(n_ctx + max(self.count_tokens(q) for q in queries))
        with self._lock:
            return context_attention(self.model, self.tokenizer, context, queries, base=self._base)


__all__ = ["DTYPES", "TokenInfo", "TransformersLLM", "dequantised_folder", "file_sha256", "has_dequantised",
           "llm_cache_root"]
