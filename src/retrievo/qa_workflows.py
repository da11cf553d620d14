"""The question-answering jobs the command line and the benchmark run, as plain functions:
``retrievo rag-eval`` is :func:`evaluate_rag`, ``retrievo ask`` is :func:`ask`.

:func:`evaluate_rag` reads a QA folder (``qa.jsonl`` plus a BEIR corpus), indexes the
corpus (or opens ``index``), runs an answer pipeline over the first ``limit`` questions in
file order, in chunks so a long run reports progress, and returns the issue's summary —
``EM``, ``F1``, ``accuracy``, ``evidence_R@5``, ``evidence_R@10``, ``citation_precision``,
``seconds_per_question``, ``llm_calls`` (LLM calls per question, every stage's records
summed) — with the per-query report beside it. A metric no answer defines (evidence of a
closed-book pipeline, citation precision when nothing is cited) is ``None``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrievo.data.qa import QADataset, load_qa
from retrievo.errors import ConfigError
from retrievo.evaluate.qa import QAReport, evaluate_answers
from retrievo.pipeline import Stage
from retrievo.types import Answers, Cost, Queries

SUMMARY_KEYS = ("EM", "F1", "accuracy", "evidence_R@5", "evidence_R@10", "citation_precision",
                "seconds_per_question", "llm_calls")


@dataclass
class RagRun:
    summary: dict[str, float | None]
    report: QAReport
    answers: list[Any]
    costs: list[Cost]


def answer_pipeline(spec: str | Stage, index: Any) -> Stage:
    from retrievo import workflows

    stage = workflows.build_pipeline(workflows.check_pipeline(spec), index)
    if not issubclass(stage.gives, Answers):
        raise ConfigError(f"{stage.spec(resources=False)!r} gives rankings, not answers: end the pipeline with a "
                          "reader, e.g. 'bm25 % 10 >> read'")
    return stage


def evaluate_rag(data_dir: str | Path, pipeline: str | Stage, *, limit: int | None = None, index: Any = None,
                 qa: QADataset | None = None, chunk: int = 5, progress: bool = False) -> RagRun:
    """Run and score an answer pipeline on a QA folder (see the module docstring)."""
    from retrievo import workflows

    qa = qa or load_qa(data_dir, limit)
    if limit is not None:
        qa = qa.head(limit)
    idx = index if index is not None and not isinstance(index, (str, Path)) else workflows.load_index(index or data_dir)
    stage = answer_pipeline(pipeline, idx)
    reports, answers, costs = [], [], []
    start = time.perf_counter()
    ids = list(qa.queries.ids)
    for lo in range(0, len(ids), chunk):
        part = qa.queries.subset(ids[lo:lo + chunk])
        out = stage(part)
        reports.append(evaluate_answers(out, qa.answers, qa.evidence, ks=(5, 10)))
        answers.extend(out)
        costs.extend(out.costs)
        if progress:
            print(f"  {min(lo + chunk, len(ids))}/{len(ids)} questions, {time.perf_counter() - start:.0f} s",
                  file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start
    per_query = {k: np.concatenate([r.per_query[k] for r in reports]) for k in reports[0].per_query} if reports else {}
    report = QAReport(ids, per_query)
    m = report.metrics
    n = max(1, len(ids))
    summary = {k: m.get(k) for k in SUMMARY_KEYS[:6]}
    summary["seconds_per_question"] = seconds / n
    summary["llm_calls"] = sum(c.calls for c in costs) / n
    return RagRun(summary, report, answers, costs)


def ask(question: str, pipeline: str | Stage, index: Any) -> tuple[Iterator[str], Any, Stage]:
    """Stream one question's answer: ``(pieces, result, stage)``. When the pipeline ends in
    a reader that streams (``… >> read``), the stages before it run first and the reader's
    tokens come as the model writes them; any other answer pipeline runs whole and its
    answer comes as one piece. After the pieces are consumed, ``result()`` gives
    ``(answer text, [(marker or None, doc id)])``."""
    from retrievo.pipeline import Then
    from retrievo.rag.base import question_text

    question_text(question)  # an empty question is refused before any work
    stage = answer_pipeline(pipeline, index)
    queries = Queries(["q"], [question])
    last = stage.stages[-1] if isinstance(stage, Then) else stage
    head = None
    if isinstance(stage, Then):
        head = Then(tuple(stage.stages[:-1])) if len(stage.stages) > 2 else stage.stages[0]
    if getattr(last, "streams", False) and (head is None or not issubclass(head.gives, Queries)):
        if head is None:
            ranked_ids: list[str] = []
            scores: list[float] = []
        else:
            got = head(queries)
            ranked_ids, scores = got.doc_ids.tolist(), got.scores.tolist()
        stream = last.stream_answer(queries[0], ranked_ids, scores)

        def result():
            r = stream.reading
            return (r.text if r else ""), [(m, d) for m, d in stream.sources]

        return iter(stream), result, stage
    holder: dict[str, Any] = {}

    def pieces() -> Iterator[str]:
        out = stage(queries)
        holder["a"] = out[0]
        yield out[0].text

    def result_whole():
        a = holder.get("a")
        return (a.text if a else ""), [(None, d) for d in (a.citations if a else ())]

    return pieces(), result_whole, stage


__all__ = ["RagRun", "SUMMARY_KEYS", "answer_pipeline", "ask", "evaluate_rag"]
