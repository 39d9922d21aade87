"""Driver overhead per trial: a 1,000-trial study whose trials cost almost nothing, on a local Ray with 2 CPUs.

    .venv/bin/python bench/bench_driver.py                    # 1,000 trials, one repeat (~10-20 min on 2 cores)
    .venv/bin/python bench/bench_driver.py --trials 200       # a quicker look
    .venv/bin/python bench/bench_driver.py --trials 300 --modes new,old   # against the driver as it was

What the driver does per trial is what a real study pays on top of training: Ray Tune's scheduling (the
grid variant, the trial actor reused across trials, results routed back) and the harness's own work in the
driver (`mark_running` when it starts, reading its result files and `ingest` into DuckDB when it ends,
progress lines). To see only that, each trial here is *canned*: the trainable copies the result files of one
real tiny trial (trained once, untimed, with `harness.trial.execute`) into the trial's directory under its own
key and reports one epoch, so its own cost is a few milliseconds; everything else is the real harness.

Printed and written to bench/results/driver.json, with /proc/loadavg beside each figure:
- ``study_seconds``: from the Tune run's start to its end (every trial scheduled, run and ingested);
- ``per_trial``: study_seconds / trials, the driver overhead per trial at 2 CPUs (target <= 0.5 s);
- ``store_per_trial``: of which the DuckDB writes (mark_running + ingest) in the driver;
- ``driver_cpu_per_trial``: CPU seconds of the driver process (all its threads) per trial, less sensitive
  than wall time to other work on a shared machine;
- ``trial_body_per_trial``: median time inside the canned trainable (the trial's own cost, on a worker).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray's memory monitor kills workers when the *machine* is above 95 % memory; on a shared box that is other
# people's processes, and the canned trials here need a few MB. Off for this benchmark only.
os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")

TINY = {"name": "synthetic", "synthetic": {"n_users": 150, "n_items": 100, "n_topics": 8}}
PARAMS = {"hidden_size": 16, "num_heads": 1, "ffn_size": 32, "max_epochs": 1, "patience": 1, "batch_size": 256,
          "eval_batch_size": 512}


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def canned_trial(config: dict) -> None:
    """The trainable: the canned result files under this trial's key, one report, as run_trial would."""
    import json as json_
    import shutil as shutil_
    import time as time_
    from pathlib import Path as Path_

    from ray import tune

    from harness.artifacts import trial_dir
    from harness.trial import resolve

    started = time_.perf_counter()
    ctx = config["context"]
    spec = resolve(config)
    out = trial_dir(ctx["runs"], ctx["study"], spec.key)
    canned = Path_(ctx["canned"])
    out.mkdir(parents=True, exist_ok=True)
    for name in ("epochs.parquet", "metrics.parquet", "ranks.parquet", "similarity.parquet"):
        shutil_.copyfile(canned / name, out / name)
    result = json_.loads((canned / "result.json").read_text())
    result["key"] = spec.key
    result["wall_seconds"] = time_.perf_counter() - started  # the trial's own cost (stored as wall_seconds)
    (out / "result.json").write_text(json_.dumps(result))
    body = time_.perf_counter() - started
    tune.report({"epoch": 1, "train_loss": 1.0, "epoch_seconds": body, "valid/ndcg@20": 0.1,
                 "best_valid/ndcg@20": 0.1, "trial_key": spec.key, "body_seconds": body})


def make_canned(work: Path) -> Path:
    """One real tiny trial's result files (trained here, not timed)."""
    from harness.datasets import resolve_datasets
    from harness.expand import expand
    from harness.study import parse_study
    from harness.trial import execute

    study = parse_study({"name": "canned", "datasets": [TINY], "methods": ["base"], "params": PARAMS}, "canned")
    (trial,) = expand(study, resolve_datasets(study, work / "data", log=lambda _: None))
    folder = work / "canned"
    execute(trial, folder, cache_dir=str(work / "data"), device="cpu", threads=1)
    return folder


def old_scheduling(runner_mod, store_mod) -> dict:
    """Patches giving the driver as it was before this benchmark: Tune's grid_search over the whole trial list
    (deep-copied per trial by Ray) and one DuckDB connection per write. Returns what to restore."""
    from ray import tune

    def launch(self, plan, trainable, context, resources, callback):
        callback.max_epochs = max(t.train["max_epochs"] for t in plan.to_run)
        space = {"trial": tune.grid_search([t.to_dict() for t in plan.to_run]), "context": context}
        runner_mod._tune_run(f"{self.study.name}-old", trainable, space, self.study, self.options, resources,
                             callback, dirname=lambda t: t.config["trial"]["key"][:12])

    class OneConnectionPerWrite(store_mod.Store):
        def __init__(self, path, read_only=False, timeout=30.0, linger=0.0):
            super().__init__(path, read_only=read_only, timeout=timeout, linger=0.0)

    return {(runner_mod.StudyRunner, "_launch"): launch, (runner_mod, "Store"): OneConnectionPerWrite}


def measure(mode: str, n: int, canned: Path, work: Path) -> dict:
    """One study of ``n`` canned trials with a fresh database; ``mode`` 'new' (this code) or 'old'."""
    from harness import runner as runner_mod
    from harness import store as store_mod
    from harness import trial as trial_mod
    from harness.runner import RunOptions, StudyRunner
    from harness.store import Store
    from harness.study import parse_study

    folder = work / mode
    raw = {"name": f"driver-{mode}", "datasets": [TINY], "methods": ["base"], "params": PARAMS,
           "seeds": list(range(n)), "resources": {"cpu": 1}}
    study = parse_study(raw, str(folder / "driver.yaml"))
    timings: dict[str, float] = {"store": 0.0, "study": 0.0, "study_cpu": 0.0}
    marks: dict[str, float] = {}  # when the Tune run began and when the first trial was marked running
    originals: dict[tuple, object] = {}

    def patch(owner, name: str, value) -> None:
        originals.setdefault((owner, name), getattr(owner, name))
        setattr(owner, name, value)

    def timed(owner, name: str, bucket: str) -> None:  # wrap a function, adding its wall time to a bucket
        original = getattr(owner, name)

        def wrapper(*a, **k):
            t0, c0 = time.perf_counter(), time.process_time()
            marks.setdefault(bucket if bucket == "study" else name, t0)
            try:
                return original(*a, **k)
            finally:
                timings[bucket] += time.perf_counter() - t0
                if bucket == "study":
                    timings["study_cpu"] += time.process_time() - c0

        patch(owner, name, wrapper)

    try:
        if mode == "old":
            for (owner, name), value in old_scheduling(runner_mod, store_mod).items():
                patch(owner, name, value)
        timed(Store, "mark_running", "store")
        timed(Store, "ingest", "store")
        timed(runner_mod, "_tune_run", "study")
        patch(trial_mod, "run_trial", canned_trial)  # StudyRunner imports it when it runs
        launch_ = runner_mod.StudyRunner._launch

        def launch(self, plan, trainable, context, resources, callback):  # + where the canned files are
            return launch_(self, plan, trainable, {**context, "canned": str(canned)}, resources, callback)

        patch(runner_mod.StudyRunner, "_launch", launch)
        lines: list[str] = []
        started = time.perf_counter()
        summary = StudyRunner(study, RunOptions(db=folder / "r.duckdb", runs=folder / "runs", cache_dir=work / "data"),
                              out=lines.append).run()
        total = time.perf_counter() - started
    finally:
        for (owner, name), value in originals.items():
            setattr(owner, name, value)
    load = loadavg()
    rows = Store(folder / "r.duckdb", read_only=True).query(
        "SELECT count(*) AS n, median(wall_seconds) AS body FROM trials WHERE status = 'completed'")
    done = int(rows["n"][0])
    if done != n or summary["failed"]:  # e.g. Ray's memory monitor on a crowded machine
        print(f"WARNING ({mode}): {done} of {n} trials completed ({summary['aborted'] or summary['failed']}); "
              "figures are per completed trial")
    per_trial = timings["study"] / max(done, 1)
    out = {"mode": mode, "trials": n, "completed": done, "study_seconds": timings["study"], "per_trial": per_trial,
           "first_trial_after_s": marks.get("mark_running", float("nan")) - marks.get("study", float("nan")),
           "driver_cpu_per_trial": timings["study_cpu"] / max(done, 1),
           "store_per_trial": timings["store"] / max(done, 1), "trial_body_per_trial": float(rows["body"][0]),
           "run_total_seconds": total, "loadavg": load}
    print(f"[{mode}] {done} canned trials: study {timings['study']:.1f} s -> {per_trial:.3f} s per trial; the first "
          f"started {out['first_trial_after_s']:.1f} s into the Tune run; DuckDB writes {out['store_per_trial']:.3f} s "
          f"per trial; the trial body {out['trial_body_per_trial']:.3f} s on a worker; driver CPU "
          f"{out['driver_cpu_per_trial']:.3f} s per trial  (load {load})", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--modes", default="new", help="comma-separated: new (this code), old (grid_search and "
                                                         "a DuckDB connection per write, as before), e.g. new,old")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "driver.json"))
    args = parser.parse_args()
    import ray

    work = Path(tempfile.mkdtemp(prefix="bench-driver-"))
    try:
        canned = make_canned(work)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        results = [measure(mode, args.trials, canned, work) for mode in args.modes.split(",")]
        if len(results) == 2:
            ratio = results[1]["per_trial"] / results[0]["per_trial"]
            print(f"{results[1]['mode']} / {results[0]['mode']} per trial: {ratio:.2f}x")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))
        print(f"written to {args.out}")
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
