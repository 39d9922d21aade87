"""The DuckDB results store: the source of truth for resume, written only by the driver process.

Connections are short (open, one transaction, close), so `harness status` and `harness sql` can read
between writes; a run holds `<db>.lock` (an flock the kernel drops when the process dies) so a second
`harness run` on the same database fails fast instead of interleaving writes. Every write is an
upsert keyed by `trial_key`: ingesting the same trial twice leaves the same rows.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from rearec.config import METHOD_TRAITS

from .artifacts import EPOCH_COLUMNS, TrialOutput
from .cost import COST_COLUMNS
from .errors import HarnessError, StoreBusyError
from .keys import TrialSpec

DEFAULT_DB = "results.duckdb"
SCHEMA_VERSION = 3  # 2: trials.host / node_id / peak_gpu_bytes, study_trials.in_definition; 3: trials.cpu_seconds /
# gpu_seconds / trial_seconds (harness/cost.py; see MIGRATIONS)
# The issue's columns first (users' SQL relies on them), then the harness's own.
TRIAL_COLUMNS = ["trial_key", "dataset", "backbone", "method", "reasoning_steps", "kl_lambda", "tau", "alpha", "gamma",
                 "seed", "params", "status", "error", "best_epoch", "epochs", "wall_seconds", "device", "started_at",
                 "finished_at", "env", "variant", "pruned", "n_parameters", "run_dir", "dataset_hash", "host", "node_id",
                 "peak_gpu_bytes", *COST_COLUMNS]
DDL = f"""
CREATE TABLE IF NOT EXISTS schema_info(version INTEGER);
CREATE TABLE IF NOT EXISTS trials(
    trial_key VARCHAR PRIMARY KEY, dataset VARCHAR, backbone VARCHAR, method VARCHAR, reasoning_steps INTEGER, kl_lambda DOUBLE, tau DOUBLE, alpha DOUBLE, gamma DOUBLE, seed BIGINT,
    params JSON, status VARCHAR CHECK (status IN ('completed', 'failed', 'running', 'abandoned')), error VARCHAR,
    best_epoch INTEGER, epochs INTEGER, wall_seconds DOUBLE, device VARCHAR,
    started_at TIMESTAMP, finished_at TIMESTAMP, env JSON, variant VARCHAR,
    pruned BOOLEAN DEFAULT FALSE, n_parameters BIGINT, run_dir VARCHAR, dataset_hash VARCHAR,
    host VARCHAR, node_id VARCHAR, peak_gpu_bytes BIGINT, cpu_seconds DOUBLE, gpu_seconds DOUBLE,
    trial_seconds DOUBLE);
CREATE TABLE IF NOT EXISTS studies(
    study VARCHAR PRIMARY KEY, file VARCHAR, planned INTEGER, algorithm VARCHAR, definition JSON,
    updated_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS study_trials(study VARCHAR, trial_key VARCHAR, in_definition BOOLEAN DEFAULT TRUE,
    PRIMARY KEY (study, trial_key));
CREATE TABLE IF NOT EXISTS epochs(
    trial_key VARCHAR, epoch INTEGER, train_loss DOUBLE, {", ".join(c + " DOUBLE" for c in EPOCH_COLUMNS[2:-2])},
    seconds DOUBLE, is_best BOOLEAN, PRIMARY KEY (trial_key, epoch));
CREATE TABLE IF NOT EXISTS metrics(
    trial_key VARCHAR, split VARCHAR, step INTEGER, user_group VARCHAR, metric VARCHAR, value DOUBLE);
CREATE TABLE IF NOT EXISTS sample_ranks(trial_key VARCHAR, split VARCHAR, sample INTEGER, step INTEGER, rank INTEGER);
CREATE TABLE IF NOT EXISTS latency(trial_key VARCHAR, split VARCHAR, cached BOOLEAN, seconds DOUBLE, rows INTEGER);
CREATE TABLE IF NOT EXISTS step_similarity(
    trial_key VARCHAR, split VARCHAR, step_a INTEGER, step_b INTEGER, cosine DOUBLE);
CREATE TABLE IF NOT EXISTS step_signals(
    trial_key VARCHAR, split VARCHAR, sample INTEGER, step INTEGER, rank INTEGER, entropy REAL, top1_prob REAL,
    top1_item INTEGER, kl_prev REAL, top1_repeats UTINYINT);
CREATE OR REPLACE VIEW results AS
    SELECT t.trial_key, t.dataset, t.backbone, t.method, t.variant, t.reasoning_steps, t.kl_lambda, t.tau, t.alpha,
           t.gamma, t.seed, m.split, m.step, m.metric, m.value
    FROM trials t JOIN metrics m USING (trial_key)
    WHERE t.status = 'completed' AND m.user_group = 'all';
"""
# Columns added since a database may have been created: idempotent, run on every read-write open.
MIGRATIONS = [
    "ALTER TABLE trials ADD COLUMN IF NOT EXISTS host VARCHAR",  # where a trial ran (hostname) ...
    "ALTER TABLE trials ADD COLUMN IF NOT EXISTS node_id VARCHAR",  # ... and on which Ray node
    "ALTER TABLE trials ADD COLUMN IF NOT EXISTS peak_gpu_bytes BIGINT",  # torch.cuda.max_memory_allocated; NULL on CPU
    # cost accounting (harness/cost.py): NULL for trials stored before it
    "ALTER TABLE trials ADD COLUMN IF NOT EXISTS cpu_seconds DOUBLE",  # CPU time of the trial's process
    "ALTER TABLE trials ADD COLUMN IF NOT EXISTS gpu_seconds DOUBLE",  # wall on CUDA x GPU fraction; NULL on CPU
    "ALTER TABLE trials ADD COLUMN IF NOT EXISTS trial_seconds DOUBLE",  # wall time of the whole trial
    # FALSE: linked by an earlier definition of the study (e.g. before a --set seeds=... rerun)
    "ALTER TABLE study_trials ADD COLUMN IF NOT EXISTS in_definition BOOLEAN DEFAULT TRUE",
]
CHILD_TABLES = ("epochs", "metrics", "sample_ranks", "step_similarity", "latency", "step_signals")
METHOD_COLUMNS = ("kl_lambda", "tau", "alpha", "gamma")  # `trials` columns; NULL for methods that do not read them


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def variant(method: dict) -> str:
    """The paper's name of a method configuration, ablations included ('erl w/o KL'; METHOD_TRAITS)."""
    name = method["name"]
    traits = METHOD_TRAITS.get(name)
    return f"{name} {traits.ablation.label}" if traits is not None and traits.ablated(method) else name


def trial_row(spec: TrialSpec, status: str, **extra: Any) -> dict[str, Any]:
    m = spec.method
    row = {"trial_key": spec.key, "dataset": spec.dataset, "backbone": spec.model["backbone"], "method": m["name"],
           "variant": variant(m), "reasoning_steps": m["reasoning_steps"], "seed": spec.seed,
           "params": json.dumps(spec.params(), sort_keys=True, default=str), "status": status,
           "dataset_hash": spec.dataset_hash}
    for name in METHOD_COLUMNS:
        row[name] = m[name] if name in METHOD_TRAITS[m["name"]].params else None
    row.update(extra)
    return row


class RunLock:
    """An exclusive flock on `<db>.lock` for the duration of a `harness run`."""

    def __init__(self, db: str | Path):
        self.path = Path(f"{db}.lock")
        self._fd: int | None = None

    def acquire(self, study: str) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 1000).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StoreBusyError(f"{self.path.with_suffix('')}: in use by another `harness run` ({holder}); wait for "
                                 "it to finish or pass a different --db") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, study {study}, since {utcnow():%Y-%m-%d %H:%M:%S} UTC".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def held_elsewhere(self) -> bool:
        """True when some live `harness run` holds the lock (readers use it to tell running from interrupted)."""
        if not self.path.exists():
            return False
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class Store:
    """Results database at ``path``. ``timeout`` is how long to wait while another process has it open."""

    def __init__(self, path: str | Path = DEFAULT_DB, read_only: bool = False, timeout: float = 30.0,
                 linger: float = 0.0):
        self.path = Path(path)
        self.read_only = read_only
        self.timeout = timeout
        # The driver of a run: keep the connection this many seconds after a write (see connect)
        self.linger = 0.0 if read_only else linger
        self._held: duckdb.DuckDBPyConnection | None = None
        self._held_since = self._last_use = 0.0
        self._guard = threading.RLock()
        if read_only and not self.path.exists():
            raise HarnessError(f"{self.path}: no such database (run a study first, or pass --db)")
        if not read_only:
            with self.connect() as con:
                con.execute(DDL)
                for statement in MIGRATIONS:
                    con.execute(statement)
                _allow_abandoned(con)
                if con.execute("SELECT count(*) FROM schema_info").fetchone()[0] == 0:
                    con.execute("INSERT INTO schema_info VALUES (?)", [SCHEMA_VERSION])
                else:
                    con.execute("UPDATE schema_info SET version = greatest(version, ?)", [SCHEMA_VERSION])
                from .report.views import create_views  # late import: the views module reads this schema

                create_views(con)  # so `harness sql` has the report views before the first report

    @contextlib.contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self.linger > 0:
            with self._guard:
                cursor = self._lingering().cursor()  # its own results and transaction, on the open database
                try:
                    yield cursor
                finally:
                    cursor.close()
                    self._last_use = time.monotonic()
                    timer = threading.Timer(self.linger, self._close_if_idle)
                    timer.daemon = True
                    timer.start()
            return
        con = self._open()
        try:
            yield con
        finally:
            con.close()

    def _open(self) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=self.read_only)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower():
                    raise HarnessError(f"{self.path}: {exc}") from None
                if time.monotonic() > deadline:
                    raise StoreBusyError(f"{self.path}: locked by another process for {self.timeout:.0f} s ({exc})") from None
                time.sleep(0.2)

    # Opening the file costs about as much as a trial's writes (and closing it checkpoints), so the driver
    # keeps its connection while writes follow each other: `linger` s after the last, and HOLD s at most,
    # then it closes and waits GAP s, longer than a reader's retry step, so `harness status` / `sql` in
    # another process (which retry while the file is locked) get in even while trials end back to back.
    HOLD, GAP = 4.0, 0.3

    def _lingering(self) -> duckdb.DuckDBPyConnection:
        if self._held is not None and time.monotonic() - self._held_since >= self.HOLD:
            self.close()
            time.sleep(self.GAP)
        if self._held is None:
            self._held, self._held_since = self._open(), time.monotonic()
        return self._held

    def _close_if_idle(self) -> None:
        with self._guard:
            if self._held is not None and time.monotonic() - self._last_use >= self.linger * 0.99:
                self.close()

    def __getstate__(self) -> dict[str, Any]:  # Ray Tune pickles its callbacks, and with them this store
        state = dict(self.__dict__)
        state["_held"], state["_guard"] = None, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _guard=threading.RLock())

    def close(self) -> None:
        """Close a lingering connection now (a no-op for stores that open one per transaction)."""
        with self._guard:
            if self._held is not None:
                held, self._held = self._held, None
                held.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    # ------------------------------------------------------------------------------------ reads
    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        with self.connect() as con:
            return con.execute(sql, params or []).df()

    def statuses(self, keys: Iterable[str] | None = None) -> dict[str, str]:
        with self.connect() as con:
            if keys is None:
                rows = con.execute("SELECT trial_key, status FROM trials").fetchall()
            else:
                con.register("wanted", pd.DataFrame({"trial_key": list(keys)}, dtype="string"))
                rows = con.execute("SELECT trial_key, status FROM trials JOIN wanted USING (trial_key)").fetchall()
        return dict(rows)

    def columns(self, table: str) -> set[str]:
        """Column names of ``table`` (a read-only open of an older database may lack the newest ones)."""
        with self.connect() as con:
            return {r[0] for r in con.execute("SELECT column_name FROM information_schema.columns "
                                              "WHERE table_name = ?", [table]).fetchall()}

    def run_dirs(self, keys: Iterable[str]) -> dict[str, str]:
        with self.connect() as con:
            con.register("wanted", pd.DataFrame({"trial_key": list(keys)}, dtype="string"))
            return dict(con.execute("SELECT trial_key, run_dir FROM trials JOIN wanted USING (trial_key) "
                                    "WHERE run_dir IS NOT NULL").fetchall())

    # ------------------------------------------------------------------------------------ writes
    def register_study(self, study: str, file: str, planned: int, algorithm: str, definition: dict,
                       keys: Iterable[str] = ()) -> None:
        """Record the study's current definition and link its (known) trials, so `status` can show pending
        ones. ``keys`` are all the trials of this definition: earlier members not among them stay linked
        (their results are kept) but are marked outside the definition, so counts read against it."""
        with self.transaction() as con:
            con.execute("INSERT OR REPLACE INTO studies VALUES (?, ?, ?, ?, ?, ?)",
                        [study, file, planned, algorithm, json.dumps(definition, default=str), utcnow()])
            con.execute("UPDATE study_trials SET in_definition = FALSE WHERE study = ?", [study])
            self._link(con, study, keys)

    @staticmethod
    def _link(con, study: str, keys: Iterable[str]) -> None:
        """Link ``keys`` to ``study`` as members of its current definition (whatever a run links is)."""
        keys = list(keys)
        upsert = ("INSERT INTO study_trials (study, trial_key, in_definition) {} "
                  "ON CONFLICT (study, trial_key) DO UPDATE SET in_definition = TRUE")
        if len(keys) == 1:
            con.execute(upsert.format("VALUES (?, ?, TRUE)"), [study, keys[0]])
            return
        frame = pd.DataFrame({"study": study, "trial_key": keys}, dtype="string")
        if len(frame):
            con.register("links", frame)
            con.execute(upsert.format("SELECT study, trial_key, TRUE FROM links"))
            con.unregister("links")

    def _upsert_trial(self, con, row: dict[str, Any], keep_completed: bool) -> None:
        cols = list(row)
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != "trial_key")
        guard = " WHERE trials.status <> 'completed'" if keep_completed else ""
        con.execute(f"INSERT INTO trials ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                    f"ON CONFLICT (trial_key) DO UPDATE SET {updates}{guard}", list(row.values()))

    def mark_running(self, spec: TrialSpec, study: str, run_dir: str, device: str) -> None:
        row = trial_row(spec, "running", device=device, run_dir=run_dir, started_at=utcnow(), finished_at=None,
                        error=None, host=None, node_id=None, peak_gpu_bytes=None,  # where: known when it ends
                        **dict.fromkeys(COST_COLUMNS))  # an earlier attempt's cost: not this one's
        with self.transaction() as con:
            self._upsert_trial(con, row, keep_completed=True)
            self._link(con, study, [spec.key])

    def mark_abandoned(self, reasons: dict[str, str]) -> None:
        """Interrupted trials ('running' with no live driver) that no run will redo, each with its reason."""
        with self.transaction() as con:
            for key, reason in reasons.items():
                con.execute("UPDATE trials SET status = 'abandoned', error = ?, finished_at = ? "
                            "WHERE trial_key = ? AND status = 'running'", [reason, utcnow(), key])

    def mark_failed(self, spec: TrialSpec, study: str, error: str, run_dir: str | None = None,
                    host: str | None = None, node_id: str | None = None) -> None:
        row = trial_row(spec, "failed", error=error, finished_at=utcnow(), host=host, node_id=node_id)
        if run_dir:
            row["run_dir"] = run_dir
        with self.transaction() as con:
            self._upsert_trial(con, row, keep_completed=True)
            self._link(con, study, [spec.key])

    def ingest(self, spec: TrialSpec, study: str, output: TrialOutput, run_dir: str, env: dict[str, Any],
               pruned: bool = False) -> None:
        """Store a finished trial in one transaction (replacing whatever the key had)."""
        res = output.result
        row = trial_row(
            spec, "completed", error=None, best_epoch=res.get("best_epoch"), epochs=len(output.epochs),
            wall_seconds=res.get("wall_seconds"), device=res.get("device"), started_at=_ts(res.get("started_at")),
            finished_at=_ts(res.get("finished_at")), env=json.dumps({**env, **res.get("env", {})}, sort_keys=True),
            pruned=pruned, n_parameters=res.get("n_parameters"), run_dir=run_dir,
            host=res.get("host", res.get("env", {}).get("host")), node_id=res.get("node_id"),
            peak_gpu_bytes=res.get("peak_gpu_bytes"), **{c: res.get(c) for c in COST_COLUMNS})
        with self.transaction() as con:
            # Only a completed trial has child rows (an ingestion is one transaction), and each DELETE scans its
            # whole table: skipping them for a first ingestion keeps a trial's cost flat as the database grows.
            before = con.execute("SELECT status FROM trials WHERE trial_key = ?", [spec.key]).fetchone()
            self._upsert_trial(con, row, keep_completed=False)
            self._link(con, study, [spec.key])
            for table in CHILD_TABLES if before is not None and before[0] == "completed" else ():
                con.execute(f"DELETE FROM {table} WHERE trial_key = ?", [spec.key])
            latency = pd.DataFrame(res.get("latency", []), columns=["split", "cached", "seconds", "rows"])
            for table, frame in (("epochs", output.epochs), ("metrics", output.metrics),
                                 ("sample_ranks", output.ranks), ("step_similarity", output.similarity),
                                 ("latency", latency), ("step_signals", output.signals)):
                if frame is not None and len(frame):
                    con.register("incoming", frame)
                    cols = ", ".join(frame.columns)
                    con.execute(f"INSERT INTO {table} (trial_key, {cols}) SELECT ?, {cols} FROM incoming",
                                [spec.key])
                    con.unregister("incoming")


def _allow_abandoned(con) -> None:
    """A database made before the 'abandoned' status has the older CHECK on trials.status, which DuckDB
    cannot alter: rebuild the table once with the current constraint (same columns, same rows)."""
    checks = [text for (text,) in con.execute("SELECT constraint_text FROM duckdb_constraints() WHERE table_name = "
                                              "'trials' AND constraint_type = 'CHECK'").fetchall()]
    if not checks or any("abandoned" in text for text in checks):
        return
    (sql,) = con.execute("SELECT sql FROM duckdb_tables() WHERE table_name = 'trials'").fetchone()
    widened = sql.replace("'running')", "'running', 'abandoned')", 1)
    if widened == sql:  # pragma: no cover - a constraint this code did not write
        raise HarnessError(f"trials.status: unexpected constraint {checks}; cannot add the 'abandoned' status")
    con.execute("BEGIN TRANSACTION")
    con.execute(widened.replace("CREATE TABLE trials", "CREATE TABLE trials_widened", 1))
    con.execute("INSERT INTO trials_widened BY NAME SELECT * FROM trials")
    con.execute("DROP TABLE trials")
    con.execute("ALTER TABLE trials_widened RENAME TO trials")
    con.execute("COMMIT")


def _ts(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value
