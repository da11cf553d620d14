"""ONNX Runtime backend for :class:`~retrievo.models.encoder.Encoder`, optionally int8.

Why: on CPUs without native bf16 (the AVX2 machines this project runs on) the only
precision trick left to PyTorch is none, and fp32 PyTorch is the slow path. ONNX Runtime
with *dynamic* int8 quantisation of the weight matrix products roughly doubles document
throughput there (see BENCHMARKS.md / the encoder docs for the measured numbers) while
the vectors stay within cosine ~0.99 of fp32.

The recipe, chosen by measurement on all-MiniLM-L6-v2 (500 SciFact documents):

* export the transformer (not pooling: pooling and normalisation stay in
  :class:`Encoder` so both backends pool identically) with ``torch.onnx.export``, batch
  and sequence axes dynamic;
* for BERT-family models, fuse LayerNorm/GELU/bias with ONNX Runtime's transformer
  optimiser (numerically exact to ~1e-7; it makes the int8 graph ~30% faster because the
  fused ops sit between the quantised products);
* ``quantize_dynamic`` on ``MatMul`` only, int8 weights **per channel** with
  **reduce_range** (7-bit weights). Per-tensor weights lost far too much (cosine to fp32
  as low as 0.88); without reduce_range the u8*s8 kernels of AVX2 CPUs (no VNNI) can
  saturate. Attention score products (activation x activation) stay fp32 — only
  products against constant weights are quantised.

The exported file is built once per model content + options + library versions and kept
under ``$RETRIEVO_CACHE_DIR/models/onnx/<key>/`` (default ``~/.cache/retrievo``;
``RETRIEVO_CACHE_DIR=none`` builds in a temporary folder each time). A build happens in a
private temporary folder that is renamed into place only when complete, so a crash or a
concurrent build never leaves a half-written model where a later run would load it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrievo.errors import ConfigError, MissingExtraError

BACKENDS = ("torch", "onnx")
QUANTIZE = ("none", "int8")
#: bump when the export / optimisation / quantisation steps change (invalidates cached models)
RECIPE = 1
CACHE_ENV = "RETRIEVO_CACHE_DIR"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # tokenizer outputs an exported graph takes
_FUSABLE = {"bert", "roberta", "xlm-roberta", "camembert", "electra"}  # ORT's "bert" optimiser patterns
_EXTERNAL_DATA_BYTES = 1_500_000_000  # protobuf caps a single file at 2 GiB


def require_onnxruntime():
    """The ``onnxruntime`` module, or a :class:`MissingExtraError` that says how to get it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingExtraError(f"the onnx encoder backend needs onnxruntime and onnx ({exc}); "
                                "install them with `pip install 'retrievo[dense]'`") from exc
    return onnxruntime


def models_cache_root() -> Path | None:
    """Where exported models are kept (None: ``RETRIEVO_CACHE_DIR=none``, build per process).
    Same variable and default as the dense vector cache, so one setting moves both."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        if value.strip().lower() in ("", "none", "off"):
            return None
        return Path(value) / "models" / "onnx"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "retrievo" / "models" / "onnx"


def default_threads() -> int:
    """Cores this process may run on (ONNX Runtime's own default counts the machine's)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, n)


def export_key(model_identity: str, quantize: str, input_names: Sequence[str]) -> dict[str, Any]:
    """What a cached export depends on: the weights' content, the options and the versions
    of the libraries that wrote it (a new exporter may write a different graph)."""
    import onnxruntime
    import torch

    return {"model": model_identity, "quantize": quantize, "inputs": list(input_names), "recipe": RECIPE,
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}


class OnnxModel:
    """A transformer exported to ONNX (cached on disk) and its ONNX Runtime session.

    ``run(batch)`` takes the tokenizer's numpy arrays and returns the last hidden state,
    float32 ``[batch, tokens, hidden]``. ``exported`` says whether this instance had to
    build the file (False when it was found in the cache).
    """

    def __init__(self, model_identity: str, input_names: Sequence[str], load_torch_model: Callable[[], Any],
                 *, quantize: str = "none", model_type: str = "", threads: int | None = None):
        ort = require_onnxruntime()
        if quantize not in QUANTIZE:
            raise ConfigError(f"quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
        unknown = set(input_names) - set(INPUTS)
        if unknown or not {"input_ids", "attention_mask"} <= set(input_names):
            raise ConfigError(f"the onnx backend exports models taking {', '.join(INPUTS)}; this tokenizer gives "
                              f"{', '.join(input_names)}: use backend=torch")
        self.quantize = quantize
        self.input_names = tuple(n for n in INPUTS if n in input_names)  # the exported signature's order
        self.threads = int(threads) if threads is not None else default_threads()
        if self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        key = export_key(model_identity, quantize, self.input_names)
        self.key = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        self.exported = False
        root = models_cache_root()
        if root is None:  # no cache: build privately, load, forget
            with tempfile.TemporaryDirectory(prefix="retrievo-onnx-") as tmp:
                path = self._build(Path(tmp) / "model", key, load_torch_model, model_type)
                self.session = self._session(ort, path)
            self.path = None
            return
        folder = root / self.key
        if not (folder / "meta.json").exists():
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f"{self.key}.tmp-", dir=root))
            try:
                self._build(tmp, key, load_torch_model, model_type)
                os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is readable like the vector cache
                try:
                    os.rename(tmp, folder)  # atomic; fails if another process finished first
                except OSError:
                    if not (folder / "meta.json").exists():
                        raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        self.path = folder / "model.onnx"
        self.session = self._session(ort, self.path)

    def _session(self, ort, path: Path):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1  # one graph at a time; the parallelism is inside the products
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own untyped errors for bad files
            raise ConfigError(f"ONNX Runtime cannot load the exported model {path}: {exc}. Delete the folder "
                              "to rebuild it") from exc

    def _build(self, folder: Path, key: dict[str, Any], load_torch_model: Callable[[], Any],
               model_type: str) -> Path:
        """Export, fuse, quantise into ``folder``; ``meta.json`` is written last (its
        presence marks a complete build)."""
        self.exported = True
        folder.mkdir(parents=True, exist_ok=True)
        raw = folder / "export" / "model.onnx"
        raw.parent.mkdir()
        _export(load_torch_model(), self.input_names, raw)
        big = sum(p.stat().st_size for p in raw.parent.iterdir()) > _EXTERNAL_DATA_BYTES
        final = folder / "model.onnx"
        # the fused graph goes straight to its final name when nothing follows it
        fused = final if self.quantize == "none" else folder / "fused.onnx"
        current = fused if model_type in _FUSABLE and _fuse(raw, fused, big) else raw
        if self.quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(current), str(final), op_types_to_quantize=["MatMul"], per_channel=True,
                             reduce_range=True, weight_type=QuantType.QInt8, use_external_data_format=big)
        elif current is raw:  # re-save so any external weights sit beside model.onnx under its name
            import onnx

            onnx.save_model(onnx.load(str(raw)), str(final), save_as_external_data=big,
                            location="model.onnx.data" if big else None)
        shutil.rmtree(raw.parent, ignore_errors=True)
        for leftover in folder.glob("fused.onnx*"):
            leftover.unlink()
        (folder / "meta.json").write_text(json.dumps(key, indent=1, sort_keys=True), encoding="utf-8")
        return final

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        feeds = {name: np.asarray(batch[name], dtype=np.int64) for name in self.input_names}
        return self.session.run(None, feeds)[0].astype(np.float32, copy=False)


def _export(model: Any, input_names: Sequence[str], path: Path) -> None:
    """``torch.onnx.export`` of ``model(**inputs).last_hidden_state`` with inputs taken
    positionally in ``input_names`` order (the ONNX input names must line up with them)."""
    try:
        import torch
    except ImportError as exc:
        raise MissingExtraError(f"exporting a model to ONNX needs torch ({exc}); "
                                "install it with `pip install 'retrievo[dense]'`") from exc

    class _Hidden(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state

    wrapper = _Hidden(model).eval()
    example = tuple(torch.tensor([[1, 2, 3, 4], [1, 2, 3, 0]], dtype=torch.long)
                    if name == "input_ids" else
                    torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.long) if name == "attention_mask" else
                    torch.zeros((2, 4), dtype=torch.long) for name in input_names)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("tokens")
    try:
        # the exporter prints progress on stdout, where `retrievo ... --json` writes its result
        with contextlib.redirect_stdout(sys.stderr):
            torch.onnx.export(wrapper, example, str(path), input_names=list(input_names),
                              output_names=["last_hidden_state"],
                              dynamic_shapes={name: {0: batch, 1: seq} for name in input_names},
                              dynamo=True, optimize=True, external_data=True, verbose=False)
    except Exception as exc:  # the exporter raises many kinds; all mean "not exportable"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(f"cannot export the model to ONNX ({type(exc).__name__}: {first}); "
                          "use backend=torch for this model") from exc


def _fuse(src: Path, dst: Path, big: bool) -> bool:
    """ONNX Runtime's BERT graph fusions (False, and the unfused graph is used, when the
    optimiser does not recognise the graph)."""
    try:
        from onnxruntime.transformers import optimizer

        fused = optimizer.optimize_model(str(src), model_type="bert", num_heads=0, hidden_size=0, opt_level=1)
        fused.save_model_to_file(str(dst), use_external_data_format=big)
    except Exception:  # noqa: BLE001 - fusion is an optimisation; any failure falls back to the plain graph
        return False
    return True


__all__ = [
    "BACKENDS",
    "QUANTIZE",
    "RECIPE",
    "OnnxModel",
    "default_threads",
    "export_key",
    "models_cache_root",
    "require_onnxruntime",
]
