"""``ModelSpec``: how a pipeline names a model, and how a score records which one it was.

A model is named the way users name it — a Hugging Face id (``BAAI/bge-small-en-v1.5``),
optionally pinned to a revision (``name@revision``), or a local path — plus options that
change its outputs (``dtype``, ``max_length``, ``pooling``, prefixes...). The spec is a
plain value: it prints back to the string it was parsed from, pickles, and compares by
value, so pipelines that name models stay rebuildable in another process.

Its :meth:`identity` is what a protocol manifest records: for a local folder or file, a
content hash of the files that determine the outputs (weights, configuration, tokenizer),
so two copies of the same weights agree and a changed file does not; for a hub name, the
name and revision (a moving ``main`` is flagged as such, since it cannot pin a score).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from retrievo.errors import ConfigError

#: files whose bytes determine a model's outputs (hashed into a local model's identity)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".json", ".txt", ".model", ".msgpack")
_CHUNK = 1 << 20


def _literal(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


@dataclass(frozen=True)
class ModelSpec:
    """A model by name or path, an optional revision, and output-changing options.

    ``ModelSpec.parse("sentence-transformers/all-MiniLM-L6-v2@c9745ed?dtype=bf16&max_length=256")``
    """

    name: str
    revision: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError("a model needs a name or a path")
        object.__setattr__(self, "options", MappingProxyType(dict(sorted(dict(self.options).items()))))

    @classmethod
    def parse(cls, text: "str | ModelSpec", **options: Any) -> "ModelSpec":
        """From ``name[@revision][?key=value&...]``; keyword ``options`` override the string's."""
        if isinstance(text, ModelSpec):
            return cls(text.name, text.revision, {**text.options, **options})
        text = str(text).strip()
        base, _, query = text.partition("?")
        opts: dict[str, Any] = {}
        for part in filter(None, query.split("&")):
            key, eq, value = part.partition("=")
            if not eq or not key:
                raise ConfigError(f"model option {part!r} in {text!r} is not key=value")
            opts[key] = _literal(value)
        revision = None
        if "@" in base and not os.path.exists(base):
            base, _, revision = base.rpartition("@")
            if not revision:
                raise ConfigError(f"empty revision after '@' in {text!r}")
        return cls(base, revision, {**opts, **options})

    @property
    def is_local(self) -> bool:
        return os.path.exists(self.name)

    def identity(self) -> str:
        """``sha256:<hex>`` over a local model's files, else ``name@revision`` (or
        ``name@unpinned`` when no revision pins the hub copy); options are appended."""
        if self.is_local:
            digest = hashlib.sha256()
            root = Path(self.name)
            files = [root] if root.is_file() else sorted(p for p in root.rglob("*")
                                                         if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
            for p in files:
                digest.update(p.relative_to(root).as_posix().encode() if p != root else p.name.encode())
                with open(p, "rb") as fh:
                    while chunk := fh.read(_CHUNK):
                        digest.update(chunk)
            ident = f"sha256:{digest.hexdigest()[:16]}"
        else:
            ident = f"{self.name}@{self.revision or 'unpinned'}"
        if self.options:
            ident += "?" + "&".join(f"{k}={v}" for k, v in self.options.items())
        return ident

    def __str__(self) -> str:
        text = self.name if self.revision is None else f"{self.name}@{self.revision}"
        if self.options:
            text += "?" + "&".join(f"{k}={_fmt(v)}" for k, v in self.options.items())
        return text

    def __reduce__(self):
        return (ModelSpec, (self.name, self.revision, dict(self.options)))

    def __hash__(self) -> int:
        return hash((self.name, self.revision, tuple(self.options.items())))


def _fmt(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


__all__ = ["ModelSpec", "WEIGHT_SUFFIXES"]
