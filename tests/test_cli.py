"""The `harness` CLI in a subprocess: help, bad study files, plan, sql, report, a real run, SIGKILL + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness.cli import main

ROOT = Path(__file__).resolve().parent.parent
# tests/conftest.py's tiny study (fixture tiny_study), read here because BAD_STUDIES needs it at import time
TINY_STUDY = yaml.safe_load((ROOT / "tests/tiny_study.yaml").read_text())
HARNESS = [sys.executable, "-m", "harness.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


BAD_STUDIES = [
    # (file content or None for a missing file, key path, problem): each kind of mistake in a study file
    ({**TINY_STUDY, "metods": ["base"]}, "metods", "unknown key (did you mean 'methods'?)"),
    ({**TINY_STUDY, "params": {"max_epochs": "two"}}, "params.max_epochs", "expected an integer"),
    ({**TINY_STUDY, "params": {"lr": {"low": 0.1, "high": 0.01}}, "search": {"algorithm": "optuna"}}, "params.lr",
     "below high"),
    ({**TINY_STUDY, "selection": {"metric": "test/ndcg@20"}}, "selection.metric", "test metric"),
    ({**TINY_STUDY, "resources": {"cpu": -1}}, "resources.cpu", "must be > 0"),
    ({**TINY_STUDY, "datasets": [{"name": "synthetic", "kcor": 5}]}, "datasets[0].kcor", "did you mean 'kcore'"),
    ({**TINY_STUDY, "datasets": [{"interactions": "missing.tsv"}]}, "datasets[0]", "missing.tsv"),
    (None, "no such file", ""),
    ("datasets: [synthetic\nmethods: [base]\n", "line 2, column", "YAML syntax error"),
]


def harness(*args, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*HARNESS, *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("command", [[], ["run"], ["plan"], ["status"], ["sql"], ["report"], ["tensorboard"],
                                     ["data"], ["data", "prepare"], ["data", "stats"], ["data", "list"]])
def test_every_command_has_help(capsys, command):
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and out.startswith("usage: harness")
    if command:
        assert "--db PATH" in out and "results.duckdb" in out
    else:
        assert "Exit codes" in out


def test_usage_errors_exit_2(tmp_path):
    assert harness(cwd=tmp_path, timeout=60).returncode == 2
    result = harness("run", cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "the following arguments are required: study" in result.stderr
    result = harness("status", cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "no such database" in result.stderr


@pytest.mark.parametrize("content, where, problem", BAD_STUDIES)
def test_bad_study_files_exit_2_and_start_nothing(tmp_path, content, where, problem):
    path = tmp_path / "bad.yaml"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    result = harness("run", path.name, cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"harness: error: bad.yaml: {where}"), message
    assert problem in message and "Ray" not in result.stdout
    cwd = os.getcwd()
    try:  # `plan` checks the same way (in-process here, to keep the suite fast)
        os.chdir(tmp_path)
        assert main(["plan", path.name]) == 2
    finally:
        os.chdir(cwd)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["bad.yaml"] if content is not None else [])


def test_plan_run_status_sql_tensorboard(tmp_path, data_cache, harness_in_process, tiny_study):
    (tmp_path / "s.yaml").write_text(json.dumps(tiny_study(name="cli")))
    common = ["--cache-dir", data_cache]
    code, out, _ = harness_in_process(tmp_path, "plan", "s.yaml", "--list", *common)
    assert code == 0 and "2 trials" in out and "already complete: 0" in out and "1 CPU, 0 GPU" in out
    assert not (tmp_path / "results.duckdb").exists()  # plan writes nothing

    run = harness("run", "s.yaml", "--num-cpus", 2, "--no-dashboard", *common, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "done 2/2" in run.stdout and "2 trials completed now" in run.stdout

    code, out, _ = harness_in_process(tmp_path, "plan", "s.yaml", *common)
    assert "already complete: 2" in out and "to run: 0" in out
    code, out, _ = harness_in_process(tmp_path, "status")
    assert code == 0 and "cli (grid" in out and "2/2 completed" in out

    query = "SELECT method, status FROM trials ORDER BY method"
    table = harness("sql", query, cwd=tmp_path)
    assert table.returncode == 0 and "completed" in table.stdout and "base" in table.stdout
    code, out, _ = harness_in_process(tmp_path, "sql", query, "--format", "csv")
    assert out.splitlines() == ["method,status", "base,completed", "erl,completed"]
    code, out, _ = harness_in_process(tmp_path, "sql", query, "--format", "json")
    assert json.loads(out) == [{"method": "base", "status": "completed"}, {"method": "erl", "status": "completed"}]
    code, _, err = harness_in_process(tmp_path, "sql", "DROP TABLE trials")
    assert code == 2 and "read-only" in err
    code, out, _ = harness_in_process(tmp_path, "sql", "SELECT count(*) AS n FROM trials", "--format", "csv")
    assert out.split() == ["n", "2"]
    assert harness_in_process(tmp_path, "sql", "SELEC 1")[0] == 2

    # TensorBoard on the study's directory, bound to 127.0.0.1, answering at the printed URL
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    board = subprocess.Popen([*HARNESS, "tensorboard", "cli", "--port", str(port)], cwd=tmp_path, env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        assert f"http://127.0.0.1:{port}/" in board.stdout.readline()
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=5) as response:
                    runs = json.loads(response.read())
                if len(runs) == 2:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "TensorBoard did not answer"
            time.sleep(1)
    finally:
        os.killpg(board.pid, signal.SIGTERM)
        board.wait(timeout=30)

    code, out, _ = harness_in_process(tmp_path, "data", "stats", json.dumps(tiny_study()["datasets"][0]), *common)
    assert code == 0 and "#Users" in out


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def test_sigkill_mid_study_then_rerun_loses_nothing_and_duplicates_nothing(tmp_path, data_cache, tiny_study):
    # 12 trials, one at a time: enough that some are still to come when the kill lands on a fast machine
    raw = tiny_study(name="kill", seeds=list(range(6)), concurrency=1)
    (tmp_path / "s.yaml").write_text(json.dumps(raw))
    args = [*HARNESS, "run", "s.yaml", "--num-cpus", "2", "--no-dashboard", "--cache-dir", str(data_cache)]
    driver = subprocess.Popen(args, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    runs = tmp_path / "runs" / "kill"
    try:
        _wait_for(lambda: len(list(runs.glob("*/result.json"))) >= 2, 240, "two finished trials")
        # a second run on the same database fails fast while the first holds it
        second = harness("run", "s.yaml", "--cache-dir", data_cache, cwd=tmp_path, timeout=120)
        assert second.returncode == 3 and "in use by another `harness run`" in second.stderr
        time.sleep(1.0)
        os.kill(driver.pid, signal.SIGKILL)  # the driver only; Ray's processes are left behind as orphans
        driver.wait(timeout=30)
    finally:
        try:  # clean up the orphans: everything still in the session we started
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    finished_before = {p.parent.name: json.loads(p.read_text()) for p in runs.glob("*/result.json")}
    assert 2 <= len(finished_before) < 12

    rerun = harness("run", "s.yaml", "--num-cpus", 2, "--no-dashboard", "--cache-dir", data_cache, cwd=tmp_path,
                    timeout=400)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    counts = json.loads(harness("sql", "SELECT (SELECT count(*) FROM trials) AS trials, "
                                "(SELECT count(DISTINCT trial_key) FROM trials) AS keys, "
                                "(SELECT count(*) FROM trials WHERE status = 'completed') AS completed, "
                                "(SELECT count(*) FROM epochs) AS epochs, "
                                "(SELECT count(*) FROM (SELECT DISTINCT trial_key, epoch FROM epochs)) AS epoch_keys, "
                                "(SELECT count(*) FROM study_trials) AS links", "--format", "json",
                                cwd=tmp_path).stdout)[0]
    assert counts == {"trials": 12, "keys": 12, "completed": 12, "epochs": 24, "epoch_keys": 24, "links": 12}
    per_trial = json.loads(harness("sql", "SELECT trial_key, count(*) AS n FROM metrics GROUP BY 1", "--format",
                                   "json", cwd=tmp_path).stdout)
    assert len(per_trial) == 12 and {r["n"] for r in per_trial} <= {2 * 9 * 4 * 2, 2 * 9 * 4 * 3}
    # trials that had finished before the kill were not run again (same process id and start time)
    for name, result in finished_before.items():
        assert json.loads((runs / name / "result.json").read_text()) == result
