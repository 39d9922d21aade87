"""MLflow logging from the driver against a local file store, read back with the MLflow client: one run per
trial under a parent run per study, backfill of earlier trials, no duplicates on re-runs."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import duckdb
import pandas as pd
import pytest

from harness.cli import main
from harness.runner import RunOptions, StudyRunner
from harness.study import load_study

if importlib.util.find_spec("mlflow") is None:
    if os.environ.get("CI"):  # CI installs every extra and must run these
        raise RuntimeError("CI must run the MLflow tests, but the mlflow extra is missing")
    pytest.skip("needs the optional mlflow extra: pip install -e '.[mlflow]'", allow_module_level=True)

os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
ERL = {"name": "erl", "reasoning_steps": 1, "kl_lambda": 0.02}


def client(root):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=(root / "mlruns").as_uri())


def runs_of(root, study: str):
    c = client(root)
    experiment = c.get_experiment_by_name(study)
    return [] if experiment is None else c.search_runs([experiment.experiment_id], max_results=1000)


def run_study(root, data_cache, raw, mlflow: bool):
    path = root / f"{raw['name']}.yaml"
    path.write_text(json.dumps(raw))
    lines: list[str] = []
    options = RunOptions(db=root / "results.duckdb", runs=root / "runs", cache_dir=data_cache,
                         mlflow=str(root / "mlruns") if mlflow else None)
    summary = StudyRunner(load_study(path), options, out=lines.append).run()
    assert not summary["failed"] and not summary["internal_errors"] and not summary["aborted"], summary
    assert not any("could not log" in line for line in lines), lines
    return summary, lines


def sql(root, query: str) -> pd.DataFrame:
    with duckdb.connect(str(root / "results.duckdb"), read_only=True) as con:
        return con.execute(query).df()


def test_mlflow_runs_per_trial_nested_under_the_study_without_duplicates(ray_local, tmp_path, data_cache, tiny_study):
    # 1. a run without --mlflow; 2. --mlflow logs those trials after the fact (nothing re-trains)
    run_study(tmp_path, data_cache, tiny_study(name="trk", methods=["base", ERL]), mlflow=False)
    assert not (tmp_path / "mlruns").exists()
    summary, lines = run_study(tmp_path, data_cache, tiny_study(name="trk", methods=["base", ERL]), mlflow=True)
    assert summary["skipped"] == 2 and summary["completed"] == 0
    assert any("mlflow: logged 2 earlier trials of study trk" in line for line in lines)

    runs = runs_of(tmp_path, "trk")
    (parent,) = [r for r in runs if r.data.tags.get("harness.role") == "study"]
    assert parent.info.run_name == "study trk" and parent.data.tags["harness.study"] == "trk"
    children = {r.data.tags["harness.trial_key"]: r for r in runs if r is not parent}
    trials = sql(tmp_path, "SELECT trial_key, method, best_epoch FROM trials ORDER BY method")
    assert set(children) == set(trials.trial_key)
    for child in children.values():
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id and child.info.status == "FINISHED"
    erl_key = trials.trial_key[1]
    erl = children[erl_key]
    assert erl.info.run_name == f"synthetic sasrec erl K=1 seed=0 {erl_key[:12]}"
    assert erl.data.tags["harness.method"] == "erl" and erl.data.tags["harness.study"] == "trk"
    assert erl.data.params["kl_lambda"] == "0.02" and erl.data.params["hidden_size"] == "16"
    assert erl.data.params["dataset_spec/synthetic/n_users"] == "150"

    # per-epoch validation curves and the final test metrics, as stored in DuckDB
    history = client(tmp_path).get_metric_history(erl.info.run_id, "valid/ndcg_20")
    epochs = sql(tmp_path, f"SELECT epoch, valid_ndcg_20 FROM epochs WHERE trial_key = '{erl_key}' ORDER BY epoch")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == list(
        zip(epochs.epoch, epochs.valid_ndcg_20, strict=True))
    test = sql(tmp_path, f"SELECT metric, value FROM metrics WHERE trial_key = '{erl_key}' AND split = 'test' "
                         "AND step IS NULL AND user_group = 'all'")
    assert {f"test/{m.replace('@', '_')}": v for m, v in zip(test.metric, test.value, strict=True)} == {
        k: v for k, v in erl.data.metrics.items() if k.startswith("test/")}
    assert erl.data.metrics["best_epoch"] == trials.best_epoch[1]

    # 3. the study grows by one ERL lambda: one new run (logged at ingestion), the old ERL run is renamed
    grown = tiny_study(name="trk", methods=["base", {**ERL, "kl_lambda": [0.02, 0.5]}])
    summary, _ = run_study(tmp_path, data_cache, grown, mlflow=True)
    assert summary["completed"] == 1
    runs = runs_of(tmp_path, "trk")
    assert len(runs) == 4 and len({r.data.tags.get("harness.trial_key") for r in runs}) == 4
    names = sorted(r.info.run_name for r in runs)
    assert f"synthetic sasrec erl K=1 kl_lambda=0.02 seed=0 {erl_key[:12]}" in names
    assert any(n.startswith("synthetic sasrec erl K=1 kl_lambda=0.5 seed=0 ") for n in names)

    # 4. re-running changes nothing in MLflow
    before = sorted((r.info.run_id, r.info.run_name) for r in runs)
    run_study(tmp_path, data_cache, grown, mlflow=True)
    assert sorted((r.info.run_id, r.info.run_name) for r in runs_of(tmp_path, "trk")) == before

    # 5. a run left RUNNING (the driver died while logging it) is replaced by a complete one
    client(tmp_path).update_run(erl.info.run_id, status="RUNNING")
    run_study(tmp_path, data_cache, grown, mlflow=True)
    after = {r.data.tags.get("harness.trial_key"): r for r in runs_of(tmp_path, "trk")}
    assert len(after) == 4 and after[erl_key].info.run_id != erl.info.run_id
    assert after[erl_key].info.status == "FINISHED" and after[erl_key].data.metrics == erl.data.metrics
    assert sorted(r.info.run_id for r in after.values()) == sorted(
        {run_id for run_id, _ in before} - {erl.info.run_id} | {after[erl_key].info.run_id})


def test_mlflow_flag_without_the_package_exits_2_before_any_work(tmp_path, monkeypatch, capsys, tiny_study):
    (tmp_path / "s.yaml").write_text(json.dumps(tiny_study(name="nomlflow")))
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what Python does for a package that is not installed
    monkeypatch.chdir(tmp_path)
    assert main(["run", "s.yaml", "--mlflow"]) == 2
    assert "--mlflow: the mlflow package is not installed; pip install -e '.[mlflow]'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]  # no database, runs, mlruns or cache


def test_unreachable_tracking_store_exits_3_before_launching(tmp_path, data_cache, capsys, tiny_study):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    (tmp_path / "s.yaml").write_text(json.dumps(tiny_study(name="badstore", methods=["base"])))
    code = main(["run", str(tmp_path / "s.yaml"), "--db", str(tmp_path / "r.duckdb"), "--runs", str(tmp_path / "runs"),
                 "--cache-dir", str(data_cache), f"--mlflow={blocker}/mlruns"])
    assert code == 3 and f"--mlflow file://{blocker}/mlruns" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # no trial started
