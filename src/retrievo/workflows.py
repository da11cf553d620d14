"""The jobs the command line runs, as plain functions (the CLI is a thin shell over them).

``load_index`` turns whatever a user points at — an index folder, a BEIR folder, a JSONL
corpus, a folder of text files, or nothing (the built-in Python documentation corpus) —
into a searchable :class:`InvertedIndex`; ``build_pipeline`` turns a spec string into a
stage over it; ``evaluate_pipeline`` runs the BEIR evaluation that our published numbers
come from; ``compare_pipelines`` runs ``retrievo compare``; ``search_queries`` gathers the
queries of ``retrievo search``; ``save_run`` writes a run with its protocol beside it.
Everything the command line does is one call here, so notebooks and scripts get the same
behaviour (and the same protocol manifests) as the CLI.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrievo.data import (BeirDataset, IrDataset, PydocCorpus, is_beir_dir, load_ir_dataset, open_collection,
                           read_queries, write_run)
from retrievo.errors import ConfigError, DataFormatError, EmptyQueryError, EvaluationError
from retrievo.evaluate import DEFAULT_METRICS, Experiment, ExperimentResult, aggregate, evaluate
from retrievo.evaluate.protocol import Protocol, dataset_identity, file_identity, rankings_depth, stage_models
from retrievo.index import InvertedIndex, open_index
from retrievo.pipeline import Stage, parse
from retrievo.spec import PipelineSpec, parse_spec
from retrievo.types import Queries, Query, Rankings, cost_summary

BUILTIN = "pydoc"
IRDS_PREFIX = "irds:"  # e.g. "irds:beir/scifact/test" — an ir_datasets id (needs retrievo[datasets])


def is_index(path: str | Path) -> bool:
    """Whether ``path`` is (or looks like) an index folder: one that holds index files but
    cannot be opened is reported as damaged by ``open_index``, never read as a corpus."""
    from retrievo.index.lifecycle import looks_like_index

    return looks_like_index(path)


def open_source(source: str | Path | None):
    """A document collection for ``source``: None or ``"pydoc"`` is the built-in corpus,
    ``"irds:<id>"`` an ir_datasets dataset, anything else a path (see ``open_collection``)."""
    if source is None or str(source) == BUILTIN:
        return PydocCorpus()
    if str(source).startswith(IRDS_PREFIX):
        return load_ir_dataset(str(source)[len(IRDS_PREFIX):])
    if is_index(source):  # an index (even a damaged one) is never re-read as a folder of text files
        open_index(source)
        raise ConfigError(f"{source} is an index, not a collection of documents")
    return open_collection(source)


def build_index(source: str | Path | None, output: str | Path | None = None, *, analyzer: str | None = None,
                store: bool = True, progress: bool = False, segment_docs: int | None = None,
                merge: bool = True, fields: Sequence[str] | None = None) -> InvertedIndex:
    """Index a collection (see :func:`open_source`), in memory or into ``output``."""
    collection = open_source(source)
    total = None
    try:
        total = collection.num_documents()
    except (AttributeError, OSError, DataFormatError):
        pass
    kwargs: dict[str, Any] = {}
    if segment_docs is not None:  # 0 is refused by the index, not read as "the default"
        kwargs["segment_docs"] = segment_docs
    return InvertedIndex.build(collection.iter_documents(), output, analyzer=analyzer, store=store,
                               progress=progress, total=total, merge=merge, fields=fields, **kwargs)


def check_same_analyzer(index: Any, analyzer: str | None) -> None:
    """Refuse ``analyzer`` when adding to ``index`` analysed otherwise: the new documents'
    terms would never match the old ones' (None: keep the index's own)."""
    if analyzer is None:
        return
    from retrievo.text import get_analyzer

    wanted, has = get_analyzer(analyzer).config(), index.analyzer.config()
    if wanted != has:
        raise ConfigError(f"--analyzer {analyzer!r} differs from the analyzer of {index.path} ({has}); documents "
                          "added to an index are analysed with its own analyzer: leave --analyzer out, or "
                          "build a new index")


def load_index(source: str | Path | None, *, progress: bool = False, analyzer: str | None = None) -> InvertedIndex:
    """Open an index folder (any format, through the per-process cache), or index any
    other source in memory."""
    if source is not None and is_index(source):
        return open_index(source, cached=True)
    return build_index(source, None, analyzer=analyzer, progress=progress)


class LazyContext(Mapping):
    """Build context whose default index is made only when a stage reads it: a spec that
    names its own index (``bm25(index='sf.idx')``) never pays for indexing the data.

    A read-only mapping: ``"index"`` is always a key, and reading it (``ctx["index"]``,
    ``ctx.get("index")``, ``dict(ctx)``) opens or builds the index once."""

    def __init__(self, index_factory, **items: Any):
        self._items = dict(items)
        self._factory = index_factory

    def __getitem__(self, key):
        if key == "index" and "index" not in self._items:
            self._items["index"] = self._factory()
        return self._items[key]

    def __iter__(self):
        return iter({**self._items, "index": None})

    def __contains__(self, key) -> bool:  # without building the index
        return key == "index" or key in self._items

    def __len__(self) -> int:
        return len({**self._items, "index": None})

    def made_index(self) -> Any:
        """The default index if a stage asked for it, else None."""
        return self._items.get("index")


def check_pipeline(spec: str | Stage | PipelineSpec) -> str | Stage | PipelineSpec:
    """Check a spec string completely (names, options, values, composition) before any
    expensive work; stages pass through. Raises :class:`~retrievo.errors.PipelineSpecError`."""
    return spec if isinstance(spec, Stage) else parse_spec(spec)


def build_pipeline(spec: str | Stage | PipelineSpec, index: Any = None, **ctx: Any) -> Stage:
    """Build a pipeline; ``index`` (an index, or a zero-argument callable that makes one
    on demand) is the default for stages whose spec names none."""
    if isinstance(spec, Stage):
        return spec
    context: dict[str, Any] = LazyContext(index, **ctx) if callable(index) else {"index": index, **ctx}
    return parse(str(spec), context)


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
    """What ``retrievo eval`` prints: aggregate metrics, the rankings they came from,
    optional per-query values and the :class:`Protocol` that makes the numbers reproducible."""

    metrics: dict[str, float]
    rankings: Rankings
    per_query: dict[str, dict[str, float]] | None
    pipeline: str
    split: str
    num_queries: int
    protocol: Protocol | None = None

    @property
    def costs(self) -> dict[str, Any]:
        """What each stage spent, summed per stage (see :func:`retrievo.types.cost_summary`)."""
        return cost_summary(self.rankings.costs)


def open_dataset(data: str | Path) -> BeirDataset | IrDataset:
    """An evaluation dataset: ``irds:<id>`` (ir_datasets, the id names the split) or a BEIR folder."""
    return open_source(data) if str(data).startswith(IRDS_PREFIX) else BeirDataset(data)


def _split_arg(dataset: BeirDataset | IrDataset, split: str) -> str | None:
    return None if isinstance(dataset, IrDataset) else split


def _open_or_build_index(data: str | Path, index: str | Path | InvertedIndex | None,
                         progress: bool) -> InvertedIndex:
    if isinstance(index, InvertedIndex):
        return index
    if index is not None:
        return open_index(index, cached=True)
    return build_index(data, None, progress=progress)


def _index_on_demand(data: str | Path, index: str | Path | InvertedIndex | None, progress: bool):
    """A callable that opens or builds the default index the first time it is called."""
    made: list[InvertedIndex] = []

    def make() -> InvertedIndex:
        if not made:
            made.append(_open_or_build_index(data, index, progress))
        return made[0]

    return make


def _used_index(stage: Stage, fallback):
    """The index a pipeline ran on (for its protocol): the first stage's, else the default."""
    stages = getattr(stage, "stages", (stage,))
    for s in stages:
        idx = getattr(s, "index", None)
        if idx is not None:
            return idx
    return fallback()


def evaluate_pipeline(data_dir: str | Path, pipeline: str | Stage = "bm25", *, split: str = "test",
                      metrics: Sequence[str] = DEFAULT_METRICS, index: str | Path | InvertedIndex | None = None,
                      keep_self_hits: bool = False, per_query: bool = False, progress: bool = False) -> EvalReport:
    """Evaluate a pipeline on a BEIR folder's split, or on an ``irds:<id>`` dataset (whose
    id names the split). BEIR convention: self-hits dropped unless ``keep_self_hits``.
    The report's ``protocol`` names the dataset files' hashes, the index and the rules.
    The spec is checked before anything is read or indexed."""
    pipeline = check_pipeline(pipeline)
    dataset = open_dataset(data_dir)
    split_arg = _split_arg(dataset, split)
    queries = dataset.queries(split_arg)
    qrels = dataset.qrels(split_arg)
    if not len(queries):
        raise EvaluationError(f"none of the queries of {data_dir} has judgments in split {split_arg or split!r}: "
                              "there is nothing to evaluate (check the qrels' query ids)")
    default_index = _index_on_demand(data_dir, index, progress)
    stage = build_pipeline(pipeline, default_index)
    idx = _used_index(stage, default_index)
    check_index_covers(idx, qrels, data_dir)
    rankings = run_in_batches(stage, queries, progress=progress)
    if not keep_self_hits:
        rankings = rankings.drop_self_hits()
    names = list(metrics)
    table = evaluate(rankings, qrels, names, per_query=True)
    scores = aggregate(table, names)
    protocol = Protocol.for_evaluation(
        pipelines=[stage.record_spec()], metrics=list(scores), num_queries=len(next(iter(table.values()))),
        self_hits="kept" if keep_self_hits else "dropped", split=split_arg, depth=rankings_depth(rankings),
        data=dataset_identity(dataset, split_arg), index=idx, models=stage_models(stage))
    return EvalReport(scores, rankings, table if per_query else None, stage.spec(resources=False), split,
                      len(queries), protocol)


def check_index_covers(index: Any, qrels: Any, data: str | Path) -> None:
    """Make sure a prebuilt index holds the collection being evaluated.

    The index manifest's ``identity`` hashes the index content, not the files it was
    built from (the same collection may come as JSONL, gzip or ir_datasets), so the
    collection is identified by what the judgments name: when none of the judged
    documents is in the index it was built from another collection and every metric
    would be a meaningless 0 (:class:`EvaluationError`); when only some are, a warning
    says how many are missing (a subset index is legitimate, but it caps recall).
    """
    if getattr(index, "path", None) is None or not hasattr(index, "__contains__"):
        return  # built from this very data in memory
    judged = list(dict.fromkeys(getattr(qrels, "doc_ids", []).tolist()))
    if not judged:
        return
    found = sum(1 for d in judged if d in index)
    identity = getattr(index, "identity", None)
    where = f"the index at {index.path}" + (f" (identity {identity[:12]})" if identity else "")
    if found == 0:
        raise EvaluationError(f"{where} holds none of the {len(judged):,} documents judged in {data}: it was built "
                              "from another collection; index the collection being evaluated")
    if found < len(judged):
        import warnings

        warnings.warn(f"{where} lacks {len(judged) - found:,} of the {len(judged):,} documents judged in {data}; "
                      "their relevance cannot be retrieved, so recall is capped", UserWarning, stacklevel=2)


def compare_pipelines(data: str | Path, pipelines: Sequence[str | Stage], *, split: str = "test",
                      metrics: Sequence[str] = ("nDCG@10", "R@100", "AP"),
                      index: str | Path | InvertedIndex | None = None, test: str = "t",
                      correction: str = "holm", keep_self_hits: bool = False, warmup: bool = True,
                      progress: bool = False) -> ExperimentResult:
    """Compare pipelines on a BEIR folder's split (or ``irds:<id>``) with paired tests
    against the first one, each system warmed up before it is timed.

    Two specs that parse to the same pipeline raise :class:`ConfigError`: the duplicate
    would be a copy of the baseline, "compared" with a p-value of 1, and keying results by
    spec would otherwise silently drop one.
    """
    if not pipelines:
        raise ConfigError("compare needs at least one pipeline (-p SPEC)")
    checked = [check_pipeline(p) for p in pipelines]  # every spec, before any data is read
    dataset = open_dataset(data)
    split_arg = _split_arg(dataset, split)
    default_index = _index_on_demand(data, index, progress)
    systems: dict[str, Stage] = {}  # keyed by the spec as the user wrote it: the names in the table
    given: dict[str, str] = {}  # canonical spec -> the spec that produced it first
    for spec in checked:
        stage = build_pipeline(spec, default_index)
        canonical = str(stage)
        if canonical in given:
            first = given[canonical]
            same = "" if str(spec) == first else f" ({first!r} and {str(spec)!r} are the same pipeline)"
            raise ConfigError(f"pipeline {str(spec)!r} is given twice{same}; every compared pipeline must "
                              "differ, since a copy of a system tells nothing")
        given[canonical] = str(spec)
        systems[str(spec)] = stage
    idx = _used_index(next(iter(systems.values())), default_index)
    check_index_covers(idx, dataset.qrels(split_arg), data)
    return Experiment(systems, dataset.queries(split_arg), dataset.qrels(split_arg), metrics=list(metrics),
                      test=test, correction=correction, drop_self_hits=not keep_self_hits, warmup=warmup,
                      dataset=dataset, split=split_arg, index=idx).run()


def save_run(path: str | Path, rankings: Rankings, protocol: Protocol | None = None,
             tag: str = "retrievo") -> Path:
    """Write a TREC run (``tag`` fills the last column, naming the system for trec_eval
    and shared-task submissions) and, with a protocol, ``<path>.protocol.json`` beside it."""
    written = write_run(path, rankings, tag=tag)
    if protocol is not None:
        protocol.write_beside(written)
    return written


def search_protocol(stage: Stage, rankings: Rankings, index: InvertedIndex,
                    queries_file: str | Path | None = None) -> Protocol:
    """The protocol of a plain search (no judgments): pipeline, index, the queries file's
    hash, depth and the query count; self-hits are kept because nothing was evaluated."""
    data = {"queries": file_identity(queries_file)} if queries_file is not None else {}
    return Protocol.for_evaluation(pipelines=[stage.record_spec()], metrics=[], num_queries=len(rankings),
                                   self_hits="kept", depth=rankings_depth(rankings), data=data, index=index,
                                   models=stage_models(stage))


def save_experiment_runs(result: ExperimentResult, folder: str | Path) -> list[Path]:
    """Write each system's run of a :func:`compare_pipelines` result to
    ``folder/<n>-<spec>.trec`` (tag: the spec without spaces) with its protocol beside it,
    so any single system's numbers can be re-scored later with ``retrievo evaluate``."""
    if not result.rankings:
        raise ConfigError("this result holds no rankings to save (it was not produced by Experiment.run)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for n, name in enumerate(result.names, start=1):
        slug = re.sub(r"[^A-Za-z0-9._=,-]+", "_", name).strip("_")[:80] or "system"
        tag = re.sub(r"\s+", "", name) or "retrievo"
        protocol = result.protocol
        if protocol is not None:
            spec = protocol.pipelines[n - 1] if n - 1 < len(protocol.pipelines) else name
            protocol = dataclasses.replace(protocol, pipelines=[spec],
                                           options={**protocol.options, "system": name})
        written.append(save_run(folder / f"{n:02d}-{slug}.trec", result.rankings[name], protocol, tag=tag))
    return written


def describe_index(path: str | Path) -> dict[str, Any]:
    """The facts ``retrievo info`` shows: documents, deleted, terms, segments, generation,
    format, analyzer, size on disk, identity and path. Uses the index's own ``describe()``
    where it has one, and computes the same fields otherwise."""
    from retrievo.index import FORMAT_VERSION

    idx = open_index(path)
    describe = getattr(idx, "describe", None)
    if callable(describe):
        return dict(describe())
    root = Path(path)
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    return {"documents": len(idx), "deleted": idx.total_docs - len(idx), "terms": idx.vocab_size,
            "segments": len(idx.segments), "generation": idx.generation, "format": FORMAT_VERSION,
            "analyzer": idx.analyzer.config(), "size_on_disk_bytes": size,
            "identity": getattr(idx, "identity", None), "path": str(root)}


def rerank_run(run: str | Path, index: Any, pipeline: str | Stage, *, queries_file: str | Path | None = None,
               source: str | Path | None = None, depth: int = 100, progress: bool = False
               ) -> tuple[Rankings, Stage, Queries]:
    """Rerank an existing TREC run: ``(rankings, stage, queries)``.

    ``pipeline`` must take rankings (a reranker, or rerankers chained: ``first >> prp``);
    each query's top ``depth`` results of the run (trec_eval order) are reranked with the
    document text of ``index``. Query texts come from ``queries_file`` (BEIR, TSV or TREC
    topics), else from ``source`` when it is a BEIR folder (all its queries). A run query
    without a text is an :class:`UnknownIdError` — the reranker would read nothing."""
    from retrievo.data import read_run
    from retrievo.errors import PipelineCompositionError, UnknownIdError

    if depth < 1:
        raise ConfigError(f"depth must be >= 1, got {depth}")
    check_pipeline(pipeline)
    if queries_file is not None:
        queries = read_queries(queries_file)
    elif source is not None and not str(source).startswith(IRDS_PREFIX) and is_beir_dir(source):
        queries = BeirDataset(source).queries()
    else:
        raise ConfigError("the reranker needs the query texts: pass --queries FILE (or give a BEIR folder, "
                          "whose queries.jsonl is read)")
    stage = build_pipeline(pipeline, index)
    if Rankings not in stage.takes or not issubclass(stage.gives, Rankings):
        raise PipelineCompositionError(f"{stage.spec(resources=False)!r} does not turn rankings into rankings; "
                                       f"a run is reranked by rerankers, e.g. 'first(window=20)' or 'cross_encoder'")
    try:
        ranked = read_run(run, queries)
    except UnknownIdError as exc:
        raise UnknownIdError(f"{exc.args[0]} (the run names a query that the queries file lacks)") from None
    in_run = [q for i, q in enumerate(ranked.queries.ids) if ranked.offsets[i + 1] > ranked.offsets[i]]
    ranked = ranked.subset(in_run).cut(depth)
    chunk = 8  # queries per call: progress moves, and a long run shows its pace early
    parts = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(ranked.queries), desc="rerank", unit="q")
    for start in range(0, len(ranked.queries), chunk):
        parts.append(stage(ranked.subset(ranked.queries.ids[start:start + chunk])))
        if bar is not None:
            bar.update(len(parts[-1].queries))
    if bar is not None:
        bar.close()
    out = join_rankings(ranked.queries, parts) if parts else stage(ranked)
    return out, stage, ranked.queries


def search_queries(queries_file: str | Path | None = None, texts: Sequence[str] = ()) -> Queries:
    """The queries of one ``retrievo search``: those of ``queries_file`` (any format
    :func:`~retrievo.data.read_queries` detects) followed by ad-hoc ``texts``, which get
    ids ``q1``, ``q2``, ... skipping ids the file already uses."""
    items: list[Query] = []
    if queries_file is not None:
        items.extend(read_queries(queries_file))
    used = {q.qid for q in items}
    n = 0
    for text in texts:
        n += 1
        while f"q{n}" in used:
            n += 1
        used.add(f"q{n}")
        items.append(Query(f"q{n}", text))
    if not items:
        raise EmptyQueryError("no query given: pass query text, or --queries FILE")
    return Queries.of(items)


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
