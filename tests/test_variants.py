"""Which variant a row is: settings that set a configuration apart from the defaults name it in every view,
table and claim; two such variants are never merged by the validation choice; missing settings read as
their legacy values and speed-only settings never split a configuration."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from harness.expand import expand
from harness.report import build_report
from harness.report.status import expected_cells
from harness.report.tables import variant_label
from harness.report.variants import SETTINGS, full_variant, labels, split_variant
from harness.store import Store, trial_row, variant
from harness.study import load_study, parse_study

ROOT = Path(__file__).resolve().parent.parent

GRID = {"name": "grid", "datasets": ["synthetic"], "backbones": ["sasrec", "bert4rec", "unisrec"], "seeds": [0],
        "methods": ["base",
                    {"name": "erl", "reasoning_steps": 2, "kl_lambda": [0.0, 0.05], "kl_sign": ["maximize", "printed"],
                     "formulation": ["paper", "released"]},
                    {"name": "prl", "reasoning_steps": 2, "rcl": [True, False], "rcl_similarity": ["dot", "cosine"],
                     "rcl_negatives": ["all", "other_users"]}],
        "params": {"hidden_size": 16, "item_scoring": ["dot", "cosine"], "training": ["bucketed", "packed"],
                   "bert4rec_objective": ["next_item", "cloze"], "bert4rec_head": [False, True],
                   "clean_ratio": [0.0, 0.5],
                   "text_mode": ["inductive", "transductive"]}}


def _stored_labels(store: Store, study: str) -> dict[str, tuple[str, str, str]]:
    rows = store.query("SELECT trial_key, variant, method_setting, model_setting FROM report_trials WHERE study = ?",
                       [study])
    return {k: (v, a, b) for k, v, a, b in rows.itertuples(index=False)}


def test_sql_and_python_labels_agree_on_every_setting_and_study_file(tmp_path):
    """The views' labels (SQL over stored params) equal the Python ones over each trial's settings, and
    the planned cells' labels (declared settings, defaults for the rest) equal both."""
    store = Store(tmp_path / "r.duckdb")
    studies = [parse_study(GRID, "grid.yaml")] + [load_study(p, ["datasets=[synthetic]"])
                                                  for p in sorted((ROOT / "studies").glob("*.yaml"))]
    seen, cells = set(), set()
    for study in studies:
        trials = expand(study)
        store.register_study(study.name, study.file, len(trials), "grid", dict(study.raw), [t.key for t in trials])
        rows = pd.DataFrame([trial_row(t, "running") for t in trials]).drop_duplicates("trial_key")
        with store.transaction() as con:  # one insert, not a transaction per trial
            con.register("incoming", rows)
            con.execute(f"INSERT INTO trials ({', '.join(rows.columns)}) SELECT * FROM incoming WHERE trial_key "
                        "NOT IN (SELECT trial_key FROM trials)")
        stored = _stored_labels(store, study.name)
        for spec in trials:
            method, model = labels(spec.params())
            assert stored[spec.key] == (full_variant(variant(spec.method), method, model), method, model), spec.label()
            seen.add(stored[spec.key][0])
        cells |= set(expected_cells(study).variant)
    assert cells == seen  # the planned cells name each variant as the stored trials do
    # every labelled setting shows up (at whichever value is not the default), each only where it applies
    text = " ".join(seen)
    for setting in SETTINGS:
        assert f"{setting.name}=" in text, setting.name
    assert not any("kl_sign" in v for v in seen if v.startswith("erl w/o KL"))  # lambda 0: no KL term to sign
    assert not any("rcl_similarity" in v for v in seen if v.startswith("prl w/o RCL"))
    assert not any("bert4rec_objective" in v for v in seen if "text_mode" in v)  # UniSRec rows only
    assert not any("clean_ratio" in v for v in seen if "bert4rec_objective=next_item" in v)  # cloze rows only
    assert "quickstart" in {s.name for s in studies} and any(v == "prl [training=packed]" for v in seen)


def test_label_helpers():
    assert labels({"method": "erl", "backbone": "sasrec", "kl_lambda": 0.05, "formulation": "released",
                   "training": "padded"}) == ("formulation=released", "training=padded")
    assert labels({"method": "erl", "backbone": "sasrec", "kl_lambda": 0.0, "kl_sign": "printed"}) == ("", "")
    assert full_variant("erl", "formulation=released", "training=padded") == "erl [formulation=released, training=padded]"
    assert split_variant("erl [formulation=released]") == ("erl", "formulation=released")
    assert variant_label("erl [formulation=released]") == "+ERL [formulation=released]"
    assert variant_label("prl w/o RCL") == "PRL w/o RCL"


TWO = {"name": "two", "datasets": ["synthetic"], "backbones": ["sasrec"], "seeds": [0, 1],
       "methods": ["base", {"name": "erl", "reasoning_steps": 2, "kl_lambda": 0.01,
                            "formulation": ["paper", "released"]}],
       "params": {"hidden_size": 16}, "selection": {"metric": "valid/ndcg@20"}}
# (method, formulation) -> (valid, test) NDCG@20 per seed; released is better on validation
VALUES = {("base", "paper"): ((0.20, 0.21), (0.10, 0.11)), ("erl", "paper"): ((0.25, 0.26), (0.12, 0.13)),
          ("erl", "released"): ((0.30, 0.31), (0.09, 0.10))}


@pytest.fixture(scope="module")
def two(tmp_path_factory, report_demo):
    store = Store(tmp_path_factory.mktemp("two") / "r.duckdb")
    trials = expand(parse_study(TWO, "two.yaml"))
    store.register_study("two", "two.yaml", len(trials), "grid", TWO, [t.key for t in trials])
    for spec in trials:
        valid, test = VALUES[(spec.method["name"], spec.method["formulation"])]
        store.ingest(spec, "two", report_demo.output(spec, {"valid": valid[spec.seed], "test": test[spec.seed]}), "/runs/t", {})
    return store


def test_formulations_are_separate_rows_never_merged(two, tmp_path):
    best = two.query("SELECT variant, valid_score FROM report_best WHERE study = 'two' ORDER BY variant")
    assert list(best.variant) == ["base", "erl", "erl [formulation=released]"]
    assert best.valid_score.tolist() == pytest.approx([0.205, 0.255, 0.305])
    comps = two.query("SELECT variant, reference FROM report_comparisons WHERE study = 'two' ORDER BY variant")
    assert comps.values.tolist() == [["erl", "base"], ["erl [formulation=released]", "base"]]
    readme = build_report(two.path, "two", tmp_path)
    text = readme.read_text()
    table = pd.read_csv(tmp_path / "two" / "table2_overall_id.csv").set_index("variant")
    assert table.loc["erl", "ndcg@20_mean"] == pytest.approx(0.125)
    assert table.loc["erl [formulation=released]", "ndcg@20_mean"] == pytest.approx(0.095)
    assert "| +ERL [formulation=released] | K=2, λ=0.01 |" in text and "| +ERL | K=2, λ=0.01 |" in text
    claims = pd.read_csv(tmp_path / "two" / "table_claims.csv")
    erl = claims[claims.claim == "t23_sasrec_erl"].set_index("variant")
    assert set(erl.index) == {"erl", "erl [formulation=released]"}  # one verdict per variant
    per_seed = [(3 * 100 * (e / b - 1) + 100 * (1.1 * e / b - 1)) / 4  # ERL's R@20 is 2.2x its N@20, Base's 2x
                for e, b in zip((0.09, 0.10), (0.10, 0.11), strict=True)]
    assert erl.loc["erl [formulation=released]", "mean"] == pytest.approx(sum(per_seed) / 2)


def test_missing_settings_read_as_legacy_and_speed_settings_never_split(two, tmp_path):
    copy = tmp_path / "c.duckdb"
    shutil.copy(two.path, copy)
    with Store(copy).connect() as con:
        before = con.execute("SELECT trial_key, config_id, variant FROM report_trials ORDER BY 1").fetchall()
        # seed 0 stored before item_scoring / step_signals existed; seed 1 with them at legacy / other values
        con.execute("UPDATE trials SET params = json_merge_patch(params, '{\"item_scoring\": null}') WHERE seed = 0")
        con.execute("UPDATE trials SET params = json_merge_patch(params, '{\"item_scoring\": \"dot\", "
                    "\"step_signals\": true, \"cuda_graphs\": false}') WHERE seed = 1")
        after = con.execute("SELECT trial_key, config_id, variant FROM report_trials ORDER BY 1").fetchall()
        assert after == before
        n = con.execute("SELECT count(DISTINCT config_id) FROM report_trials WHERE study = 'two'").fetchone()[0]
        assert n == 3  # base and the two ERL formulations: each with both seeds
        con.execute("UPDATE trials SET params = json_merge_patch(params, '{\"item_scoring\": \"cosine\"}') "
                    "WHERE seed = 1 AND method = 'base'")
        rows = con.execute("SELECT seed, variant FROM report_trials WHERE method = 'base' ORDER BY seed").fetchall()
    assert rows == [(0, "base"), (1, "base [item_scoring=cosine]")]
    assert json.loads(json.dumps(labels({"method": "base", "backbone": "sasrec"}))) == ["", ""]
