"""The claim check (report_claims and its report section) against hand-computed figures and verdicts on a
small database written by the store: every kind of claim, every verdict, and what a missing row says."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from harness.artifacts import EPOCH_COLUMNS, TrialOutput
from harness.expand import expand
from harness.report import build_report
from harness.report.claims import CLAIMS
from harness.store import Store
from harness.study import parse_study

METRICS = ("ndcg@10", "ndcg@20", "recall@10", "recall@20")
GROUPS = ["all", *(f"user:UG{g}" for g in range(4)), *(f"item:IG{g}" for g in range(4))]
# (method, settings) -> (validation NDCG@20, test NDCG@20 per seed 0, 1, 2); every config SASRec, K = 2 but Base
CONFIGS = {
    ("base", ()): (0.20, (0.100, 0.110, 0.120)),
    ("naive", ()): (0.19, (0.095, 0.112, 0.118)),
    ("rpe", ()): (0.21, (0.104, 0.114, 0.125)),
    ("erl", (("kl_lambda", 0.05),)): (0.27, (0.120, 0.130, 0.140)),
    ("erl", (("kl_lambda", 0.001),)): (0.26, (0.125, 0.135, 0.145)),  # best on test, not on validation
    ("erl", (("kl_lambda", 0.1),)): (0.22, (0.090, 0.100, 0.110)),
    ("erl", (("kl_lambda", 0.0),)): (0.23, (0.110, 0.122, 0.130)),  # ERL w/o KL
    ("prl", (("tau", 0.5), ("alpha", 5.0))): (0.28, (0.140, 0.150, 0.160)),
    ("prl", (("tau", 0.05), ("alpha", 5.0))): (0.24, (0.100, 0.110, 0.120)),
    ("prl", (("tau", 5.0), ("alpha", 5.0))): (0.25, (0.141, 0.149, 0.162)),
    ("prl", (("tau", 0.5), ("alpha", 1.0))): (0.23, (0.150, 0.160, 0.170)),
    ("prl", (("tau", 0.5), ("alpha", 10.0))): (0.22, (0.130, 0.140, 0.150)),
    ("prl", (("tau", 0.5), ("alpha", 5.0), ("rcl", False))): (0.24, (0.140, 0.148, 0.161)),
}
CHOSEN_PRL = ("prl", (("tau", 0.5), ("alpha", 5.0)))
IG_SLOPE = {"item:IG0": (0.10, 0.11, 0.12), "item:IG3": (-0.02, -0.02, -0.02)}  # chosen PRL, per seed
LATENCY = {"base": (2.0, 2.1, 2.0), "prl": (2.05, 2.16, 2.06)}  # cached test seconds per seed
ORACLE_RANKS = {s: np.random.default_rng(s).integers(1, 40, size=(12, 3)) for s in range(3)}  # chosen PRL
STUDY = {"name": "claimtest", "datasets": ["synthetic"], "backbones": ["sasrec"], "seeds": [0, 1, 2],
         "methods": [{"name": m, **({"reasoning_steps": 2} if m != "base" else {}), **dict(p)} for m, p in CONFIGS],
         "params": {"hidden_size": 16, "gamma": 0.01}, "selection": {"metric": "valid/ndcg@20"}}


def _key(spec) -> tuple:
    m = spec.method
    if m["name"] == "base":
        return ("base", ())
    if m["name"] == "naive" or m["name"] == "rpe":
        return (m["name"], ())
    if m["name"] == "erl":
        return ("erl", (("kl_lambda", m["kl_lambda"]),))
    extra = (("rcl", False),) if not m["rcl"] else ()
    return ("prl", (("tau", m["tau"]), ("alpha", m["alpha"]), *extra))


def _metrics(cfg: tuple, seed: int, k: int) -> pd.DataFrame:
    valid, test = CONFIGS[cfg]
    rows = []
    for split, v in (("valid", valid), ("test", test[seed])):
        for step in [*range(k + 1), None]:
            for group in GROUPS:
                slope = IG_SLOPE[group][seed] if cfg == CHOSEN_PRL and group in IG_SLOPE else 0.0
                value = v * (1 + slope * (k if step is None else step))
                rows += [(split, step, group, m, value) for m in METRICS]
    frame = pd.DataFrame(rows, columns=["split", "step", "user_group", "metric", "value"])
    frame["step"] = frame["step"].astype("Int64")
    return frame


def _ranks(seed: int) -> pd.DataFrame:
    ranks = ORACLE_RANKS[seed]
    n, cols = ranks.shape
    return pd.DataFrame({"split": "test", "sample": np.tile(np.arange(n), cols + 1),
                         "step": pd.array([*np.repeat(np.arange(cols), n), *[None] * n], dtype="Int64"),
                         "rank": np.concatenate([ranks.T.reshape(-1), ranks[:, -1]])})


def build_claims_db(path) -> Store:
    store = Store(path)
    study = parse_study(STUDY, "studies/claimtest.yaml")
    trials = expand(study)
    assert len(trials) == 3 * len(CONFIGS)
    store.register_study("claimtest", "studies/claimtest.yaml", len(trials), "grid", STUDY, [t.key for t in trials])
    for spec in trials:
        cfg, k = _key(spec), spec.method["reasoning_steps"]
        latency = [{"split": "test", "cached": True, "seconds": LATENCY[cfg[0]][spec.seed], "rows": 12}] \
            if cfg[0] == "base" or cfg == CHOSEN_PRL else []
        result = {"key": spec.key, "best_epoch": 1, "wall_seconds": 1.0, "device": "cpu", "env": {},
                  "latency": latency}
        ranks = _ranks(spec.seed) if cfg == CHOSEN_PRL else pd.DataFrame(columns=["split", "sample", "step", "rank"])
        out = TrialOutput(result, pd.DataFrame([[1, 1.0, 0.1, 0.2, 0.3, 0.4, 1.0, True]], columns=EPOCH_COLUMNS),
                          _metrics(cfg, spec.seed, k), ranks, pd.DataFrame(columns=["split", "step_a", "step_b",
                                                                                    "cosine"]))
        store.ingest(spec, "claimtest", out, "/runs/c", {})
    return store


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return build_claims_db(tmp_path_factory.mktemp("claims") / "results.duckdb")


@pytest.fixture(scope="module")
def claims(db):
    rows = db.query("SELECT * FROM report_claims WHERE study = 'claimtest' ORDER BY position")
    return rows.set_index("claim")


def _pct(a, b) -> list[float]:
    return [100 * (x / y - 1) for x, y in zip(a, b, strict=True)]


def _expect(values, direction: str, bound: float = 0.0) -> tuple[float, float, str]:
    mean, half = float(np.mean(values)), float(sps.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1)
                                               / math.sqrt(len(values)))
    lo, hi = mean - half, mean + half
    if direction == ">":
        verdict = "reproduced" if lo > bound else "contradicted" if hi <= bound else "inconclusive"
    elif direction == ">=":
        verdict = "reproduced" if lo >= bound else "contradicted" if hi < bound else "inconclusive"
    else:
        verdict = "reproduced" if hi <= bound else "contradicted" if lo > bound else "inconclusive"
    return mean, half, verdict


def _check(row, values, verdict: str) -> None:
    mean, half, expected = _expect(values, row.direction, row.bound)
    assert (row["mean"], row.ci95) == pytest.approx((mean, half), rel=1e-6)
    assert row.n == len(values) and row.verdict == expected == verdict


def test_one_row_per_claim_in_the_paper_order(claims):
    assert list(claims.index) == [c.claim for c in CLAIMS]
    assert {"Table 2", "Table 3", "Fig. 2", "Fig. 4", "Fig. 5", "Fig. 6", "Fig. 7", "Table 4"} == set(claims.figure)
    assert claims.loc["t4_sasrec", "paper"] == "SASRec Step-2 +3.51 % on one A100-40G"
    assert claims.loc["t23_sasrec_erl", "paper"] == "Video & Games +8.59 %; five-dataset mean +6.76 %"


def test_pairs_over_seeds(claims):
    base, cfg = CONFIGS[("base", ())][1], {k: v[1] for k, v in CONFIGS.items()}
    _check(claims.loc["t23_sasrec_erl"], _pct(cfg[("erl", (("kl_lambda", 0.05),))], base), "reproduced")
    _check(claims.loc["t23_sasrec_prl"], _pct(cfg[CHOSEN_PRL], base), "reproduced")
    _check(claims.loc["fig5_naive"], _pct(cfg[("naive", ())], base), "inconclusive")  # -5.0, +1.8, -1.7 %
    _check(claims.loc["fig5_rpe"], _pct(cfg[("rpe", ())], base), "reproduced")
    _check(claims.loc["fig5_erl"], _pct(cfg[("erl", (("kl_lambda", 0.05),))], cfg[("rpe", ())]), "reproduced")
    _check(claims.loc["fig7_erl"], _pct(cfg[("erl", (("kl_lambda", 0.05),))], cfg[("erl", (("kl_lambda", 0.0),))]),
           "reproduced")
    _check(claims.loc["fig7_prl"], _pct(cfg[CHOSEN_PRL], cfg[CHOSEN_PRL[0], (*CHOSEN_PRL[1], ("rcl", False))]),
           "inconclusive")
    assert claims.loc["fig5_naive", "why"] == "the 95 % interval spans the bound"
    row = claims.loc["t23_sasrec_erl"]
    assert row.variant == "erl" and row.reference == "base" and row.backbone == "sasrec" and pd.isna(row.why)
    assert claims.loc["fig7_erl", "reference"] == "erl w/o KL"


def test_sensitivity_curves_choose_on_validation(claims):
    cfg = {k: v[1] for k, v in CONFIGS.items()}
    tau = {t: cfg[("prl", (("tau", t), ("alpha", 5.0)))] for t in (0.05, 0.5, 5.0)}
    alpha = {a: cfg[("prl", (("tau", 0.5), ("alpha", a)))] for a in (1.0, 5.0, 10.0)}
    _check(claims.loc["fig6_tau_low"], _pct(tau[0.5], tau[0.05]), "reproduced")
    _check(claims.loc["fig6_tau_high"], _pct(tau[0.5], tau[5.0]), "inconclusive")
    _check(claims.loc["fig6_alpha_low"], _pct(alpha[5.0], alpha[1.0]), "contradicted")  # alpha = 1 is better
    _check(claims.loc["fig6_alpha_high"], _pct(alpha[5.0], alpha[10.0]), "reproduced")
    # lambda: 0.001 is best on test, 0.05 on validation: the claim compares 0.05 with the largest, 0.1
    lam = claims.loc["fig6_lambda_top"]
    assert lam.reference == "λ=0.05 vs λ=0.1"
    _check(lam, _pct(cfg[("erl", (("kl_lambda", 0.05),))], cfg[("erl", (("kl_lambda", 0.1),))]), "reproduced")


def test_subgroup_gain_oracle_and_latency(claims):
    # Fig. 4: gain_g = 100 (value(step 2, g) / value(step 0, g) - 1) = 100 * slope_g * 2 for the chosen PRL
    gains = [100 * 2 * (IG_SLOPE["item:IG0"][s] - IG_SLOPE["item:IG3"][s]) for s in range(3)]
    _check(claims.loc["fig4_items"], gains, "reproduced")
    assert claims.loc["fig4_items", "unit"] == "pp"
    # Fig. 2: NDCG@20 of each sample's best step (from sample_ranks) against Base's test NDCG@20, per seed
    oracle = [np.mean(np.where((r := ORACLE_RANKS[s].min(1)) <= 20, 1 / np.log2(r + 1.0), 0.0)) for s in range(3)]
    _check(claims.loc["fig2_oracle"], _pct(oracle, CONFIGS[("base", ())][1]), _expect(
        _pct(oracle, CONFIGS[("base", ())][1]), ">=", 30.0)[2])
    # Table 4: cached latency increase of PRL K = 2 over Base, per seed; at most 3.51 % is the claim
    _check(claims.loc["t4_sasrec"], _pct(LATENCY["prl"], LATENCY["base"]), "reproduced")


def test_missing_rows_say_what_they_need(claims):
    row = claims.loc["t23_bert4rec_erl"]
    assert row.verdict == "missing" and pd.isna(row["mean"]) and row.backbone == "bert4rec"
    assert row.why == "missing: needs BERT4Rec Base and +ERL at K = 2"
    assert claims.loc["t4_morec", "why"] == "missing: needs MoRec Base and +PRL at K = 2 with latency rows"


def test_one_seed_is_inconclusive_and_test_values_never_choose(db, tmp_path):
    copy = tmp_path / "copy.duckdb"
    shutil.copy(db.path, copy)
    with Store(copy).connect() as con:
        con.execute("UPDATE trials SET status = 'failed' WHERE method = 'rpe' AND seed > 0")
        # the test metric of lambda = 0.1 becomes the best on test: the validation choice must not move
        con.execute("UPDATE metrics SET value = value + 1 WHERE split = 'test' AND trial_key IN "
                    "(SELECT trial_key FROM trials WHERE method = 'erl' AND kl_lambda = 0.1)")
        rows = con.execute("SELECT * FROM report_claims WHERE study = 'claimtest'").df().set_index("claim")
    assert rows.loc["fig5_rpe", "n"] == 1 and rows.loc["fig5_rpe", "verdict"] == "inconclusive"
    assert rows.loc["fig5_rpe", "why"] == "one seed: no confidence interval"
    assert rows.loc["fig6_lambda_top", "reference"] == "λ=0.05 vs λ=0.1"
    assert rows.loc["fig6_lambda_top", "verdict"] == "contradicted"  # the largest lambda now wins on test


def test_report_section(db, tmp_path):
    text = build_report(db.path, "claimtest", tmp_path).read_text()
    assert "## Claim check: the paper's claims, one verdict each" in text
    table = pd.read_csv(tmp_path / "claimtest" / "table_claims.csv")
    assert len(table) == len(CLAIMS) and set(table.verdict) == {"reproduced", "contradicted", "inconclusive",
                                                                "missing"}
    assert ("| Fig. 6 | a moderate α beats the smallest α (PRL, NDCG@20) | synthetic | sasrec | +PRL (α=5.0 vs "
            "α=1.0) |") in text
    assert "❌ contradicted" in text and "missing: needs BERT4Rec Base and +ERL at K = 2" in text
