"""Scoring a run that already exists: a TREC run file (or Rankings) against judgments.

This is what ``trec_eval RUN QRELS`` does, as a function: a run produced by any system —
retrievo, Pyserini, a colleague's script — can be scored with the same metric code and the
same query-set rules as retrievo's own pipelines, and the result carries a
:class:`~retrievo.evaluate.protocol.Protocol` naming the exact files scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrievo.errors import EvaluationError
from retrievo.evaluate.metrics import (DEFAULT_METRICS, MetricsInput, QrelsInput, RunInput, _qrels_dict,
                                       _run_dict, aggregate, evaluate, metric_names)
from retrievo.evaluate.protocol import Protocol, file_identity, rankings_depth


@dataclass
class RunEvaluation:
    """Scores of one run: aggregates (``metrics``), per-query values when asked for, the
    number of queries averaged over, and the protocol of the evaluation."""

    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]] | None
    num_queries: int
    protocol: Protocol


def evaluate_run(
    run: RunInput | str | Path,
    qrels: QrelsInput | str | Path,
    metrics: MetricsInput = DEFAULT_METRICS,
    *,
    per_query: bool = False,
    drop_self_hits: bool = False,
    judged_queries_only: bool = False,
) -> RunEvaluation:
    """Evaluate ``run`` (a TREC run file path, :class:`~retrievo.types.Rankings` or a
    ``{qid: {doc: score}}`` dict) against ``qrels`` (a TREC or BEIR qrels path — detected
    by :func:`~retrievo.data.read_judgments` — a :class:`~retrievo.types.Qrels` or a dict).

    Raises :class:`EvaluationError` when no query of the run is judged: averaging over
    judged queries the run never answered would report a confident 0 for what is almost
    always an id mismatch (e.g. a run for another split or collection).
    """
    from retrievo.data import read_judgments, read_run

    names = metric_names(metrics)  # first: a typo in a metric should not wait for large files to be read
    data: dict[str, Any] = {}
    if isinstance(run, (str, Path)):
        data["run"] = file_identity(run)
        run = read_run(run)
    if isinstance(qrels, (str, Path)):
        data["qrels"] = file_identity(qrels)
        qrels = read_judgments(qrels)
    run_dict = _run_dict(run, drop_self_hits)
    qrels_dict = _qrels_dict(qrels)
    judged = {q for q, docs in qrels_dict.items() if docs}
    common = [q for q in run_dict if q in judged]
    if not common:
        run_ids = ", ".join(repr(q) for q in list(run_dict)[:3]) or "none"
        qrels_ids = ", ".join(repr(q) for q in list(judged)[:3]) or "none"
        raise EvaluationError(f"the run and the qrels have no query in common (run: {run_ids}; judged: "
                              f"{qrels_ids}); check that they belong to the same collection and split")
    table = evaluate(run_dict, qrels_dict, names, per_query=True, judged_queries_only=judged_queries_only)
    num_queries = len(next(iter(table.values()))) if table else 0
    protocol = Protocol.for_evaluation(
        pipelines=[], metrics=names, num_queries=num_queries, data=data,
        self_hits="dropped" if drop_self_hits else "kept", depth=rankings_depth(run_dict),
        query_set=("judged queries in the run" if judged_queries_only
                   else "judged queries; unanswered ones score 0 (trec_eval -c)"),
        queries_in_run=len(run_dict), queries_in_common=len(common))
    return RunEvaluation(aggregate(table, names), table if per_query else None, num_queries, protocol)


__all__ = ["RunEvaluation", "evaluate_run"]
