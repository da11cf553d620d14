"""The jobs the command line runs, as plain functions (the CLI is a thin shell over them).

``load_index`` turns whatever a user points at — an index folder, a BEIR folder, a JSONL
corpus, a folder of text files, or nothing (the built-in Python documentation corpus) —
into a searchable :class:`InvertedIndex`; ``build_pipeline`` turns a spec string into a
stage over it; ``evaluate_pipeline`` runs the BEIR evaluation that our published numbers
come from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrievo.data import BeirDataset, IrDataset, PydocCorpus, load_ir_dataset, open_collection
from retrievo.errors import DataFormatError
from retrievo.evaluate import DEFAULT_METRICS, evaluate
from retrievo.index import InvertedIndex
from retrievo.pipeline import Stage, parse
from retrievo.types import Queries, Rankings

import retrievo.retrieve  # noqa: F401  (registers the retrievers' pipeline names)

BUILTIN = "pydoc"
IRDS_PREFIX = "irds:"  # e.g. "irds:beir/scifact/test" — an ir_datasets id (needs retrievo[datasets])


def is_index(path: str | Path) -> bool:
    return (Path(path) / "CURRENT").is_file()


def open_source(source: str | Path | None):
    """A document collection for ``source``: None or ``"pydoc"`` is the built-in corpus,
    ``"irds:<id>"`` an ir_datasets dataset, anything else a path (see ``open_collection``)."""
    if source is None or str(source) == BUILTIN:
        return PydocCorpus()
    if str(source).startswith(IRDS_PREFIX):
        return load_ir_dataset(str(source)[len(IRDS_PREFIX):])
    return open_collection(source)


def build_index(source: str | Path | None, output: str | Path | None = None, *, analyzer: str | None = None,
                store: bool = True, progress: bool = False, segment_docs: int | None = None,
                merge: bool = True) -> InvertedIndex:
    """Index a collection (see :func:`open_source`), in memory or into ``output``."""
    collection = open_source(source)
    total = None
    try:
        total = collection.num_documents()
    except (AttributeError, OSError, DataFormatError):
        pass
    kwargs: dict[str, Any] = {}
    if segment_docs:
        kwargs["segment_docs"] = segment_docs
    return InvertedIndex.build(collection.iter_documents(), output, analyzer=analyzer, store=store,
                               progress=progress, total=total, merge=merge, **kwargs)


def load_index(source: str | Path | None, *, progress: bool = False, analyzer: str | None = None) -> InvertedIndex:
    """Open an index folder, or index any other source in memory."""
    if source is not None and is_index(source):
        return InvertedIndex.open(source)
    return build_index(source, None, analyzer=analyzer, progress=progress)


def build_pipeline(spec: str | Stage, index: InvertedIndex, **ctx: Any) -> Stage:
    return parse(spec, {"index": index, **ctx})


def run_in_batches(stage: Stage, queries: Queries, batch_size: int = 1000, progress: bool = False) -> Rankings:
    """Run ``stage`` over ``queries`` in chunks (with a progress bar) and join the results."""
    if len(queries) <= batch_size:
        return stage(queries)
    from tqdm.auto import tqdm

    parts = []
    with tqdm(total=len(queries), desc="searching", unit="q", disable=not progress) as bar:
        for start in range(0, len(queries), batch_size):
            chunk = queries[start:start + batch_size]
            parts.append(stage(chunk))
            bar.update(len(chunk))
    return join_rankings(queries, parts)


def join_rankings(queries: Queries, parts: Sequence[Rankings]) -> Rankings:
    lists = [(r.doc_ids, r.scores) for part in parts for r in part]
    costs = [c for part in parts for c in part.costs]
    return Rankings.from_lists(queries, lists, costs)


@dataclass
class EvalReport:
    metrics: dict[str, float]
    rankings: Rankings
    per_query: dict[str, dict[str, float]] | None
    pipeline: str
    split: str
    num_queries: int


def evaluate_pipeline(data_dir: str | Path, pipeline: str | Stage = "bm25", *, split: str = "test",
                      metrics: Sequence[str] = DEFAULT_METRICS, index: str | Path | InvertedIndex | None = None,
                      keep_self_hits: bool = False, per_query: bool = False, progress: bool = False) -> EvalReport:
    """Evaluate a pipeline on a BEIR folder's split, or on an ``irds:<id>`` dataset (whose
    id names the split). BEIR convention: self-hits dropped unless ``keep_self_hits``."""
    dataset = open_source(data_dir) if str(data_dir).startswith(IRDS_PREFIX) else BeirDataset(data_dir)
    split_arg = None if isinstance(dataset, IrDataset) else split
    queries = dataset.queries(split_arg)
    qrels = dataset.qrels(split_arg)
    if isinstance(index, InvertedIndex):
        idx = index
    elif index is not None:
        idx = InvertedIndex.open(index)
    else:
        idx = build_index(data_dir, None, progress=progress)
    stage = build_pipeline(pipeline, idx)
    rankings = run_in_batches(stage, queries, progress=progress)
    if not keep_self_hits:
        rankings = rankings.drop_self_hits()
    scores = evaluate(rankings, qrels, list(metrics))
    pq = evaluate(rankings, qrels, list(metrics), per_query=True) if per_query else None
    return EvalReport(scores, rankings, pq, str(stage), split, len(queries))


def sample_queries(collection, index: InvertedIndex, n: int = 3) -> Queries:
    """Queries for a quick look at a collection: its own test/dev queries when it has
    them (BEIR), the built-in demo questions for the Python docs, otherwise the titles of
    a few evenly spaced documents."""
    if isinstance(collection, PydocCorpus):
        return collection.queries()
    if isinstance(collection, BeirDataset):
        splits = collection.splits()
        split = next((s for s in ("test", "dev", "validation") if s in splits), splits[0] if splits else None)
        qs = collection.queries(split)
        return qs[:n]
    docs = index.doc_ids
    step = max(1, len(docs) // n)
    picked = []
    for i in range(0, len(docs), step):
        d = index.document(docs[i])
        text = d.title or " ".join(d.text.split()[:8])
        if text.strip():
            picked.append((f"sample{len(picked) + 1}", text))
        if len(picked) == n:
            break
    return Queries.of(picked)
