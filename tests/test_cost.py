"""Cost accounting (harness/cost.py): a real run records each trial's CPU / GPU / wall seconds, `harness
status` sums them per study, `harness plan` estimates what is left from comparable completed trials, and
an older database gains the columns."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from harness.cost import local_cpus
from harness.progress import pruned_output
from harness.store import SCHEMA_VERSION, Store

ROOT = Path(__file__).resolve().parent.parent
HARNESS = [sys.executable, "-m", "harness.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
COST = ("cpu_seconds", "gpu_seconds", "trial_seconds")


@pytest.fixture(scope="module")
def ran(tmp_path_factory, data_cache, tiny_study) -> Path:
    """One real run through the CLI: base + ERL(K=1) x seeds 0, 1 on the tiny dataset, 4 trials on CPU."""
    cwd = tmp_path_factory.mktemp("cost")
    (cwd / "s.yaml").write_text(json.dumps(tiny_study(name="spent", seeds=[0, 1])))
    run = subprocess.run([*HARNESS, "run", "s.yaml", "--num-cpus", "2", "--no-dashboard", "--cache-dir",
                          str(data_cache)], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return cwd


def rows(cwd: Path) -> list[dict]:
    frame = Store(cwd / "results.duckdb", read_only=True).query(
        "SELECT method, reasoning_steps, seed, wall_seconds, device, " + ", ".join(COST) + " FROM trials "
        "ORDER BY method, seed")
    return frame.to_dict("records")


def test_each_trial_records_its_cpu_and_wall_seconds_and_no_gpu_seconds_on_cpu(ran):
    trials = rows(ran)
    assert len(trials) == 4
    for t in trials:
        assert t["device"] == "cpu" and pd.isna(t["gpu_seconds"])  # NULL on CPU
        # the trial's whole run holds its slot: at least the training time fit reports, under a minute here
        assert t["wall_seconds"] <= t["trial_seconds"] < 60
        # one torch thread (resources.cpu = 1) plus Ray's and the data loader's threads: a few cores at most,
        # and a positive delta (a reused Ray worker's earlier trials are not counted)
        assert 0 < t["cpu_seconds"] <= 4 * t["trial_seconds"] + 1


def test_status_shows_the_study_s_spent_compute(ran, harness_in_process):
    cpu = sum(t["cpu_seconds"] for t in rows(ran))
    code, out, _ = harness_in_process(ran, "status")
    assert code == 0
    (line,) = [line for line in out.splitlines() if line.startswith("spent (grid")]
    assert "4/4 completed" in line
    assert line.endswith(f"; compute spent: {cpu:.2f} CPU-seconds, no GPU time (ran on CPU), over 4 trials")


def _numbers(line: str) -> tuple[float, float, int]:
    found = re.search(r": ([0-9.]+) CPU-seconds, no GPU time; wall about ([0-9.]+) s at (\d+) at once", line)
    assert found, line
    return float(found[1]), float(found[2]), int(found[3])


def test_plan_estimates_a_study_of_the_same_size_from_the_stored_medians(ran, data_cache, harness_in_process, tiny_study):
    trials = rows(ran)

    def median(method: str, column: str) -> float:
        return statistics.median(t[column] for t in trials if t["method"] == method)

    # seed 2 of the same trials: each matches the two completed trials of its own K (base K=0, ERL K=1)
    cpu = median("base", "cpu_seconds") + median("erl", "cpu_seconds")
    wall = (median("base", "trial_seconds") + median("erl", "trial_seconds")) / 2  # --cpus 2 / 1 CPU: 2 at once
    (ran / "next.yaml").write_text(json.dumps(tiny_study(name="next", seeds=[2])))
    code, out, _ = harness_in_process(ran, "plan", "next.yaml", "--cache-dir", data_cache, "--cpus", 2)
    assert code == 0
    (line,) = [line for line in out.splitlines() if "estimate" in line]
    assert line.startswith("  estimate for 2 trials to run: ") and "no completed trial" not in out
    assert line.endswith("medians of 4 completed trials with the same dataset and model size (ran on cpu)")
    got_cpu, got_wall, slots = _numbers(line)
    assert slots == 2 and "(--cpus: 2 CPUs / 1 per trial)" in line
    assert got_cpu == pytest.approx(cpu, abs=0.006) and got_wall == pytest.approx(wall, abs=0.06)

    # no cluster connection: this machine's CPUs, said so; the study's concurrency caps it
    (ran / "one.yaml").write_text(json.dumps(tiny_study(name="one", seeds=[2], concurrency=1)))
    code, out, _ = harness_in_process(ran, "plan", "one.yaml", "--cache-dir", data_cache)
    (line,) = [line for line in out.splitlines() if "estimate" in line]
    assert f"(this machine: {local_cpus()} CPUs / 1 per trial, no cluster connection" in line
    assert "the study's concurrency 1)" in line
    assert _numbers(line)[1:] == (pytest.approx(wall * 2, abs=0.06), 1)

    # an Optuna search of the same size: its one sample per (method, seed) is estimated the same way
    search = tiny_study(name="tpe", seeds=[2], search={"algorithm": "optuna", "num_samples": 1},
                        params={**tiny_study()["params"], "lr": {"low": 0.0005, "high": 0.002}})
    (ran / "tpe.yaml").write_text(json.dumps(search))
    code, out, _ = harness_in_process(ran, "plan", "tpe.yaml", "--cache-dir", data_cache, "--cpus", 2)
    (line,) = [line for line in out.splitlines() if "estimate" in line]
    assert _numbers(line)[0] == pytest.approx(cpu, abs=0.006)


def test_plan_says_when_it_has_nothing_to_estimate_from(ran, data_cache, harness_in_process, tmp_path, tiny_study):
    wider = tiny_study(name="wider", params={**tiny_study()["params"], "hidden_size": 32})
    (ran / "wider.yaml").write_text(json.dumps(wider))
    code, out, _ = harness_in_process(ran, "plan", "wider.yaml", "--cache-dir", data_cache)
    assert code == 0 and "estimate for" not in out
    assert "  no completed trial with the same dataset and model size to estimate from: 2 trials" in out.splitlines()
    (tmp_path / "s.yaml").write_text(json.dumps(tiny_study()))  # no database at all
    code, out, _ = harness_in_process(tmp_path, "plan", "s.yaml", "--cache-dir", data_cache)
    assert ("  no completed trial with the same dataset and model size to estimate from: 2 trials (no database yet)"
            in out.splitlines())
    code, out, _ = harness_in_process(ran, "plan", "s.yaml", "--cache-dir", data_cache)  # all complete: nothing to estimate
    assert "to run: 0" in out and "estimate" not in out and "no completed trial" not in out


def test_a_pruned_trial_keeps_the_cost_of_its_last_report():
    from harness.expand import expand
    from harness.study import load_study

    spec = expand(load_study(ROOT / "studies/quickstart.yaml"))[0]
    reports = [{"epoch": e, "train_loss": 1.0, "epoch_seconds": 0.5, "cpu_seconds": 0.7 * e, "trial_seconds": 0.6 * e}
               for e in (1, 2)]
    result = pruned_output(spec, reports, "cpu", "2026-01-01T00:00:00").result
    assert (result["cpu_seconds"], result["trial_seconds"], result["gpu_seconds"]) == (1.4, 1.2, None)


def test_an_older_database_gains_the_cost_columns(tmp_path, harness_in_process):
    # a schema-2 database as the harness wrote it before cost accounting: today's schema without the columns
    db = tmp_path / "old.duckdb"
    Store(db)
    con = duckdb.connect(str(db))
    for column in COST:
        con.execute(f"ALTER TABLE trials DROP COLUMN {column}")
    con.execute("UPDATE schema_info SET version = 2")
    con.execute("INSERT INTO studies VALUES ('s', 's.yaml', 1, 'grid', '{}', now())")
    con.execute("INSERT INTO trials (trial_key, dataset, status, env) VALUES ('k1', 'synthetic', 'completed', '{}')")
    con.execute("INSERT INTO study_trials VALUES ('s', 'k1', TRUE)")
    con.close()
    # `harness status` opens it read-only: no migration, and it says why there is no figure
    code, out, _ = harness_in_process(tmp_path, "status", "--db", db)
    assert code == 0 and out.strip().endswith(
        "compute spent: not recorded (this database predates cost accounting; the next `harness run` on it adds "
        "the columns)")
    store = Store(db)  # a read-write open migrates
    row = store.query("SELECT * FROM trials").iloc[0]
    assert row.trial_key == "k1" and row.status == "completed"
    assert list(store.query("SELECT * FROM trials").columns[-3:]) == list(COST)
    assert all(pd.isna(row[c]) for c in COST)  # NULL: not measured
    assert store.query("SELECT version FROM schema_info").version.tolist() == [SCHEMA_VERSION] == [3]
    code, out, _ = harness_in_process(tmp_path, "status", "--db", db)
    assert out.strip().endswith("; compute spent: no figures yet; 1 completed trial without a figure (stored before "
                                "cost accounting, or stopped by ASHA before it)")
