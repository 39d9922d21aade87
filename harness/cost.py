"""Cost accounting: what a trial spent, what a study has spent (`harness status`), and what the rest of a
study should cost (`harness plan`).

A trial measures three figures over its whole run (data loading, training, evaluation, latency timing,
result files), stored as columns of `trials`:

- ``cpu_seconds``: user + system CPU time of the trial's own process (every thread) and of the children
  it waited for. Ray reuses a worker process across trials, so it is a delta from the trial's start.
- ``trial_seconds``: wall-clock seconds the trial held its resources (``wall_seconds`` stays the training
  time that `rearec.train.fit` reports).
- ``gpu_seconds``: on CUDA, ``trial_seconds`` x the GPU fraction Ray granted (``resources.gpu``); NULL on CPU.

The plan's estimate matches each trial still to run with completed, unpruned trials of the same dataset
content and model size (``SIZE``) anywhere in the database, and adds their median cost: one SQL query for
the whole study, so planning stays fast at any size.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

COST_COLUMNS = ("cpu_seconds", "gpu_seconds", "trial_seconds")
# What "the same model size" means for an estimate: the trial's fields that set its compute per sample
# (max_len and reasoning_steps: positions encoded per sequence). Method, epochs and batch size are not part
# of it, so the estimate is a median over whatever was trained at this size.
SIZE = ("backbone", "hidden_size", "num_layers", "max_len", "reasoning_steps")
_PARAM_SIZE = ("hidden_size", "num_layers", "max_len")  # in the `params` JSON; the others are columns


def _cpu_now() -> float:
    t = os.times()  # this process's threads, plus children it has waited for (e.g. a tokenizer subprocess)
    return t.user + t.system + t.children_user + t.children_system


class Meter:
    """Started when a trial starts; ``figures()`` gives what it has spent since (see the module doc)."""

    def __init__(self, on_cuda: bool, gpu_fraction: float | None):
        self.on_cuda = on_cuda
        self.gpu_fraction: float | None = None  # CPU: no GPU time
        if on_cuda:  # a direct `execute` on CUDA (no Ray, no fraction) has the whole device
            self.gpu_fraction = float(gpu_fraction) if gpu_fraction and gpu_fraction > 0 else 1.0
        self._cpu, self._wall = _cpu_now(), time.perf_counter()

    def figures(self) -> dict[str, float | None]:
        wall = time.perf_counter() - self._wall
        return {"cpu_seconds": _cpu_now() - self._cpu, "trial_seconds": wall,
                "gpu_seconds": wall * self.gpu_fraction if self.on_cuda else None}


def amount(seconds: float, kind: str) -> str:
    """'12.34 CPU-seconds' when small, else '1.23 CPU-hours'."""
    return f"{seconds:.2f} {kind}-seconds" if seconds < 360 else f"{seconds / 3600:.2f} {kind}-hours"


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


# ------------------------------------------------------------------------------------------ status
def spent_text(store, study: str, current: str) -> str:
    """`harness status`: the compute a study's current-definition trials spent, as the tail of its first
    line (``current``: the SQL test of study_trials membership that status.py uses)."""
    if not set(COST_COLUMNS) <= store.columns("trials"):
        return ("compute spent: not recorded (this database predates cost accounting; the next `harness run` "
                "on it adds the columns)")
    row = store.query(
        "SELECT count(t.cpu_seconds) AS measured, coalesce(sum(t.cpu_seconds), 0) AS cpu, "
        "count(t.gpu_seconds) AS on_gpu, coalesce(sum(t.gpu_seconds), 0) AS gpu, "
        "count(*) FILTER (WHERE t.status = 'completed' AND t.cpu_seconds IS NULL) AS missing "
        f"FROM study_trials s JOIN trials t USING (trial_key) WHERE s.study = ? AND {current}", [study]).iloc[0]
    measured, on_gpu, missing = int(row.measured), int(row.on_gpu), int(row.missing)
    if not measured:
        text = "compute spent: no figures yet"
    else:
        gpu = (f"{amount(float(row.gpu), 'GPU')} (fraction-weighted, {on_gpu} on CUDA)" if on_gpu
               else "no GPU time (ran on CPU)")
        text = f"compute spent: {amount(float(row.cpu), 'CPU')}, {gpu}, over {_plural(measured, 'trial')}"
    if missing:
        text += (f"; {_plural(missing, 'completed trial')} without a figure (stored before cost accounting, "
                 "or stopped by ASHA before it)")
    return text


# -------------------------------------------------------------------------------------------- plan
def wanted_frame(rows: Iterable[tuple]) -> pd.DataFrame:
    """(dataset_hash, *SIZE) tuples of the trials still to run (None: any value, e.g. a searched size)
    -> one row per distinct size with its count ``n``."""
    frame = pd.DataFrame(list(rows), columns=["dataset_hash", *SIZE])
    if not len(frame):
        return frame.assign(n=pd.Series(dtype="int64"))
    frame = frame.astype({"dataset_hash": "string", "backbone": "string",
                          **{c: "Int64" for c in (*_PARAM_SIZE, "reasoning_steps")}})
    return frame.groupby(list(frame.columns), dropna=False).size().rename("n").reset_index()


def trial_size(spec) -> tuple:
    """A TrialSpec's (dataset_hash, *SIZE)."""
    model = spec.model
    return (spec.dataset_hash, model.get("backbone"), model.get("hidden_size"), model.get("num_layers"),
            model.get("max_len"), spec.method.get("reasoning_steps"))


@dataclass(frozen=True)
class Estimate:
    to_run: int
    matched: int  # trials to run that have comparable completed trials
    comparables: int  # distinct completed trials the medians come from
    cpu_seconds: float
    gpu_seconds: float | None  # None: no comparable trial ran on CUDA
    trial_seconds: float  # summed over the matched trials (divide by the trials running at once)
    devices: str


def estimate(store, wanted: pd.DataFrame) -> Estimate:
    """Median cost of completed, unpruned trials with the same dataset content and size, summed over the
    trials to run; one query (``wanted``: wanted_frame())."""
    to_run = int(wanted["n"].sum()) if len(wanted) else 0
    none = Estimate(to_run, 0, 0, 0.0, None, 0.0, "")
    if store is None or not to_run or not set(COST_COLUMNS) <= store.columns("trials"):
        return none
    cast = ", ".join(f"TRY_CAST(params->>'$.{c}' AS BIGINT) AS {c}" for c in _PARAM_SIZE)
    match = " AND ".join(f"(w.{c} IS NULL OR d.{c} = w.{c})" for c in (*_PARAM_SIZE, "reasoning_steps"))
    sql = f"""
        WITH done AS (
            SELECT trial_key, dataset_hash, backbone, reasoning_steps, {cast}, device, cpu_seconds, gpu_seconds,
                   trial_seconds
            FROM trials WHERE status = 'completed' AND NOT coalesce(pruned, FALSE) AND cpu_seconds IS NOT NULL
                          AND trial_seconds IS NOT NULL),
        pairs AS (  -- each size still to run with each comparable completed trial: the one join
            SELECT w.row, w.n, d.trial_key, d.device, d.cpu_seconds, d.gpu_seconds, d.trial_seconds
            FROM wanted w JOIN done d ON d.dataset_hash = w.dataset_hash AND d.backbone = w.backbone AND {match}),
        per AS (
            SELECT row, any_value(n) AS n, median(cpu_seconds) AS cpu, median(gpu_seconds) AS gpu,
                   median(trial_seconds) AS wall
            FROM pairs GROUP BY row)
        SELECT (SELECT coalesce(sum(n), 0) FROM per) AS matched,
               (SELECT coalesce(sum(n * cpu), 0) FROM per) AS cpu,
               (SELECT sum(n * gpu) FROM per) AS gpu,
               (SELECT coalesce(sum(n * wall), 0) FROM per) AS wall,
               (SELECT count(DISTINCT trial_key) FROM pairs) AS comparables,
               (SELECT string_agg(DISTINCT split_part(device, ':', 1), '/' ORDER BY split_part(device, ':', 1))
                FROM pairs) AS devices
    """
    with store.connect() as con:
        con.register("wanted", wanted.assign(row=range(len(wanted))))
        # fetchall, not fetchone: a half-read result blocks the unregister below
        matched, cpu, gpu, wall, comparables, devices = con.execute(sql).fetchall()[0]
        con.unregister("wanted")
    return Estimate(to_run, int(matched), int(comparables), float(cpu), None if gpu is None else float(gpu),
                    float(wall), devices or "")


def local_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def at_once(cpu: float, gpu: float, concurrency: int | None, trials: int, cpus: int | None,
            gpus: float | None) -> tuple[int, str]:
    """How many trials run at once, and the assumption behind it in words."""
    known = cpus is not None
    cpus = cpus if known else local_cpus()
    n = max(1, math.floor(cpus / cpu + 1e-9))
    why = [f"{'--cpus' if known else 'this machine'}: {cpus} CPUs / {cpu:g} per trial"
           + ("" if known else ", no cluster connection; pass --cpus N for a cluster")]
    if gpu > 0:
        if gpus is None:
            why.append("GPUs not counted (pass --gpus N)")
        else:
            n = min(n, max(1, math.floor(gpus / gpu + 1e-9)))
            why.append(f"{gpus:g} GPUs / {gpu:g} per trial")
    if concurrency:
        n = min(n, concurrency)
        why.append(f"the study's concurrency {concurrency}")
    return max(1, min(n, trials)), "; ".join(why)


def plan_lines(est: Estimate, slots: int, assumption: str, no_db: bool = False) -> list[str]:
    """`harness plan`: the estimate of what the trials still to run cost, or why there is none."""
    if not est.to_run:
        return []
    lines = []
    if est.matched:
        gpu = (f", {amount(est.gpu_seconds, 'GPU')} (fraction-weighted)" if est.gpu_seconds
               else ", no GPU time")
        part = f"{est.matched} of {est.to_run} trials to run" if est.matched < est.to_run else f"{est.to_run} trials to run"
        lines.append(f"  estimate for {part}: {amount(est.cpu_seconds, 'CPU')}{gpu}; wall about "
                     f"{duration(est.trial_seconds / slots)} at {slots} at once ({assumption}); medians of "
                     f"{_plural(est.comparables, 'completed trial')} with the same dataset and model size "
                     f"(ran on {est.devices})")
    if est.matched < est.to_run:
        lines.append("  no completed trial with the same dataset and model size to estimate from: "
                     f"{_plural(est.to_run - est.matched, 'trial')}" + (" (no database yet)" if no_db else ""))
    return lines


def size_of(model: dict[str, Any], method: dict[str, Any], dataset_hash: str, searched: Iterable[str]) -> tuple:
    """(dataset_hash, *SIZE) of an Optuna search's trials: a searched size field matches any value."""
    searched = set(searched)
    values = {**{k: model.get(k) for k in SIZE if k != "reasoning_steps"},
              "reasoning_steps": method.get("reasoning_steps")}
    return (dataset_hash, *(None if k in searched else values[k] for k in SIZE))
