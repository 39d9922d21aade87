"""Optuna studies resume honestly: TPE warm-started from the database, no configuration evaluated twice, an
interrupted sample re-run (or marked abandoned when no run will redo it), checked with a real kill -9."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness.expand import search_groups
from harness.search import History, abandon_reasons, histories
from harness.store import Store
from harness.study import parse_study

ROOT = Path(__file__).resolve().parent.parent
HARNESS = [sys.executable, "-m", "harness.cli"]


def tiny_study(**overrides) -> dict:
    """A fresh copy of tests/conftest.py's tiny study (tiny_study.yaml); _group needs it outside a fixture."""
    return {**yaml.safe_load((ROOT / "tests/tiny_study.yaml").read_text()), **overrides}


ENV = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _group(space: dict, num_samples: int = 20, seeds=(0,)):
    study = parse_study(tiny_study(methods=[{"name": "erl", "reasoning_steps": 1, **space}],
                                   search={"algorithm": "optuna", "num_samples": num_samples}, seeds=list(seeds)),
                        "t.yaml")
    return study, search_groups(study)


def _searcher(group, history: History, budget: int, seed: int = 0):
    from harness.searchers import ResumableSearch

    return ResumableSearch(group, "best_valid/ndcg@20", "ndcg@20", history, budget, seed=seed, out=lambda _: None)


def _key(group, point: dict) -> str:
    from harness.expand import resolve_point

    return resolve_point(group.to_config("ndcg@20"), point).key


def _draws(searcher, n: int) -> list[float]:
    out = []
    for i in range(n):
        config = searcher.suggest(f"t{i}")
        out.append(config["params"]["kl_lambda"])
        searcher.on_trial_complete(f"t{i}", {"best_valid/ndcg@20": -abs(math.log10(out[-1] / 0.01))})
    return out


def test_tpe_models_the_warm_start_points():
    from optuna.trial import TrialState

    _, (group,) = _group({"kl_lambda": {"low": 0.0001, "high": 1.0, "log": True}})
    # 16 earlier samples spread over the range; the reward peaks at kl_lambda = 0.01
    points = [10 ** (-4 + 4 * i / 15) for i in range(16)]
    history = History(done={_key(group, {"kl_lambda": p}): ({"kl_lambda": p}, -abs(math.log10(p / 0.01)))
                            for p in points})
    warm = _searcher(group, history, budget=26, seed=3)
    complete = warm.optuna.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 16 and sorted(t.value for t in complete) == sorted(v for _, v in history.done.values())
    cold = _searcher(group, History(), budget=10, seed=3)
    warm_draws, cold_draws = _draws(warm, 10), _draws(cold, 10)
    distance = [sorted(abs(math.log10(x / 0.01)) for x in draws)[5] for draws in (warm_draws, cold_draws)]
    # TPE past its 10 start-up trials puts its draws near the peak; the cold start is still random
    assert distance[0] < 0.5 < distance[1], distance
    assert warm.left == 0 and warm.suggest("t10") == warm.FINISHED


def test_a_discrete_space_is_never_evaluated_twice():
    study, (group,) = _group({"reasoning_steps": {"values": [1, 2, 3]}, "kl_lambda": {"values": [0.01, 0.1]}},
                             num_samples=10)
    budget = group.budget(10)
    assert group.cardinality == 6 and budget == 6
    done = {_key(group, p): (p, 0.5) for p in ({"reasoning_steps": 2, "kl_lambda": 0.1},
                                             {"reasoning_steps": 1, "kl_lambda": 0.01})}
    searcher = _searcher(group, History(done=done), budget, seed=0)
    keys = []
    for i in range(10):
        config = searcher.suggest(f"t{i}")
        if config == searcher.FINISHED:
            break
        keys.append(_key(group, config["params"]))
        searcher.on_trial_complete(f"t{i}", {"best_valid/ndcg@20": 0.1 * i})
    assert len(keys) == 4 and len(set(keys) | set(done)) == 6  # the four configurations not yet done, once each
    assert searcher.suggest("again") == searcher.FINISHED


def test_interrupted_samples_are_rerun_first_and_the_rest_abandoned():
    study, (group,) = _group({"kl_lambda": {"low": 0.001, "high": 0.1}}, num_samples=4)
    point = {"kl_lambda": 0.0123}
    done = {_key(group, {"kl_lambda": v}): ({"kl_lambda": v}, 0.3) for v in (0.002, 0.05)}
    history = History(done=done, interrupted=[(_key(group, point), point)])
    searcher = _searcher(group, history, budget=4)
    assert searcher.suggest("a")["params"] == point  # the interrupted configuration, as it was
    assert searcher.suggest("b")["params"] != point and searcher.suggest("c") == searcher.FINISHED
    # the budget lowered to what is done: no run will redo it, so it is abandoned with the reason
    reasons = abandon_reasons([group], {group.id: history}, ["stray-key"], num_samples=2)
    assert set(reasons) == {_key(group, point), "stray-key"}
    assert "has 2 completed samples of its budget of 2" in reasons[_key(group, point)]
    assert "outside the study's current search space" in reasons["stray-key"]


def test_histories_place_samples_in_their_own_group_only():
    study, groups = _group({"kl_lambda": {"low": 0.001, "high": 0.1}}, seeds=(0, 1))
    g0, g1 = groups
    base = {"backbone": "sasrec", "method": "erl", "dataset_hash": g0.dataset.content_hash,
            **{k: v for k, v in g0.pinned.items()}}
    samples = [("k0", {**base, "seed": 0, "kl_lambda": 0.01}, "completed", 0.2),
               ("k1", {**base, "seed": 1, "kl_lambda": 0.02}, "running", None),
               ("k2", {**base, "seed": 1, "kl_lambda": 0.5}, "running", None)]  # outside the range: stray
    history, stray = histories(samples, groups)
    assert list(history[g0.id].done) == ["k0"] and not history[g0.id].interrupted
    assert history[g1.id].interrupted == [("k1", {"kl_lambda": 0.02})] and not history[g1.id].done
    assert stray == ["k2"]


def test_a_database_from_before_abandoned_is_widened_in_place(tmp_path):
    db = tmp_path / "r.duckdb"
    Store(db)
    import duckdb

    con = duckdb.connect(str(db))  # put back the older constraint, as a database made before it has
    (sql,) = con.execute("SELECT sql FROM duckdb_tables() WHERE table_name = 'trials'").fetchone()
    con.execute(sql.replace("CREATE TABLE trials", "CREATE TABLE old_trials").replace(", 'abandoned'", ""))
    con.execute("DROP TABLE trials")
    con.execute("ALTER TABLE old_trials RENAME TO trials")
    con.execute("INSERT INTO trials (trial_key, status, method) VALUES ('a', 'running', 'erl'), "
                "('b', 'completed', 'base')")
    with pytest.raises(duckdb.ConstraintException):
        con.execute("UPDATE trials SET status = 'abandoned' WHERE trial_key = 'a'")
    con.close()
    store = Store(db)
    store.mark_abandoned({"a": "abandoned: why", "b": "not running: untouched"})
    rows = store.query("SELECT trial_key, status, coalesce(error, '-') AS error, method FROM trials ORDER BY 1")
    assert rows.values.tolist() == [["a", "abandoned", "abandoned: why", "erl"], ["b", "completed", "-", "base"]]
    assert "abandoned" in store.query("SELECT constraint_text FROM duckdb_constraints() WHERE table_name = 'trials' "
                                      "AND constraint_type = 'CHECK'").constraint_text[0]


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _sql(cwd: Path, query: str, db: str = "results.duckdb") -> list[dict]:
    return Store(cwd / db, read_only=True).query(query).to_dict("records")


def _status(cwd: Path, capsys, db: str = "results.duckdb") -> str:
    from harness.cli import main

    capsys.readouterr()
    assert main(["status", "--db", str(cwd / db)]) == 0
    return capsys.readouterr().out


def test_kill_9_mid_search_then_rerun_finishes_the_budget_without_repeats(tmp_path, data_cache, capsys):
    # 6 samples one at a time, trials of a few seconds: the kill lands while the 4th runs
    raw = tiny_study(name="tpekill", methods=[{"name": "erl", "reasoning_steps": 1,
                                               "kl_lambda": {"low": 0.001, "high": 0.1, "log": True}}],
                     search={"algorithm": "optuna", "num_samples": 6, "seed": 2}, concurrency=1,
                     params={**tiny_study()["params"], "max_epochs": 3, "patience": 3})
    (tmp_path / "s.yaml").write_text(json.dumps(raw))
    args = [*HARNESS, "run", "s.yaml", "--num-cpus", "2", "--no-dashboard", "--cache-dir", str(data_cache)]
    driver = subprocess.Popen(args, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    runs = tmp_path / "runs" / "tpekill"

    def fourth_running() -> bool:
        if driver.poll() is not None:
            raise AssertionError("the driver ended before the kill:\n" + driver.stdout.read())
        if not (len(list(runs.glob("*/result.json"))) == 3 and len(list(runs.glob("*/trial.json"))) == 4):
            return False
        try:  # and the driver has recorded it as running (short read-only opens between its writes)
            store = Store(tmp_path / "results.duckdb", read_only=True, timeout=5)
            return store.query("SELECT count(*) AS n FROM trials WHERE status = 'running'")["n"][0] == 1
        except Exception:  # noqa: BLE001 - busy at that moment: look again
            return False

    try:
        _wait_for(fourth_running, 400, "three finished samples and a fourth running")
        os.kill(driver.pid, signal.SIGKILL)  # the driver only; Ray's processes are left behind as orphans
        driver.wait(timeout=30)
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    before = {p.parent.name: json.loads(p.read_text()) for p in runs.glob("*/result.json")}
    rows = _sql(tmp_path, "SELECT trial_key, status, kl_lambda FROM trials ORDER BY started_at")
    assert [r["status"] for r in rows].count("completed") == 3 and [r["status"] for r in rows].count("running") == 1
    interrupted = next(r for r in rows if r["status"] == "running")
    shutil.copy(tmp_path / "results.duckdb", tmp_path / "copy.duckdb")  # for the abandoned case below

    assert "1 interrupted (re-run the study to finish them)" in _status(tmp_path, capsys)  # true: the rerun redoes it
    from harness.cli import main

    old = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert main(["plan", "s.yaml", "--cache-dir", str(data_cache)]) == 0
    finally:
        os.chdir(old)
    assert "already complete: 3; to run: 3 (1 interrupted sample(s) re-run first)" in capsys.readouterr().out

    rerun = subprocess.run(args, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "3 earlier results reused; 1 interrupted sample(s) re-run first" in rerun.stdout
    assert "6 trials planned, 3 already complete" in rerun.stdout
    counts = _sql(tmp_path, "SELECT (SELECT count(*) FROM trials) AS trials, "
                            "(SELECT count(DISTINCT trial_key) FROM trials) AS keys, "
                            "(SELECT count(DISTINCT kl_lambda) FROM trials) AS configurations, "
                            "(SELECT count(*) FROM trials WHERE status = 'completed') AS completed, "
                            "(SELECT count(*) FROM epochs) AS epochs, "
                            "(SELECT count(*) FROM (SELECT DISTINCT trial_key, epoch FROM epochs)) AS epoch_keys, "
                            "(SELECT count(*) FROM study_trials) AS links")[0]
    assert counts["trials"] == counts["keys"] == counts["configurations"] == counts["completed"] == 6, counts
    assert counts["epochs"] == counts["epoch_keys"] and counts["links"] == 6
    again = {r["trial_key"]: r for r in _sql(tmp_path, "SELECT trial_key, status, kl_lambda FROM trials")}
    assert again[interrupted["trial_key"]]["status"] == "completed"  # the same configuration, re-run
    for name, result in before.items():  # completed samples were not run again
        assert json.loads((runs / name / "result.json").read_text()) == result
    status = _status(tmp_path, capsys)
    assert "6/6 completed, 0 failed, 0 pending" in status and "interrupted" not in status

    # The same interrupted database, rerun with a budget that is already spent: nothing runs, and the
    # interrupted sample is marked abandoned with its reason instead of staying 'running' forever.
    lowered = subprocess.run([*args, "--db", "copy.duckdb", "--set", "search.num_samples=3"], cwd=tmp_path, env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert lowered.returncode == 0, lowered.stdout + lowered.stderr
    assert "1 interrupted Optuna sample(s) marked abandoned" in lowered.stdout and "Ray:" not in lowered.stdout
    (row,) = _sql(tmp_path, "SELECT status, error FROM trials WHERE status <> 'completed'", db="copy.duckdb")
    assert row["status"] == "abandoned" and "has 3 completed samples of its budget of 3" in row["error"]
    status = _status(tmp_path, capsys, "copy.duckdb")
    assert "3/3 completed" in status and "1 abandoned (interrupted; their search will not re-run them)" in status
    assert "re-run the study" not in status, status


def test_an_invalid_combination_is_handed_out_and_fails_in_its_trial_not_in_the_driver():
    study = parse_study(tiny_study(methods=[{"name": "erl", "reasoning_steps": 1}], params={
        **tiny_study()["params"], "hidden_size": {"values": [16, 24]}, "num_heads": {"values": [1, 16]}},
        search={"algorithm": "optuna", "num_samples": 4}), "t.yaml")
    (group,) = search_groups(study)  # every value is valid with the others at their first value
    searcher = _searcher(group, History(), budget=4)
    points = [searcher.suggest(f"t{i}")["params"] for i in range(4)]
    assert {(p["hidden_size"], p["num_heads"]) for p in points} == {(16, 1), (16, 16), (24, 1), (24, 16)}
    assert searcher.suggest("t4") == searcher.FINISHED
