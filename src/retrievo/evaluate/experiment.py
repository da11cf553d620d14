"""Side-by-side comparison of systems on one query set, with significance against a baseline.

An :class:`Experiment` runs (or takes precomputed) rankings for each system, scores them
with :func:`~retrievo.evaluate.metrics.evaluate` and tests every non-baseline system
against the baseline with a paired test per metric.

Choices, stated once:

* Queries: the experiment's query set restricted to queries with judgments. A judged query
  a system answers with nothing scores 0 (``trec_eval -c``); judged queries outside the
  experiment's query set are ignored, so evaluating a subset of topics is safe.
* Multiple testing: p-values are corrected per metric across the non-baseline systems
  (the family is "all systems vs the baseline on this metric"), as PyTerrier's
  ``Experiment(correction=...)`` does. Metrics are reported separately, so they are not
  pooled into one family.
* Cost: mean seconds per query is the sum of the rankings' :class:`~retrievo.types.Cost`
  records divided by the number of queries; for a plain callable without cost records the
  wall time of the call is used; precomputed rankings without costs report NaN.
* Warm-up (``warmup=True``, the default): every callable system first answers the first
  ``WARMUP_QUERIES`` (32) queries once, untimed (``warmup=n`` uses the first ``n``,
  ``False`` none). Otherwise whichever system runs first pays one-off costs — numba
  compiling the BM25 kernels, per-thread buffers, pages of a memory-mapped index being
  read — and the baseline looked ~10x slower than an identical system run after it. Caches
  shared *between* systems still favour later ones for the queries outside the warm-up
  (e.g. an index's analyzer memoises stemmed query tokens); pass ``warmup=len(queries)``
  when the systems are cheap and timings must be exactly comparable.
* Protocol: the result carries a :class:`~retrievo.evaluate.protocol.Protocol` naming the
  systems' specs, the dataset's file hashes (``dataset=``/``split=``), the index identity
  (``index=``) and the rules (self-hits, depth, tie-breaking, metrics, test, correction).
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrievo.errors import ConfigError
from retrievo.evaluate.metrics import (
    DEFAULT_METRICS,
    EvaluationError,
    MetricsInput,
    MissingExtraError,
    QrelsInput,
    _qrels_dict,
    aggregate,
    evaluate,
    metric_names,
)
from retrievo.evaluate.protocol import Protocol, dataset_identity, rankings_depth, stage_models
from retrievo.evaluate.significance import (canonical_correction, canonical_test, correct, mean_difference_ci,
                                           paired_test)
from retrievo.types import Cost, Queries, Rankings, cost_summary, cost_table

System = Rankings | Callable[[Queries], Rankings]

WIN, LOSS = "win", "loss"
WARMUP_QUERIES = 32  # a batch: single queries and batches take different kernels in BM25
_MARK = {WIN: "▲", LOSS: "▼", "": ""}


def _system_spec(system: Any, i: int) -> str:
    """The full spec (resources included) that rebuilds a system, for its protocol."""
    record = getattr(system, "record_spec", None)
    return str(record()) if callable(record) and not isinstance(system, Rankings) else _system_name(system, i)


def _system_name(system: Any, i: int) -> str:
    if isinstance(system, Rankings):
        return f"run{i + 1}"
    spec = getattr(system, "spec", None)
    if callable(spec):
        try:  # a pipeline's label leaves out resource paths; its protocol records the full spec
            return str(spec(resources=False))
        except TypeError:
            return str(spec())
    return getattr(system, "__name__", None) or f"system{i + 1}"


def _unique(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} #{seen[n]}")
    return out


@dataclass
class ExperimentResult:
    """Aggregates, per-query values and tests of an :class:`Experiment` run.

    ``rows`` holds one dict per system: ``system``, ``baseline`` (bool), ``s_per_query``,
    and per metric ``<metric>`` (value), ``<metric> p`` (corrected p-value vs the baseline,
    NaN for the baseline itself) and ``<metric> sig`` (``"win"``, ``"loss"`` or ``""``).
    ``per_query`` is ``{system: {metric: {qid: value}}}``; ``rankings`` each system's
    rankings as evaluated (self-hits dropped when the experiment dropped them), for saving
    runs; ``protocol`` the manifest of the comparison.
    """

    names: list[str]
    metrics: list[str]
    rows: list[dict[str, Any]]
    per_query: dict[str, dict[str, dict[str, float]]]
    baseline: str | None
    test: str
    correction: str
    alpha: float
    raw_pvalues: dict[str, dict[str, float]] = field(default_factory=dict)
    protocol: Protocol | None = None
    rankings: dict[str, Rankings] = field(default_factory=dict, repr=False)

    # access ---------------------------------------------------------------------------
    def __getitem__(self, system: str) -> dict[str, Any]:
        for row in self.rows:
            if row["system"] == system:
                return row
        raise KeyError(f"no system named {system!r}; systems: {', '.join(self.names)}")

    def value(self, system: str, metric: str) -> float:
        return self[system][metric_names(metric)[0]]

    def costs(self, system: str) -> dict[str, Cost]:
        """What each stage of ``system`` spent on the experiment's queries (summed per
        stage: seconds, model calls, prompt/completion tokens, forward passes)."""
        if system not in self.rankings:
            raise KeyError(f"no rankings kept for {system!r}; systems: {', '.join(self.rankings) or 'none'}")
        return cost_summary(self.rankings[system].costs)

    def cost_markdown(self) -> str:
        """One cost table per system, stage by stage (what an LLM pipeline's reader wants
        next to its effectiveness: where the time and the tokens went)."""
        parts = []
        for name in self.names:
            run = self.rankings.get(name)
            if run is None or not run.costs:
                continue
            parts.append(f"**{name}**\n\n" + cost_table(run.costs, per_query=len(run.queries) or None))
        return "\n\n".join(parts)

    def columns(self) -> list[str]:
        cols = ["system", "baseline"]
        cols += self.metrics
        cols += [f"{m} p" for m in self.metrics] + [f"{m} sig" for m in self.metrics]
        return cols + ["s_per_query"]

    # outputs --------------------------------------------------------------------------
    def _legend(self) -> str:
        if self.baseline is None or len(self.names) < 2:
            return ""
        return (f"{_MARK[WIN]}/{_MARK[LOSS]}: significantly better/worse than {self.baseline} "
                f"(paired {self.test} test, {self.correction} correction per metric across systems, "
                f"alpha={self.alpha:g}).")

    def to_markdown(self, digits: int = 4, pvalues: bool = True) -> str:
        """A GitHub-flavoured markdown table (plus a legend line when tests were run)."""
        tested = self.baseline is not None and len(self.names) > 1
        head = ["system"] + self.metrics
        if tested and pvalues:
            head += [f"p({m})" for m in self.metrics]
        head.append("s/query")
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join([" --- "] + [" ---: "] * (len(head) - 1)) + "|"]
        for row in self.rows:
            name = f"{row['system']} (baseline)" if row["baseline"] else row["system"]
            cells = [name.replace("|", "\\|")]
            for m in self.metrics:
                mark = _MARK[row[f"{m} sig"]]
                cells.append(f"{row[m]:.{digits}f}" + (f" {mark}" if mark else ""))
            if tested and pvalues:
                cells += ["" if math.isnan(row[f"{m} p"]) else _fmt_p(row[f"{m} p"]) for m in self.metrics]
            s = row["s_per_query"]
            cells.append("" if math.isnan(s) else f"{s:.4g}")
            lines.append("| " + " | ".join(cells) + " |")
        legend = self._legend()
        return "\n".join(lines) + (f"\n\n{legend}" if legend else "")

    def __str__(self) -> str:
        return self.to_markdown()

    def to_csv(self, path: str | Path | None = None) -> str:
        """The aggregate table as CSV (empty cells for missing values); written to ``path``
        when given. Returns the CSV text either way."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        cols = self.columns()
        writer.writerow(cols)
        for row in self.rows:
            writer.writerow(["" if isinstance(row[c], float) and math.isnan(row[c]) else row[c] for c in cols])
        text = buf.getvalue()
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def to_json(self, per_query: bool = True) -> dict[str, Any]:
        """A JSON-serialisable dict (NaN becomes None)."""
        systems = []
        for row in self.rows:
            systems.append({
                "name": row["system"],
                "baseline": row["baseline"],
                "s_per_query": _nan_none(row["s_per_query"]),
                "metrics": {m: {"value": _nan_none(row[m]), "p": _nan_none(row[f"{m} p"]),
                                "p_raw": _nan_none(self.raw_pvalues.get(row["system"], {}).get(m, math.nan)),
                                "sig": row[f"{m} sig"]} for m in self.metrics},
                "costs": [c.to_dict() for c in cost_summary(self.rankings[row["system"]].costs).values()]
                if row["system"] in self.rankings else [],
            })
        out: dict[str, Any] = {"metrics": list(self.metrics), "baseline": self.baseline, "test": self.test,
                               "correction": self.correction, "alpha": self.alpha, "systems": systems}
        if per_query:
            out["per_query"] = self.per_query
        if self.protocol is not None:
            out["protocol"] = self.protocol.to_dict()
        return out

    def to_pandas(self, per_query: bool = False):
        """The aggregate table (one row per system), or with ``per_query=True`` a long
        frame with columns ``system``, ``qid``, ``metric``, ``value``."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise MissingExtraError("to_pandas needs pandas: pip install 'retrievo[pandas]'") from exc
        if per_query:
            rows = [(s, q, m, v) for s, table in self.per_query.items() for m, per_q in table.items()
                    for q, v in per_q.items()]
            return pd.DataFrame(rows, columns=["system", "qid", "metric", "value"])
        return pd.DataFrame(self.rows, columns=self.columns())

    def plot(self, path: str | Path, metric: str | None = None, dpi: int = 120) -> Path:
        """Write :meth:`figure` for ``metric`` as a PNG to ``path``."""
        path = Path(path)
        self.figure(metric).savefig(path, format="png", dpi=dpi)
        return path

    def figure(self, metric: str | None = None):
        """A matplotlib ``Figure`` for ``metric`` (default: the first).

        Left panel: a bar per system (its mean) with the per-query values as jittered points
        and significance markers. Right panel (when there is a baseline and another system):
        each system's per-query differences against the baseline, sorted, with the mean
        difference and its 95% t confidence interval as a band — how many queries gain or
        lose, by how much, and how sure the mean gain is, which the means alone hide.
        """
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as exc:
            raise MissingExtraError("plot needs matplotlib: pip install 'retrievo[plot]'") from exc
        import numpy as np

        name = self.metrics[0] if metric is None else metric_names(metric)[0]
        if name not in self.metrics:
            raise ConfigError(f"metric {name!r} was not evaluated; choose from {', '.join(self.metrics)}")
        others = [n for n in self.names if n != self.baseline] if self.baseline is not None else []
        panels = 2 if others else 1
        width = max(4.0, 1.2 * len(self.names) + 2)
        fig = Figure(figsize=(width + (5.5 if panels == 2 else 0.0), 4.2))
        FigureCanvasAgg(fig)  # Agg canvas without touching pyplot's global backend
        ax = fig.add_subplot(1, panels, 1)
        xs = np.arange(len(self.names))
        heights = [row[name] for row in self.rows]
        colors = ["#9e9e9e" if row["baseline"] else "#4c72b0" for row in self.rows]
        ax.bar(xs, heights, color=colors, alpha=0.75, width=0.6)
        rng = np.random.default_rng(0)
        top = max(heights + [0.0])
        for x, system in zip(xs, self.names):
            vals = np.fromiter(self.per_query[system][name].values(), dtype=float)
            if len(vals):
                ax.scatter(x + rng.uniform(-0.2, 0.2, len(vals)), vals, s=6, color="black", alpha=0.35, linewidths=0)
                top = max(top, float(vals.max()))
        for x, row in zip(xs, self.rows):
            mark = {WIN: "+", LOSS: "−"}.get(row[f"{name} sig"], "")
            label = f"{row[name]:.3f}{mark}"
            ax.text(x, row[name], label, ha="center", va="bottom", fontsize=8)
        ax.set_xticks(xs)
        ax.set_xticklabels(self.names, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(name)
        ax.set_ylim(0, top * 1.1 if top > 0 else 1.0)
        legend = f"+/−: significant vs {self.baseline} ({self.test}, {self.correction})" if self._legend() else ""
        ax.set_title(f"{name} per system" + (f"\n{legend}" if legend else ""), fontsize=9)
        if others:
            self._plot_differences(fig.add_subplot(1, 2, 2), name, others)
        fig.tight_layout()
        return fig

    def differences(self, metric: str, system: str) -> dict[str, float]:
        """Per-query ``system - baseline`` values of ``metric`` (paired by query id)."""
        if self.baseline is None:
            raise ConfigError("differences need a baseline; run the experiment with baseline=...")
        name = metric_names(metric)[0]
        base = self.per_query[self.baseline][name]
        self[system]  # an unknown name raises KeyError listing the systems
        mine = self.per_query[system][name]
        return {q: mine[q] - base[q] for q in base if q in mine}

    def _plot_differences(self, ax, name: str, others: list[str]) -> None:
        import numpy as np

        palette = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"]
        ax.axhline(0.0, color="black", linewidth=0.8)
        for i, system in enumerate(others):
            color = palette[i % len(palette)]
            diffs = self.differences(name, system)
            values = np.sort(np.fromiter(diffs.values(), dtype=float))
            if not len(values):
                continue
            xs = np.linspace(0.0, 1.0, len(values)) if len(values) > 1 else np.array([0.5])
            mean, low, high = mean_difference_ci(self.per_query[system][name], self.per_query[self.baseline][name])
            wins, losses = int((values > 0).sum()), int((values < 0).sum())
            ci = "" if math.isnan(low) else f" [{low:+.3f}, {high:+.3f}]"
            label = f"{system}: mean {mean:+.3f}{ci}; {wins} up, {losses} down"
            ax.plot(xs, values, drawstyle="steps-mid", color=color, linewidth=1.2, label=label)
            ax.axhline(mean, color=color, linestyle="--", linewidth=1.0)
            if not math.isnan(low):
                ax.axhspan(low, high, color=color, alpha=0.15, linewidth=0)
        ax.set_xlabel("queries, sorted by difference (fraction)")
        ax.set_ylabel(f"{name} − {self.baseline}")
        ax.set_title(f"per-query difference vs {self.baseline}\n(dashed: mean, band: 95% t confidence interval)",
                     fontsize=9)
        ax.legend(fontsize=7, loc="upper left")


def _fmt_p(p: float) -> str:
    return f"{p:.2e}" if p < 1e-3 else f"{p:.4f}"


def _nan_none(x: float) -> float | None:
    return None if isinstance(x, float) and math.isnan(x) else x


class Experiment:
    """Compare systems on ``queries`` against ``qrels``.

    ``systems``: a list or ``{name: system}`` dict; a system is a pipeline / any callable
    ``Queries -> Rankings``, or precomputed :class:`Rankings`. ``baseline`` is an index or a
    name (None: no tests). ``test``/``correction`` are those of :func:`paired_test` and
    :func:`correct`. ``names`` overrides the names of a list of systems. ``warmup`` runs
    each callable system once on the first queries before timing it (see the module notes).
    ``dataset`` (a BeirDataset or IrDataset), ``split`` and ``index`` only feed the result's
    protocol: the file hashes and index identity that make its numbers reproducible.
    """

    def __init__(
        self,
        systems: Sequence[System] | Mapping[str, System],
        queries: Queries | Any,
        qrels: QrelsInput,
        metrics: MetricsInput = DEFAULT_METRICS,
        baseline: int | str | None = 0,
        test: str = "t",
        correction: str | None = "holm",
        alpha: float = 0.05,
        drop_self_hits: bool = False,
        names: Sequence[str] | None = None,
        warmup: bool | int = True,
        dataset: Any = None,
        split: str | None = None,
        index: Any = None,
    ):
        if isinstance(systems, Mapping):
            if names is not None:
                raise ConfigError("names= is for a list of systems; a dict already names them")
            names, systems = [str(k) for k in systems], list(systems.values())
        else:
            systems = list(systems)
            if names is None:
                names = [_system_name(s, i) for i, s in enumerate(systems)]
            elif len(names) != len(systems):
                raise ConfigError(f"{len(names)} names for {len(systems)} systems")
        if not systems:
            raise ConfigError("an experiment needs at least one system")
        for s in systems:
            if not (isinstance(s, Rankings) or callable(s)):
                raise ConfigError(f"a system must be a pipeline, a callable Queries -> Rankings or Rankings, "
                                  f"got {type(s).__name__}")
        self.systems = systems
        self.specs = [_system_spec(s, i) for i, s in enumerate(systems)]
        self.names = _unique([str(n) for n in names])
        if isinstance(warmup, bool):
            self.warmup = WARMUP_QUERIES if warmup else 0
        elif isinstance(warmup, int) and warmup >= 0:
            self.warmup = warmup
        else:
            raise ConfigError(f"warmup must be True, False or a number of queries >= 0, got {warmup!r}")
        self.dataset, self.split, self.index = dataset, split, index
        self.queries = Queries.of(queries)
        self.metrics = metric_names(metrics)
        self.baseline = self._baseline_index(baseline)
        self.test, self.correction = canonical_test(test), canonical_correction(correction)
        self.alpha = float(alpha)
        self.drop_self_hits = drop_self_hits
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must lie in (0, 1), got {alpha}")
        qrels_dict = _qrels_dict(qrels)
        asked = set(self.queries.ids)
        self.qrels = {q: docs for q, docs in qrels_dict.items() if q in asked and docs}
        if not self.qrels:
            sample = ", ".join(repr(q) for q in self.queries.ids[:3])
            raise EvaluationError(f"none of the {len(self.queries)} queries ({sample}, ...) has judgments in the "
                                  "qrels; check that queries and qrels use the same ids")

    def _baseline_index(self, baseline: int | str | None) -> int | None:
        if baseline is None:
            return None
        if isinstance(baseline, str):
            if baseline not in self.names:
                raise ConfigError(f"baseline {baseline!r} is not a system; systems: {', '.join(self.names)}")
            return self.names.index(baseline)
        if not -len(self.names) <= baseline < len(self.names):
            raise ConfigError(f"baseline index {baseline} out of range for {len(self.names)} systems")
        return baseline % len(self.names)

    def _rankings(self, system: System) -> tuple[Rankings, float]:
        """The system's rankings and its mean seconds per query."""
        if isinstance(system, Rankings):
            rankings, wall = system, math.nan
        else:
            if self.warmup and len(self.queries):
                # one-off costs (JIT, caches, per-thread buffers) stay out of the timing; a batch,
                # not one query, so that batch-only code paths (BM25's multi-threaded kernel) warm too
                system(self.queries[:self.warmup])
            start = time.perf_counter()
            rankings = system(self.queries)
            wall = time.perf_counter() - start
            if not isinstance(rankings, Rankings):
                raise EvaluationError(f"a system returned {type(rankings).__name__}, expected Rankings")
        n = len(rankings.queries)
        if rankings.costs:
            per_query = sum(c.seconds for c in rankings.costs) / n if n else math.nan
        else:
            per_query = wall / n if n else math.nan
        return rankings, per_query

    def run(self) -> ExperimentResult:
        per_query: dict[str, dict[str, dict[str, float]]] = {}
        seconds: dict[str, float] = {}
        aggregates: dict[str, dict[str, float]] = {}
        depth = 0
        evaluated: dict[str, Rankings] = {}
        for name, system in zip(self.names, self.systems):
            rankings, seconds[name] = self._rankings(system)
            depth = max(depth, rankings_depth(rankings) or 0)
            evaluated[name] = rankings.drop_self_hits() if self.drop_self_hits else rankings
            run = {q: docs for q, docs in evaluated[name].to_dict().items() if q in self.qrels}
            per_query[name] = evaluate(run, self.qrels, self.metrics, per_query=True)
            aggregates[name] = aggregate(per_query[name], self.metrics)
        raw, adjusted, sig = self._tests(per_query)
        rows = []
        for i, name in enumerate(self.names):
            row: dict[str, Any] = {"system": name, "baseline": i == self.baseline}
            row.update(aggregates[name])
            for m in self.metrics:
                row[f"{m} p"] = adjusted.get(name, {}).get(m, math.nan)
            for m in self.metrics:
                row[f"{m} sig"] = sig.get(name, {}).get(m, "")
            row["s_per_query"] = seconds[name]
            rows.append(row)
        base = None if self.baseline is None else self.names[self.baseline]
        return ExperimentResult(list(self.names), list(self.metrics), rows, per_query, base, self.test,
                                self.correction, self.alpha, raw, self._protocol(base, depth), evaluated)

    def _protocol(self, baseline: str | None, depth: int) -> Protocol:
        models: list[Any] = []
        for system in self.systems:
            models += [m for m in stage_models(system) if m not in models]
        data = dataset_identity(self.dataset, self.split) if self.dataset is not None else {}
        return Protocol.for_evaluation(
            pipelines=self.specs, metrics=self.metrics, num_queries=len(self.qrels),
            self_hits="dropped" if self.drop_self_hits else "kept", split=self.split, depth=depth, data=data,
            index=self.index, models=models, systems=list(self.names), baseline=baseline, test=self.test,
            correction=self.correction, alpha=self.alpha, warmup=self.warmup)

    def _tests(self, per_query):
        raw: dict[str, dict[str, float]] = {}
        adjusted: dict[str, dict[str, float]] = {}
        sig: dict[str, dict[str, str]] = {}
        if self.baseline is None or len(self.names) < 2:
            return raw, adjusted, sig
        base = self.names[self.baseline]
        others = [n for n in self.names if n != base]
        for m in self.metrics:
            results = [paired_test(per_query[n][m], per_query[base][m], self.test) for n in others]
            corrected = correct([r.pvalue for r in results], self.correction)
            for n, r, p in zip(others, results, corrected):
                raw.setdefault(n, {})[m] = r.pvalue
                adjusted.setdefault(n, {})[m] = float(p)
                won = r.mean_diff > 0
                sig.setdefault(n, {})[m] = (WIN if won else LOSS) if p < self.alpha and r.mean_diff != 0 else ""
        return raw, adjusted, sig


__all__ = ["Experiment", "ExperimentResult"]
