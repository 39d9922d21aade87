"""Seed statistics: t confidence intervals, paired t-tests from SQL aggregates, Holm-Bonferroni.

The views return the sufficient statistics of each paired comparison (number of pairs, mean and sample
standard deviation of the differences); the tests here turn them into two-sided p-values, so the
per-sample test over hundreds of thousands of evaluation samples never leaves the database.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the two-sided t interval); half-width is NaN for fewer than two values."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return math.nan, math.nan
    if len(x) < 2:
        return float(x.mean()), math.nan
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean()), float(half)


def paired_t(n: float, mean_diff: float, sd_diff: float) -> tuple[float, float]:
    """(t, two-sided p) of a paired t-test from its aggregates; NaN when it cannot be computed.

    Zero spread: p = 1 when every difference is zero (identical outputs), NaN otherwise (t is unbounded
    and the t-test says nothing useful)."""
    if n is None or mean_diff is None or sd_diff is None:
        return math.nan, math.nan
    n, mean_diff, sd_diff = float(n), float(mean_diff), float(sd_diff)
    if not n >= 2 or math.isnan(mean_diff) or math.isnan(sd_diff):
        return math.nan, math.nan
    if sd_diff == 0:
        return (0.0, 1.0) if mean_diff == 0 else (math.nan, math.nan)
    t = mean_diff / (sd_diff / math.sqrt(n))
    return float(t), float(2 * stats.t.sf(abs(t), n - 1))


def paired_t_many(n, mean_diff, sd_diff) -> tuple[np.ndarray, np.ndarray]:
    """paired_t over arrays (one scipy call for a whole table's comparisons)."""
    n, m, sd = (np.asarray(x, dtype=float) for x in (n, mean_diff, sd_diff))
    t = np.full(n.shape, np.nan)
    p = np.full(n.shape, np.nan)
    ok = (n >= 2) & ~np.isnan(m) & ~np.isnan(sd)
    spread = ok & (sd > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t[spread] = m[spread] / (sd[spread] / np.sqrt(n[spread]))
    p[spread] = 2 * stats.t.sf(np.abs(t[spread]), n[spread] - 1)
    flat = ok & (sd == 0) & (m == 0)
    t[flat], p[flat] = 0.0, 1.0
    return t, p


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Paired t-test of a against b (the same as scipy.stats.ttest_rel, through paired_t)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return paired_t(len(d), d.mean() if len(d) else math.nan, d.std(ddof=1) if len(d) > 1 else math.nan)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaNs stay NaN and are not
    counted in the family size."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = len(idx)
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


def significant(adjusted: float, alpha: float = ALPHA) -> bool:
    return adjusted is not None and not math.isnan(adjusted) and adjusted < alpha
