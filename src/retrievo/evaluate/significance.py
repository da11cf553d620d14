"""Paired significance tests over per-query values, and multiple-testing corrections.

The tests are scipy's; this module pairs the values (by position or by query id), handles
the degenerate cases scipy answers with warnings or errors, and corrects families of
p-values. Degenerate input is answered, not raised: identical systems give p = 1, fewer than
two paired queries give NaN, and :attr:`TestResult.note` says why.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from retrievo.errors import ConfigError
from retrievo.evaluate.metrics import EvaluationError

TESTS = ("t", "wilcoxon", "sign", "permutation")
CORRECTIONS = ("holm", "bonferroni", "fdr_bh", "none")
_CORRECTION_ALIASES = {"bh": "fdr_bh", "fdr": "fdr_bh", "benjamini-hochberg": "fdr_bh", None: "none"}
_TEST_ALIASES = {"ttest": "t", "t-test": "t", "paired-t": "t", "signed-rank": "wilcoxon", "randomization": "permutation"}

Values = Sequence[float] | np.ndarray | Mapping[str, float]


@dataclass(frozen=True)
class TestResult:
    """Outcome of one paired test; ``statistic`` is test-specific (t, W, wins, mean diff)."""

    __test__ = False  # not a pytest test class despite the name

    test: str
    statistic: float
    pvalue: float
    n: int
    mean_diff: float
    note: str = ""


def canonical_test(test: str) -> str:
    """The canonical name of a paired test (aliases such as ``"ttest"`` allowed)."""
    name = _TEST_ALIASES.get(test, test)
    if name not in TESTS:
        raise ConfigError(f"unknown significance test {test!r}; choose from {', '.join(TESTS)}")
    return name



def canonical_correction(method: str | None) -> str:
    """The canonical name of a correction method (``"bh"`` -> ``"fdr_bh"``, None -> ``"none"``)."""
    name = _CORRECTION_ALIASES.get(method, method)
    if name not in CORRECTIONS:
        raise ConfigError(f"unknown multiple-testing correction {method!r}; choose from {', '.join(CORRECTIONS)}")
    return name


def _paired(a: Values, b: Values) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
            raise EvaluationError("pair dicts with dicts: pass both systems as {qid: value} or both as sequences")
        if a.keys() != b.keys():
            only = sorted(set(a) ^ set(b))[:3]
            raise EvaluationError(f"paired values need the same query ids; e.g. {only} are in only one system")
        keys = list(a)
        a, b = [a[k] for k in keys], [b[k] for k in keys]
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise EvaluationError(f"paired values must be two 1-d sequences of equal length, got {x.shape} and {y.shape}")
    if np.isnan(x).any() or np.isnan(y).any():
        raise EvaluationError("per-query values contain NaN; evaluate both systems on the same judged queries")
    return x, y


def _permutation(x: np.ndarray, y: np.ndarray, alternative: str, n_resamples: int, seed: int):
    def mean_diff(u, v, axis):
        return np.mean(u - v, axis=axis)

    kwargs = {"rng": np.random.default_rng(seed)} if "rng" in inspect.signature(stats.permutation_test).parameters \
        else {"random_state": seed}
    return stats.permutation_test((x, y), mean_diff, permutation_type="samples", vectorized=True,
                                  n_resamples=n_resamples, alternative=alternative, **kwargs)


def paired_test(a: Values, b: Values, test: str = "t", alternative: str = "two-sided",
                n_resamples: int = 10_000, seed: int = 0) -> TestResult:
    """Test whether systems ``a`` and ``b`` differ on the same queries.

    ``test``: ``"t"`` (scipy ``ttest_rel``), ``"wilcoxon"`` (signed-rank, zero differences
    dropped), ``"sign"`` (exact binomial test on wins vs losses, ties dropped) or
    ``"permutation"`` (paired sign-flip test of the mean difference, exact when
    ``2**n <= n_resamples``, otherwise ``n_resamples`` draws from a generator seeded with
    ``seed`` so results are reproducible). ``a`` and ``b`` are sequences in the same query
    order or ``{qid: value}`` dicts with the same ids.
    """
    test = canonical_test(test)
    x, y = _paired(a, b)
    n = len(x)
    diff = x - y
    mean_diff = float(diff.mean()) if n else math.nan
    if n < 2:
        return TestResult(test, math.nan, math.nan, n, mean_diff,
                          f"a paired test needs at least 2 queries, got {n}; no p-value")
    if not diff.any():
        return TestResult(test, 0.0, 1.0, n, 0.0, "identical per-query values: no difference to test")
    if test == "t":
        res = stats.ttest_rel(x, y, alternative=alternative)
        note = "all differences are equal, so t is infinite" if np.ptp(diff) == 0 else ""
        return TestResult(test, float(res.statistic), float(res.pvalue), n, mean_diff, note)
    if test == "wilcoxon":
        res = stats.wilcoxon(x, y, alternative=alternative)
        return TestResult(test, float(res.statistic), float(res.pvalue), n, mean_diff)
    if test == "sign":
        wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
        res = stats.binomtest(wins, wins + losses, 0.5, alternative=alternative)
        return TestResult(test, float(wins), float(res.pvalue), n, mean_diff, f"{wins} wins, {losses} losses, "
                          f"{n - wins - losses} ties")
    res = _permutation(x, y, alternative, n_resamples, seed)
    return TestResult(test, float(res.statistic), float(res.pvalue), n, mean_diff)


def mean_difference_ci(a: Values, b: Values, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of the paired differences ``a - b`` and its two-sided ``level`` confidence
    interval from the t distribution: ``(mean, low, high)``.

    The interval says how large the improvement plausibly is, which a p-value does not;
    it is the interval of the paired t test, so it excludes 0 exactly when that test's
    (uncorrected) p-value is below ``1 - level``. Fewer than two pairs give NaN bounds;
    identical differences give a zero-width interval.
    """
    if not 0 < level < 1:
        raise ConfigError(f"level must lie in (0, 1), got {level}")
    x, y = _paired(a, b)
    d = x - y
    if len(d) == 0:
        return math.nan, math.nan, math.nan
    mean = float(d.mean())
    if len(d) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    return mean, mean - half, mean + half


def correct(pvalues: Sequence[float] | np.ndarray, method: str = "holm") -> np.ndarray:
    """Adjust a family of p-values for multiple comparisons; returns adjusted p-values in
    input order. NaN entries (tests that could not run) stay NaN and do not count in the
    family size.

    ``holm``: step-down Holm (1979), controls the family-wise error rate;
    ``bonferroni``: ``min(1, m * p)``; ``fdr_bh``: Benjamini–Hochberg false discovery rate
    (scipy's ``false_discovery_control``); ``none``: unchanged.
    """
    method = canonical_correction(method)
    p = np.asarray(pvalues, dtype=np.float64).copy()
    if p.ndim != 1:
        raise EvaluationError(f"pvalues must be a 1-d sequence, got shape {p.shape}")
    valid = ~np.isnan(p)
    if ((p[valid] < 0) | (p[valid] > 1)).any():
        raise EvaluationError("p-values must lie in [0, 1]")
    q = p[valid]
    m = len(q)
    if method == "none" or m == 0:
        return p
    if method == "bonferroni":
        q = np.minimum(1.0, q * m)
    elif method == "holm":
        order = np.argsort(q, kind="stable")
        stepped = np.maximum.accumulate((m - np.arange(m)) * q[order])
        q = np.empty(m)
        q[order] = np.minimum(1.0, stepped)
    else:
        q = stats.false_discovery_control(q, method="bh")
    p[valid] = q
    return p


__all__ = ["CORRECTIONS", "TESTS", "TestResult", "canonical_correction", "canonical_test", "correct", "paired_test"]
