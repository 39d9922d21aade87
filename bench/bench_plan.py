"""Planning time of large studies: `harness plan` at 10,000 trials, and its refusal at 10,000,000.

    .venv/bin/python bench/bench_plan.py                  # 3 repeats of each, ~1 min on the 2-core box
    .venv/bin/python bench/bench_plan.py --repeats 5

What is measured (the tiny synthetic dataset is prepared once before any timing):
- ``plan_10k_cli``: `harness plan` of a 10,000-trial grid (PRL: tau 10 x alpha 10 x lr 10, seeds 10) in a fresh
  subprocess: wall seconds and CPU seconds of the child (user + system), interpreter start and imports included.
- ``plan_10k_inproc``: the same plan in this process with cold caches: `validate` (size check, every trial's
  configs, placeholder keys) + dataset resolution + `make_plan` (keys with the real content hash, the database
  lookup). Wall and CPU (process_time) seconds.
- ``refuse_10m_cli`` / ``refuse_10m_inproc``: a 7-axis x 10-value grid (10,000,000 trials): `harness plan` must
  exit 2 with the axes and their product, before expanding anything.
Every timing is printed with /proc/loadavg; medians go to bench/results/plan.json. On this shared 2-core box the
wall time tracks the load; the CPU time is the figure to compare with the 2 s target on an idle core.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TINY = {"name": "synthetic", "synthetic": {"n_users": 150, "n_items": 100, "n_topics": 8}}
TEN = {  # ten values per axis
    "tau": [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    "alpha": [1.0, 1.1, 1.2, 1.5, 2.0, 3.0, 4.0, 5.0, 8.0, 10.0],
    "gamma": [0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.08, 0.1],
    "lr": [0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.008, 0.01],
    "weight_decay": [0.0, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3],
    "dropout": [0.0, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6],
    "hidden_size": [16, 32, 48, 64, 80, 96, 112, 128, 192, 256],
}


def study(name: str, axes: list[str], seeds: int) -> dict:
    method = {"name": "prl", "reasoning_steps": 2, **{a: TEN[a] for a in axes if a in ("tau", "alpha", "gamma")}}
    params = {a: TEN[a] for a in axes if a not in ("tau", "alpha", "gamma")}
    return {"name": name, "datasets": [TINY], "methods": [method], "params": {"max_epochs": 1, **params},
            "seeds": list(range(seeds))}


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cli(args: list[str], cwd: Path) -> tuple[float, float, int, str]:
    """(wall s, child CPU s, exit code, output) of one `harness` subprocess."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.returncode, done.stdout + done.stderr


def inproc(path: Path, cache: Path, expect_refusal: bool) -> tuple[float, float, int]:
    """(wall s, CPU s, trials) of validate + resolve + make_plan with cold caches, in this process."""
    from harness import expand
    from harness.datasets import resolve_datasets
    from harness.errors import StudyError
    from harness.runner import RunOptions, make_plan
    from harness.study import load_study

    expand._TEMPLATES.clear()
    expand._SECTION_CACHE.clear()
    wall, cpu = time.perf_counter(), time.process_time()
    study_ = load_study(path)
    try:
        expand.validate(study_)
        plan = make_plan(study_, RunOptions(cache_dir=cache), None, log=lambda _: None,
                         datasets=resolve_datasets(study_, cache, log=lambda _: None))
        n = plan.planned
    except StudyError:
        if not expect_refusal:
            raise
        n = -1
    return time.perf_counter() - wall, time.process_time() - cpu, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "plan.json"))
    args = parser.parse_args()
    import yaml

    work = Path(tempfile.mkdtemp(prefix="bench-plan-"))
    (work / "p10k.yaml").write_text(yaml.safe_dump(study("p10k", ["tau", "alpha", "lr"], seeds=10)))
    (work / "p10m.yaml").write_text(yaml.safe_dump(study("p10m", list(TEN), seeds=1)))
    cache = work / "data"
    from harness.datasets import resolve_datasets
    from harness.study import load_study

    resolve_datasets(load_study(work / "p10k.yaml"), cache, log=lambda _: None)  # prepared once, not timed
    rows: dict[str, list[dict]] = {k: [] for k in ("plan_10k_cli", "plan_10k_inproc", "refuse_10m_cli",
                                                   "refuse_10m_inproc")}
    for r in range(args.repeats):
        for name, file, refuse in (("10k", "p10k.yaml", False), ("10m", "p10m.yaml", True)):
            wall, cpu, code, out = cli(["plan", file, "--cache-dir", str(cache), "--db", str(work / "none.duckdb")],
                                       work)
            key = f"{'refuse' if refuse else 'plan'}_{name}_cli"
            rows[key].append({"wall": wall, "cpu": cpu, "exit": code, "load": load()})
            print(f"[{r}] {key}: {wall:.2f} s wall, {cpu:.2f} s CPU, exit {code}  (load {load()})", flush=True)
            if r == 0:
                print("    " + "\n    ".join(out.strip().splitlines()[-5:]), flush=True)
            wall, cpu, n = inproc(work / file, cache, refuse)
            key = f"{'refuse' if refuse else 'plan'}_{name}_inproc"
            rows[key].append({"wall": wall, "cpu": cpu, "trials": n, "load": load()})
            print(f"[{r}] {key}: {wall:.3f} s wall, {cpu:.3f} s CPU, {n} trials  (load {load()})", flush=True)
    summary = {k: {"median_wall_s": statistics.median(x["wall"] for x in v),
                   "median_cpu_s": statistics.median(x["cpu"] for x in v), "runs": v} for k, v in rows.items()}
    for k, v in summary.items():
        print(f"{k}: median {v['median_wall_s']:.3f} s wall, {v['median_cpu_s']:.3f} s CPU")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
