"""The DuckDB store: schema names, idempotent upserts, status rules, one writer, read-only queries."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from harness.errors import HarnessError, StoreBusyError
from harness.expand import expand
from harness.store import SCHEMA_VERSION, TRIAL_COLUMNS, RunLock, Store, variant
from harness.study import load_study

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def trials():
    return expand(load_study(ROOT / "studies/quickstart.yaml"))  # base, erl, prl


def counts(store: Store) -> dict[str, int]:
    return {t: int(store.query(f"SELECT count(*) AS n FROM {t}")["n"][0])
            for t in ("trials", "study_trials", "epochs", "metrics", "sample_ranks", "step_similarity", "latency")}


def test_schema_has_the_documented_names(tmp_path):
    store = Store(tmp_path / "r.duckdb")
    cols = store.query("SELECT table_name, column_name FROM information_schema.columns")
    by_table = cols.groupby("table_name")["column_name"].apply(list).to_dict()
    assert by_table["trials"] == TRIAL_COLUMNS
    assert TRIAL_COLUMNS[:20] == [
        "trial_key", "dataset", "backbone", "method", "reasoning_steps", "kl_lambda", "tau", "alpha", "gamma", "seed",
        "params", "status", "error", "best_epoch", "epochs", "wall_seconds", "device", "started_at", "finished_at",
        "env"]
    assert by_table["study_trials"] == ["study", "trial_key", "in_definition"]
    assert by_table["epochs"] == ["trial_key", "epoch", "train_loss", "valid_ndcg_10", "valid_ndcg_20",
                                  "valid_recall_10", "valid_recall_20", "seconds", "is_best"]
    assert by_table["metrics"] == ["trial_key", "split", "step", "user_group", "metric", "value"]
    assert by_table["sample_ranks"] == ["trial_key", "split", "sample", "step", "rank"]
    assert by_table["latency"] == ["trial_key", "split", "cached", "seconds", "rows"]


def test_ingest_twice_changes_nothing(tmp_path, trials, fake_output):
    store = Store(tmp_path / "r.duckdb")
    erl = trials[1]
    store.ingest(erl, "s", fake_output(erl.key), "/runs/s/x", {"git": {"revision": "abc"}})
    first = counts(store)
    snapshot = store.query("SELECT * EXCLUDE (env, params) FROM trials")
    store.ingest(erl, "s", fake_output(erl.key), "/runs/s/x", {"git": {"revision": "abc"}})
    assert counts(store) == first == {"trials": 1, "study_trials": 1, "epochs": 2, "metrics": 2 * 4 * 2 * 2,
                                      "sample_ranks": 4 * 5, "step_similarity": 2, "latency": 2}
    pd.testing.assert_frame_equal(store.query("SELECT * EXCLUDE (env, params) FROM trials"), snapshot)
    row = store.query("SELECT * FROM trials").iloc[0]
    assert row.status == "completed" and row.method == "erl" and row.reasoning_steps == 2
    assert row.kl_lambda == 0.05 and pd.isna(row.tau)  # PRL's parameters are NULL for ERL
    env = store.query("SELECT env->>'$.git.revision' AS rev, env->>'$.host' AS host FROM trials")
    assert env.rev[0] == "abc" and env.host[0] == "h"
    # step NULL = the method's own output
    assert store.query("SELECT count(*) AS n FROM metrics WHERE step IS NULL")["n"][0] == 2 * 2 * 2


def test_status_transitions_never_lose_a_completed_result(tmp_path, trials, fake_output):
    store = Store(tmp_path / "r.duckdb")
    base, erl, prl = trials
    store.register_study("s", "s.yaml", 3, "grid", {}, [t.key for t in trials])
    store.mark_running(base, "s", "/r/b", "cpu")
    store.mark_failed(erl, "s", "Traceback...\nValueError: boom")
    store.ingest(prl, "s", fake_output(prl.key), "/r/p", {})
    assert store.statuses() == {base.key: "running", erl.key: "failed", prl.key: "completed"}
    store.mark_running(prl, "other", "/r/p2", "cpu")  # a stale 'running' must not hide a completed result
    store.mark_failed(prl, "other", "late failure")
    assert store.statuses()[prl.key] == "completed"
    assert set(store.query("SELECT study FROM study_trials WHERE trial_key = ?", [prl.key]).study) == {"s", "other"}
    store.ingest(erl, "s", fake_output(erl.key), "/r/e", {})  # a failed trial that later succeeds
    row = store.query("SELECT status, error FROM trials WHERE trial_key = ?", [erl.key]).iloc[0]
    assert row.status == "completed" and row.error is None


def test_variant_names_the_ablations():
    assert variant({"name": "erl", "kl_lambda": 0.0}) == "erl w/o KL"
    assert variant({"name": "prl", "rcl": False}) == "prl w/o RCL"
    assert variant({"name": "prl", "rcl": True}) == "prl"


def test_second_run_lock_fails_fast_with_a_clear_message(tmp_path):
    db = tmp_path / "r.duckdb"
    code = ("import sys; from harness.store import RunLock\n"
            "from harness.errors import StoreBusyError\n"
            f"try:\n    RunLock({str(db)!r}).acquire('second')\nexcept StoreBusyError as e:\n"
            "    print(e); sys.exit(3)\n")
    with RunLock(db).acquire("first") as lock:
        assert RunLock(db).held_elsewhere()
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert time.monotonic() - started < 10
        assert result.returncode == 3
        assert "in use by another `harness run`" in result.stdout and "study first" in result.stdout
    assert not lock.held_elsewhere()
    RunLock(db).acquire("again").release()  # released when the holder ends


def test_writer_waits_for_a_reader_then_times_out(tmp_path):
    db = tmp_path / "r.duckdb"
    Store(db)
    busy = subprocess.Popen([sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(db)!r}); "
                             "print('open', flush=True); time.sleep(3)"], stdout=subprocess.PIPE, text=True)
    assert busy.stdout.readline().strip() == "open"
    with pytest.raises(StoreBusyError, match="locked by another process"):
        Store(db, timeout=0.5)
    started = time.monotonic()
    Store(db, timeout=20).query("SELECT 1")  # waits until the other process closes the file
    assert time.monotonic() - started < 15
    busy.wait(timeout=30)


def test_read_only_store_rejects_writes_and_missing_files(tmp_path):
    with pytest.raises(HarnessError, match="no such database"):
        Store(tmp_path / "none.duckdb", read_only=True)
    Store(tmp_path / "r.duckdb")
    ro = Store(tmp_path / "r.duckdb", read_only=True)
    with pytest.raises(duckdb.Error, match="read-only"):
        ro.query("DROP TABLE trials")
    assert "trials" in set(ro.query("SHOW TABLES")["name"])


def test_report_views_exist_in_a_new_database(tmp_path):
    store = Store(tmp_path / "r.duckdb")
    views = set(store.query("SELECT view_name FROM duckdb_views() WHERE NOT internal")["view_name"])
    assert {"results", "report_trials", "report_improvements", "report_latency"} <= views


def test_an_older_database_gains_the_new_columns_and_keeps_its_rows(tmp_path, trials):
    # a schema-1 database as the harness wrote it before trials.host/node_id/peak_gpu_bytes,
    # study_trials.in_definition and the cost columns (schema 3) existed: today's schema without them
    db = tmp_path / "old.duckdb"
    Store(db)
    con = duckdb.connect(str(db))
    for table, column in (("trials", "host"), ("trials", "node_id"), ("trials", "peak_gpu_bytes"),
                          ("trials", "cpu_seconds"), ("trials", "gpu_seconds"), ("trials", "trial_seconds"),
                          ("study_trials", "in_definition")):
        con.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    con.execute("UPDATE schema_info SET version = 1")
    con.execute("INSERT INTO trials (trial_key, dataset, status, env) VALUES ('k1', 'synthetic', 'completed', '{}')")
    con.execute("INSERT INTO study_trials VALUES ('s', 'k1')")
    con.close()
    store = Store(db)
    row = store.query("SELECT * FROM trials").iloc[0]
    assert row.trial_key == "k1" and row.status == "completed"
    assert pd.isna(row.host) and pd.isna(row.node_id) and pd.isna(row.peak_gpu_bytes)
    assert pd.isna(row.cpu_seconds) and pd.isna(row.gpu_seconds) and pd.isna(row.trial_seconds)
    assert store.query("SELECT * FROM study_trials").to_dict("records") == [
        {"study": "s", "trial_key": "k1", "in_definition": True}]
    assert store.query("SELECT version FROM schema_info").version.tolist() == [SCHEMA_VERSION] == [3]
    Store(db)  # opening again is a no-op
    assert len(store.query("SELECT * FROM trials")) == 1


def test_a_redefined_study_keeps_earlier_members_outside_its_definition(tmp_path, trials, fake_output):
    store = Store(tmp_path / "r.duckdb")
    base, erl, prl = trials
    store.register_study("s", "s.yaml", 2, "grid", {}, [base.key, erl.key])
    store.ingest(base, "s", fake_output(base.key), "/r/b", {})
    store.register_study("s", "s.yaml", 2, "grid", {}, [erl.key, prl.key])  # e.g. a --set rerun
    links = dict(store.query("SELECT trial_key, in_definition FROM study_trials").itertuples(index=False))
    assert links == {base.key: False, erl.key: True, prl.key: True}
    store.mark_running(base, "s", "/r/b", "cpu")  # a run that links a trial makes it a member again
    assert store.query("SELECT in_definition FROM study_trials WHERE trial_key = ?", [base.key]).iloc[0, 0]
    assert store.statuses()[base.key] == "completed"
