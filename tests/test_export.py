"""`harness export` and `harness.results` on a real run: frames with one row per trial, files any tool reads,
read-only access while a run holds the database, and clear errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

import harness.results as results
from harness.cli import main
from harness.errors import HarnessError
from harness.runner import RunOptions, StudyRunner
from harness.store import RunLock
from harness.study import load_study

ROOT = Path(__file__).resolve().parent.parent
HARNESS = [sys.executable, "-m", "harness.cli"]

METRIC_COLUMNS = [f"{s}/{m}" for s in ("valid", "test") for m in ("ndcg@10", "ndcg@20", "recall@10", "recall@20")]


@pytest.fixture(scope="module")
def run(ray_local, tmp_path_factory, data_cache, tiny_study):
    """Study `exp`: base, ERL K=1 and a PRL trial that fails inside fit (max_len 5 is below the histories)."""
    root = tmp_path_factory.mktemp("export")
    raw = tiny_study(name="exp", methods=["base", {"name": "erl", "reasoning_steps": 1, "kl_lambda": 0.02},
                                          {"name": "prl", "reasoning_steps": 1, "max_len": 5}])
    (root / "exp.yaml").write_text(json.dumps(raw))
    options = RunOptions(db=root / "results.duckdb", runs=root / "runs", cache_dir=data_cache)
    summary = StudyRunner(load_study(root / "exp.yaml"), options, out=lambda line: None).run()
    assert summary["completed"] == 2 and len(summary["failed"]) == 1
    return root


def sql(root, query: str) -> pd.DataFrame:
    with duckdb.connect(str(root / "results.duckdb"), read_only=True) as con:
        return con.execute(query).df()


def test_frame_has_one_row_per_trial_with_metric_and_config_columns(run):
    frame = results.open(run / "results.duckdb").frame(study="exp")
    assert len(frame) == 3 and frame["trial_key"].is_unique
    assert list(frame.columns[:12]) == results.LEAD and list(frame.columns[12:20]) == METRIC_COLUMNS
    by_method = frame.set_index("method")
    assert list(by_method.loc[["base", "erl", "prl"], "status"]) == ["completed", "completed", "failed"]
    assert by_method.loc["erl", "config/kl_lambda"] == 0.02 and by_method.loc["prl", "config/max_len"] == 5
    assert by_method.loc["erl", "config/dataset_spec/synthetic/n_users"] == 150
    assert by_method.loc["prl", METRIC_COLUMNS].isna().all()  # failed: no metrics, row kept (as Ray Tune does)
    stored = sql(run, "SELECT trial_key, split || '/' || metric AS col, value FROM metrics "
                      "WHERE step IS NULL AND user_group = 'all'").pivot(index="trial_key", columns="col", values="value")
    done = frame[frame.status == "completed"].set_index("trial_key")
    pd.testing.assert_frame_equal(done[METRIC_COLUMNS], stored.loc[done.index, METRIC_COLUMNS], check_names=False)
    assert 0 < done["test/ndcg@20"].min() <= done["test/ndcg@20"].max() <= 1

    res = results.open(run / "results.duckdb")
    test_only = res.frame(study="exp", split="test", config=False)
    assert [c for c in test_only if "/" in c] == METRIC_COLUMNS[4:]
    step0 = res.frame(study="exp", split="test", step=0).set_index("method")
    step0_stored = sql(run, "SELECT m.value FROM metrics m JOIN trials t USING (trial_key) WHERE t.method = 'erl' "
                            "AND m.split = 'test' AND m.step = 0 AND m.user_group = 'all' AND m.metric = 'ndcg@20'")
    assert step0.loc["erl", "test/ndcg@20"] == step0_stored.value[0]
    group = res.frame(study="exp", split="valid", user_group="item:IG0").set_index("method")
    assert group.loc["base", "valid/ndcg@20"] != by_method.loc["base", "valid/ndcg@20"]


def test_epochs_trials_and_studies_frames(run):
    res = results.open(run / "results.duckdb")
    epochs = res.epochs("exp")
    assert len(epochs) == sql(run, "SELECT count(*) AS n FROM epochs").n[0] == 4  # 2 trials x 2 epochs
    assert set(epochs.method) == {"base", "erl"} and list(epochs.epoch[:2]) == [1, 2]
    assert {"train_loss", "valid_ndcg_20", "is_best", "seed", "reasoning_steps"} <= set(epochs.columns)
    trials = res.trials("exp")
    assert isinstance(trials.params[0], dict) and set(trials.status) == {"completed", "failed"}
    studies = res.studies().set_index("study")
    assert studies.loc["exp", ["trials", "completed", "planned"]].tolist() == [3, 2, 3]
    assert len(res.sample_ranks("exp", split="test")) == sql(
        run, "SELECT count(*) AS n FROM sample_ranks WHERE split = 'test'").n[0] > 0


def test_api_errors_name_the_problem(run, tmp_path):
    res = results.open(run / "results.duckdb")
    with pytest.raises(HarnessError, match=r"no study named 'nope' \(known: exp\)"):
        res.frame(study="nope")
    with pytest.raises(HarnessError, match="'train' given; choose from valid, test"):
        res.frame(study="exp", split="train")
    with pytest.raises(HarnessError, match="no such database"):
        results.open(tmp_path / "missing.duckdb")


def test_reads_while_a_run_holds_the_database(run):
    db = run / "results.duckdb"
    with RunLock(db).acquire("exp"):  # what `harness run` holds for its whole duration
        assert len(results.open(db).frame(study="exp")) == 3
    # a write transaction open in another process: the read waits for it instead of failing
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time\n"
                               f"con = duckdb.connect({str(db)!r})\ncon.execute('BEGIN TRANSACTION')\n"
                               "print('open', flush=True)\ntime.sleep(2)\ncon.close()"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        started = time.monotonic()
        assert len(results.open(db, timeout=60).epochs("exp")) == 4
        assert time.monotonic() - started < 60
    finally:
        holder.wait(timeout=60)


def test_export_cli_writes_parquet_and_csv_any_tool_reads(run, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    expected = results.open(run / "results.duckdb").frame(study="exp")
    for fmt in ("parquet", "csv"):
        out = tmp_path / fmt
        args = [*HARNESS, "export", "exp", "--format", fmt, "--out", str(out), "--db", str(run / "results.duckdb")]
        done = subprocess.run(args + (["--samples"] if fmt == "csv" else []), env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert f"{out / 'exp'}/" in done.stdout
        folder = out / "exp"
        names = {"results", "trials", "epochs", "metrics", "step_similarity", "latency"}
        names |= {"sample_ranks"} if fmt == "csv" else set()
        assert {p.name for p in folder.iterdir()} == {f"{n}.{fmt}" for n in names} | {"README.md"}
        assert [p.name for p in out.iterdir()] == ["exp"]  # no temporary folder left behind
        readme = (folder / "README.md").read_text()
        for name in names:
            assert f"`{name}.{fmt}`" in readme and f"### {name}" in readme
        assert "| `test/ndcg@20` | double |" in readme and "| `trial_key` |" in readme
        read = pd.read_parquet if fmt == "parquet" else pd.read_csv
        table = read(folder / f"results.{fmt}").set_index("trial_key").loc[expected.trial_key]
        assert list(table.columns[:19]) == list(expected.columns[1:20])
        pd.testing.assert_series_equal(table["test/ndcg@20"], expected.set_index("trial_key")["test/ndcg@20"])
        # DuckDB reads the files as well, and counts match the database
        with duckdb.connect() as con:
            reader = "read_parquet" if fmt == "parquet" else "read_csv_auto"
            for name, query in (("epochs", "SELECT count(*) FROM epochs"), ("metrics", "SELECT count(*) FROM metrics"),
                                ("trials", "SELECT count(*) FROM trials")):
                assert con.execute(f"SELECT count(*) FROM {reader}('{folder / f'{name}.{fmt}'}')").fetchone()[0] \
                    == sql(run, query).iloc[0, 0]
            if fmt == "csv":
                assert con.execute(f"SELECT count(*) FROM read_csv_auto('{folder / 'sample_ranks.csv'}')").fetchone()[0] \
                    == sql(run, "SELECT count(*) FROM sample_ranks").iloc[0, 0]
        params = json.loads(read(folder / f"trials.{fmt}")["params"][0])
        assert params["hidden_size"] == 16
    # exporting again replaces the folder whole
    (tmp_path / "csv" / "exp" / "stale.txt").write_text("x")
    assert main(["export", "exp", "--format", "csv", "--out", str(tmp_path / "csv"), "--db",
                 str(run / "results.duckdb")]) == 0
    assert not (tmp_path / "csv" / "exp" / "stale.txt").exists()
    assert not (tmp_path / "csv" / "exp" / "sample_ranks.csv").exists()


@pytest.mark.parametrize("args, problem", [
    (["export", "nope"], "no study named 'nope' (known: exp)"),
    (["export", "exp", "--out", "{file}/sub"], "cannot write the export there"),
    (["export", "exp", "--db", "{tmp}/none.duckdb"], "no such database"),
])
def test_export_bad_input_exits_2_and_writes_nothing(run, tmp_path, capsys, args, problem):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    args = [a.format(file=blocker, tmp=tmp_path) for a in args]
    if "--db" not in args:
        args += ["--db", str(run / "results.duckdb")]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    assert main(args) == 2
    assert problem in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_export_unknown_format_exits_2(run, capsys):
    with pytest.raises(SystemExit) as info:
        main(["export", "exp", "--format", "xlsx", "--db", str(run / "results.duckdb")])
    assert info.value.code == 2 and "invalid choice: 'xlsx'" in capsys.readouterr().err
    from harness.export import export

    with pytest.raises(HarnessError, match="unknown format 'xlsx'"):
        export(run / "results.duckdb", "exp", "xlsx")


def test_export_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["export", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "--format {parquet,csv}" in out and "--samples" in out and "--db PATH" in out
