"""Statistics across seeds and repeats: mean ± std, paired t-test and 95% CI against a reference.

Shared by the optimizer's results tables and the operator's report (`fleet report`): numpy
only at import, scipy when a test is computed, never torch. Devices do not import it.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def summarize(values: Sequence[float]) -> dict:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "n": len(arr)}


def paired_comparison(baseline: Sequence[float], other: Sequence[float],
                      alpha: float = 0.05) -> dict:
    """Paired t-test of other - baseline over matched seeds, with the (1 - alpha) CI.

    Returns the mean difference, its CI, t, two-sided p, the relative change in percent of the
    baseline mean (with the CI scaled alike), and whether the difference is significant.
    With fewer than two pairs no test is possible, and the result says so.
    """
    base = np.asarray(baseline, dtype=np.float64)
    diff = np.asarray(other, dtype=np.float64) - base
    n = len(diff)
    if n != len(base):
        raise ValueError("paired comparison needs matched samples")
    result = {"n": n, "mean_diff": float(diff.mean()) if n else math.nan}
    if n < 2:
        return {**result, "significant": None, "note": "needs >= 2 seeds for a paired test"}
    sd = float(diff.std(ddof=1))
    if sd == 0.0:  # every pair differs by the same amount (e.g. identical): t is undefined
        if result["mean_diff"] == 0.0:
            t_stat, p_value = 0.0, 1.0
        else:
            t_stat = math.copysign(math.inf, result["mean_diff"])
            p_value = 0.0
        half = 0.0
    else:
        from scipy import stats  # the report and build extras carry scipy; devices do not

        test = stats.ttest_rel(np.asarray(other, dtype=np.float64), base)
        t_stat, p_value = float(test.statistic), float(test.pvalue)
        half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * sd / math.sqrt(n)
    ci = [result["mean_diff"] - half, result["mean_diff"] + half]
    base_mean = float(base.mean())
    rel = (lambda v: 100.0 * v / base_mean) if base_mean else (lambda v: math.nan)
    return {**result, "ci95": ci, "t": t_stat, "p": p_value,
            "relative_pct": rel(result["mean_diff"]), "relative_ci95_pct": [rel(ci[0]), rel(ci[1])],
            "significant": bool(p_value < alpha),
            "verdict": "significant difference" if p_value < alpha else
                       "no significant difference"}
