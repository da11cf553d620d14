"""The encoder's ONNX Runtime backend: same vectors as PyTorch in fp32, close ones in int8,
the export cached on disk and reused, identities that keep backends apart, typed errors."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from retrievo.data import PydocCorpus  # noqa: E402
from retrievo.errors import ConfigError, MissingExtraError  # noqa: E402

pytest.importorskip("torch", reason="the dense extra (torch) is not installed")
pytest.importorskip("onnxruntime", reason="the dense extra (onnxruntime) is not installed")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A private export cache for this module (exports happen once per option set here)."""
    folder = tmp_path_factory.mktemp("retrievo-cache")
    old = os.environ.get("RETRIEVO_CACHE_DIR")
    os.environ["RETRIEVO_CACHE_DIR"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("RETRIEVO_CACHE_DIR", None)
    else:
        os.environ["RETRIEVO_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def texts():
    docs = [d.contents for d in itertools.islice(PydocCorpus().iter_documents(), 10)]
    return docs + ["short", "a somewhat longer query about exceptions", "x"]


@pytest.fixture(scope="module")
def torch_encoder():
    from retrievo.models.encoder import Encoder

    return Encoder(None, dtype="fp32")


@pytest.fixture(scope="module")
def onnx_fp32(cache_dir):
    from retrievo.models.encoder import Encoder

    return Encoder(None, backend="onnx")


@pytest.fixture(scope="module")
def onnx_int8(cache_dir):
    from retrievo.models.encoder import Encoder

    return Encoder(None, backend="onnx", quantize="int8")


def test_onnx_fp32_matches_torch(torch_encoder, onnx_fp32, texts):
    ref = torch_encoder.encode_documents(texts)
    ours = onnx_fp32.encode_documents(texts)
    assert ours.dtype == np.float32 and ours.shape == ref.shape == (len(texts), 384)
    np.testing.assert_allclose(ours, ref, atol=1e-5)  # measured: 2e-7
    assert onnx_fp32.pooling == "mean" and onnx_fp32.normalize and onnx_fp32.max_length == 256
    # other batch sizes pad differently; the mask must keep the vectors the same
    np.testing.assert_allclose(onnx_fp32.encode(texts[:5]), ref[:5], atol=1e-5)


def test_onnx_int8_close_to_fp32(torch_encoder, onnx_int8, texts):
    ref = torch_encoder.encode_documents(texts)
    ours = onnx_int8.encode_documents(texts)
    cos = (ours * ref).sum(axis=1)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # measured on these texts: the 10 passages 0.990-0.995, the one-word texts the worst
    # ("x": 0.980, "short": 0.988); on 500 SciFact abstracts min 0.990, mean 0.9936
    assert cos[:10].min() >= 0.985, cos
    assert cos.min() >= 0.97, cos
    assert cos.mean() >= 0.985, cos
    # quantised still ranks like fp32: each text's nearest neighbour among the others agrees
    assert (np.argsort(-(ours @ ref.T), axis=1)[:, 0] == np.arange(len(texts))).all()


def test_export_cached_and_reused(onnx_fp32, cache_dir, monkeypatch):
    import retrievo.models.onnx as onnx_mod
    from retrievo.models.encoder import Encoder

    assert onnx_fp32.onnx.path is not None and onnx_fp32.onnx.path.parent.parent == cache_dir / "models" / "onnx"
    assert (onnx_fp32.onnx.path.parent / "meta.json").exists()
    assert not [p for p in (cache_dir / "models" / "onnx").iterdir() if ".tmp-" in p.name]

    def no_export(*args, **kwargs):
        raise AssertionError("the cached export should have been used")

    monkeypatch.setattr(onnx_mod, "_export", no_export)
    again = Encoder(None, backend="onnx", threads=1)
    assert again.onnx.exported is False and again.onnx.path == onnx_fp32.onnx.path
    assert again.onnx.threads == 1 and again.identity() == onnx_fp32.identity()  # threads: speed only
    np.testing.assert_allclose(again.encode(["reuse"]), onnx_fp32.encode(["reuse"]), atol=1e-6)


def test_identity_per_backend_and_quantisation(torch_encoder, onnx_fp32, onnx_int8):
    ids = {torch_encoder.identity(), onnx_fp32.identity(), onnx_int8.identity()}
    assert len(ids) == 3
    assert "backend" not in torch_encoder.identity()  # PyTorch identities (and their caches) unchanged
    assert "backend=onnx" in onnx_fp32.identity() and "quantize" not in onnx_fp32.identity()
    assert "quantize=int8" in onnx_int8.identity()
    assert onnx_int8.onnx.path != onnx_fp32.onnx.path


def test_spec_round_trip_loads_the_same_encoder(onnx_int8):
    from retrievo.models.encoder import load_encoder
    from retrievo.retrieve.dense import encoder_spec

    spec = encoder_spec(onnx_int8)
    assert "backend=onnx" in spec and "quantize=int8" in spec
    assert load_encoder(spec).identity() == onnx_int8.identity()


def test_option_errors():
    from retrievo.models.encoder import Encoder

    with pytest.raises(ConfigError, match="needs backend=onnx"):
        Encoder(None, quantize="int8")
    with pytest.raises(ConfigError, match="backend must be"):
        Encoder(None, backend="tensorrt")
    with pytest.raises(ConfigError, match="quantize must be"):
        Encoder(None, backend="onnx", quantize="int4")
    with pytest.raises(ConfigError, match="bf16"):
        Encoder(None, backend="onnx", dtype="bf16")


def test_missing_onnxruntime_is_a_missing_extra(monkeypatch):
    from retrievo.models.encoder import Encoder

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    with pytest.raises(MissingExtraError, match="retrievo\\[dense\\]"):
        Encoder(None, backend="onnx")


def test_no_cache_builds_privately(monkeypatch, texts, onnx_fp32):
    from retrievo.models.encoder import Encoder

    monkeypatch.setenv("RETRIEVO_CACHE_DIR", "none")
    enc = Encoder(None, backend="onnx")
    assert enc.onnx.exported and enc.onnx.path is None
    np.testing.assert_allclose(enc.encode(texts[:3]), onnx_fp32.encode(texts[:3]), atol=1e-6)


def test_pipeline_import_stays_light():
    code = ("import sys, retrievo.pipeline, retrievo.models.encoder, retrievo.models.onnx; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
