"""Effectiveness metrics, computed by ir_measures so numbers match pytrec_eval / trec_eval.

retrievo never re-implements a metric: this module only resolves friendly names, shapes the
inputs and decides which queries an average runs over.

Query set (documented choice). By default an aggregate averages over every query that has
at least one judgment in the qrels; a judged query the run does not answer (absent, or an
empty result list) contributes 0 to every measure. That is ``trec_eval -c`` ("missing
queries contribute a value of 0 to all evaluation measures") and what ir_measures >= 0.4
does; it keeps a system from looking better by skipping hard queries.
``judged_queries_only=True`` instead averages over the judged queries the run contains (its
query ids, empty lists included), which is what plain pytrec_eval / BEIR report. Unjudged
queries never count: they cannot be scored.

Ranks are taken from scores, with trec_eval's tie-breaking (the order of a result list is
not consulted), exactly as pytrec_eval and ir_measures do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Union

import ir_measures
from ir_measures import Measure

from retrievo.errors import EvaluationError, MetricError, MissingExtraError
from retrievo.types import Qrels, Rankings

DEFAULT_METRICS: tuple[str, ...] = ("nDCG@10", "R@100", "AP", "RR@10")


RunInput = Union[Rankings, Mapping[str, Mapping[str, float]]]
QrelsInput = Union[Qrels, Mapping[str, Mapping[str, int]]]
MetricsInput = Union[str, Measure, Iterable[Union[str, Measure]]]

# Lower-cased names users type, mapped to ir_measures' own names. ir_measures' registry
# (nDCG, AP, RR, R, P, Judged, ...) is added lower-cased below, so "ndcg@10" and "judged@10"
# resolve too.
_ALIASES = {
    "map": "AP",
    "mrr": "RR",
    "recall": "R",
    "precision": "P",
    "hits": "Success",
    "hit": "Success",
}
_NAMES = {name.lower(): name for name in ir_measures.measures.registry}
_NAMES.update(_ALIASES)
_HEAD = re.compile(r"^\s*([^\W\d][\w]*)(.*)$", re.S)


def _resolve(name: str) -> list[Measure]:
    text = name.strip()
    if not text:
        raise MetricError("empty metric name; use e.g. 'nDCG@10', 'AP' or 'R@100'")
    attempts: list[str] = [text]
    m = _HEAD.match(text)
    if m and m.group(1).lower() in _NAMES:
        attempts.append(_NAMES[m.group(1).lower()] + m.group(2).strip())
    problem = None
    for candidate in attempts:
        try:
            return [ir_measures.parse_measure(candidate)]
        except NameError:
            continue
        except KeyError as exc:  # a parameter the measure does not have
            problem = f"unknown parameter {exc.args[0]!r}"
        except (ValueError, SyntaxError, TypeError) as exc:
            problem = str(exc).split(";")[0]
    try:  # trec_eval / pytrec_eval spellings: ndcg_cut_10, recip_rank, P_5, recall.100
        return list(ir_measures.parse_trec_measure(text))
    except Exception:  # noqa: BLE001 - any failure here means "not a trec name either"
        pass
    detail = f" ({problem})" if problem else ""
    raise MetricError(
        f"unknown metric {name!r}{detail}. Use an ir_measures name such as 'nDCG@10', 'AP', "
        f"'RR@10', 'R@100', 'P@5', 'Judged@10' or 'AP(rel=2)', a trec_eval name such as "
        f"'ndcg_cut_10', or an alias: {', '.join(sorted(_ALIASES))} (case-insensitive)"
    )


def parse_metrics(names: MetricsInput) -> tuple[Measure, ...]:
    """Resolve metric names (case-insensitive, aliases allowed) to ir_measures measures.

    Accepts one name, a list of names or ir_measures ``Measure`` objects. Duplicates (e.g.
    ``"mrr@10"`` and ``"RR@10"``) collapse to one, keeping the first position.
    """
    if isinstance(names, (str, Measure)):
        names = [names]
    out: dict[str, Measure] = {}
    for name in names:
        if isinstance(name, Measure):
            found = [name]
        elif isinstance(name, str):
            found = _resolve(name)
        else:
            raise MetricError(f"a metric must be a name or an ir_measures Measure, got {type(name).__name__}")
        for measure in found:
            _check_supported(name, measure)
            out.setdefault(str(measure), measure)
    if not out:
        raise MetricError("no metrics requested; pass e.g. ('nDCG@10', 'AP')")
    return tuple(out.values())


def _check_supported(name: object, measure: Measure) -> None:
    try:
        measure.validate_params()
        supported = ir_measures.DefaultPipeline.supports(measure)
    except (AssertionError, KeyError, ValueError, TypeError) as exc:
        raise MetricError(f"metric {name!r} has an invalid parameter ({exc}); see ir_measures' docs for "
                          f"the parameters of {getattr(measure, 'NAME', measure)}") from None
    if not supported:
        raise MetricError(
            f"metric {str(measure)!r} parses but no installed ir_measures provider computes it; "
            "install the provider ir_measures names for it, or pick another metric"
        )


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------


def _qrels_dict(qrels: QrelsInput) -> dict[str, dict[str, int]]:
    if isinstance(qrels, Qrels):
        return qrels.to_dict()
    if not isinstance(qrels, Mapping):
        raise EvaluationError(f"qrels must be a Qrels or a {{qid: {{doc_id: relevance}}}} dict, got {type(qrels).__name__}")
    return {str(q): {str(d): int(r) for d, r in docs.items()} for q, docs in qrels.items()}


def _run_dict(run: RunInput, drop_self_hits: bool) -> dict[str, dict[str, float]]:
    if isinstance(run, Rankings):
        return (run.drop_self_hits() if drop_self_hits else run).to_dict()
    if not isinstance(run, Mapping):
        raise EvaluationError(f"a run must be Rankings or a {{qid: {{doc_id: score}}}} dict, got {type(run).__name__}")
    out = {str(q): {str(d): float(s) for d, s in docs.items()} for q, docs in run.items()}
    if drop_self_hits:  # one definition of the BEIR rule: Rankings.drop_self_hits
        out = Rankings.from_dict(out).drop_self_hits().to_dict()
    return out


def _query_set(run: Mapping[str, Mapping], qrels: Mapping[str, Mapping], judged_queries_only: bool) -> list[str]:
    judged = [q for q, docs in qrels.items() if docs]
    if not judged:
        raise EvaluationError("the qrels hold no judgments, so nothing can be evaluated")
    in_run = [q for q in run if q in qrels and qrels[q]]
    if run and not in_run:
        sample_run = ", ".join(repr(q) for q in list(run)[:3])
        sample_qrels = ", ".join(repr(q) for q in judged[:3])
        raise EvaluationError(
            f"no query id of the run is judged (run: {sample_run}, ...; qrels: {sample_qrels}, ...); "
            "check that both use the same query ids"
        )
    if judged_queries_only:
        return in_run
    seen = set(in_run)
    return in_run + [q for q in judged if q not in seen]


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------


def _per_query(run, qrels, measures, judged_queries_only) -> dict[str, dict[str, float]]:
    qids = _query_set(run, qrels, judged_queries_only)
    answered = {q: run[q] for q in qids if run.get(q)}  # empty lists: some providers divide by len
    judged = {q: qrels[q] for q in qids}
    values: dict[str, dict[str, float]] = {str(m): {} for m in measures}
    if answered:
        for metric in ir_measures.iter_calc(list(measures), judged, answered):
            values[str(metric.measure)][metric.query_id] = float(metric.value)
    # fixed query order (the run's, then unanswered judged ones); ir_measures gives judged
    # queries without results the measure's default (0); empty lists get the same here
    return {str(m): {q: values[str(m)].get(q, float(m.DEFAULT)) for q in qids} for m in measures}


def evaluate(
    rankings: RunInput,
    qrels: QrelsInput,
    metrics: MetricsInput = DEFAULT_METRICS,
    per_query: bool = False,
    drop_self_hits: bool = False,
    judged_queries_only: bool = False,
) -> dict[str, Any]:
    """Score a run against qrels with ir_measures.

    Returns ``{metric: value}`` keyed by ir_measures' canonical name (``"nDCG@10"``,
    ``"R@100"``, ``"AP"``, ``"RR@10"``) in the order the metrics were requested, or with
    ``per_query=True`` ``{metric: {qid: value}}``. See the module docstring for which queries
    count; ``drop_self_hits`` removes documents whose id equals the query id (BEIR).
    """
    measures = parse_metrics(metrics)
    run = _run_dict(rankings, drop_self_hits)
    table = _per_query(run, _qrels_dict(qrels), measures, judged_queries_only)
    return table if per_query else aggregate(table, measures)


def aggregate(table: Mapping[str, Mapping[str, float]], metrics: MetricsInput | None = None) -> dict[str, float]:
    """Aggregate ``{metric: {qid: value}}`` the way ir_measures does (the mean, or the sum
    for counts such as ``NumRet``)."""
    measures = parse_metrics(list(table) if metrics is None else metrics)
    out = {}
    for measure in measures:
        agg = measure.aggregator()
        for value in table[str(measure)].values():
            agg.add(value)
        out[str(measure)] = float(agg.result())
    return out


def per_query_frame(
    rankings: RunInput,
    qrels: QrelsInput,
    metrics: MetricsInput = DEFAULT_METRICS,
    drop_self_hits: bool = False,
    judged_queries_only: bool = False,
):
    """Per-query values as a long pandas frame with columns ``qid``, ``metric``, ``value``."""
    try:
        import pandas as pd
    except ImportError as exc:
        raise MissingExtraError("per_query_frame needs pandas: pip install 'retrievo[pandas]'") from exc
    table = evaluate(rankings, qrels, metrics, per_query=True, drop_self_hits=drop_self_hits,
                     judged_queries_only=judged_queries_only)
    rows = [(q, m, v) for m, per_q in table.items() for q, v in per_q.items()]
    return pd.DataFrame(rows, columns=["qid", "metric", "value"])


def metric_names(metrics: MetricsInput) -> list[str]:
    """Canonical names of ``metrics`` in request order (the keys :func:`evaluate` uses)."""
    return [str(m) for m in parse_metrics(metrics)]


__all__ = ["DEFAULT_METRICS", "EvaluationError", "MetricError", "MissingExtraError", "aggregate", "evaluate", "metric_names", "parse_metrics",
           "per_query_frame"]
