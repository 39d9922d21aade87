"""Time `harness report` (build_report) on a generated database of 10,000 trials.

    .venv/bin/python bench/bench_report.py                       # build the DB once, then 5 timed reports
    .venv/bin/python bench/bench_report.py --trials-per-cell 5 --repeats 3 --db /tmp/bench.duckdb

What the database holds (one study, `bench`, shaped like the paper's grids):
- 5 datasets x 4 backbones x 100 configurations x 5 seeds = 10,000 trials: base; naive and RPE at K = 1..5;
  ERL at K = 1..5 x lambda in {0, 0.001, 0.005, 0.01, 0.05, 0.1}; PRL at K = 2 x tau (6) x alpha (6), at
  K = 1, 3, 4, 5 pinned, PRL w/o RCL, and small PRL grids at K = 3 and 4; an ERL lambda sensitivity block
  (Fig. 6) that repeats the K = 2 grid's trials. The stored definition is a real study file (it parses and
  expands to exactly these trials, so the report's expected cells are real).
- Statuses: about 2 % failed (with a traceback), 1 % running, 2 % pending (linked, no trial row).
- Per completed trial, the store's rows as the trial function writes them: metrics for valid and test x
  steps 0..K and the output x 9 user/item groups x 4 metrics (~3 million rows in all), step similarity
  (K + 1)^2 per split, 10 epoch rows, latency rows for seed 0 of base and PRL.
- sample_ranks (per-sample ranks, valid and test, 1,000 samples) for 10 % of the completed trials, chosen
  at random, plus every seed of one configuration per variant and K, so the per-sample tests and the
  oracle section have data; step_signals (rank, entropy, top-1 probability / item / repeats, KL to the
  previous depth per sample and depth 0..K) for the same trials, as if every one ran with `step_signals`,
  so the adaptive-depth section and its per-sample pass have data.
Timing: build_report once to warm up (imports, first figure), then --repeats timed runs; the median is
reported. The report folder is rewritten each time.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.artifacts import EPOCH_COLUMNS  # noqa: E402
from harness.expand import merged_params  # noqa: E402
from harness.keys import PROTOCOL  # noqa: E402
from harness.report import build_report  # noqa: E402
from harness.store import TRIAL_COLUMNS, Store, variant  # noqa: E402
from harness.study import Choice, parse_study  # noqa: E402

TAUS, ALPHAS = [0.05, 0.1, 0.5, 1.0, 2.0, 5.0], [1.0, 1.2, 1.5, 2.0, 5.0, 10.0]
STUDY = {
    "name": "bench",
    "description": "Generated rows for the report benchmark (10,000 trials).",
    "datasets": ["yelp", "amazon2023-video-games", "amazon2023-software", "amazon2023-cds-and-vinyl",
                 "amazon2023-baby-products"],
    "backbones": ["sasrec", "bert4rec", "unisrec", "morec"],
    "methods": ["base",
                {"name": "naive", "reasoning_steps": [1, 2, 3, 4, 5]},
                {"name": "rpe", "reasoning_steps": [1, 2, 3, 4, 5]},
                {"name": "erl", "reasoning_steps": [1, 2, 3, 4, 5], "kl_lambda": [0.0, 0.001, 0.005, 0.01, 0.05, 0.1]},
                {"name": "prl", "reasoning_steps": 2, "tau": TAUS, "alpha": ALPHAS, "gamma": 0.01},
                {"name": "prl", "reasoning_steps": [1, 3, 4, 5], "tau": 0.5, "alpha": 5.0},
                {"name": "prl", "reasoning_steps": 2, "tau": 0.5, "alpha": 5.0, "rcl": False},
                {"name": "prl", "reasoning_steps": 3, "tau": [0.5, 1.0, 2.0], "alpha": [1.2, 1.5, 2.0, 10.0]},
                {"name": "prl", "reasoning_steps": 4, "tau": [1.0, 2.0], "alpha": [2.0, 5.0, 10.0]},
                # Fig. 6's lambda curve: the same trials as the ERL grid at K = 2 (identical trials run once)
                {"name": "erl", "reasoning_steps": 2, "sensitivity": {"kl_lambda": [0.001, 0.005, 0.01, 0.05, 0.1]}}],
    "seeds": [0, 1, 2, 3, 4],
    "selection": {"metric": "valid/ndcg@20"},
}
METRICS = ["ndcg@10", "ndcg@20", "recall@10", "recall@20"]
GROUPS = ["all", *(f"user:UG{g}" for g in range(4)), *(f"item:IG{g}" for g in range(4))]
N_SAMPLES = 1000


def points(study) -> list[dict]:
    """Every trial of the study as flat settings (grid x seeds), in the order harness.expand uses."""
    out = []
    for dataset, backbone, entry in itertools.product(study.datasets, study.backbones, study.methods):
        params, sensitivity, _ = merged_params(study, entry)
        pinned = {k: v for k, v in params.items() if not isinstance(v, Choice)}
        axes = [(k, v.values) for k, v in params.items() if isinstance(v, Choice)]
        changes = [{}] if not sensitivity else [{n: v} for n, c in sensitivity.items() for v in c.values]
        for combo in itertools.product(*(values for _, values in axes)):
            point = {**pinned, **dict(zip([k for k, _ in axes], combo, strict=True))}
            for change, seed in itertools.product(changes, study.seeds):
                out.append({"dataset": dataset, "backbone": backbone, "method": entry.name, **point, **change,
                            "seed": seed})
    return out


def trial_rows(study, rng) -> pd.DataFrame:
    rows = []
    for p in points(study):
        name = p["method"]
        k = 0 if name == "base" else p["reasoning_steps"]
        method = {"name": name, "kl_lambda": p.get("kl_lambda", 0.05), "rcl": p.get("rcl", True)}
        params = {"seed": p["seed"], "dataset": p["dataset"], "backbone": p["backbone"], "method": name,
                  "reasoning_steps": k, "kl_lambda": method["kl_lambda"], "tau": p.get("tau", 1.0),
                  "alpha": p.get("alpha", 5.0), "gamma": p.get("gamma", 0.01), "rcl": method["rcl"],
                  "hidden_size": 256, "mask_history": False, "protocol": PROTOCOL,
                  "dataset_spec": {"name": p["dataset"], "split": {"kind": "absolute"}}}
        text = json.dumps(params, sort_keys=True)
        rows.append({"trial_key": hashlib.sha256(text.encode()).hexdigest(), "dataset": p["dataset"],
                     "backbone": p["backbone"], "method": name, "variant": variant(method), "reasoning_steps": k,
                     "kl_lambda": method["kl_lambda"] if name == "erl" else None,
                     "tau": params["tau"] if name == "prl" else None, "alpha": params["alpha"] if name == "prl" else None,
                     "gamma": params["gamma"] if name == "prl" else None, "seed": p["seed"], "params": text,
                     "dataset_hash": "h-" + p["dataset"]})
    frame = pd.DataFrame(rows).drop_duplicates("trial_key")
    u = rng.random(len(frame))
    frame["status"] = np.where(u < 0.02, "failed", np.where(u < 0.03, "running", np.where(u < 0.05, "pending",
                                                                                             "completed")))
    frame["error"] = np.where(frame.status == "failed", "Traceback (most recent call last):\n  File ...\n"
                              "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", None)
    return frame


def metric_rows(trials: pd.DataFrame, rng) -> pd.DataFrame:
    """Long metrics rows; values depend on dataset, variant, K and a configuration/seed effect."""
    parts = []
    for k, group in trials.groupby("reasoning_steps"):
        steps = [*range(k + 1), -1]
        n = len(group)
        grid = pd.MultiIndex.from_product([range(n), ["valid", "test"], steps, GROUPS, METRICS],
                                          names=["i", "split", "step", "user_group", "metric"]).to_frame(index=False)
        base = 0.03 + 0.02 * rng.random(n) + 0.002 * (group.variant != "base").to_numpy()
        scale = grid.metric.map({"ndcg@10": 1.0, "ndcg@20": 1.3, "recall@10": 1.9, "recall@20": 2.9}).to_numpy()
        noise = 1 + 0.03 * rng.standard_normal(len(grid))
        grid["value"] = base[grid.i] * scale * noise
        grid["trial_key"] = group.trial_key.to_numpy()[grid.i]
        grid["step"] = grid.step.where(grid.step >= 0, None).astype("Int64")
        parts.append(grid.drop(columns="i"))
    return pd.concat(parts, ignore_index=True)[["trial_key", "split", "step", "user_group", "metric", "value"]]


def rank_rows(trials: pd.DataFrame, rng) -> pd.DataFrame:
    parts = []
    for k, group in trials.groupby("reasoning_steps"):
        cols = k + 2
        n = len(group)
        ranks = np.minimum(rng.geometric(0.02, size=(n, 2, cols, N_SAMPLES)), 5000)
        frame = pd.DataFrame({
            "trial_key": np.repeat(group.trial_key.to_numpy(), 2 * cols * N_SAMPLES),
            "split": np.tile(np.repeat(["valid", "test"], cols * N_SAMPLES), n),
            "sample": np.tile(np.arange(N_SAMPLES), n * 2 * cols),
            "step": np.tile(np.repeat([*range(k + 1), -1], N_SAMPLES), n * 2),
            "rank": ranks.reshape(-1)})
        frame["step"] = frame.step.where(frame.step >= 0, None).astype("Int64")
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def signal_rows(trials: pd.DataFrame, rng) -> pd.DataFrame:
    """step_signals rows: depth-major per trial and split, like harness.artifacts.signals_frame writes them."""
    parts = []
    for k, group in trials.groupby("reasoning_steps"):
        if k == 0:
            continue  # Base has one depth: nothing to stop early
        depths, n = k + 1, len(group)
        shape = (n, 2, depths, N_SAMPLES)
        same = rng.random(shape) < 0.5
        same[:, :, 0] = False
        item = rng.integers(1, 20_000, size=shape)
        for d in range(1, depths):  # a repeated top-1 item is the previous depth's
            item[:, :, d] = np.where(same[:, :, d], item[:, :, d - 1], item[:, :, d])
        repeats = np.zeros(shape, dtype=np.uint8)
        for d in range(1, depths):
            repeats[:, :, d] = np.where(same[:, :, d], repeats[:, :, d - 1] + 1, 0)
        kl = pd.array(rng.exponential(0.05, size=shape).astype(np.float32).reshape(-1), dtype="Float32")
        kl[np.broadcast_to(np.arange(depths)[None, None, :, None] == 0, shape).reshape(-1)] = pd.NA
        parts.append(pd.DataFrame({
            "trial_key": np.repeat(group.trial_key.to_numpy(), 2 * depths * N_SAMPLES),
            "split": np.tile(np.repeat(["valid", "test"], depths * N_SAMPLES), n),
            "sample": np.tile(np.arange(N_SAMPLES, dtype=np.int32), n * 2 * depths),
            "step": np.tile(np.repeat(np.arange(depths, dtype=np.int32), N_SAMPLES), n * 2),
            "rank": np.minimum(rng.geometric(0.02, size=shape), 5000).astype(np.int32).reshape(-1),
            "entropy": (5 + rng.random(shape)).astype(np.float32).reshape(-1),
            "top1_prob": (rng.random(shape) ** 3).astype(np.float32).reshape(-1),
            "top1_item": item.astype(np.int32).reshape(-1), "kl_prev": kl, "top1_repeats": repeats.reshape(-1)}))
    return pd.concat(parts, ignore_index=True)


def build_db(path: Path, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    study = parse_study(STUDY, "studies/bench.yaml")
    trials = trial_rows(study, rng)
    done = trials[trials.status == "completed"]
    ranked = done[(rng.random(len(done)) < 0.10) | (done.kl_lambda.isna() & done.tau.isna())
                  | (done.kl_lambda == 0.01) | ((done.tau == 0.5) & (done.alpha == 5.0))]
    sim = pd.DataFrame([(key, split, a, b, 1.0 if a == b else 0.5 + 0.4 * rng.random())
                        for key, k in zip(done.trial_key, done.reasoning_steps, strict=True)
                        for split in ("valid", "test") for a, b in itertools.product(range(k + 1), repeat=2)],
                       columns=["trial_key", "split", "step_a", "step_b", "cosine"])
    epochs = pd.DataFrame({"trial_key": np.repeat(done.trial_key.to_numpy(), 10), "epoch": np.tile(np.arange(1, 11), len(done))})
    for col in EPOCH_COLUMNS[1:]:
        if col not in epochs:
            epochs[col] = (epochs.epoch == 10) if col == "is_best" else rng.random(len(epochs))
    lat = done[(done.seed == 0) & done.method.isin(["base", "prl"])]
    latency = pd.DataFrame({"trial_key": np.repeat(lat.trial_key.to_numpy(), 2), "split": "test",
                            "cached": np.tile([True, False], len(lat)),
                            "seconds": 5.6 + np.repeat(lat.reasoning_steps.to_numpy(), 2) * np.tile([0.06, 0.3], len(lat))
                            + 0.02 * rng.random(2 * len(lat)), "rows": 10_000})
    metrics, ranks, signals = metric_rows(done, rng), rank_rows(ranked, rng), signal_rows(ranked, rng)
    stored = trials[trials.status != "pending"].reindex(columns=TRIAL_COLUMNS)
    stored["pruned"] = False
    store = Store(path)
    with store.transaction() as con:
        con.execute("CREATE TABLE IF NOT EXISTS latency(trial_key VARCHAR, split VARCHAR, cached BOOLEAN, "
                    "seconds DOUBLE, rows INTEGER)")
        con.execute("INSERT INTO studies VALUES ('bench', 'studies/bench.yaml', ?, 'grid', ?, now())",
                    [len(trials), json.dumps(STUDY)])
        for table, frame in (("trials", stored), ("study_trials", trials.assign(study="bench")[["study", "trial_key"]]),
                             ("metrics", metrics), ("sample_ranks", ranks), ("step_signals", signals),
                             ("step_similarity", sim),
                             ("epochs", epochs[["trial_key", *EPOCH_COLUMNS]]), ("latency", latency)):
            con.register("frame", frame)
            con.execute(f"INSERT INTO {table} ({', '.join(frame.columns)}) SELECT * FROM frame")
            con.unregister("frame")
    return {"trials": len(trials), "stored": len(stored), "completed": len(done), "metrics": len(metrics),
            "sample_ranks": len(ranks), "step_signals": len(signals), "ranked_trials": len(ranked),
            "step_similarity": len(sim)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="bench/results/bench_report.duckdb")
    parser.add_argument("--out", default="bench/results/reports")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rebuild", action="store_true", help="regenerate the database even if it exists")
    args = parser.parse_args()
    db = Path(args.db)
    db.parent.mkdir(parents=True, exist_ok=True)
    if args.rebuild or not db.exists():
        db.unlink(missing_ok=True)
        start = time.perf_counter()
        sizes = build_db(db)
        print(f"built {db} in {time.perf_counter() - start:.1f} s: " + ", ".join(f"{k} {v:,}" for k, v in sizes.items()))
    build_report(db, "bench", args.out)  # warm-up: imports, font cache
    times, cpu = [], []
    for _ in range(args.repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        readme = build_report(db, "bench", args.out)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)  # all threads of this process: DuckDB's and the figures'
    load = os.getloadavg()[0]
    print(f"build_report over {db} ({db.stat().st_size / 2**20:.0f} MiB, {os.cpu_count()} CPUs, load average "
          f"{load:.1f}): median {statistics.median(times):.2f} s wall, {statistics.median(cpu):.2f} s CPU over "
          f"{len(times)} runs (wall {', '.join(f'{t:.2f}' for t in times)}); report: {readme}")


if __name__ == "__main__":
    main()
