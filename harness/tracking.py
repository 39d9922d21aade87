"""Optional MLflow logging from the driver: one MLflow run per stored trial, under one parent run per study.

`harness run STUDY --mlflow [URI]` wraps the run's Store in a TrackedStore: after the study is
registered it logs every completed trial of the study that MLflow lacks (so a finished study can be
logged after the fact), and after each ingestion the trial just stored. Everything is read back from
DuckDB, the source of truth, in the driver: workers never talk to MLflow, so nodes need no network.
Trials are found again by their `harness.trial_key` tag, so re-running a study never duplicates a run.

Layout: experiment = the study name (or $MLFLOW_EXPERIMENT_NAME); a parent run `study <name>` tagged
`harness.role = study`; per trial a child run named as in TensorBoard (harness/names.py) with every
resolved setting as a parameter, per-epoch `train/loss`, `train/epoch_seconds` and `valid/<metric>`
(step = epoch), the final `test/<metric>` and `best_valid/<metric>` (step = best epoch; the method's
own output on the whole split) and tags for the trial key, dataset, backbone, method, variant, pruned
and run_dir. MLflow names cannot hold '@': `ndcg@20` is logged as `ndcg_20`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import EXIT_ENVIRONMENT, HarnessError
from .names import study_names
from .results import flatten

DEFAULT_MLFLOW = "./mlruns"
KEY_TAG, STUDY_TAG, ROLE_TAG, PARENT_TAG = "harness.trial_key", "harness.study", "harness.role", "mlflow.parentRunId"


class TrackingError(HarnessError):
    """The tracker cannot be reached or written (environment: exit 3, before any trial starts)."""

    exit_code = EXIT_ENVIRONMENT


def mlflow_installed() -> bool:
    if "mlflow" in sys.modules:  # None there means its import is blocked
        return sys.modules["mlflow"] is not None
    return importlib.util.find_spec("mlflow") is not None


def require_mlflow() -> None:
    """A clear usage error (exit 2) when the optional `mlflow` extra is not installed."""
    if not mlflow_installed():
        raise HarnessError("--mlflow: the mlflow package is not installed; pip install -e '.[mlflow]' "
                           "(or run without --mlflow)")


def tracking_uri(uri: str | None) -> str:
    """A URI MLflow takes: a plain path (default ./mlruns) becomes an absolute file: URI."""
    uri = uri or DEFAULT_MLFLOW
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", uri) or uri.startswith("file:"):
        return uri
    return Path(uri).absolute().as_uri()


def _ms(value: Any) -> int | None:
    """Milliseconds since the epoch of a naive UTC timestamp (the store's convention)."""
    if value is None or pd.isna(value):
        return None
    stamp = pd.Timestamp(value)
    return int((stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp).timestamp() * 1000)


def _metric_name(name: str) -> str:
    return name.replace("@", "_")


class MlflowTracker:
    """Logs a study's stored trials to MLflow at ``uri`` (see the module docstring)."""

    def __init__(self, uri: str | None, study: str, study_file: str = "", out: Callable[[str], None] = print):
        require_mlflow()
        self.uri, self.study, self.out = tracking_uri(uri), study, out
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # offline: nothing leaves this machine
        if self.uri.startswith("file:"):  # MLflow 3 keeps the file store behind an opt-in
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        try:
            self.client = MlflowClient(tracking_uri=self.uri)
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or study
            experiment = self.client.get_experiment_by_name(name)
            self.experiment_id = (experiment.experiment_id if experiment is not None
                                  else self.client.create_experiment(name))
            self.parent_id = self._parent(study_file)
            self.logged = self._children()  # trial key -> (run id, run name)
        except Exception as exc:  # noqa: BLE001 - any MLflow failure here means no logging: stop before work
            raise TrackingError(f"--mlflow {self.uri}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from None

    def _parent(self, study_file: str) -> str:
        runs = self.client.search_runs([self.experiment_id], f"tags.`{STUDY_TAG}` = '{_quote(self.study)}' "
                                       f"and tags.`{ROLE_TAG}` = 'study'", max_results=1)
        if runs:
            return runs[0].info.run_id
        run = self.client.create_run(self.experiment_id, run_name=f"study {self.study}",
                                     tags={STUDY_TAG: self.study, ROLE_TAG: "study", "harness.study_file": study_file})
        self.client.set_terminated(run.info.run_id)
        return run.info.run_id

    def _children(self) -> dict[str, tuple[str, str]]:
        """The finished trial runs under the parent; an unfinished one (a crash mid-logging) is deleted."""
        found: dict[str, tuple[str, str]] = {}
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], f"tags.`{PARENT_TAG}` = '{self.parent_id}'",
                                           max_results=1000, page_token=token)
            for run in page:
                key = run.data.tags.get(KEY_TAG)
                if key and run.info.status == "FINISHED" and key not in found:
                    found[key] = (run.info.run_id, run.info.run_name)
                elif key:
                    self.client.delete_run(run.info.run_id)
            token = page.token
            if not token:
                return found

    def sync(self, store, keys: Iterable[str] | None = None) -> int:
        """Log the study's completed trials (all, or ``keys``) that MLflow lacks; rename runs whose
        readable name changed as the study grew. Returns how many runs were created."""
        wanted = None if keys is None else set(keys)
        members = store.query("SELECT t.* FROM study_trials s JOIN trials t USING (trial_key) WHERE s.study = ?",
                              [self.study])
        names = study_names({k: json.loads(p) for k, p in zip(members["trial_key"], members["params"], strict=True)})
        todo = members[(members["status"] == "completed") & ~members["trial_key"].isin(list(self.logged))]
        if wanted is not None:
            todo = todo[todo["trial_key"].isin(list(wanted))]
        if len(todo):
            epochs, metrics = self._details(store, list(todo["trial_key"]))
            for row in todo.to_dict("records"):
                key = row["trial_key"]
                run_id = self._log(row, names[key], epochs.get(key), metrics.get(key))
                self.logged[key] = (run_id, names[key])
        for key, (run_id, name) in list(self.logged.items()):
            if key in names and names[key] != name:
                self.client.set_tag(run_id, "mlflow.runName", names[key])
                self.logged[key] = (run_id, names[key])
        return len(todo)

    @staticmethod
    def _details(store, keys: list[str]) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
        wanted = pd.DataFrame({"trial_key": keys}, dtype="string")
        with store.connect() as con:
            con.register("wanted", wanted)
            epochs = con.execute("SELECT e.* FROM epochs e JOIN wanted USING (trial_key) ORDER BY epoch").df()
            metrics = con.execute("SELECT m.* FROM metrics m JOIN wanted USING (trial_key) WHERE m.step IS NULL "
                                  "AND m.user_group = 'all'").df()
            con.unregister("wanted")  # the run's connection may be shared (Store linger)
        return dict(tuple(epochs.groupby("trial_key"))), dict(tuple(metrics.groupby("trial_key")))

    def _log(self, row: dict, name: str, epochs: pd.DataFrame | None, metrics: pd.DataFrame | None) -> str:
        from mlflow.entities import Metric, Param, RunTag

        started, finished = _ms(row.get("started_at")), _ms(row.get("finished_at"))
        tags = {PARENT_TAG: self.parent_id, KEY_TAG: row["trial_key"], STUDY_TAG: self.study,
                **{f"harness.{k}": str(row.get(k)) for k in ("dataset", "backbone", "method", "variant",
                                                              "reasoning_steps", "seed", "pruned", "run_dir")}}
        run = self.client.create_run(self.experiment_id, start_time=started, tags=tags, run_name=name)
        run_id = run.info.run_id
        params = [Param(_param_key(k), _param_value(v)) for k, v in flatten(json.loads(row["params"]), "").items()]
        series: list[Metric] = []
        clock = started or 0
        for e in ([] if epochs is None else epochs.to_dict("records")):
            clock += int(1000 * (e.get("seconds") or 0))
            values = {"train/loss": e.get("train_loss"), "train/epoch_seconds": e.get("seconds"),
                      **{f"valid/{c.removeprefix('valid_')}": v for c, v in e.items() if c.startswith("valid_")}}
            series += [Metric(k, float(v), clock, int(e["epoch"])) for k, v in values.items() if _finite(v)]
        best = int(row["best_epoch"]) if _finite(row.get("best_epoch")) else 0
        for m in ([] if metrics is None else metrics.to_dict("records")):
            prefix = "test" if m["split"] == "test" else "best_valid"
            if _finite(m["value"]):
                series.append(Metric(f"{prefix}/{_metric_name(m['metric'])}", float(m["value"]), finished or clock, best))
        for k in ("best_epoch", "wall_seconds"):
            if _finite(row.get(k)):
                series.append(Metric(k, float(row[k]), finished or clock, best))
        for i in range(0, len(params), 100):  # MLflow's batch limits: 100 params, 1000 metrics
            self.client.log_batch(run_id, params=params[i:i + 100])
        for i in range(0, len(series), 1000):
            self.client.log_batch(run_id, metrics=series[i:i + 1000])
        self.client.log_batch(run_id, tags=[RunTag("harness.logged_at", datetime.now(timezone.utc).isoformat())])
        self.client.set_terminated(run_id, "FINISHED", end_time=finished)
        return run_id


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _finite(value: Any) -> bool:
    try:
        return value is not None and not pd.isna(value) and abs(float(value)) != float("inf")
    except (TypeError, ValueError):
        return False


def _param_key(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", name)[:250]


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 500 else text[:497] + "..."  # 500: the smallest limit across MLflow versions


class TrackedStore:
    """A Store whose study registration and ingestions also feed a tracker (every other call passes
    through). Tracker errors after the start are reported, never fatal: the next run logs what is missing."""

    def __init__(self, store, tracker: MlflowTracker, out: Callable[[str], None] = print):
        self._store, self.tracker, self.out = store, tracker, out

    def __getattr__(self, name: str):
        if name.startswith("__") or name == "_store":  # e.g. while unpickling: no recursion
            raise AttributeError(name)
        return getattr(self._store, name)

    def _sync(self, keys: Iterable[str] | None) -> None:
        try:
            created = self.tracker.sync(self._store, keys)
            if keys is None and created:
                self.out(f"mlflow: logged {created} earlier trials of study {self.tracker.study} to {self.tracker.uri}")
        except Exception as exc:  # noqa: BLE001 - the results are safe in DuckDB; logging catches up next run
            self.out(f"harness: mlflow: could not log to {self.tracker.uri} ({type(exc).__name__}: {exc}); "
                     "the next `harness run --mlflow` of this study logs what is missing")

    def register_study(self, study: str, *args, **kwargs) -> None:
        self._store.register_study(study, *args, **kwargs)
        self._sync(None)

    def ingest(self, spec, *args, **kwargs) -> None:
        self._store.ingest(spec, *args, **kwargs)
        self._sync([spec.key])


def tracked(store, uri: str, study, out: Callable[[str], None] = print) -> TrackedStore:
    """``store`` feeding MLflow at ``uri`` for ``study`` (a harness.study.Study)."""
    return TrackedStore(store, MlflowTracker(uri, study.name, str(study.file), out=out), out=out)
