"""`retrievo` command line: a thin typer shell over :mod:`retrievo.workflows`."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from retrievo.errors import RetrievoError

app = typer.Typer(
    name="retrievo",
    help="Search toolkit for the LLM era: index a collection, search it, evaluate pipelines.\n\n"
         "Start with `retrievo demo` (works offline on Python's own documentation).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

PIPELINE_HELP = ("Pipeline spec, e.g. 'bm25', 'bm25(k1=1.2,b=0.75) % 100', "
                 "'rrf(bm25, bm25(method=bm25l))'. `retrievo pipelines` lists the stages.")


def _fail(exc: BaseException) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _tty() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _print_results(index, rankings, k: int, highlight_on: bool = True) -> None:
    from retrievo.text.highlight import BOLD, PLAIN, highlight

    marks = BOLD if _tty() else PLAIN
    for ranked, query in zip(rankings, rankings.queries):
        typer.secho(f"\nQuery {query.qid}: {query.text}", bold=True)
        if not len(ranked):
            typer.echo("  (no matching documents)")
            continue
        terms = set(index.analyzer(query.text))
        for rank, (doc_id, score) in enumerate(ranked.top(k), start=1):
            doc = index.document(doc_id)
            title = f"  {doc.title}" if doc.title else ""
            typer.echo(f"{rank:>3}. {score:8.4f}  {doc_id}{title}")
            if highlight_on:
                typer.echo("       " + highlight(doc.text or doc.title, terms, index.analyzer, width=36, marks=marks))


@app.command()
def demo(
    path: Optional[Path] = typer.Argument(None, help="A folder of .txt/.md/.html files, a BEIR folder, a JSONL "
                                                     "corpus or an index. Default: Python's documentation topics "
                                                     "(ships with Python, no download)."),
    query: list[str] = typer.Option([], "--query", "-q", help="Query to run (repeatable). Default: a few sample "
                                                               "queries that fit the collection."),
    k: int = typer.Option(3, "-k", help="Results shown per query."),
    pipeline: str = typer.Option("bm25", "--pipeline", "-p", help=PIPELINE_HELP),
) -> None:
    """Index a collection, run a few searches and show ranked, highlighted results."""
    from retrievo import workflows
    from retrievo.types import Queries

    try:
        collection = None if path is not None and workflows.is_index(path) else workflows.open_source(path)
        start = time.perf_counter()
        index = workflows.load_index(path, progress=True)
        what = "Python documentation topics (built in)" if path is None else str(path)
        typer.echo(f"Indexed {len(index):,} passages from {what} in {time.perf_counter() - start:.1f} s "
                   f"({index.vocab_size:,} terms).")
        queries = Queries.of(query) if query else workflows.sample_queries(collection, index)
        stage = workflows.build_pipeline(pipeline, index)
        _print_results(index, stage(queries), k)
    except (RetrievoError, OSError) as exc:
        _fail(exc)


@app.command("index")
def index_cmd(
    source: Path = typer.Argument(..., help="BEIR folder, JSONL corpus, or folder of .txt/.md/.html files "
                                            "('pydoc' for the built-in corpus)."),
    output: Path = typer.Argument(..., help="Index folder to create (replaced atomically if it is an index)."),
    analyzer: str = typer.Option("english", help="'english' (Lucene EnglishAnalyzer, as Pyserini), 'standard', "
                                                 "or 'snowball:<language>'."),
    store: bool = typer.Option(True, help="Keep document texts in the index (needed for snippets, rerankers)."),
    segment_docs: int = typer.Option(200_000, help="Documents per segment while building (bounds memory)."),
    merge: bool = typer.Option(True, help="Merge the segments into one at the end (holds all postings in "
                                          "memory); --no-merge keeps them for collections larger than RAM."),
    add: bool = typer.Option(False, "--add", help="Add the documents to an existing index instead of rebuilding."),
) -> None:
    """Build a BM25-ready inverted index on disk (or add documents to one)."""
    from retrievo import workflows
    from retrievo.index import InvertedIndex

    try:
        start = time.perf_counter()
        if add:
            idx = InvertedIndex.open(output)
            collection = workflows.open_source(source)
            added = idx.add(collection.iter_documents(), progress=True)
            typer.echo(f"Added {len(added):,} documents to {output} ({len(idx):,} in all) "
                       f"in {time.perf_counter() - start:.1f} s.")
            return
        idx = workflows.build_index(None if str(source) == "pydoc" else source, output, analyzer=analyzer,
                                    store=store, progress=True, segment_docs=segment_docs, merge=merge)
        typer.echo(f"Indexed {len(idx):,} documents ({idx.vocab_size:,} terms) into {output} "
                   f"in {time.perf_counter() - start:.1f} s.")
    except (RetrievoError, OSError) as exc:  # FileExistsError is an OSError
        _fail(exc)


@app.command()
def search(
    index: Path = typer.Argument(..., help="Index folder (or any collection, indexed in memory first)."),
    query: list[str] = typer.Argument(None, help="Query text(s)."),
    queries_file: Optional[Path] = typer.Option(None, "--queries", help="Queries file: BEIR queries.jsonl, "
                                                                        "TSV (qid<TAB>text) or TREC topics."),
    k: int = typer.Option(10, "-k", help="Results per query."),
    pipeline: str = typer.Option("bm25", "--pipeline", "-p", help=PIPELINE_HELP),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write a TREC run file."),
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON lines."),
    snippets: bool = typer.Option(True, help="Show highlighted snippets."),
) -> None:
    """Search an index and print ranked results (or write a TREC run)."""
    from retrievo import workflows
    from retrievo.data import read_queries_jsonl, read_topics, read_tsv_queries, write_run
    from retrievo.types import Queries

    try:
        if queries_file is not None:
            name = queries_file.name.lower()
            if name.endswith((".jsonl", ".jsonl.gz")):
                queries = read_queries_jsonl(queries_file)
            elif name.endswith((".tsv", ".txt")) and "<top>" not in queries_file.read_text(errors="replace")[:2000]:
                queries = read_tsv_queries(queries_file)
            else:
                queries = read_topics(queries_file)
        elif query:
            queries = Queries.of(list(query))
        else:
            raise typer.BadParameter("give a query, or --queries FILE")
        idx = workflows.load_index(index, progress=True)
        stage = workflows.build_pipeline(pipeline, idx) % k
        rankings = workflows.run_in_batches(stage, queries, progress=len(queries) > 1000)
        if output is not None:
            write_run(output, rankings)
            typer.echo(f"Wrote {len(rankings.doc_ids):,} results for {len(rankings)} queries to {output}", err=True)
        if as_json:
            for ranked, q in zip(rankings, rankings.queries):
                typer.echo(json.dumps({"qid": q.qid, "query": q.text,
                                       "results": [{"doc_id": d, "score": s} for d, s in ranked]}))
        elif output is None:
            _print_results(idx, rankings, k, snippets)
    except (RetrievoError, OSError) as exc:
        _fail(exc)


@app.command("eval")
def eval_cmd(
    data_dir: str = typer.Argument(..., help="BEIR folder (corpus.jsonl[.gz], queries.jsonl, qrels/<split>.tsv), "
                                             "or irds:<ir_datasets id> such as irds:beir/scifact/test."),
    pipeline: str = typer.Option("bm25", "--pipeline", "-p", help=PIPELINE_HELP),
    split: str = typer.Option("test", help="Qrels split to evaluate on."),
    metrics: list[str] = typer.Option(["nDCG@10", "R@100", "AP", "RR@10"], "--metric", "-m",
                                      help="ir_measures metric name (repeatable): nDCG@10, R@100, AP, RR@10, P@5, "
                                           "Judged@10, ..."),
    index: Optional[Path] = typer.Option(None, help="Use this prebuilt index instead of indexing DATA_DIR."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object of aggregate metrics."),
    run_out: Optional[Path] = typer.Option(None, "--save-run", help="Also write the run in TREC format."),
    keep_self_hits: bool = typer.Option(False, help="Keep results whose doc id equals the query id "
                                                    "(BEIR drops them)."),
) -> None:
    """Evaluate a pipeline on a BEIR dataset with ir_measures metrics."""
    from retrievo import workflows
    from retrievo.data import write_run

    try:
        start = time.perf_counter()
        report = workflows.evaluate_pipeline(data_dir, pipeline, split=split, metrics=metrics, index=index,
                                             keep_self_hits=keep_self_hits, progress=not as_json)
        if run_out is not None:
            write_run(run_out, report.rankings)
        if as_json:
            typer.echo(json.dumps(report.metrics))
            return
        typer.echo(f"{report.pipeline} on {data_dir} ({report.split}, {report.num_queries} queries, "
                   f"{time.perf_counter() - start:.1f} s)")
        width = max(len(m) for m in report.metrics)
        for name, value in report.metrics.items():
            typer.echo(f"  {name:<{width}}  {value:.4f}")
    except (RetrievoError, OSError) as exc:
        _fail(exc)


@app.command()
def compare(
    data_dir: Path = typer.Argument(..., help="BEIR folder."),
    pipelines: list[str] = typer.Option(..., "--pipeline", "-p", help="Pipeline spec (repeat; first = baseline)."),
    split: str = typer.Option("test", help="Qrels split."),
    metrics: list[str] = typer.Option(["nDCG@10", "R@100", "AP"], "--metric", "-m", help="Metrics (repeatable)."),
    test: str = typer.Option("t", help="Paired test: t, wilcoxon, sign, permutation."),
    correction: str = typer.Option("holm", help="Multiple-testing correction: holm, bonferroni, fdr_bh, none."),
    out: Optional[Path] = typer.Option(None, help="Folder for results.md, results.csv, results.json and a plot."),
) -> None:
    """Compare pipelines on one dataset with paired significance tests."""
    from retrievo import workflows
    from retrievo.data import BeirDataset
    from retrievo.evaluate import Experiment

    try:
        ds = BeirDataset(data_dir)
        idx = workflows.build_index(data_dir, None, progress=True)
        systems = {p: workflows.build_pipeline(p, idx) for p in pipelines}
        result = Experiment(systems, ds.queries(split), ds.qrels(split), metrics=metrics, test=test,
                            correction=correction, drop_self_hits=True).run()
        typer.echo(result.to_markdown())
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / "results.md").write_text(result.to_markdown() + "\n", encoding="utf-8")
            result.to_csv(out / "results.csv")
            (out / "results.json").write_text(json.dumps(result.to_json(), indent=1), encoding="utf-8")
            try:
                result.plot(out / "results.png")
            except ImportError as exc:
                typer.echo(f"(no plot: {exc})", err=True)
            typer.echo(f"Wrote results to {out}", err=True)
    except (RetrievoError, OSError) as exc:
        _fail(exc)


@app.command()
def info(index: Path = typer.Argument(..., help="Index folder.")) -> None:
    """Show an index's manifest: documents, terms, segments, analyzer."""
    from retrievo.index import InvertedIndex

    try:
        idx = InvertedIndex.open(index)
        stats = idx.collection_stats()
        typer.echo(json.dumps({"path": str(index), "generation": idx.generation, "documents": len(idx),
                               "terms": idx.vocab_size, "segments": len(idx.segments),
                               "deleted": idx.total_docs - len(idx), "analyzer": idx.analyzer.config(),
                               **stats}, indent=1))
    except (RetrievoError, OSError) as exc:
        _fail(exc)


@app.command()
def delete(
    index: Path = typer.Argument(..., help="Index folder."),
    doc_ids: list[str] = typer.Argument(..., help="Document ids to delete."),
    missing_ok: bool = typer.Option(False, help="Ignore ids that are not in the index."),
) -> None:
    """Delete documents by id (tombstones; `retrievo merge` reclaims the space)."""
    from retrievo.index import InvertedIndex

    try:
        n = InvertedIndex.open(index).delete(doc_ids, missing_ok=missing_ok)
        typer.echo(f"Deleted {n} document(s) from {index}.")
    except (RetrievoError, OSError) as exc:
        _fail(exc)


@app.command()
def merge(index: Path = typer.Argument(..., help="Index folder.")) -> None:
    """Merge all segments into one and drop deleted documents."""
    from retrievo.index import InvertedIndex

    try:
        idx = InvertedIndex.open(index).merge()
        typer.echo(f"{index}: {len(idx):,} documents in {len(idx.segments)} segment(s).")
    except (RetrievoError, OSError) as exc:
        _fail(exc)


@app.command()
def pipelines() -> None:
    """List the stage names a pipeline spec can use."""
    import retrievo.retrieve  # noqa: F401
    from retrievo.pipeline import FUSION_METHODS, REGISTRY

    for name, text in REGISTRY.describe().items():
        typer.echo(f"{name:<10} {text}")
    typer.echo(f"{'fusion':<10} {', '.join(FUSION_METHODS)}: e.g. rrf(bm25, bm25(method=bm25l), k=60); "
               "a + b is CombSUM; '% k' cuts off; '>>' chains a reranker")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
