"""Adaptive depth: per-sample step signals (rearec/signals.py) against brute force, their storage, and the
stopping-rule views (report_adaptive*) against hand-computed values on a tiny stored example."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from harness.artifacts import EPOCH_COLUMNS, TrialOutput, signals_frame
from harness.expand import expand
from harness.report import build_report
from harness.report.adaptive_views import policies
from harness.report.views import create_views
from harness.store import Store
from harness.study import load_study, parse_study
from rearec.config import MethodConfig, ModelConfig
from rearec.evaluate import evaluate
from rearec.model import ReaRecModel
from rearec.signals import bytes_per_sample


# ------------------------------------------------------------------------------------------ signals
def _brute_force(model, method, rows, mask: bool):
    """Every depth's read-out scored in float64 over all rows at once, signals by their definitions."""
    model.eval()
    with torch.no_grad():
        history = torch.from_numpy(rows.history).long()
        states = model(history)
        K = states.shape[1] - 1
        reads = torch.stack([states[:, : k + 1].mean(1) if method.name == "erl" else states[:, k]
                             for k in range(K + 1)], 1)
        scores = model.scores(reads).double()
        if mask:
            seen = torch.zeros(len(history), model.n_items + 1, dtype=torch.bool).scatter_(1, history, True)[:, 1:]
            scores = scores.masked_fill(seen[:, None], -math.inf)
        p, logp = torch.softmax(scores, -1), torch.log_softmax(scores, -1)
        entropy = -torch.where(p > 0, p * logp, 0.0).sum(-1)
        kl = torch.where(p[:, 1:] > 0, p[:, 1:] * (logp[:, 1:] - logp[:, :-1]), 0.0).sum(-1)
        target = torch.from_numpy(rows.target).long() - 1
        t = scores.gather(2, target[:, None, None].expand(-1, K + 1, 1))
        rank = (scores >= t).sum(2)
        top = p.argmax(-1) + 1
    repeats = np.zeros(top.shape, dtype=int)
    for k in range(1, K + 1):
        repeats[:, k] = np.where(top[:, k] == top[:, k - 1], repeats[:, k - 1] + 1, 0)
    return {"entropy": entropy.numpy(), "kl": kl.numpy(), "top1_prob": p.max(-1).values.numpy(),
            "top1_item": top.numpy(), "rank": rank.numpy(), "repeats": repeats}


@pytest.mark.parametrize("name, mask", [("prl", False), ("erl", False), ("erl", True), ("rpe", True)])
def test_signals_match_brute_force(name, mask, tiny_data):
    data = tiny_data()
    torch.manual_seed(0)
    method = MethodConfig(name=name, reasoning_steps=3)
    model = ReaRecModel.from_configs(ModelConfig(hidden_size=16, num_heads=1, ffn_size=32), method, data.n_items)
    ev = evaluate(model, method, data.test, data.item_popularity(), batch_size=7, mask_history=mask, signals=True)
    s, ref = ev.signals, _brute_force(model, method, data.test, mask)
    assert s.rank.shape == (len(data.test), 4) and s.rank.dtype == np.int32
    np.testing.assert_allclose(s.entropy, ref["entropy"], atol=1e-5)
    np.testing.assert_allclose(s.top1_prob, ref["top1_prob"], atol=1e-6)
    np.testing.assert_allclose(s.kl_prev[:, 1:], ref["kl"], atol=1e-5)
    assert np.isnan(s.kl_prev[:, 0]).all() and (s.kl_prev[:, 1:] >= -1e-6).all()
    assert (s.top1_item == ref["top1_item"]).all() and (s.rank == ref["rank"]).all()
    assert (s.top1_repeats == ref["repeats"]).all()
    # the depth-K read-out is the method's own output; ERL's intermediate read-outs are prefix means, so
    # their ranks differ from r_k's, every other method's equal them
    assert (s.rank[:, -1] == ev.ranks[:, -1]).all()
    same = (s.rank[:, 1:3] == ev.ranks[:, 1:3]).all()
    assert same == (name != "erl")
    assert evaluate(model, method, data.test, data.item_popularity()).signals is None  # off unless asked


def test_signals_frame_and_bytes(tiny_data):
    data = tiny_data()
    method = MethodConfig(name="prl", reasoning_steps=2)
    model = ReaRecModel.from_configs(ModelConfig(hidden_size=16, num_heads=1, ffn_size=32), method, data.n_items)
    ev = evaluate(model, method, data.valid, data.item_popularity(), signals=True)
    frame = signals_frame("valid", ev)
    n = len(data.valid)
    assert len(frame) == 3 * n and list(frame.step[:n]) == [0] * n  # depth-major, like the ranks frame
    assert frame.kl_prev[:n].isna().all() and frame.kl_prev[n:].notna().all()
    assert (frame[frame.step == 2]["rank"].to_numpy() == ev.signals.rank[:, 2]).all()
    assert signals_frame("valid", evaluate(model, method, data.valid, data.item_popularity())) is None
    assert bytes_per_sample(5) == 21 * 6  # 5 four-byte values and a 1-byte repeat count per depth


def test_trial_stores_signals_only_when_asked(tmp_path, data_cache, tiny_study):
    from harness.datasets import resolve_datasets
    from harness.trial import execute

    params = {**tiny_study()["params"], "max_epochs": 1}
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps(tiny_study(params={**params, "step_signals": True},
                                          methods=[{"name": "erl", "reasoning_steps": 2}])))
    study = load_study(path)
    (spec,) = expand(study, resolve_datasets(study, data_cache, log=lambda _: None))
    out = execute(spec, tmp_path / "run", cache_dir=str(data_cache), threads=1)
    assert (tmp_path / "run" / "signals.parquet").exists()
    store = Store(tmp_path / "r.duckdb")
    store.ingest(spec, "tiny", out, str(tmp_path / "run"), {})
    got = store.query("SELECT split, count(*) AS n, count(DISTINCT step) AS steps FROM step_signals GROUP BY 1 "
                      "ORDER BY 1")
    ranks = store.query("SELECT split, count(*) AS n FROM sample_ranks GROUP BY 1 ORDER BY 1")
    assert list(got.steps) == [3, 3] and list(got.n) == [n // 4 * 3 for n in ranks.n]  # ranks: K + 2 columns
    # ERL: the stored depth-K rank is the method's output (mean of the steps), stored in sample_ranks as NULL
    diff = store.query("""SELECT count(*) FROM step_signals s JOIN sample_ranks r ON r.trial_key = s.trial_key
                          AND r.split = s.split AND r.sample = s.sample AND r.step IS NULL
                          WHERE s.step = 2 AND s.rank <> r.rank""").iloc[0, 0]
    assert diff == 0
    assert spec.params()["step_signals"] is True
    off = load_study(path, ["params.step_signals=false"])
    assert expand(off, resolve_datasets(off, data_cache, log=lambda _: None))[0].key == spec.key  # not in keys


# ------------------------------------------------------------------------------------ stored example
STUDY = {"name": "adapt", "datasets": ["synthetic"], "backbones": ["sasrec"], "seeds": [0, 1],
         "methods": ["base", {"name": "prl", "reasoning_steps": 2, "tau": 0.5, "alpha": 5.0}],
         "params": {"hidden_size": 16, "step_signals": True}, "selection": {"metric": "valid/ndcg@20"}}
# per split: per sample (top-1 probability, KL to the previous depth, repeats, rank) at depths 0, 1, 2
VALID = [((0.50, 0.60, 0.70), (None, 0.001, 0.5), (0, 1, 0), (1, 5, 30)),
         ((0.05, 0.30, 0.80), (None, 2.0, 0.01), (0, 0, 1), (30, 1, 2)),
         ((0.02, 0.04, 0.06), (None, 3.0, 3.0), (0, 0, 0), (40, 30, 1)),
         ((0.20, 0.25, 0.90), (None, 1e-4, 1e-4), (0, 1, 2), (3, 3, 3))]
TEST = [((0.08, 0.50, 0.90), (None, 0.3, 0.2), (0, 0, 1), (25, 2, 1)),
        ((0.01, 0.02, 0.60), (None, 0.004, 9.0), (0, 1, 0), (1, 50, 60)),
        ((0.30, 0.30, 0.30), (None, 0.0, 0.0), (0, 1, 2), (10, 10, 10))]
TEST_RANKS_SEED1 = [(25, 2, 1), (1, 50, 60), (5, 5, 5)]  # seed 1 differs on test only
LATENCY = {("base", 0): 2.0, ("base", 1): 2.2, ("prl", 0): 2.4, ("prl", 1): 2.6}  # cached test seconds


def _signals(split: str, samples) -> pd.DataFrame:
    rows = []
    for i, (p, kl, rep, rank) in enumerate(samples):
        for k in range(3):
            rows.append((split, i, k, rank[k], 1.0, p[k], 100 + i, kl[k], rep[k]))
    frame = pd.DataFrame(rows, columns=["split", "sample", "step", "rank", "entropy", "top1_prob", "top1_item",
                                        "kl_prev", "top1_repeats"])
    frame["kl_prev"] = pd.array([pd.NA if v is None else v for v in frame.kl_prev], dtype="Float32")
    return frame.astype({"top1_prob": "float32", "entropy": "float32", "top1_repeats": "uint8"})


def _test_samples(seed: int):
    if seed == 0:
        return TEST
    return [(p, kl, rep, r) for (p, kl, rep, _), r in zip(TEST, TEST_RANKS_SEED1, strict=True)]


def build_adaptive_db(path, metrics_frame) -> Store:
    store = Store(path)
    study = parse_study(STUDY, "studies/adapt.yaml")
    trials = expand(study)
    store.register_study("adapt", "studies/adapt.yaml", len(trials), "grid", STUDY, [t.key for t in trials])
    for spec in trials:
        name, k = spec.method["name"], spec.method["reasoning_steps"]
        epochs = pd.DataFrame([[1, 1.0, 0.1, 0.2, 0.3, 0.4, 1.0, True]], columns=EPOCH_COLUMNS)
        signals = None if name == "base" else pd.concat([_signals("valid", VALID),
                                                         _signals("test", _test_samples(spec.seed))])
        result = {"key": spec.key, "best_epoch": 1, "wall_seconds": 1.0, "device": "cpu", "env": {},
                  "latency": [{"split": "test", "cached": True, "seconds": LATENCY[(name, spec.seed)], "rows": 3},
                              {"split": "test", "cached": False, "seconds": 9.0, "rows": 3}]}
        out = TrialOutput(result, epochs, metrics_frame({"valid": 0.2, "test": 0.1}, k),
                          pd.DataFrame(columns=["split", "sample", "step", "rank"]),
                          pd.DataFrame(columns=["split", "step_a", "step_b", "cosine"]), signals)
        store.ingest(spec, "adapt", out, "/runs/a", {})
    return store


@pytest.fixture(scope="module")
def adapt_db(tmp_path_factory, report_demo):
    return build_adaptive_db(tmp_path_factory.mktemp("adapt") / "results.duckdb", report_demo.metrics_frame)


def _ndcg20(rank: int) -> float:
    return 1.0 / math.log2(rank + 1.0) if rank <= 20 else 0.0


def _stop(rule: str, threshold, sample) -> int:
    """The rules by their definitions, one sample at a time (float32 signals compared in float64, as stored)."""
    p, kl, rep, _ = sample
    for k in range(3):
        if threshold is None:
            break
        if rule == "confidence" and float(np.float32(p[k])) >= threshold:
            return k
        if rule == "convergence" and k >= 1 and float(np.float32(kl[k])) <= threshold:
            return k
        if rule == "agreement" and rep[k] >= threshold:
            return k
    return 2


def _curve(rule: str, threshold, samples) -> tuple[float, float]:
    stops = [_stop(rule, threshold, s) for s in samples]
    return (float(np.mean([_ndcg20(s[3][k]) for s, k in zip(samples, stops, strict=True)])),
            float(np.mean(stops)))


def test_confidence_rule_by_hand(adapt_db):
    """Valid: c = 0 stops everyone at depth 0 (N@20 = (1 + 0 + 0 + 1/log2 4) / 4 = 0.375); c = 0.07 .. 0.2 stop
    samples 0 and 3 at 0, sample 1 at 1 and let sample 2 run to K: N@20 = 0.875 at mean depth 0.75, the best;
    c = 0.3 ties on N@20 at depth 1.25. The choice is the smallest-depth tie, first in grid order: c = 0.07."""
    curves = adapt_db.query("SELECT * FROM report_adaptive_curves WHERE study = 'adapt' AND split = 'valid' "
                            "AND rule = 'confidence'").set_index("threshold")
    assert curves.loc[0.0, "ndcg@20"] == pytest.approx(0.375) and curves.loc[0.0, "depth"] == 0
    for c in (0.07, 0.1, 0.15, 0.2):
        assert curves.loc[c, "ndcg@20"] == pytest.approx(0.875) and curves.loc[c, "depth"] == pytest.approx(0.75)
    assert curves.loc[0.3, "ndcg@20"] == pytest.approx(0.875) and curves.loc[0.3, "depth"] == pytest.approx(1.25)
    choice = adapt_db.query("SELECT * FROM report_adaptive_choice WHERE study = 'adapt' AND rule = 'confidence'")
    assert choice.threshold[0] == 0.07 and choice.valid_score[0] == pytest.approx(0.875)
    # test at c = 0.07: seed 0 stops (0, 2, 0) with ranks (25, 60, 10); seed 1 the same depths, ranks (25, 60, 5)
    row = adapt_db.query("SELECT * FROM report_adaptive WHERE study = 'adapt' AND rule = 'confidence' "
                         "AND metric = 'ndcg@20'").iloc[0]
    seeds = [_ndcg20(10) / 3, _ndcg20(5) / 3]
    assert row.n == 2 and row["mean"] == pytest.approx(np.mean(seeds)) and row.depth == pytest.approx(2 / 3)
    assert row.ci95 == pytest.approx(12.706204736 * np.std(seeds, ddof=1) / math.sqrt(2))
    assert row.label == "p≥0.07" and row.valid_depth == pytest.approx(0.75)


def test_every_rule_and_threshold_against_the_definitions(adapt_db):
    curves = adapt_db.query("SELECT * FROM report_adaptive_seeds WHERE study = 'adapt' AND seed = 0 "
                            "AND rule NOT IN ('fixed', 'oracle')")
    assert len(curves) == 2 * len(policies())
    for r in curves.to_dict("records"):
        samples = VALID if r["split"] == "valid" else TEST
        threshold = None if pd.isna(r["threshold"]) else r["threshold"]
        ndcg, depth = _curve(r["rule"], threshold, samples)
        assert (r["ndcg@20"], r["depth"]) == pytest.approx((ndcg, depth)), (r["rule"], threshold, r["split"])
    choice = adapt_db.query("SELECT rule, threshold FROM report_adaptive_choice WHERE study = 'adapt'")
    for rule, threshold in choice.itertuples(index=False):
        grid = [(th, *_curve(rule, th, VALID)) for r, th, _, _ in policies() if r == rule]
        best = max(n for _, n, _ in grid)
        expected = min((d, i) for i, (_, n, d) in enumerate(grid) if n == pytest.approx(best))
        assert (None if pd.isna(threshold) else threshold) == grid[expected[1]][0], rule


def test_fixed_depths_oracle_and_cost(adapt_db):
    rows = adapt_db.query("SELECT * FROM report_adaptive WHERE study = 'adapt' AND metric = 'ndcg@20'")
    fixed = rows[rows.rule == "fixed"].set_index("position")
    for k in range(3):
        seeds = [np.mean([_ndcg20(s[3][k]) for s in _test_samples(seed)]) for seed in (0, 1)]
        assert fixed.loc[k, "mean"] == pytest.approx(np.mean(seeds)) and fixed.loc[k, "depth"] == k
    oracle = rows[rows.rule == "oracle"].iloc[0]
    # seed 0: best depths 2 (rank 1), 0 (rank 1), 0 (rank 10, all equal: the earliest) -> depth 2/3
    assert oracle.depth == pytest.approx(2 / 3)
    assert oracle["mean"] == pytest.approx(np.mean([(1 + 1 + _ndcg20(10)) / 3, (1 + 1 + _ndcg20(5)) / 3]))
    # cost: t0 = mean Base latency (2.0, 2.2) = 2.1; per seed t0 + (tK - t0) * depth / K, tK = 2.4 / 2.6
    t0 = 2.1
    for k in range(3):
        expected = np.mean([t0 + (tk - t0) * k / 2 for tk in (2.4, 2.6)])
        assert fixed.loc[k, "cost_seconds"] == pytest.approx(expected)
        assert fixed.loc[k, "cost_increase_pct"] == pytest.approx(100 * (expected / t0 - 1))
    assert fixed.loc[0, "cost_increase_pct"] == pytest.approx(0.0)


def test_no_test_information_reaches_the_threshold_choice(adapt_db, tmp_path):
    """Rewriting every test signal (so that another threshold is best on test) leaves each rule's choice as
    it was; rewriting validation signals changes it."""
    before = adapt_db.query("SELECT rule, position FROM report_adaptive_choice WHERE study = 'adapt' ORDER BY 1")
    copy = tmp_path / "copy.duckdb"
    shutil.copy(adapt_db.path, copy)
    with Store(copy).connect() as con:
        create_views(con)
        con.execute("UPDATE step_signals SET rank = CASE WHEN step = 0 THEN 1 ELSE 500 END, top1_prob = 0.001, "
                    "kl_prev = CASE WHEN step = 0 THEN NULL ELSE 99 END, top1_repeats = 0 WHERE split = 'test'")
        after = con.execute("SELECT rule, position FROM report_adaptive_choice WHERE study = 'adapt' "
                            "ORDER BY 1").df()
        tested = con.execute("SELECT threshold, position, mean FROM report_adaptive WHERE study = 'adapt' "
                             "AND rule = 'fixed' AND metric = 'ndcg@20' ORDER BY position").df()
        assert list(tested["mean"]) == pytest.approx([1.0, 0.0, 0.0])  # the test rows did change
        pd.testing.assert_frame_equal(before, after)
        con.execute("UPDATE step_signals SET rank = CASE WHEN step = 2 THEN 1 ELSE 500 END WHERE split = 'valid'")
        moved = con.execute("SELECT rule, position, valid_depth FROM report_adaptive_choice WHERE study = 'adapt' "
                            "ORDER BY 1").df()
    assert (moved.position != before.position).all()  # depth K is best on validation now: no rule stops early
    assert (moved.valid_depth == 2).all()


def test_report_section_table_and_figure(adapt_db, tmp_path):
    readme = build_report(adapt_db.path, "adapt", tmp_path)
    text = readme.read_text()
    assert "## Adaptive reasoning depth" in text and "](fig_adaptive_depth.png)" in text
    assert (tmp_path / "adapt" / "fig_adaptive_depth.png").stat().st_size > 5000
    table = pd.read_csv(tmp_path / "adapt" / "table_adaptive.csv")
    assert set(table.rule) == {"fixed", "confidence", "convergence", "agreement", "oracle"}
    assert "| Confidence | p≥0.07 | 0.67 ± " in text and "chosen on **validation** only" in text


def test_no_signals_says_how_to_get_them(tmp_path, report_db):
    text = build_report(report_db.path, "demo", tmp_path / "out").read_text()
    assert "Adaptive reasoning depth" in text and "set `step_signals: true`" in text


def test_the_report_snapshot_equals_the_view(adapt_db, tmp_path):
    """The report computes report_adaptive_seeds in NumPy (harness/report/adaptive_fast.py): the same rows as
    the SQL view, on the stored example grown by random validation samples (ties, every rule)."""
    from harness.report.adaptive_fast import seeds_frame
    from harness.report.views import snapshot_study

    rng = np.random.default_rng(7)
    copy = tmp_path / "copy.duckdb"
    shutil.copy(adapt_db.path, copy)
    with Store(copy).connect() as con:
        create_views(con)
        keys = [k for (k,) in con.execute("SELECT DISTINCT trial_key FROM step_signals").fetchall()]
        extra = [(key, "valid", sample, k, int(rng.integers(1, 30)), 1.0, float(rng.choice([0.05, 0.1, 0.3, 0.7])),
                  1, None if k == 0 else float(rng.choice([1e-4, 0.01, 0.5])), int(rng.integers(0, k + 1)))
                 for key in keys for sample in range(4, 60) for k in range(3)]
        con.executemany("INSERT INTO step_signals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", extra)
        view = con.execute("SELECT * FROM report_adaptive_seeds WHERE study = 'adapt'").df()
        fast = seeds_frame(con)
        snapshot_study(con, "adapt", create_views(con))
        snap = con.execute("SELECT * FROM report_adaptive_seeds").df()
    order = ["trial_key", "split", "rule", "position"]
    a = view.sort_values(order).reset_index(drop=True)
    assert len(a) == 2 * 2 * (len(policies()) + 1 + 3) and (a[a.split == "valid"].n_samples == 60).all()
    for other in (fast, snap):
        b = other.sort_values(order).reset_index(drop=True)[list(a.columns)]
        b["threshold"] = b["threshold"].astype("float64")  # NULL as NaN on both sides
        pd.testing.assert_frame_equal(a, b, check_dtype=False, check_exact=False, rtol=1e-12)
