"""Harness overhead: a study of 8 tiny trials on a local Ray with 2 CPUs, against the trials' own compute.

    .venv/bin/python bench/bench_harness.py               # 3 repeats, ~3-4 min on the 2-core box
    .venv/bin/python bench/bench_harness.py --repeats 1 --epochs 2

What is measured, per repeat (fresh database, fresh runs folder, fresh Ray instance):
- ``ray_start``: `ray.init` of a local instance (2 CPUs, no dashboard).
- ``study``: from the start of the Tune run to its end (all 8 trials done and ingested).
- ``compute``: the sum over trials of `FitResult.wall_seconds` (training + evaluation inside the trial).
- ``ratio`` = study / (compute / 2): 2 CPUs run 2 one-CPU trials at a time, so compute / 2 is the ideal.
  Target <= 1.3.
- ``ingest``: driver time spent in DuckDB writes (mark running + ingest), summed over trials.
- ``startup_plus_ingest`` = ray_start + ingest. Target <= 15 s.
- ``total``: the whole `StudyRunner.run()` including dataset resolution, Ray start and shutdown.
Medians over the repeats are printed and written to bench/results/harness.json.

    .venv/bin/python bench/bench_harness.py --gpu         # on a machine with one GPU (a few minutes)

GPU sharing check: the same 4 trials (PRL, K = 2, d = 256, the default synthetic data) once with
`gpu: 0.25` (all four share the GPU at once) and once with `gpu: 1` (one at a time), `--device cuda`;
prints each study's wall time, the aggregate throughput ratio (trials per second, shared / exclusive) and
each trial's peak GPU memory (`trials.peak_gpu_bytes`).
Written to bench/results/harness_gpu.json.

    .venv/bin/python bench/bench_harness.py --logical-gpu # no GPU needed (~1-2 min)

Fractional-GPU packing on a local Ray node that declares one GPU it does not have (`num_gpus=1`), trials
on the CPU (`--cpu-with-logical-gpus`): 4 trials at `gpu: 0.25` and 2 at `gpu: 1` (cpu 0.25 each, so only
the GPU limits them). Prints the observed concurrency from the trials' start / finish times in DuckDB
(the most at one instant, and the share of the study's wall time with all four running) and each study's
wall time. Written to bench/results/harness_logical_gpu.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def gpu_study(gpu: float, epochs: int) -> dict:
    return {
        "name": f"gpu{gpu:g}",
        "datasets": ["synthetic"],
        "methods": [{"name": "prl", "reasoning_steps": 2}],
        "params": {"hidden_size": 256, "max_epochs": epochs, "patience": epochs, "batch_size": 256},
        "seeds": [0, 1, 2, 3],
        "resources": {"cpu": 2, "gpu": gpu},
    }


def gpu_check(args) -> None:
    import yaml

    from harness.runner import RunOptions, StudyRunner
    from harness.study import load_study

    out = {}
    for gpu in (0.25, 1.0):
        work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
        try:
            path = work / "gpu.yaml"
            path.write_text(yaml.safe_dump(gpu_study(gpu, args.epochs)))
            options = RunOptions(db=work / "r.duckdb", runs=work / "runs", cache_dir=REPO / "data", device="cuda",
                                 dashboard=False)
            times = {}
            from harness import runner as runner_mod

            original = runner_mod._tune_run

            def timed(*a, _original=original, _times=times, **k):
                t0 = time.perf_counter()
                _original(*a, **k)
                _times["study"] = time.perf_counter() - t0

            runner_mod._tune_run = timed
            try:
                summary = StudyRunner(load_study(path), options, out=lambda line: print("   ", line, flush=True)).run()
            finally:
                runner_mod._tune_run = original
            assert summary["completed"] == 4 and not summary["failed"], summary
            from harness.store import Store

            peaks = Store(options.db, read_only=True).query("SELECT peak_gpu_bytes FROM trials").peak_gpu_bytes
            out[f"gpu={gpu:g}"] = {"study_seconds": times["study"], "trials_per_second": 4 / times["study"],
                                   "peak_gpu_mib_per_trial": [round(float(p) / 2**20, 1) for p in peaks]}
            print(f"gpu {gpu:g}: 4 trials in {times['study']:.1f} s; peak GPU memory per trial (MiB): "
                  f"{out[f'gpu={gpu:g}']['peak_gpu_mib_per_trial']}", flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    ratio = out["gpu=0.25"]["trials_per_second"] / out["gpu=1"]["trials_per_second"]
    out["throughput_ratio_shared_over_exclusive"] = ratio
    print(f"aggregate throughput, 4 x gpu 0.25 at once vs one at a time at gpu 1: {ratio:.2f}x")
    Path(args.out).with_name("harness_gpu.json").write_text(json.dumps({"args": vars(args), **out}, indent=1))


def concurrency(intervals: list[tuple]) -> tuple[int, float]:
    """(most intervals at one instant, seconds during which that many ran) of (start, finish) pairs."""
    events = sorted([(s, 1) for s, _ in intervals] + [(f, -1) for _, f in intervals], key=lambda e: (e[0], e[1]))
    most, now, since, at_most = 0, 0, None, 0.0
    for when, step in events:
        if now == most and since is not None:
            at_most += (when - since).total_seconds()
        now += step
        if now > most:
            most, at_most = now, 0.0
        since = when if now == most else None
    return most, at_most


def logical_gpu_check(args) -> None:
    import os

    import ray
    import yaml

    from harness.runner import RunOptions, StudyRunner
    from harness.store import Store
    from harness.study import load_study

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    out = {}
    work = Path(tempfile.mkdtemp(prefix="bench-lgpu-"))
    try:
        for name, gpu, seeds in (("quarter", 0.25, [0, 1, 2, 3]), ("whole", 1.0, [10, 11])):
            raw = {"name": name, "datasets": [{"name": "synthetic", "synthetic": {"n_users": 400, "n_items": 200}}],
                   "methods": ["base"], "seeds": seeds, "resources": {"cpu": 0.25, "gpu": gpu},
                   "params": {"hidden_size": 32, "ffn_size": 64, "max_epochs": args.epochs, "patience": args.epochs,
                              "batch_size": 128}}
            path = work / f"{name}.yaml"
            path.write_text(yaml.safe_dump(raw))
            options = RunOptions(db=work / f"{name}.duckdb", runs=work / "runs", cache_dir=work / "data",
                                 device="cpu-with-logical-gpus")
            t0 = time.perf_counter()
            summary = StudyRunner(load_study(path), options, out=lambda line: print("   ", line, flush=True)).run()
            wall = time.perf_counter() - t0
            assert summary["completed"] == len(seeds) and not summary["failed"], summary
            rows = Store(options.db, read_only=True).query(
                "SELECT t.started_at, t.finished_at, t.wall_seconds FROM trials t JOIN study_trials s USING (trial_key) "
                "WHERE s.study = ?", [name])
            most, seconds = concurrency(list(zip(rows.started_at, rows.finished_at, strict=True)))
            span = (rows.finished_at.max() - rows.started_at.min()).total_seconds()
            out[name] = {"trials": len(seeds), "gpu_per_trial": gpu, "max_concurrent": most,
                         "seconds_at_max": seconds, "trial_span_seconds": span, "run_seconds": wall,
                         "median_trial_seconds": float(rows.wall_seconds.median()), "loadavg": _loadavg()}
            print(f"{name}: {len(seeds)} trials at gpu {gpu:g}: at most {most} at once ({seconds:.1f} s of the "
                  f"{span:.1f} s from first start to last finish); run {wall:.1f} s; load {_loadavg()}", flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).with_name("harness_logical_gpu.json").write_text(json.dumps({"args": vars(args), **out}, indent=1))


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def study_mapping(epochs: int, hidden: int) -> dict:
    return {
        "name": "bench",
        "datasets": [{"name": "synthetic", "synthetic": {"n_users": 400, "n_items": 200, "n_topics": 8}}],
        "backbones": ["sasrec"],
        "methods": ["base", {"name": "erl", "reasoning_steps": 2}],
        "params": {"hidden_size": hidden, "ffn_size": 2 * hidden, "max_epochs": epochs, "patience": epochs,
                   "batch_size": 128, "eval_batch_size": 512},
        "seeds": [0, 1, 2, 3],  # 2 methods x 4 seeds = 8 trials
        "resources": {"cpu": 1},
    }


def one_repeat(args, work: Path) -> dict:
    import yaml

    from harness import runner as runner_mod
    from harness.runner import RunOptions, StudyRunner
    from harness.store import Store
    from harness.study import load_study

    path = work / "bench.yaml"
    path.write_text(yaml.safe_dump(study_mapping(args.epochs, args.hidden)))
    study = load_study(path)
    options = RunOptions(db=work / "results.duckdb", runs=work / "runs", cache_dir=work / "data", num_cpus=2,
                         dashboard=False)
    timings = {"ingest": 0.0}
    original_tune_run, original_start, original_store = runner_mod._tune_run, runner_mod.start_ray, Store

    def timed_start(*a, **k):
        t0 = time.perf_counter()
        result = original_start(*a, **k)
        timings["ray_start"] = time.perf_counter() - t0
        return result

    def timed_tune_run(*a, **k):
        t0 = time.perf_counter()
        original_tune_run(*a, **k)
        timings["study"] = time.perf_counter() - t0

    def timed(method):
        def wrapper(self, *a, **k):
            t0 = time.perf_counter()
            try:
                return method(self, *a, **k)
            finally:
                timings["ingest"] += time.perf_counter() - t0
        return wrapper

    runner_mod._tune_run, runner_mod.start_ray = timed_tune_run, timed_start
    patched = {name: getattr(Store, name) for name in ("ingest", "mark_running", "mark_failed")}
    for name, method in patched.items():
        setattr(Store, name, timed(method))
    try:
        t0 = time.perf_counter()
        summary = StudyRunner(study, options, out=lambda line: print("   ", line, flush=True)).run()
        timings["total"] = time.perf_counter() - t0
    finally:
        runner_mod._tune_run, runner_mod.start_ray = original_tune_run, original_start
        for name, method in patched.items():
            setattr(Store, name, method)
    assert summary["completed"] == 8 and not summary["failed"], summary
    walls = original_store(options.db, read_only=True).query("SELECT wall_seconds FROM trials").wall_seconds
    timings["compute"] = float(walls.sum())
    timings["ratio"] = timings["study"] / (timings["compute"] / 2)
    timings["startup_plus_ingest"] = timings["ray_start"] + timings["ingest"]
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--out", default=str(REPO / "bench/results/harness.json"))
    parser.add_argument("--gpu", action="store_true", help="the GPU sharing check instead (needs one GPU)")
    parser.add_argument("--logical-gpu", action="store_true",
                        help="fractional-GPU packing on a node declaring one logical GPU, trials on CPU")
    args = parser.parse_args()
    if args.gpu or args.logical_gpu:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        return gpu_check(args) if args.gpu else logical_gpu_check(args)
    rows = []
    for i in range(args.repeats):
        work = Path(tempfile.mkdtemp(prefix="bench-harness-"))
        try:
            print(f"repeat {i + 1}/{args.repeats}", flush=True)
            rows.append(one_repeat(args, work))
            print("   " + ", ".join(f"{k} {v:.2f}" for k, v in rows[-1].items()), flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    medians = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print("median: " + ", ".join(f"{k} {v:.2f}" for k, v in medians.items()))
    print(f"study / (compute / 2) = {medians['ratio']:.2f} (target <= 1.3); "
          f"Ray start-up + ingestion = {medians['startup_plus_ingest']:.1f} s (target <= 15 s)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "repeats": rows, "median": medians}, indent=1))


if __name__ == "__main__":
    main()
