"""The protocol behind a number: what produced it, on which bytes, under which rules.

An nDCG@10 of 0.6789 means nothing on its own: it depends on the corpus and qrels files,
the split, whether BEIR's self-hits were dropped, how deep each list was, how ties were
broken, which metric implementation scored it and which pipeline (and models) ranked.
Papers lose these details; so does a results folder a month later. Every evaluation,
comparison and saved run in retrievo therefore carries a :class:`Protocol` — a small,
JSON-serialisable manifest — written beside the outputs (``<file>.protocol.json`` or
``DIR/protocol.json``) and summarised on one line by the CLI.

Identities are content hashes (sha256 of the files actually read; the index's own
``identity`` when the index provides one), not paths, so two manifests can be compared
across machines: equal hashes mean equal inputs.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from retrievo.errors import ConfigError, DataFormatError

PROTOCOL_VERSION = 1
PROTOCOL_SUFFIX = ".protocol.json"
# How retrievo's retrievers order equal scores (the packed sort key in retrieve/topk.py),
# and how the metric implementations re-rank a run before scoring it (trec_eval's rule,
# which ignores the list order: pytrec_eval and ir_measures both follow it).
RANKING_TIE_BREAK = "score desc, doc id asc"
EVALUATION_TIE_BREAK = "score desc, doc id desc (trec_eval)"

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    """Versions of the code that produces and scores rankings (None: not installed)."""
    from retrievo import __version__

    return {"retrievo": __version__, "ir_measures": _version("ir-measures"),
            "pytrec_eval": _version("pytrec-eval-terrier") or _version("pytrec-eval"),
            "numpy": _version("numpy"), "numba": _version("numba")}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, cached per (path, size, mtime) so that a run that hashes
    the same corpus twice (eval, then save-run) reads it once."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DataFormatError("no such file", path) from None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _HASH_CACHE[key] = digest.hexdigest()
    return _HASH_CACHE[key]


def file_identity(path: str | Path) -> dict[str, Any]:
    """``{"path", "bytes", "sha256"}`` of a file that an evaluation read."""
    path = Path(path)
    digest = file_sha256(path)  # first: a missing file is a DataFormatError naming it
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": digest}


def dataset_identity(dataset: Any, split: str | None = None) -> dict[str, Any]:
    """Identity of an evaluation dataset: file hashes for a BEIR folder (corpus, queries
    and the split's qrels), the dataset id for ir_datasets (whose own downloads are
    checksummed against that id)."""
    from retrievo.data import BeirDataset, IrDataset

    if isinstance(dataset, IrDataset):
        return {"irds": dataset.name}
    if isinstance(dataset, BeirDataset):
        out: dict[str, Any] = {"beir": str(dataset.path), "corpus": file_identity(dataset.corpus.path)}
        queries = dataset.path / "queries.jsonl"
        if queries.is_file():
            out["queries"] = file_identity(queries)
        if split is not None:
            out["qrels"] = file_identity(dataset._qrels_file(split))
        return out
    return {"source": repr(dataset)}


def index_identity(index: Any) -> dict[str, Any] | None:
    """What identifies the index searched: its content hash (``index.identity``) when the
    index provides one, plus its path and size; None without an index."""
    if index is None:
        return None
    out: dict[str, Any] = {"identity": getattr(index, "identity", None)}
    path = getattr(index, "path", None)
    out["path"] = None if path is None else str(path)
    try:
        out["documents"] = len(index)
    except TypeError:
        pass
    return out


def stage_models(stage: Any) -> list[Any]:
    """Models a stage depends on. Stages that load weights expose a ``models`` list
    (names, versions or hashes); lexical stages have none, so BM25 reports ``[]``."""
    models = getattr(stage, "models", None)
    if models is None or callable(models) or isinstance(models, (str, bytes)):
        return []
    return list(models) if isinstance(models, Iterable) else []


@dataclass
class Protocol:
    """Manifest of one evaluation, comparison or saved run.

    ``pipelines``: the spec strings of the systems (one for ``eval``, several for
    ``compare``). ``data``: identities of the inputs (see :func:`dataset_identity`;
    a run file evaluated on its own has ``{"run": ..., "qrels": ...}``). ``index``: see
    :func:`index_identity`. ``models``: models the pipelines use (empty for BM25).
    ``options``: the rules that change numbers — self-hits, depth, tie-breaking, metrics,
    split, number of queries, significance test. ``versions``: retrievo and the metric
    libraries.
    """

    pipelines: list[str]
    data: dict[str, Any] = field(default_factory=dict)
    index: dict[str, Any] | None = None
    models: list[Any] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str | None] = field(default_factory=library_versions)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    protocol_version: int = PROTOCOL_VERSION

    # construction -------------------------------------------------------------------
    @classmethod
    def for_evaluation(cls, *, pipelines: Sequence[str], metrics: Sequence[str], num_queries: int,
                       self_hits: str, split: str | None = None, depth: int | None = None,
                       data: Mapping[str, Any] | None = None, index: Any = None,
                       models: Sequence[Any] = (), **options: Any) -> "Protocol":
        """The manifest for scoring rankings: ``self_hits`` is ``"dropped"`` or ``"kept"``;
        ``depth`` the longest result list evaluated; extra keyword options (e.g. the
        significance test) are recorded as given."""
        if self_hits not in ("dropped", "kept"):
            raise ConfigError(f"self_hits must be 'dropped' or 'kept', got {self_hits!r}")
        opts: dict[str, Any] = {"metrics": list(metrics), "split": split, "num_queries": int(num_queries),
                                "self_hits": self_hits, "depth": depth,
                                "tie_break": {"ranking": RANKING_TIE_BREAK, "evaluation": EVALUATION_TIE_BREAK},
                                "query_set": "judged queries; unanswered ones score 0 (trec_eval -c)"}
        opts.update(options)
        return cls(list(pipelines), dict(data or {}), index_identity(index), list(models), opts)

    def with_inputs(self, *, data: Mapping[str, Any] | None = None, index: Any = None,
                    models: Sequence[Any] | None = None) -> "Protocol":
        """A copy with the data / index / model identities filled in (the layer that opened
        the files knows them; the layer that scored the rankings does not)."""
        out = Protocol(**{**asdict(self)})
        if data is not None:
            out.data = dict(data)
        if index is not None:
            out.index = index_identity(index)
        if models is not None:
            out.models = list(models)
        return out

    # output ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    def write(self, path: str | Path) -> Path:
        """Write the manifest as JSON to ``path``."""
        path = Path(path)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    def write_beside(self, output: str | Path) -> Path:
        """Write the manifest to ``<output>.protocol.json`` (a run, a table...)."""
        return self.write(sidecar_path(output))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Protocol":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def read(cls, path: str | Path) -> "Protocol":
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError) as exc:
            raise DataFormatError(f"not a protocol manifest ({exc})", path) from None

    def summary(self) -> str:
        """One line for a terminal: what was run on what, under which rules."""
        o = self.options
        parts = [f"retrievo {self.versions.get('retrievo')}", " | ".join(self.pipelines) or "run file"]
        if "irds" in self.data:
            parts.append(f"irds:{self.data['irds']}")
        else:
            hashes = [f"{name} {self.data[name]['sha256'][:8]}" for name in ("corpus", "queries", "qrels", "run")
                      if isinstance(self.data.get(name), Mapping) and "sha256" in self.data[name]]
            if hashes:
                parts.append("sha256 " + ", ".join(hashes))
        if self.index and self.index.get("identity"):
            parts.append(f"index {str(self.index['identity'])[:12]}")
        if o.get("split"):
            parts.append(f"split {o['split']}")
        if o.get("num_queries") is not None:
            parts.append(f"{o['num_queries']} queries")
        if o.get("self_hits"):
            parts.append(f"self-hits {o['self_hits']}")
        if o.get("depth") is not None:
            parts.append(f"depth {o['depth']}")
        parts.append(f"ties {RANKING_TIE_BREAK}")
        parts.append(f"models {', '.join(map(str, self.models)) if self.models else 'none'}")
        parts.append(f"ir_measures {self.versions.get('ir_measures')}, pytrec_eval {self.versions.get('pytrec_eval')}")
        return "protocol: " + "; ".join(parts)

    def __str__(self) -> str:
        return self.summary()


def sidecar_path(output: str | Path) -> Path:
    """``run.trec`` -> ``run.trec.protocol.json``: the manifest lives beside what it describes."""
    output = Path(output)
    return output.with_name(output.name + PROTOCOL_SUFFIX)


def rankings_depth(rankings: Any) -> int | None:
    """The longest result list in ``rankings`` (Rankings or ``{qid: {doc: score}}``)."""
    try:
        lengths = [len(r) for r in (rankings.values() if isinstance(rankings, Mapping) else rankings)]
    except TypeError:
        return None
    return max(lengths, default=0)


__all__ = ["EVALUATION_TIE_BREAK", "PROTOCOL_SUFFIX", "Protocol", "RANKING_TIE_BREAK", "dataset_identity",
           "file_identity", "file_sha256", "index_identity", "library_versions", "rankings_depth",
           "sidecar_path", "stage_models"]
