"""Ray Tune orchestration: plan a study against the database, start or join Ray, run what is missing.

The database is the source of truth: completed trials are skipped, failed or interrupted ones run
again, and a trial whose result files exist but never reached the database (driver killed between a
trial's end and its ingestion) is ingested instead of re-run.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import os
import platform
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .artifacts import read_output, trial_dir
from .datasets import resolve_datasets
from .errors import ResourceError
from .expand import DEFAULT_MAX_TRIALS, DatasetRef, SearchGroup, check_size, expand, search_groups
from .keys import TrialSpec
from .search import History, abandon_reasons, histories, study_samples
from .store import RunLock, Store
from .study import Asha, Resources, Study

PACKAGES = ("rearec-harness", "torch", "numpy", "pandas", "pyarrow", "ray", "optuna", "duckdb", "tensorboard")


@dataclass(frozen=True)
class RunOptions:
    db: Path = Path("results.duckdb")
    runs: Path = Path("runs")
    cache_dir: Path = Path("data")
    address: str | None = None  # None: start a local Ray instance
    device: str = "auto"  # auto | cpu | cuda | cpu-with-logical-gpus (tests only: see resolve_resources)
    retries: int = 0
    concurrency: int | None = None  # overrides the study's
    num_cpus: int | None = None  # local Ray only; None = all cores
    dashboard: bool | None = None  # local Ray only; None = Ray's default (on when ray[default] is installed)
    asha: bool = False  # turn on ASHA with its defaults even if the study does not ask for it
    max_trials: int = DEFAULT_MAX_TRIALS  # refuse larger studies (counted from their axes) before expanding
    mlflow: str | None = None  # log every stored trial to this MLflow tracking URI (harness/tracking.py)


@dataclass
class Plan:
    study: Study
    datasets: list[DatasetRef]
    trials: list[TrialSpec] = field(default_factory=list)  # grid studies
    groups: list[tuple[SearchGroup, list[dict], list[float]]] = field(default_factory=list)  # optuna: done points
    statuses: dict[str, str] = field(default_factory=dict)
    history: dict[str, History] = field(default_factory=dict)  # optuna: group id -> its samples in the database
    abandon: dict[str, str] = field(default_factory=dict)  # optuna: interrupted samples no run will redo -> why

    @property
    def planned(self) -> int:
        if self.study.search.algorithm == "grid":
            return len(self.trials)
        return sum(group.budget(self.study.search.num_samples) for group, _, _ in self.groups)

    @property
    def completed(self) -> int:
        if self.study.search.algorithm == "grid":
            return sum(self.statuses.get(t.key) == "completed" for t in self.trials)
        n = self.study.search.num_samples
        return sum(min(len(points), group.budget(n)) for group, points, _ in self.groups)

    @property
    def to_run(self) -> list[TrialSpec]:
        return [t for t in self.trials if self.statuses.get(t.key) != "completed"]

    @property
    def remaining(self) -> int:
        return self.planned - self.completed


def driver_env() -> dict[str, Any]:
    """Package versions, git revision, host and Python of the driver (trials add their host and GPU)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    root = Path(__file__).resolve().parent.parent
    git = {"revision": None, "dirty": None}
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if rev.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10)
            git = {"revision": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        pass
    return {"packages": versions, "git": git, "python": platform.python_version(), "driver_host": socket.gethostname()}


def make_plan(study: Study, options: RunOptions, store: Store | None, log: Callable[[str], None] = print,
              datasets: list[DatasetRef] | None = None) -> Plan:
    """Resolve datasets (preparing caches), expand the study and look up what the database already has."""
    check_size(study, options.max_trials)  # before anything is expanded (or a dataset prepared)
    if datasets is None:
        datasets = resolve_datasets(study, options.cache_dir, log=log)
    plan = Plan(study, datasets)
    if study.search.algorithm == "grid":
        plan.trials = expand(study, datasets)
        plan.statuses = store.statuses([t.key for t in plan.trials]) if store else {}
        return plan
    groups = search_groups(study, datasets)
    plan.history, stray = histories(study_samples(store, study) if store else [], groups)
    for group in groups:
        done = plan.history[group.id].done.values()
        plan.groups.append((group, [point for point, _ in done], [value for _, value in done]))
    plan.abandon = abandon_reasons(groups, plan.history, stray, study.search.num_samples)
    return plan


def definition_keys(plan: Plan, store: Store) -> list[str]:
    """The trials of the study's current definition: a grid's planned keys; for Optuna, the study's
    earlier trials whose point lies in one of the current search groups (new samples join as they run).
    Earlier members outside it stay linked but no longer count (`harness status` names how many)."""
    if plan.study.search.algorithm == "grid":
        return [t.key for t in plan.trials]
    frame = store.query("SELECT t.trial_key, t.params, t.dataset_hash FROM trials t JOIN study_trials s "
                        "USING (trial_key) WHERE s.study = ?", [plan.study.name])
    keys = []
    for key, params, dataset_hash in zip(frame["trial_key"], frame["params"], frame["dataset_hash"], strict=True):
        flat = json.loads(params)
        if any(group.contains(flat) is not None and dataset_hash == group.dataset.content_hash
               for group, _, _ in plan.groups):
            keys.append(key)
    return keys


def resolve_resources(requested: Resources, device: str, cluster_gpus: float, node_cpus: float, node_gpus: float,
                      warn: Callable[[str], None] = print) -> tuple[Resources, str]:
    """Resources per trial that this cluster can actually grant, and the torch device of the trials.

    A GPU request on a cluster without GPUs would leave trials pending forever, so it falls back to the
    CPU with a warning (device 'auto') or fails before launching (device 'cuda').

    'cpu-with-logical-gpus' is for tests only (hidden CLI flag `--cpu-with-logical-gpus`): Ray schedules
    the study's GPU request against GPUs that a CPU node only declares (`ray start --num-gpus 1`), while
    the trials compute on the CPU. It proves fractional-GPU packing on a machine without one.
    """
    if requested.cpu > node_cpus:
        raise ResourceError(f"resources.cpu: {requested.cpu:g} CPUs per trial, but the largest node has "
                            f"{node_cpus:g}; lower it (e.g. --set resources.cpu=1)")
    if device == "cpu":
        return dataclasses.replace(requested, gpu=0.0), "cpu"
    if device == "cpu-with-logical-gpus":
        if requested.gpu <= 0 or cluster_gpus <= 0:
            raise ResourceError("--cpu-with-logical-gpus: needs a GPU request (resources.gpu > 0) and a Ray node "
                                f"that declares GPUs (asked {requested.gpu:g}, the cluster has {cluster_gpus:g})")
        if requested.gpu > node_gpus:
            raise ResourceError(f"resources.gpu: {requested.gpu:g} GPUs per trial, but the largest node has "
                                f"{node_gpus:g}")
        return requested, "cpu"
    if device == "cuda":
        if cluster_gpus <= 0:
            raise ResourceError("--device cuda: the Ray cluster has no GPUs (use --device auto to fall back to CPU)")
        gpu = requested.gpu if requested.gpu > 0 else 1.0
        if gpu > node_gpus:
            raise ResourceError(f"resources.gpu: {gpu:g} GPUs per trial, but the largest node has {node_gpus:g}")
        return dataclasses.replace(requested, gpu=gpu), "cuda"
    if device != "auto":
        raise ValueError(f"device must be auto, cpu, cuda or cpu-with-logical-gpus, got {device!r}")
    if requested.gpu <= 0:
        return requested, "cpu"
    if cluster_gpus <= 0:
        warn(f"WARNING: the study asks for {requested.gpu:g} GPU per trial but the Ray cluster has no GPU; "
             "running on CPU instead (--device cuda would stop here)")
        return dataclasses.replace(requested, gpu=0.0), "cpu"
    if requested.gpu > node_gpus:
        raise ResourceError(f"resources.gpu: {requested.gpu:g} GPUs per trial, but the largest node has {node_gpus:g}")
    return requested, "cuda"


def start_ray(options: RunOptions, log: Callable[[str], None] = print) -> bool:
    """Start a local Ray instance (or join ``options.address``); False when one was already running here."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the old reporter stays quiet at verbose=0
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # our own TensorBoard files only
    import ray

    if ray.is_initialized():
        return False
    started = time.monotonic()
    if options.address:
        context = ray.init(address=options.address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        kwargs: dict[str, Any] = {"num_cpus": options.num_cpus}
        if options.dashboard is not None:
            kwargs["include_dashboard"] = options.dashboard
        context = ray.init(address="local", log_to_driver=False, logging_level=logging.WARNING, **kwargs)
    where = options.address or "a local Ray instance"
    log(f"Ray: joined {where} in {time.monotonic() - started:.1f} s; resources {_resources_text(ray.cluster_resources())}")
    url = getattr(context, "dashboard_url", None)
    if url:
        log(f"Ray dashboard: http://{url}" if "://" not in url else f"Ray dashboard: {url}")
    return True


def _resources_text(resources: dict[str, float]) -> str:
    return ", ".join(f"{resources.get(k, 0):g} {k}" for k in ("CPU", "GPU"))


def cluster_capacity() -> tuple[float, float, float]:
    """(total GPUs, CPUs of the largest node, GPUs of the largest node) of the connected cluster."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    return (float(ray.cluster_resources().get("GPU", 0)), max((n.get("CPU", 0) for n in nodes), default=0),
            max((n.get("GPU", 0) for n in nodes), default=0))


def _tune_run(name: str, trainable: Callable, param_space: dict, study: Study, options: RunOptions,
              resources: Resources, callback, search_alg=None, num_samples: int = 1, dirname=None) -> None:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    scheduler = None
    asha = study.asha or (Asha() if options.asha else None)
    if asha is not None:
        max_epochs = max(int(callback.max_epochs), 1)
        # max_t one past the last epoch: ASHA must not end a trial at its final report (it would lose the results)
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_epochs + 1, grace_period=asha.grace_period,
                                  reduction_factor=asha.reduction_factor)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": resources.cpu, "gpu": resources.gpu}),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=study.metric, mode="max", search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
            max_concurrent_trials=options.concurrency or study.concurrency, reuse_actors=True,
            trial_dirname_creator=dirname, trial_name_creator=dirname),
        run_config=tune.RunConfig(
            name=name, storage_path=str((options.runs / "_ray").absolute()), callbacks=[callback], verbose=0,
            failure_config=tune.FailureConfig(max_failures=options.retries)),
    )
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)  # no result.json: by design
    logging.getLogger("ray.tune.execution.tune_controller").setLevel(logging.CRITICAL)  # failures: our own lines
    tuner.fit()


class StudyRunner:
    """One `harness run`: lock, plan, recover, launch, summarise. ``out`` receives the progress lines."""

    def __init__(self, study: Study, options: RunOptions, out: Callable[[str], None] = print):
        self.study, self.options, self.out = study, options, out

    def run(self) -> dict[str, Any]:
        datasets = resolve_datasets(self.study, self.options.cache_dir, log=self.out)  # a bad dataset writes nothing
        with RunLock(self.options.db).acquire(self.study.name):
            database = store = Store(self.options.db, linger=0.5)  # the run's writes share connections
            try:
                if self.options.mlflow:  # the tracker logs at registration and after each ingestion, from DuckDB
                    from .tracking import tracked

                    store = tracked(store, self.options.mlflow, self.study, out=self.out)
                plan = make_plan(self.study, self.options, store, log=self.out, datasets=datasets)
                return self._run(plan, store)
            finally:
                database.close()

    def _register(self, plan: Plan, store: Store, env: dict) -> int:
        """Link the plan's trials to the study, recover finished-but-not-ingested ones, link reused dirs."""
        study = self.study
        store.register_study(study.name, study.file, plan.planned, study.search.algorithm, dict(study.raw),
                             definition_keys(plan, store))
        if plan.abandon:  # interrupted Optuna samples that no rerun will redo: say so instead of 'running'
            store.mark_abandoned(plan.abandon)
            self.out(f"{len(plan.abandon)} interrupted Optuna sample(s) marked abandoned: "
                     + next(iter(plan.abandon.values())).removeprefix("abandoned: "))
        recovered = 0
        for trial in plan.to_run:
            run_dir = trial_dir(self.options.runs, study.name, trial.key)
            output = read_output(run_dir, trial.key)
            if output is not None:
                store.ingest(trial, study.name, output, str(run_dir), env)
                plan.statuses[trial.key] = "completed"
                recovered += 1
        done = [t.key for t in plan.trials if plan.statuses.get(t.key) == "completed"]
        for key, existing in store.run_dirs(done).items():  # trials another study ran: make them visible here
            link = trial_dir(self.options.runs, study.name, key)
            if Path(existing).absolute() != link.absolute() and Path(existing).exists() and not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(Path(existing).absolute(), target_is_directory=True)
        return recovered

    def _launch(self, plan: Plan, trainable: Callable, context: dict, resources: Resources, callback) -> None:
        """One Tune run for a grid study; one per search group (dataset x backbone x method x seed) for Optuna."""
        study, options = self.study, self.options
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        if study.search.algorithm == "grid":
            from .searchers import TrialList

            callback.max_epochs = max(t.train["max_epochs"] for t in plan.to_run)
            trials = [t.to_dict() for t in plan.to_run]  # one at a time: a grid_search copies all per trial
            _tune_run(f"{study.name}-{stamp}", trainable, {"context": context}, study, options, resources, callback,
                      search_alg=TrialList(trials), num_samples=len(trials),
                      dirname=lambda t: t.config["trial"]["key"][:12])
        else:
            from .searchers import ResumableSearch

            for group, _, _ in plan.groups:
                history, budget = plan.history[group.id], group.budget(study.search.num_samples)
                left, rerun = budget - len(history.done), len(history.rerun(budget))
                if left <= 0:
                    continue
                self.out(f"optuna search {group.label}: {left} trials ({len(history.done)} earlier results reused"
                         + (f"; {rerun} interrupted sample(s) re-run first" if rerun else "") + ")")
                callback.max_epochs = group.max_epochs()
                space = {"group": group.to_config(study.selection.name), "context": context}
                # a seed per resume step: the same seed would redraw the first run's (random start-up) points
                searcher = ResumableSearch(group, study.metric, study.selection.name, history, budget,
                                           seed=study.search.seed + len(history.done), out=self.out)
                _tune_run(f"{study.name}-{group.id}-{stamp}", trainable, space, study, options, resources,
                          callback, search_alg=searcher, num_samples=left, dirname=lambda t: t.trial_id)
                callback.progress.total -= searcher.left  # a budget the space could not fill: not 'interrupted'

    def _run(self, plan: Plan, store: Store) -> dict[str, Any]:
        from .progress import Progress, StudyCallback
        from .trial import resolve, run_trial

        study, options = self.study, self.options
        env = driver_env()
        recovered = self._register(plan, store, env)
        self.out(f"study {study.name}: {plan.planned} trials planned, {plan.completed} already complete"
                 + (f" ({recovered} recovered from result files)" if recovered else "") + f", {plan.remaining} to run")
        summary = {"planned": plan.planned, "skipped": plan.completed, "completed": 0, "failed": {}, "interrupted": 0,
                   "internal_errors": [], "aborted": None}
        if plan.remaining <= 0:
            return summary
        started_here = start_ray(options, log=self.out)
        try:
            resources, device = resolve_resources(study.resources, options.device, *cluster_capacity(), warn=self.out)
            self.out(f"resources per trial: {resources.cpu:g} CPU, {resources.gpu:g} GPU; device {device}; "
                     f"concurrency {options.concurrency or study.concurrency or 'as many as fit'}")
            context = {"study": study.name, "runs": str(options.runs.absolute()), "device": device,
                       "cache_dir": str(options.cache_dir.absolute()), "threads": max(1, int(resources.cpu)),
                       "gpu_fraction": resources.gpu}  # weights each trial's gpu_seconds (harness/cost.py)
            progress = Progress(plan.remaining, study.metric, out=self.out)
            callback = StudyCallback(store, study.name, options.runs.absolute(), device, env, resolve, progress, self.out)

            def trainable(config):  # a fresh function per study: tune.with_resources mutates what it wraps
                return run_trial(config)

            try:
                self._launch(plan, trainable, context, resources, callback)
            except Exception as exc:  # noqa: BLE001 - e.g. Ray Tune gives up when a node runs out of memory
                summary["aborted"] = _first_line(exc)
                self.out(f"Ray Tune stopped early: {summary['aborted']}")
            progress.show(force=True)
        finally:
            if started_here:
                import ray

                ray.shutdown()
        summary["internal_errors"] = callback.internal_errors
        summary["completed"] = len(callback.completed)
        summary["failed"] = callback.failed
        summary["interrupted"] = max(0, progress.total - progress.done - progress.failed)
        return summary


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]
