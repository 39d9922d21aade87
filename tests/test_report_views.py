"""Report views and statistics against hand-computed values on a small database written by the store itself."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from harness.report import stats
from harness.report.views import create_views
from harness.store import Store


@pytest.fixture(scope="module")
def store(report_db):
    store = report_db
    with store.connect() as con:
        create_views(con)
    return store


def q(store: Store, sql: str, *params) -> pd.DataFrame:
    return store.query(sql, list(params))


# --------------------------------------------------------------------------------------- views
def test_trials_view_shows_pending_failed_running(store):
    counts = dict(q(store, "SELECT status, count(*) AS n FROM report_trials WHERE study = 'demo' GROUP BY 1")
                  .itertuples(index=False))
    assert counts == {"completed": 16, "failed": 1, "running": 1, "pending": 3}


def test_configs_mean_sd_and_t_interval(store):
    row = q(store, "SELECT * FROM report_configs WHERE study = 'demo' AND variant = 'base' AND split = 'test' "
                   "AND metric = 'ndcg@20'").iloc[0]
    values = [0.10, 0.11, 0.12]
    assert row.n == 3 and list(row.seeds) == [0, 1, 2]
    assert row["mean"] == pytest.approx(0.11)
    assert row.sd == pytest.approx(0.01)
    half = sps.t.ppf(0.975, 2) * 0.01 / math.sqrt(3)  # = 0.024841...
    assert row.ci95 == pytest.approx(half, rel=1e-8)
    assert stats.mean_ci(values) == pytest.approx((0.11, half))
    lo, hi = sps.t.interval(0.95, 2, loc=0.11, scale=sps.sem(values))
    assert row.ci95 == pytest.approx((hi - lo) / 2)


def test_ci_macro_matches_scipy_for_many_sizes(store):
    for n in (2, 3, 5, 10, 31, 32, 61, 200):
        got = q(store, "SELECT report_ci95(2.0, ?) AS ci", n).ci[0]
        assert got == pytest.approx(sps.t.ppf(0.975, n - 1) * 2.0 / math.sqrt(n), rel=2e-5)
    assert pd.isna(q(store, "SELECT report_ci95(2.0, 1) AS ci").ci[0])


def test_selection_uses_validation_never_test(store):
    best = q(store, "SELECT * FROM report_best WHERE study = 'demo' ORDER BY variant")
    erl = best[best.variant == "erl"].iloc[0]
    assert erl.kl_lambda == 0.01 and erl.reasoning_steps == 2  # λ=0.1 wins on test (0.31) but not on valid
    assert erl.valid_score == pytest.approx(0.27) and erl.n_candidates == 3  # λ 0.01 (K 1, 2) and 0.1 (K 2)
    assert set(best.variant) == {"base", "erl", "erl w/o KL", "prl"}
    by_k = q(store, "SELECT * FROM report_best_by_k WHERE study = 'demo' AND variant = 'erl' ORDER BY reasoning_steps")
    assert list(by_k.reasoning_steps) == [1, 2] and list(by_k.kl_lambda) == [0.01, 0.01]


def test_selection_ignores_a_test_metric_that_flips(store, tmp_path):
    """Making every non-chosen configuration the best on test changes nothing in the selection."""
    shutil.copy(store.path, tmp_path / "copy.duckdb")
    with Store(tmp_path / "copy.duckdb").connect() as con:
        before = con.execute("SELECT variant, config_id FROM report_best WHERE study = 'demo' ORDER BY 1").fetchall()
        con.execute("UPDATE metrics SET value = value + 10 WHERE split = 'test'")
        con.execute("UPDATE metrics SET value = value - 10 WHERE split = 'test' AND trial_key IN (SELECT trial_key "
                    "FROM report_trials r JOIN report_best b USING (study, config_id))")
        after = con.execute("SELECT variant, config_id FROM report_best WHERE study = 'demo' ORDER BY 1").fetchall()
    assert before == after


def test_trials_stopped_early_by_asha_stay_out(store, tmp_path):
    shutil.copy(store.path, tmp_path / "copy.duckdb")
    with Store(tmp_path / "copy.duckdb").connect() as con:
        create_views(con)
        con.execute("UPDATE trials SET pruned = TRUE WHERE method = 'erl' AND kl_lambda = 0.1 AND seed = 0")
        n = con.execute("SELECT n FROM report_configs WHERE study = 'demo' AND kl_lambda = 0.1 AND split = 'test' "
                        "AND metric = 'ndcg@20'").fetchone()[0]
    assert n == 1  # seed 0 pruned, seed 1 complete, seed 2 still running


def test_improvement_and_average_column(store):
    imp = q(store, "SELECT * FROM report_improvements WHERE study = 'demo' AND variant = 'erl' AND reference = 'base' "
                   "ORDER BY metric").set_index("metric")
    erl, base = np.mean([0.12, 0.13, 0.15]), 0.11
    same = 100 * (erl - base) / base  # 21.2121...% for N@10, N@20, R@10 (the same multiples of NDCG@20)
    r20 = 100 * (2.2 * erl - 2.0 * base) / (2.0 * base)  # 33.3333...%
    assert imp.loc[["ndcg@10", "ndcg@20", "recall@10"], "improvement_pct"].to_numpy() == pytest.approx([same] * 3)
    assert imp.loc["recall@20", "improvement_pct"] == pytest.approx(r20)
    assert imp.avg_improvement_pct.to_numpy() == pytest.approx([(3 * same + r20) / 4] * 4)  # 24.2424...%
    assert imp.loc["ndcg@20", "mean"] == pytest.approx(erl) and imp.loc["ndcg@20", "reference_mean"] == pytest.approx(base)
    prl = q(store, "SELECT * FROM report_improvements WHERE study = 'demo' AND variant = 'prl' AND metric = 'ndcg@20'")
    assert prl.n[0] == 2 and prl.reference_n[0] == 3  # seed 2 of PRL failed: each side's mean over its own seeds
    assert prl.improvement_pct[0] == pytest.approx(100 * (0.13 / 0.11 - 1))


def test_ablation_comparison_full_against_ablated(store):
    row = q(store, "SELECT * FROM report_improvements WHERE study = 'demo' AND variant = 'erl' "
                   "AND reference = 'erl w/o KL' AND metric = 'ndcg@20'").iloc[0]
    assert row.reference_mean == pytest.approx(np.mean([0.11, 0.115, 0.12]))
    assert row.improvement_pct == pytest.approx(100 * (np.mean([0.12, 0.13, 0.15]) / 0.115 - 1))


def test_paired_test_over_seeds_matches_scipy(store):
    row = q(store, "SELECT * FROM report_seed_tests WHERE study = 'demo' AND variant = 'erl' AND reference = 'base' "
                   "AND metric = 'ndcg@20'").iloc[0]
    erl, base = [0.12, 0.13, 0.15], [0.10, 0.11, 0.12]
    assert row.n_pairs == 3 and row.mean_diff == pytest.approx(np.mean(np.subtract(erl, base)))
    t, p = stats.paired_t(row.n_pairs, row.mean_diff, row.sd_diff)
    ref = sps.ttest_rel(erl, base)
    assert (t, p) == pytest.approx((ref.statistic, ref.pvalue))
    prl = q(store, "SELECT * FROM report_seed_tests WHERE study = 'demo' AND variant = 'prl' AND metric = 'ndcg@20'")
    assert prl.n_pairs[0] == 2  # only the seeds both sides completed are paired
    assert prl.mean_diff[0] == pytest.approx(np.mean([0.14 - 0.10, 0.12 - 0.11]))


def _per_sample(ranks: np.ndarray, metric: str) -> np.ndarray:
    """recall@k = [rank <= k]; ndcg@k = 1 / log2(rank + 1) if rank <= k (one relevant item)."""
    k = int(metric.split("@")[1])
    ranks = np.asarray(ranks, dtype=float)
    return np.where(ranks <= k, 1.0 / np.log2(ranks + 1) if metric.startswith("ndcg") else 1.0, 0.0)


def test_paired_test_over_samples_matches_scipy(store, report_demo):
    row = q(store, "SELECT * FROM report_sample_tests WHERE study = 'demo' AND variant = 'erl' AND reference = 'base' "
                   "AND metric = 'ndcg@20'").iloc[0]
    erl = np.mean([_per_sample(report_demo.sample_ranks(s, "erl", 2)[:, -1], "ndcg@20") for s in range(3)], axis=0)
    base = np.mean([_per_sample(report_demo.sample_ranks(s, "base", 0)[:, -1], "ndcg@20") for s in range(3)], axis=0)
    assert row.n_samples == report_demo.N_SAMPLES and row.n_seeds == 3
    assert row.mean_diff == pytest.approx((erl - base).mean())
    assert row.sd_diff == pytest.approx((erl - base).std(ddof=1))
    ref = sps.ttest_rel(erl, base)
    assert stats.paired_t(row.n_samples, row.mean_diff, row.sd_diff) == pytest.approx((ref.statistic, ref.pvalue))


def test_holm_bonferroni_by_hand():
    adjusted = stats.holm([0.01, 0.04, 0.03, float("nan")])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(adjusted[3])
    assert stats.holm([0.5, 0.9]).tolist() == pytest.approx([1.0, 1.0])
    assert stats.holm([]).size == 0


def test_paired_t_edge_cases():
    assert stats.paired_t_test([1, 2, 3], [0, 1, 2]) == (0.0, 1.0) or math.isnan(stats.paired_t_test([1, 2, 3], [0, 1, 2])[1])
    assert stats.paired_t_test([1.0, 2.0], [1.0, 2.0]) == (0.0, 1.0)  # identical outputs: no difference
    assert all(math.isnan(x) for x in stats.paired_t(1, 0.1, float("nan")))  # one pair: no test
    a, b = [0.3, 0.5, 0.4, 0.7], [0.2, 0.45, 0.41, 0.5]
    assert stats.paired_t_test(a, b) == pytest.approx(tuple(sps.ttest_rel(a, b)))


def test_oracle_step_from_sample_ranks(store, report_demo):
    row = q(store, "SELECT * FROM report_oracle WHERE study = 'demo' AND variant = 'erl' AND metric = 'ndcg@20'").iloc[0]
    ranks = [report_demo.sample_ranks(s, "erl", 2) for s in range(3)]
    oracle = np.mean([_per_sample(r[:, :-1].min(1), "ndcg@20").mean() for r in ranks])
    out = np.mean([_per_sample(r[:, -1], "ndcg@20").mean() for r in ranks])
    assert row.n == 3 and row.n_samples == report_demo.N_SAMPLES
    assert row.oracle_mean == pytest.approx(oracle) and row.output_mean == pytest.approx(out)
    shares = q(store, "SELECT step, share FROM report_oracle_steps WHERE study = 'demo' AND variant = 'erl' "
                      "ORDER BY step")
    best = np.concatenate([r[:, :-1].argmin(1) for r in ranks])  # argmin: the earliest best step
    assert shares.share.to_numpy() == pytest.approx([np.mean(best == k) for k in range(3)])


def test_subgroups_similarity_latency(store):
    g = q(store, "SELECT * FROM report_subgroups WHERE study = 'demo' AND variant = 'erl' AND step = 1 "
                 "AND user_group = 'user:UG2' AND metric = 'ndcg@20'").iloc[0]
    assert g["mean"] == pytest.approx(np.mean([0.12, 0.13, 0.15]) * 0.95 * 1.2) and g.n == 3
    sim = q(store, "SELECT cosine FROM report_similarity WHERE study = 'demo' AND variant = 'erl' AND step_a = 2 "
                   "AND step_b = 1")
    assert sim.cosine[0] == pytest.approx(0.8)
    lat = q(store, "SELECT * FROM report_latency WHERE study = 'demo' ORDER BY variant, cached")
    prl = lat[lat.variant == "prl"].set_index("cached")
    assert prl.loc[True, "cost_increase_pct"] == pytest.approx(10.0)
    assert prl.loc[False, "cost_increase_pct"] == pytest.approx(50.0)
    assert prl.loc[True, "seconds"] == pytest.approx(2.2)


def test_views_are_idempotent_and_usable_read_only(store):
    with store.connect() as con:
        first = create_views(con)
        assert create_views(con) == first
    reader = Store(store.path, read_only=True)
    assert len(reader.query("SELECT * FROM report_best_results")) > 0
