"""The driver's Ray Tune callback: store each trial as it starts / finishes / fails, and show progress."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune

from rearec.config import METRICS

from .artifacts import EPOCH_COLUMNS, TrialOutput, read_output, trial_dir
from .cost import COST_COLUMNS
from .failures import classify, explain, headline, where_text
from .keys import TrialSpec
from .store import Store, utcnow


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    """done / running / failed / pending, best validation metric so far, elapsed and ETA, as text lines."""

    def __init__(self, total: int, metric: str, out: Callable[[str], None] = print, every: float = 15.0):
        self.total, self.metric, self.out, self.every = total, metric, out, every
        self.start = time.monotonic()
        self.running: dict[str, float] = {}  # trial id -> fraction of its max_epochs reported so far
        self.done = self.failed = 0
        self.best: float | None = None
        self.best_label = ""
        self._last_state: tuple = ()
        self._last_time = time.monotonic()

    @property
    def pending(self) -> int:
        return max(0, self.total - self.done - self.failed - len(self.running))

    def eta(self) -> str:
        """Elapsed time scaled by the work left; running trials count by their epochs (early stopping
        makes this pessimistic)."""
        finished = self.done + self.failed + sum(self.running.values())
        if finished <= 0:
            return "?"
        return _clock((time.monotonic() - self.start) / finished * (self.total - finished))

    def line(self) -> str:
        best = f"{self.best:.4f} ({self.best_label})" if self.best is not None else "-"
        return (f"[{_clock(time.monotonic() - self.start)} elapsed, ETA {self.eta()}] done {self.done}/{self.total}"
                f" | running {len(self.running)} | failed {self.failed} | pending {self.pending}"
                f" | best {self.metric.removeprefix('best_')} {best}")

    def observe(self, value: float | None, label: str) -> None:
        if value is not None and (self.best is None or value > self.best):
            self.best, self.best_label = value, label

    def show(self, force: bool = False) -> None:
        """Print when the counts change, or every ``every`` seconds, or when forced."""
        now = time.monotonic()
        state = (self.done, len(self.running), self.failed, self.pending)
        if force or state != self._last_state or now - self._last_time >= self.every:
            self.out(self.line())
            self._last_state, self._last_time = state, now


def error_text(trial) -> str:
    """The last failure's traceback from Ray's error file (it appends one block per attempt)."""
    text = None
    path = getattr(trial, "error_file", None)
    if path and Path(path).exists():
        text = Path(path).read_text(errors="replace")
    if not text:
        err = trial.get_error()
        text = str(err) if err else ""
    if "Failure #" in text:
        text = "Failure #" + text.rsplit("Failure #", 1)[1]
    return text.strip()[-8000:] or "trial failed without an error message (worker killed?)"


def summary_line(error: str) -> str:
    return headline(error) or error[:300]


def placement(run_dir: Path) -> tuple[str | None, str | None]:
    """(host, Ray node id) the trial's latest attempt wrote into its `trial.json` when it started."""
    try:
        data = json.loads((run_dir / "trial.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    return data.get("host"), data.get("node_id")


def node_alive(node_id: str | None) -> bool | None:
    """What the connected Ray cluster says of a node now (None: unknown)."""
    if not node_id:
        return None
    import ray

    try:
        return next((bool(n.get("Alive")) for n in ray.nodes() if n.get("NodeID") == node_id), None)
    except Exception:  # noqa: BLE001 - only a detail of the message
        return None


def pruned_output(spec: TrialSpec, reports: list[dict[str, Any]], device: str, started: str) -> TrialOutput:
    """What is known of a trial ASHA stopped: its epochs as reported (no final valid/test evaluation)."""
    metric = spec.train["selection_metric"]
    rows, best = [], float("-inf")
    for r in reports:
        value = r.get(f"valid/{metric}", float("nan"))
        is_best = value > best
        best = max(best, value)
        rows.append([r["epoch"], r.get("train_loss"), *(r.get(f"valid/{m}") for m in METRICS),
                     r.get("epoch_seconds"), is_best])
    epochs = pd.DataFrame(rows, columns=EPOCH_COLUMNS)
    best_epoch = int(epochs.loc[epochs["is_best"], "epoch"].max()) if len(epochs) and epochs["is_best"].any() else None
    empty = pd.DataFrame(columns=["split", "step", "user_group", "metric", "value"])
    last = reports[-1] if reports else {}
    result = {"key": spec.key, "best_epoch": best_epoch, "wall_seconds": float(epochs["seconds"].sum()),
              "device": device, "started_at": started, "finished_at": utcnow().isoformat(),
              "host": last.get("host", last.get("hostname")), "node_id": last.get("node_id"),
              # its cost up to the last report (harness/cost.py; absent from older workers' reports)
              **{k: last.get(k) for k in COST_COLUMNS}}
    return TrialOutput(result, epochs, empty, pd.DataFrame(columns=["split", "sample", "step", "rank"]),
                       pd.DataFrame(columns=["split", "step_a", "step_b", "cosine"]))


def _guarded(event):
    """A callback error must not abort the whole study: report it and carry on (the trial's result files
    stay in its directory, and the next run ingests them)."""

    def wrapper(self, iteration, trials, trial=None, **info):
        try:
            if trial is None:
                return event(self, iteration, trials, **info)
            return event(self, iteration, trials, trial, **info)
        except Exception as exc:  # noqa: BLE001 - reported, and counted as an internal error
            self.internal_errors.append(f"{event.__name__}: {type(exc).__name__}: {exc}")
            self.out(f"harness: internal error in {event.__name__}"
                     + (f" for trial {trial.trial_id}" if trial is not None else "") + f": {type(exc).__name__}: {exc}")

    wrapper.__name__ = event.__name__
    return wrapper


class StudyCallback(tune.Callback):
    """Runs in the driver: the only writer of the database. Each event is one short transaction."""

    def __init__(self, store: Store, study: str, runs: Path, device: str, env: dict[str, Any],
                 resolve: Callable[[dict], TrialSpec], progress: Progress, out: Callable[[str], None] = print):
        self.store, self.study, self.runs, self.device, self.env = store, study, runs, device, env
        self.resolve, self.progress, self.out = resolve, progress, out
        self.specs: dict[str, TrialSpec] = {}
        self.reports: dict[str, list[dict[str, Any]]] = {}
        self.started: dict[str, str] = {}
        self.completed: list[str] = []
        self.failed: dict[str, str] = {}
        self.internal_errors: list[str] = []

    def _spec(self, trial) -> TrialSpec:
        if trial.trial_id not in self.specs:
            self.specs[trial.trial_id] = self.resolve(trial.config)
        return self.specs[trial.trial_id]

    @_guarded
    def on_trial_start(self, iteration, trials, trial, **info):
        spec = self._spec(trial)
        self.reports[trial.trial_id] = []
        self.started[trial.trial_id] = utcnow().isoformat()
        self.store.mark_running(spec, self.study, str(trial_dir(self.runs, self.study, spec.key)), self.device)
        self.progress.running[trial.trial_id] = 0.0
        self.progress.show()

    @_guarded
    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.reports.setdefault(trial.trial_id, []).append(dict(result))
        spec = self._spec(trial)
        self.progress.observe(result.get(self.progress.metric), f"{spec.method['name']} {spec.short}")
        if trial.trial_id in self.progress.running:
            self.progress.running[trial.trial_id] = min(1.0, result.get("epoch", 0) / spec.train["max_epochs"])

    @_guarded
    def on_trial_complete(self, iteration, trials, trial, **info):
        spec = self._spec(trial)
        run_dir = trial_dir(self.runs, self.study, spec.key)
        output = read_output(run_dir, spec.key)
        pruned = output is None
        if pruned:  # stopped by ASHA: Ray ended the trial inside its report call
            output = pruned_output(spec, self.reports.get(trial.trial_id, []), self.device,
                                   self.started.get(trial.trial_id, ""))
        self.store.ingest(spec, self.study, output, str(run_dir), self.env, pruned=pruned)
        self.completed.append(spec.key)
        self.progress.running.pop(trial.trial_id, None)
        self.progress.done += 1
        if pruned:
            self.out(f"pruned by ASHA after {len(output.epochs)} epochs: {spec.label()}")
        self.progress.show()

    def _explained_error(self, trial, spec: TrialSpec) -> tuple[str, str | None, str | None]:
        """(stored error, host, node id): Ray's text, explained when the trial's node or worker was lost."""
        host, node_id = placement(trial_dir(self.runs, self.study, spec.key))
        raw = error_text(trial)
        attempts = max(1, int(getattr(trial, "num_failures", 1) or 1))
        return explain(raw, host, node_id, attempts, node_alive(node_id)), host, node_id

    @_guarded
    def on_trial_error(self, iteration, trials, trial, **info):
        spec = self._spec(trial)
        error, host, node_id = self._explained_error(trial, spec)
        self.store.mark_failed(spec, self.study, error, str(trial_dir(self.runs, self.study, spec.key)), host,
                               node_id)
        self.failed[spec.key] = error
        self.progress.running.pop(trial.trial_id, None)
        self.progress.failed += 1
        self.out(f"FAILED {spec.label()}: {summary_line(error)}")
        self.progress.show()

    @_guarded
    def on_trial_recover(self, iteration, trials, trial, **info):
        spec = self._spec(trial)
        host, node_id = placement(trial_dir(self.runs, self.study, spec.key))
        raw = error_text(trial)
        what = classify(raw, node_alive(node_id)) or summary_line(raw)
        self.out(f"retrying {spec.label()} (attempt {trial.num_failures + 1}) after a failure on "
                 f"{where_text(host, node_id)}: {what}")

    def on_step_begin(self, iteration, trials, **info):
        self.progress.show()
