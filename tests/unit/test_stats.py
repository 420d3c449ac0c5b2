"""Statistics across seeds, checked against scipy on known data, and the results tables."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from edge_app.stats import paired_comparison, summarize
from optimizer.tables import aggregate, write_tables

# Student's sleep data (Cushny & Peebles, as in R's `sleep`): extra hours, drug 1 vs drug 2
DRUG1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
DRUG2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_paired_comparison_matches_scipy_and_textbook_values():
    result = paired_comparison(DRUG1, DRUG2)
    reference = stats.ttest_rel(DRUG2, DRUG1)
    assert result["t"] == pytest.approx(reference.statistic)
    assert result["p"] == pytest.approx(reference.pvalue)
    # R: t.test(extra ~ group, paired=TRUE): t = -4.0621, p = 0.002833, CI -2.4598858 -0.7001142
    assert result["t"] == pytest.approx(4.0621, abs=1e-4)
    assert result["p"] == pytest.approx(0.002833, abs=1e-6)
    assert result["ci95"] == pytest.approx([0.7001142, 2.4598858], abs=1e-6)
    assert result["mean_diff"] == pytest.approx(1.58)
    assert result["relative_pct"] == pytest.approx(100 * 1.58 / np.mean(DRUG1))
    assert result["significant"] is True and result["verdict"] == "significant difference"


def test_identical_pair_is_no_significant_difference():
    result = paired_comparison([3.0, 4.0, 5.0], [3.0, 4.0, 5.0])
    assert result["p"] == 1.0 and result["ci95"] == [0.0, 0.0]
    assert result["significant"] is False and result["verdict"] == "no significant difference"


def test_constant_shift_and_single_seed():
    shifted = paired_comparison([1.0, 2.0, 3.0], [0.5, 1.5, 2.5])
    assert shifted["p"] == 0.0 and shifted["mean_diff"] == -0.5 and shifted["significant"]
    single = paired_comparison([1.0], [2.0])
    assert single["significant"] is None and "needs >= 2 seeds" in single["note"]


def test_summarize_uses_sample_std():
    assert summarize([1.0, 2.0, 3.0, 4.0]) == {"mean": 2.5, "std": pytest.approx(np.std(
        [1, 2, 3, 4], ddof=1)), "n": 4}
    assert summarize([5.0]) == {"mean": 5.0, "std": 0.0, "n": 1}


def test_tables_trace_every_number_to_rows(tmp_path):
    rows = [{"seed": s, "point": p, "metrics": {"fid": f, "params": n}}
            for s, (fb, fp) in enumerate(zip(DRUG1, DRUG2))
            for p, f, n in (("baseline", fb, 100), ("pruned", fp, 50))]
    summary = write_tables(tmp_path, rows, {"seeds": list(range(10))})
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == rows and saved["summary"] == json.loads(json.dumps(summary))
    assert summary["pruned"]["fid"]["summary"]["mean"] == pytest.approx(np.mean(DRUG2))
    assert summary["pruned"]["fid"]["vs_baseline"]["p"] == pytest.approx(0.002833, abs=1e-6)
    assert summary["pruned"]["params"]["vs_baseline"]["relative_pct"] == -50.0
    md = (tmp_path / "results.md").read_text()
    assert "Quality (paper Table 6)" in md and "Size and complexity (paper Table 2)" in md
    assert "p=0.00283" in md
    csv_lines = (tmp_path / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("point,metric,mean,std,n,diff_vs_baseline,ci95_low")
    assert len(csv_lines) == 1 + 4  # 2 points x 2 metrics


def test_aggregate_pairs_only_matching_seeds():
    rows = [{"seed": 0, "point": "baseline", "metrics": {"fid": 1.0}},
            {"seed": 1, "point": "baseline", "metrics": {"fid": 2.0}},
            {"seed": 1, "point": "x", "metrics": {"fid": 4.0}}]
    entry = aggregate(rows)["x"]["fid"]
    assert entry["summary"]["n"] == 1 and entry["vs_baseline"]["mean_diff"] == 2.0
