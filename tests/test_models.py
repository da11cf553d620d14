"""ModelSpec: names, revisions and options round-trip; local identities hash content."""

from __future__ import annotations

import pickle

import pytest

from retrievo.errors import ConfigError
from retrievo.models import ModelSpec


def test_parse_and_print_round_trip():
    spec = ModelSpec.parse("sentence-transformers/all-MiniLM-L6-v2@c9745ed?max_length=256&dtype=bf16&normalize=true")
    assert spec.name == "sentence-transformers/all-MiniLM-L6-v2" and spec.revision == "c9745ed"
    assert dict(spec.options) == {"dtype": "bf16", "max_length": 256, "normalize": True}
    assert ModelSpec.parse(str(spec)) == spec
    assert pickle.loads(pickle.dumps(spec)) == spec and hash(pickle.loads(pickle.dumps(spec))) == hash(spec)
    assert ModelSpec.parse(spec, max_length=128).options["max_length"] == 128
    assert spec.identity() == "sentence-transformers/all-MiniLM-L6-v2@c9745ed?dtype=bf16&max_length=256&normalize=True"
    assert ModelSpec("BAAI/bge-small-en-v1.5").identity() == "BAAI/bge-small-en-v1.5@unpinned"


def test_local_identity_follows_content(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "config.json").write_text('{"dim": 4}')
        (folder / "model.safetensors").write_bytes(b"\x00" * 64)
        (folder / "README.md").write_text(f"notes about {folder.name}")  # not part of the identity
    assert ModelSpec(str(a)).identity() == ModelSpec(str(b)).identity()
    (b / "model.safetensors").write_bytes(b"\x01" * 64)
    assert ModelSpec(str(a)).identity() != ModelSpec(str(b)).identity()
    assert ModelSpec.parse(str(a)).revision is None  # a path is never split at '@'


@pytest.mark.parametrize("bad", ["", "name@", "name?dtype"])
def test_bad_model_names_are_typed(bad):
    with pytest.raises(ConfigError):
        ModelSpec.parse(bad)
