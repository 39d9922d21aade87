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
prints each study's wall time and the aggregate throughput ratio (trials per second, shared / exclusive).
Written to bench/results/harness_gpu.json.
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
            out[f"gpu={gpu:g}"] = {"study_seconds": times["study"], "trials_per_second": 4 / times["study"]}
            print(f"gpu {gpu:g}: 4 trials in {times['study']:.1f} s", flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    ratio = out["gpu=0.25"]["trials_per_second"] / out["gpu=1"]["trials_per_second"]
    out["throughput_ratio_shared_over_exclusive"] = ratio
    print(f"aggregate throughput, 4 x gpu 0.25 at once vs one at a time at gpu 1: {ratio:.2f}x")
    Path(args.out).with_name("harness_gpu.json").write_text(json.dumps({"args": vars(args), **out}, indent=1))


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
    args = parser.parse_args()
    if args.gpu:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        return gpu_check(args)
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
