"""What a server serves: one index folder, or a TOML config of named collections.

A config::

    keys = "keys.json"            # default: <config name>.keys.json beside it
    private = false               # true: reading needs a key too
    open_specs = false            # true: requests may send any spec that names no file or model

    [collections.scifact]         # the first collection is the default
    index = "indexes/scifact"     # relative to the config file
    pipelines = { bm25 = "bm25", rm3 = "bm25 >> rm3 >> bm25" }

Index paths come from the operator (the command line or this file), never from a request:
requests name collections, which are looked up here.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from retrievo.errors import ConfigError
from retrievo.index.lifecycle import is_index
from retrievo.server.collection import Collection
from retrievo.server.keys import KeyStore, default_key_file
from retrievo.server.models import NAME_PATTERN
from retrievo.server.service import Service

_NAME = re.compile(NAME_PATTERN)


def collection_name(path: Path) -> str:
    """A collection name for an index folder: its name, with characters outside
    ``[A-Za-z0-9_.-]`` replaced."""
    name = re.sub(r"[^A-Za-z0-9_.\-]", "-", path.resolve().name).lstrip("-_.")[:64]
    return name or "default"


def parse_pipelines(items: list[str] | None) -> dict[str, str] | None:
    """``["NAME=SPEC", ...]`` (the ``--pipeline`` option) as a dict; a bare spec is named by itself."""
    if not items:
        return None
    out: dict[str, str] = {}
    for item in items:
        name, sep, spec = item.partition("=")
        if not sep or "(" in name or ">" in name:
            name, spec = item.strip(), item.strip()
        out[name.strip()] = spec.strip()
    return out


def load_service(target: str | Path, *, pipelines: dict[str, str] | None = None, open_specs: bool | None = None,
                 private: bool | None = None, keys: str | Path | None = None) -> Service:
    """Open the collections of an index folder or a config file; command-line values,
    when given, override the config's."""
    target = Path(target)
    if is_index(target):
        cols = {collection_name(target): Collection(collection_name(target), target, pipelines, bool(open_specs))}
        return Service(cols, KeyStore(keys or default_key_file(target)), bool(private))
    if not target.is_file():
        raise ConfigError(f"{target} is neither an index folder nor a config file")
    try:
        config: dict[str, Any] = tomllib.loads(target.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the server config {target}: {exc}") from exc
    unknown = set(config) - {"keys", "private", "open_specs", "collections"}
    if unknown:
        raise ConfigError(f"{target}: unknown setting(s) {sorted(unknown)}")
    entries = config.get("collections")
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f"{target}: no [collections.NAME] tables")
    base = target.resolve().parent
    open_specs = bool(config.get("open_specs", False)) if open_specs is None else open_specs
    cols: dict[str, Collection] = {}
    for name, entry in entries.items():
        if not _NAME.match(name):
            raise ConfigError(f"{target}: collection name {name!r} must match {NAME_PATTERN}")
        if not isinstance(entry, dict) or not isinstance(entry.get("index"), str):
            raise ConfigError(f"{target}: collection {name!r} needs index = \"path\"")
        extra = set(entry) - {"index", "pipelines"}
        if extra:
            raise ConfigError(f"{target}: collection {name!r}: unknown setting(s) {sorted(extra)}")
        specs = entry.get("pipelines")
        if specs is not None and (not isinstance(specs, dict) or not all(isinstance(v, str) for v in specs.values())):
            raise ConfigError(f"{target}: collection {name!r}: pipelines must map names to spec strings")
        for pname in specs or {}:
            if not _NAME.match(pname):
                raise ConfigError(f"{target}: pipeline name {pname!r} must match {NAME_PATTERN}")
        cols[name] = Collection(name, base / entry["index"], pipelines or specs, open_specs)
    key_file = keys or (base / config["keys"] if "keys" in config else default_key_file(target))
    private = bool(config.get("private", False)) if private is None else private
    return Service(cols, KeyStore(key_file), private)


def key_store_for(target: str | Path, keys: str | Path | None = None) -> tuple[KeyStore, list[str]]:
    """The key store of an index folder or config, and the collection names it covers."""
    target = Path(target)
    if is_index(target):
        return KeyStore(keys or default_key_file(target)), [collection_name(target)]
    if not target.is_file():
        raise ConfigError(f"{target} is neither an index folder nor a config file")
    config = tomllib.loads(target.read_text(encoding="utf-8"))
    base = target.resolve().parent
    key_file = keys or (base / config["keys"] if "keys" in config else default_key_file(target))
    return KeyStore(key_file), list((config.get("collections") or {}).keys())


__all__ = ["collection_name", "key_store_for", "load_service", "parse_pipelines"]
