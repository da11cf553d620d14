"""Evaluation: ir_measures metrics, paired significance tests and multi-system experiments.

This package is also *callable*: ``retrievo.evaluate(run, qrels, metrics)`` is
:func:`retrievo.evaluate.metrics.evaluate`. The reason is ``from retrievo import evaluate``:
the package ``retrievo`` and this subpackage share the name ``evaluate``, and whenever this
subpackage is imported (by ``from retrievo import Experiment``, by ``import
retrievo.evaluate.metrics``, by the CLI...) the import system sets ``retrievo.evaluate`` to
the *module*, overriding any function bound there. Which object a user got would then
depend on import order. Rebinding the attribute to the function is no fix either, since
``retrievo.evaluate.Experiment`` must keep working. So the module itself is made callable
(its class becomes a ``ModuleType`` subclass with ``__call__``), and ``from retrievo import
evaluate`` gives the same object — usable as the function — in every import order.
"""

import inspect as _inspect
import sys as _sys
import types as _types

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
from retrievo.evaluate.protocol import Protocol
from retrievo.evaluate.runs import RunEvaluation, evaluate_run
from retrievo.evaluate.significance import TestResult, correct, mean_difference_ci, paired_test

_evaluate_function = evaluate


class _CallableModule(_types.ModuleType):
    """The ``retrievo.evaluate`` module, callable as :func:`retrievo.evaluate.metrics.evaluate`."""

    def __call__(self, *args, **kwargs):
        return _evaluate_function(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
__signature__ = _inspect.signature(_evaluate_function)  # help() and IDEs show evaluate's parameters

__all__ = [
    "DEFAULT_METRICS",
    "EvaluationError",
    "Experiment",
    "ExperimentResult",
    "MetricError",
    "MissingExtraError",
    "Protocol",
    "RunEvaluation",
    "TestResult",
    "aggregate",
    "correct",
    "evaluate",
    "evaluate_run",
    "mean_difference_ci",
    "metric_names",
    "paired_test",
    "parse_metrics",
    "per_query_frame",
]
