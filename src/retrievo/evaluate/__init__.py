"""Evaluation: ir_measures metrics, paired significance tests and multi-system experiments."""

from retrievo.evaluate.experiment import Experiment, ExperimentResult
from retrievo.evaluate.metrics import (
    DEFAULT_METRICS,
    EvaluationError,
    MetricError,
    MissingExtraError,
    aggregate,
    evaluate,
    metric_names,
    parse_metrics,
    per_query_frame,
)
from retrievo.evaluate.significance import TestResult, correct, paired_test

__all__ = [
    "DEFAULT_METRICS",
    "EvaluationError",
    "Experiment",
    "ExperimentResult",
    "MetricError",
    "MissingExtraError",
    "TestResult",
    "aggregate",
    "correct",
    "evaluate",
    "metric_names",
    "paired_test",
    "parse_metrics",
    "per_query_frame",
]
