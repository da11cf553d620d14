"""``retrievo ask`` and ``retrievo rag-eval``: thin shells over :mod:`retrievo.qa_workflows`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from retrievo.errors import RetrievoError

ASK_PIPELINE = "bm25 % 10 >> read(k=5)"


def ask_cmd(
    question: str = typer.Argument(..., help="The question to answer."),
    index: Optional[Path] = typer.Option(None, "--index", help="Index folder (or any collection, indexed in memory "
                                         "first); default: the built-in Python documentation corpus."),
    pipeline: str = typer.Option(ASK_PIPELINE, "--pipeline", "-p", help="Answer pipeline ending in a reader, e.g. "
                                 "'bm25 % 10 >> read(model=qwen2.5-coder-0.5b)'."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (answer, sources) instead of "
                                 "streaming."),
) -> None:
    """Answer a question with cited sources, streaming the answer as it is generated."""
    from retrievo import qa_workflows, workflows

    try:
        idx = workflows.load_index(index)
        pieces, result, _stage = qa_workflows.ask(question, pipeline, idx)
        if as_json:
            for _ in pieces:
                pass
        else:
            for piece in pieces:
                typer.echo(piece, nl=False)
            typer.echo("")
        text, sources = result()
        docs = {d.doc_id: d for d in idx.documents([d for _, d in sources])} if sources else {}
        if as_json:
            typer.echo(json.dumps({"question": question, "answer": text,
                                   "sources": [{"marker": m, "doc_id": d, "title": docs[d].title}
                                               for m, d in sources]}))
            return
        typer.echo(f"Answer: {text}")
        if sources:
            typer.echo("Sources:")
            for m, d in sources:
                label = f"[{m}] " if m is not None else "- "
                typer.echo(f"  {label}{d}  {docs[d].title}")
        else:
            typer.echo("Sources: none cited")
    except RetrievoError as exc:
        from retrievo.cli.main import _fail

        _fail(exc)


def rag_eval_cmd(
    data_dir: Path = typer.Argument(..., help="QA folder: qa.jsonl (question, answers, gold_doc_ids) beside a BEIR "
                                    "corpus.jsonl, e.g. ../shared/data/hotpotqa."),
    pipeline: str = typer.Option(ASK_PIPELINE, "--pipeline", "-p", help="Answer pipeline ending in a reader."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N questions (file order)."),
    index: Optional[Path] = typer.Option(None, help="Use this prebuilt index instead of indexing DATA_DIR."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: EM, F1, accuracy, evidence_R@5, "
                                 "evidence_R@10, citation_precision, seconds_per_question, llm_calls."),
) -> None:
    """Evaluate an answer pipeline on a QA dataset (EM, F1, evidence recall, citations, cost)."""
    from retrievo import qa_workflows

    try:
        if limit is not None and limit < 1:
            from retrievo.errors import ConfigError

            raise ConfigError(f"--limit must be >= 1, got {limit}")
        run = qa_workflows.evaluate_rag(data_dir, pipeline, limit=limit, index=index, progress=not as_json)
        if as_json:
            typer.echo(json.dumps(run.summary))
            return
        typer.echo(f"{pipeline} on {data_dir} ({len(run.report.qids)} questions)")
        for k, v in run.summary.items():
            typer.echo(f"  {k:<22} {'-' if v is None else f'{v:.4f}'}")
    except (RetrievoError, OSError) as exc:
        from retrievo.cli.main import _fail

        _fail(exc)
