"""`retrievo` command line: a thin typer shell over :mod:`retrievo.workflows`.

Every failure a user can cause is reported as one ``error: ...`` line with exit code 2,
never a traceback: commands catch :class:`~retrievo.errors.RetrievoError` (which includes
missing optional extras) and ``OSError``. Numbers come with their protocol: ``eval``,
``evaluate`` and ``compare`` print a one-line summary of it (on stderr when stdout carries
JSON) and write it beside the files they produce.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from retrievo.errors import MissingExtraError, RetrievoError

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


def _positive_k(k: int) -> int:
    """``-k`` must be >= 1: 0 or a negative value would otherwise mean "everything"."""
    from retrievo.errors import ConfigError

    if k < 1:
        raise ConfigError(f"-k must be at least 1, got {k}")
    return k


def _version_callback(value: bool) -> None:
    if value:
        from retrievo import __version__

        typer.echo(f"retrievo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print retrievo's version and exit."),
) -> None:
    """Search toolkit for the LLM era: index a collection, search it, evaluate pipelines.

    Start with `retrievo demo` (works offline on Python's own documentation).
    """


def _jit_notice(parallel: bool) -> None:
    """Announce numba's one-off compilation of the search kernels (5-20 s of silence
    otherwise looks like a hang); silent when the on-disk cache is warm."""
    from retrievo.retrieve.topk import kernels_cached

    if kernels_cached(parallel) is False:
        typer.echo("note: compiling the search kernels (numba, first run only, about 5-20 s); "
                   "later runs load them from the cache.", err=True)


def _protocol_line(protocol, to_stderr: bool) -> None:
    typer.echo(protocol.summary(), err=to_stderr)


TAG_HELP = "Run tag: the last column of the TREC run file (names the system for trec_eval and submissions)."


def _cost_lines(summary, num_queries: int) -> None:
    """One line per stage: what it spent (seconds per query, and model calls / tokens /
    forward passes when a stage counted any)."""
    if not summary:
        return
    typer.echo("cost per stage:")
    for stage, c in summary.items():
        extra = ", ".join(f"{getattr(c, f):,} {f.replace('_', ' ')}" for f in
                          ("calls", "prompt_tokens", "completion_tokens", "forward_passes") if getattr(c, f))
        per_q = c.seconds / num_queries * 1000 if num_queries else float("nan")
        typer.echo(f"  {stage:<10} {c.seconds:8.3f} s  ({per_q:.2f} ms/query)" + (f"; {extra}" if extra else ""))


def _tty() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _print_results(index, rankings, k: int, highlight_on: bool = True) -> None:
    from retrievo.text.highlight import BOLD, PLAIN, highlight
    from retrievo.types import Document

    marks = BOLD if _tty() else PLAIN
    for ranked, query in zip(rankings, rankings.queries):
        typer.secho(f"\nQuery {query.qid}: {query.text}", bold=True)
        if not len(ranked):
            typer.echo("  (no matching documents)")
            continue
        terms = set(index.analyzer(query.text))
        top = ranked.top(k)
        # one batched read of the shown documents; an index built without stored text shows ids only
        docs = index.documents(top.doc_ids.tolist()) if getattr(index, "store", True) \
            else [Document(d, "") for d in top.doc_ids.tolist()]
        for rank, ((doc_id, score), doc) in enumerate(zip(top, docs), start=1):
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
        _positive_k(k)
        pipeline = workflows.check_pipeline(pipeline)  # a typo fails before anything is indexed
        collection = None if path is not None and workflows.is_index(path) else workflows.open_source(path)
        start = time.perf_counter()
        index = workflows.load_index(path, progress=True)
        what = "Python documentation topics (built in)" if path is None else str(path)
        typer.echo(f"Indexed {len(index):,} passages from {what} in {time.perf_counter() - start:.1f} s "
                   f"({index.vocab_size:,} terms).")
        queries = Queries.of(query) if query else workflows.sample_queries(collection, index)
        stage = workflows.build_pipeline(pipeline, index)
        _jit_notice(len(queries) > 1)
        _print_results(index, stage(queries), k)
    except (RetrievoError, OSError) as exc:
        _fail(exc)


@app.command("index")
def index_cmd(
    source: Path = typer.Argument(..., help="BEIR folder, JSONL corpus, or folder of .txt/.md/.html files "
                                            "('pydoc' for the built-in corpus)."),
    output: Path = typer.Argument(..., help="Index folder to create (replaced atomically if it is an index)."),
    analyzer: Optional[str] = typer.Option(None, help="'english' (Lucene EnglishAnalyzer, as Pyserini; the "
                                                      "default), 'standard', or 'snowball:<language>'. With "
                                                      "--add it must match the index's analyzer."),
    store: bool = typer.Option(True, help="Keep document texts in the index (needed for snippets, rerankers)."),
    segment_docs: int = typer.Option(200_000, help="Documents per segment while building (bounds memory)."),
    merge: bool = typer.Option(True, help="Merge the segments into one at the end (holds all postings in "
                                          "memory); --no-merge keeps them for collections larger than RAM."),
    add: bool = typer.Option(False, "--add", help="Add the documents to an existing index instead of rebuilding."),
    upsert: bool = typer.Option(False, "--upsert", help="Insert the documents into an existing index, replacing "
                                                        "those with the same ids, in one atomic commit."),
    fields: Optional[str] = typer.Option(None, "--fields", help="Also index these fields separately for bm25f, "
                                                                "e.g. title,text,abstract (opt-in: more disk)."),
) -> None:
    """Build a BM25-ready inverted index on disk (or add documents to one)."""
    from retrievo import workflows
    from retrievo.index import open_index

    try:
        start = time.perf_counter()
        if add and upsert:
            from retrievo.errors import ConfigError

            raise ConfigError("--add and --upsert exclude each other (--upsert also adds new ids)")
        if upsert:
            idx = open_index(output)
            workflows.check_same_analyzer(idx, analyzer)
            replaced, added_n = idx.upsert(workflows.open_source(source).iter_documents(), progress=True)
            typer.echo(f"Upserted into {output}: {replaced:,} replaced, {added_n:,} added ({len(idx):,} in all) "
                       f"in {time.perf_counter() - start:.1f} s.")
            return
        if add:
            idx = open_index(output)
            workflows.check_same_analyzer(idx, analyzer)
            collection = workflows.open_source(source)
            added = idx.add(collection.iter_documents(), progress=True)
            typer.echo(f"Added {len(added):,} documents to {output} ({len(idx):,} in all) "
                       f"in {time.perf_counter() - start:.1f} s.")
            return
        idx = workflows.build_index(None if str(source) == "pydoc" else source, output, analyzer=analyzer or "english",
                                    store=store, progress=True, segment_docs=segment_docs, merge=merge,
                                    fields=fields.split(",") if fields else None)
        typer.echo(f"Indexed {len(idx):,} documents ({idx.vocab_size:,} terms) into {output} "
                   f"in {time.perf_counter() - start:.1f} s.")
    except (RetrievoError, OSError) as exc:  # FileExistsError is an OSError
        _fail(exc)


@app.command()
def search(
    index: Path = typer.Argument(..., help="Index folder (or any collection, indexed in memory first: a BEIR "
                                           "folder, a JSONL corpus, a folder of files, irds:<id>)."),
    query: list[str] = typer.Argument(None, help="Query text(s); run after the queries of --queries when both "
                                                 "are given (ids q1, q2, ... not used by the file)."),
    queries_file: Optional[Path] = typer.Option(None, "--queries", help="Queries file, format detected from its "
                                                                        "content: BEIR queries.jsonl[.gz], TSV "
                                                                        "(qid<TAB>text) or TREC topics."),
    k: int = typer.Option(10, "-k", help="Results per query."),
    pipeline: str = typer.Option("bm25", "--pipeline", "-p", help=PIPELINE_HELP),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write a TREC run file (and its protocol "
                                                                       "to <file>.protocol.json)."),
    tag: str = typer.Option("retrievo", "--tag", help=TAG_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON lines (one object per query)."),
    snippets: bool = typer.Option(True, help="Show highlighted snippets (--no-snippets: ids and scores only)."),
    filter_: Optional[str] = typer.Option(None, "--filter", help="Metadata filter applied by every retriever "
                                                                  "before top-k, e.g. \"year >= 2015 and source "
                                                                  "in ('pubmed','pmc')\"."),
) -> None:
    """Search an index and print ranked results (or write a TREC run)."""
    from retrievo import workflows

    try:
        _positive_k(k)
        queries = workflows.search_queries(queries_file, list(query or []))
        pipeline = workflows.check_pipeline(pipeline)  # a typo fails before anything is indexed
        idx = workflows.load_index(index, progress=True)
        from retrievo.filtering import with_filter

        stage = with_filter(workflows.build_pipeline(pipeline, idx), filter_) % k
        _jit_notice(len(queries) > 1)
        rankings = workflows.run_in_batches(stage, queries, progress=len(queries) > 1000)
        if output is not None:
            protocol = workflows.search_protocol(stage, rankings, idx, queries_file)
            workflows.save_run(output, rankings, protocol, tag=tag)
            typer.echo(f"Wrote {len(rankings.doc_ids):,} results for {len(rankings)} queries to {output} "
                       f"(protocol: {output}.protocol.json)", err=True)
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
    split: str = typer.Option("test", help="Qrels split to evaluate on (BEIR folders; an irds id names its own)."),
    metrics: list[str] = typer.Option(["nDCG@10", "R@100", "AP", "RR@10"], "--metric", "-m",
                                      help="ir_measures metric name (repeatable): nDCG@10, R@100, AP, RR@10, P@5, "
                                           "Judged@10, ..."),
    index: Optional[Path] = typer.Option(None, help="Use this prebuilt index instead of indexing DATA_DIR."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object of aggregate metrics keyed by "
                                                       "metric name (the protocol line goes to stderr)."),
    run_out: Optional[Path] = typer.Option(None, "--save-run", help="Also write the run in TREC format, with its "
                                                                    "protocol in <file>.protocol.json."),
    tag: str = typer.Option("retrievo", "--tag", help=TAG_HELP),
    protocol_out: Optional[Path] = typer.Option(None, "--protocol", help="Also write the protocol manifest "
                                                                         "(JSON) to this file."),
    keep_self_hits: bool = typer.Option(False, help="Keep results whose doc id equals the query id "
                                                    "(BEIR drops them)."),
) -> None:
    """Evaluate a pipeline on a BEIR dataset with ir_measures metrics."""
    from retrievo import workflows

    try:
        start = time.perf_counter()
        _jit_notice(True)
        report = workflows.evaluate_pipeline(data_dir, pipeline, split=split, metrics=metrics, index=index,
                                             keep_self_hits=keep_self_hits, progress=not as_json)
        if run_out is not None:
            workflows.save_run(run_out, report.rankings, report.protocol, tag=tag)
        if protocol_out is not None:
            report.protocol.write(protocol_out)
        if as_json:
            typer.echo(json.dumps(report.metrics))
            _protocol_line(report.protocol, to_stderr=True)
            return
        typer.echo(f"{report.pipeline} on {data_dir} ({report.split}, {report.num_queries} queries, "
                   f"{time.perf_counter() - start:.1f} s)")
        width = max(len(m) for m in report.metrics)
        for name, value in report.metrics.items():
            typer.echo(f"  {name:<{width}}  {value:.4f}")
        _cost_lines(report.costs, report.num_queries)
        _protocol_line(report.protocol, to_stderr=False)
    except (RetrievoError, OSError) as exc:
        _fail(exc)


@app.command("evaluate")
def evaluate_cmd(
    run: Path = typer.Argument(..., help="TREC run file (qid Q0 docno rank score tag); ranks come from the "
                                         "scores, ties as trec_eval breaks them."),
    qrels: Path = typer.Argument(..., help="Judgments: TREC qrels (qid 0 docno rel) or BEIR TSV (query-id "
                                           "corpus-id score, header optional); the format is detected."),
    metrics: list[str] = typer.Option(["nDCG@10", "R@100", "AP", "RR@10"], "--metric", "-m",
                                      help="ir_measures or trec_eval metric name (repeatable): nDCG@10, AP, "
                                           "P@5, ndcg_cut_10, recip_rank, ..."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: aggregates keyed by metric name "
                                                       "(plus 'per_query' with --per-query)."),
    per_query: bool = typer.Option(False, "--per-query", "-q", help="Also print each query's values "
                                                                    "(trec_eval -q)."),
    drop_self_hits: bool = typer.Option(False, help="Drop results whose doc id equals the query id (BEIR "
                                                    "convention; retrievo's own BEIR runs already did)."),
    judged_only: bool = typer.Option(False, help="Average over the judged queries the run contains (plain "
                                                 "pytrec_eval) instead of every judged query, missing ones "
                                                 "scoring 0 (trec_eval -c, the default)."),
    protocol_out: Optional[Path] = typer.Option(None, "--protocol", help="Also write the protocol manifest "
                                                                         "(JSON) to this file."),
) -> None:
    """Score an existing run file against judgments, like trec_eval."""
    from retrievo.evaluate import evaluate_run

    try:
        result = evaluate_run(run, qrels, metrics, per_query=per_query, drop_self_hits=drop_self_hits,
                              judged_queries_only=judged_only)
        if protocol_out is not None:
            result.protocol.write(protocol_out)
        if as_json:
            payload: dict = dict(result.metrics)
            if per_query:
                payload["per_query"] = result.per_query
            typer.echo(json.dumps(payload))
            _protocol_line(result.protocol, to_stderr=True)
            return
        width = max(20, *(len(m) for m in result.metrics))
        if per_query and result.per_query:
            for name, values in result.per_query.items():
                for qid, value in values.items():
                    typer.echo(f"{name:<{width}}\t{qid}\t{value:.4f}")
        typer.echo(f"{'num_q':<{width}}\tall\t{result.num_queries}")
        for name, value in result.metrics.items():
            typer.echo(f"{name:<{width}}\tall\t{value:.4f}")
        _protocol_line(result.protocol, to_stderr=False)
    except (RetrievoError, OSError) as exc:
        _fail(exc)


@app.command()
def rerank(
    run: Path = typer.Argument(..., help="TREC run file to rerank (qid Q0 docno rank score tag)."),
    index: Path = typer.Argument(..., help="Index with stored documents (or a collection, indexed in memory "
                                           "first: a BEIR folder, a JSONL corpus, ...); the reranker reads the "
                                           "candidates' text from it."),
    pipeline: str = typer.Option(..., "--pipeline", "-p", help="Reranker spec, e.g. 'first(window=20)', "
                                                               "'cross_encoder(model=...)', 'pointwise >> prp'."),
    queries_file: Optional[Path] = typer.Option(None, "--queries", help="Query texts (BEIR queries.jsonl, TSV or "
                                                                        "TREC topics); default: INDEX's "
                                                                        "queries.jsonl when INDEX is a BEIR folder."),
    depth: int = typer.Option(100, "--depth", "-d", help="Rerank each query's top DEPTH results of the run."),
    output: Path = typer.Option(..., "--output", "-o", help="Reranked TREC run to write (its protocol goes to "
                                                            "<file>.protocol.json)."),
    qrels: Optional[Path] = typer.Option(None, help="Judgments: also print nDCG@10 of the run before and after."),
    tag: str = typer.Option("retrievo", "--tag", help=TAG_HELP),
) -> None:
    """Rerank an existing TREC run (any system's) with a reranker pipeline."""
    from retrievo import workflows
    from retrievo.types import cost_summary

    try:
        _positive_k(depth)
        workflows.check_pipeline(pipeline)  # a typo fails before anything is indexed or loaded
        idx = workflows.load_index(index, progress=True)
        start = time.perf_counter()
        rankings, stage, queries = workflows.rerank_run(run, idx, pipeline, queries_file=queries_file,
                                                        source=index, depth=depth, progress=True)
        seconds = time.perf_counter() - start
        protocol = workflows.search_protocol(stage, rankings, idx, queries_file)
        workflows.save_run(output, rankings, protocol, tag=tag)
        typer.echo(f"Reranked {len(queries)} queries (top {depth}) in {seconds:.1f} s; wrote {output}", err=True)
        _cost_lines(cost_summary(rankings.costs), len(queries))
        if qrels is not None:
            from retrievo.data import read_run
            from retrievo.evaluate import evaluate_run

            before = read_run(run, queries).subset(rankings.queries.ids)
            for label, ranked in (("before", before), ("after", rankings)):
                result = evaluate_run(ranked, qrels, ["nDCG@10"], judged_queries_only=True)
                typer.echo(f"  nDCG@10 {label}: {result.metrics['nDCG@10']:.4f} ({result.num_queries} judged "
                           f"queries)")
    except (RetrievoError, OSError) as exc:
        _fail(exc)


@app.command()
def compare(
    data_dir: str = typer.Argument(..., help="BEIR folder, or irds:<ir_datasets id> such as irds:beir/scifact/test."),
    pipelines: list[str] = typer.Option(..., "--pipeline", "-p", help="Pipeline spec (repeat; first = baseline; "
                                                                      "each must differ)."),
    split: str = typer.Option("test", help="Qrels split (BEIR folders; an irds id names its own)."),
    metrics: list[str] = typer.Option(["nDCG@10", "R@100", "AP"], "--metric", "-m", help="Metrics (repeatable)."),
    test: str = typer.Option("t", help="Paired test: t, wilcoxon, sign, permutation."),
    correction: str = typer.Option("holm", help="Multiple-testing correction: holm, bonferroni, fdr_bh, none."),
    index: Optional[Path] = typer.Option(None, help="Use this prebuilt index instead of indexing DATA_DIR."),
    keep_self_hits: bool = typer.Option(False, help="Keep results whose doc id equals the query id "
                                                    "(BEIR drops them)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results (with per-query values and the "
                                                       "protocol) as one JSON object instead of a table."),
    out: Optional[Path] = typer.Option(None, help="Folder for results.md, results.csv, results.json, "
                                                  "protocol.json and a plot (results.png)."),
    save_runs: Optional[Path] = typer.Option(None, "--save-runs", help="Folder for each system's TREC run "
                                                                       "(<n>-<spec>.trec, tagged with the "
                                                                       "spec) and its protocol."),
) -> None:
    """Compare pipelines on one dataset with paired significance tests."""
    from retrievo import workflows

    try:
        _jit_notice(True)
        result = workflows.compare_pipelines(data_dir, pipelines, split=split, metrics=metrics, index=index,
                                             test=test, correction=correction, keep_self_hits=keep_self_hits,
                                             progress=True)
        if as_json:
            typer.echo(json.dumps(result.to_json()))
        else:
            typer.echo(result.to_markdown())
            costs = result.cost_markdown()
            if costs:
                typer.echo("\nCost per stage (warm-up excluded):\n\n" + costs)
        _protocol_line(result.protocol, to_stderr=as_json)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / "results.md").write_text(result.to_markdown() + "\n\n" + result.cost_markdown() + "\n",
                                            encoding="utf-8")
            result.to_csv(out / "results.csv")
            (out / "results.json").write_text(json.dumps(result.to_json(), indent=1), encoding="utf-8")
            result.protocol.write(out / "protocol.json")
            try:
                result.plot(out / "results.png")
            except MissingExtraError as exc:
                typer.echo(f"(no plot: {exc})", err=True)
            typer.echo(f"Wrote results to {out}", err=True)
        if save_runs is not None:
            written = workflows.save_experiment_runs(result, save_runs)
            typer.echo(f"Wrote {len(written)} runs to {save_runs}", err=True)
    except (RetrievoError, OSError) as exc:
        _fail(exc)


def _human_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


@app.command()
def info(
    index: Path = typer.Argument(..., help="Index folder."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (documents, deleted, terms, "
                                                       "segments, generation, format, analyzer, "
                                                       "size_on_disk_bytes, identity, path) for scripts."),
) -> None:
    """Summarise an index: documents, deletions, terms, segments, size on disk, analyzer, identity."""
    from retrievo import workflows

    try:
        facts = workflows.describe_index(index)
        if as_json:
            typer.echo(json.dumps(facts, indent=1))
            return
        analyzer = facts.get("analyzer")
        if isinstance(analyzer, dict):  # the settings that change tokens, not the class path
            analyzer = ", ".join(f"{k}={v}" for k, v in analyzer.items() if k not in ("type", "version"))
        rows = [("path", facts.get("path")),
                ("documents", f"{facts['documents']:,}"),
                ("deleted", f"{facts['deleted']:,} (reclaimed by `retrievo merge`)" if facts["deleted"]
                 else "0"),
                ("terms", f"{facts['terms']:,}"),
                ("segments", facts["segments"]),
                ("generation", facts.get("generation")),
                ("format", facts.get("format")),
                ("size on disk", _human_bytes(facts.get("size_on_disk_bytes"))),
                ("analyzer", analyzer),
                ("identity", facts.get("identity") or "(not recorded by this index format)")]
        if facts.get("fields"):
            rows.append(("fields", ", ".join(facts["fields"])))
        if facts.get("metadata"):  # the filter-able columns, with their types
            rows.append(("metadata", ", ".join(f"{k} ({t})" for k, t in facts["metadata"].items())))
        for name, value in rows:
            typer.echo(f"{name + ':':<14}{value}")
    except (RetrievoError, OSError) as exc:
        _fail(exc)


@app.command()
def check(
    index: Path = typer.Argument(..., help="Index folder."),
    quick: bool = typer.Option(False, "--quick", help="Structure, sizes and recorded hashes only: skip "
                                                      "recomputing the sha256 of every file."),
) -> None:
    """Verify an index completely (like `git fsck`): recompute every file's sha256 and check
    the structure of its arrays. Exit 0 when healthy, 1 with the problems listed otherwise."""
    from retrievo.index.verify import verify_index

    try:
        report = verify_index(index, full=not quick)
    except (RetrievoError, OSError) as exc:
        _fail(exc)
    for note in report.notes:
        typer.echo(f"note: {note}")
    if report.ok:
        typer.echo(f"{index}: generation {report.generation} is healthy")
        return
    for problem in report.problems:
        typer.secho(f"problem: {problem}", fg=typer.colors.RED)
    typer.echo(f"{index}: {len(report.problems)} problem(s); rebuild the index (`retrievo index`)")
    raise typer.Exit(1)


@app.command()
def delete(
    index: Path = typer.Argument(..., help="Index folder."),
    doc_ids: list[str] = typer.Argument(..., help="Document ids to delete."),
    missing_ok: bool = typer.Option(False, help="Ignore ids that are not in the index."),
) -> None:
    """Delete documents by id (tombstones; `retrievo merge` reclaims the space)."""
    from retrievo.index import open_index

    try:
        n = open_index(index).delete(doc_ids, missing_ok=missing_ok)
        typer.echo(f"Deleted {n} document(s) from {index}.")
    except (RetrievoError, OSError) as exc:
        _fail(exc)


@app.command()
def merge(index: Path = typer.Argument(..., help="Index folder.")) -> None:
    """Merge all segments into one and drop deleted documents."""
    from retrievo.index import open_index

    try:
        idx = open_index(index).merge()
        typer.echo(f"{index}: {len(idx):,} documents in {len(idx.segments)} segment(s).")
    except (RetrievoError, OSError) as exc:
        _fail(exc)


@app.command()
def pipelines(
    name: Optional[str] = typer.Argument(None, help="Show one stage only."),
    as_json: bool = typer.Option(False, "--json", help="Print the registry as JSON."),
) -> None:
    """List the stages a pipeline spec can use, with their kinds and options.

    Reads the registry's data only: no retriever, model or plugin module is imported.
    """
    from retrievo.registry import REGISTRY

    try:
        entries = [REGISTRY.entry(name)] if name else list(REGISTRY)
    except RetrievoError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps([{
            "name": e.name, "kind": e.kind, "help": e.help, "takes": list((e.io() or ((), ""))[0]),
            "gives": (e.io() or ((), None))[1], "example": e.example,
            "options": [{"name": o.name, "type": o.type, "default": o.default, "choices": list(o.choices),
                         "min": o.min, "max": o.max, "help": o.help} for o in e.options or ()],
        } for e in entries], indent=1))
        return
    for e in entries:
        io = e.io()
        flow = f"{' or '.join(io[0])} -> {io[1]}" if io else "any"
        if e.kind == "fusion":
            flow = "what its branches take -> rankings"
        typer.secho(f"{e.name}", bold=True, nl=False)
        typer.echo(f"  [{e.kind}: {flow}]  {e.help}")
        for o in e.options or ():
            typer.echo(f"    {o.describe():<42} {o.help}")
        if e.options is None:
            typer.echo("    (options not declared: any name=value is passed through)")
        if getattr(e, "extra", None) is not None:
            typer.echo(f"    {'<name>: ' + e.extra.type + ' (any other option)':<42} {e.extra.help}")
        if e.example:
            typer.echo(f"    e.g. {e.example}")
    if not name:
        typer.echo("\nOperators: a >> b (then; a retriever after a ranking re-scores its candidates), "
                   "a % k (cut-off), a + b (CombSUM). Values are typed as you would: bm25(method=bm25+), "
                   "bm25(index=sf.idx), quoted strings, sub-pipelines.")


@app.command("serve-llm")
def serve_llm(
    model: Optional[str] = typer.Argument(None, help="The model to serve: smollm2 (default), qwen2.5-coder-0.5b, "
                                          "a .gguf file, a Hugging Face folder or name; options as "
                                          "'smollm2?dtype=fp32'."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (the server has no authentication: keep it on "
                             "loopback unless you mean to share it)."),
    port: int = typer.Option(8000, help="Port to listen on."),
    name: Optional[str] = typer.Option(None, help="Model id the server reports and accepts (default: MODEL)."),
) -> None:
    """Serve a local LLM over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions with
    logprobs, /v1/models, /tokenize, /health): `retrievo serve-llm smollm2`, then name
    `http://127.0.0.1:8000/v1?model=smollm2` as a reranker's model."""
    from retrievo.llm.server import serve

    try:
        serve(model, host=host, port=port, name=name)
    except RetrievoError as exc:
        _fail(exc)


from retrievo.cli.serve import register as _register_serve  # noqa: E402  (serve, key: the service's commands)

_register_serve(app)

from retrievo.cli import rag as _rag  # noqa: E402  (question answering: ask, rag-eval)

app.command("ask")(_rag.ask_cmd)
app.command("rag-eval")(_rag.rag_eval_cmd)

from retrievo.cli.train import register as _register_train  # noqa: E402  (train cross-encoder|bi-encoder|lora-pointwise)

_register_train(app)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
