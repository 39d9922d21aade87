"""Issue 13's device check: Table 4 latency (cache x CUDA graphs), training rows/s per mode, GPU sharing.

    bash bench/device_check.sh                      # on the GPU machine (<= 8 min); one summary table
    bash bench/device_check.sh --quick              # every part on CPU with tiny sizes (a few minutes)
    .venv/bin/python bench/device_check.py bundle   # here, once: bench/results/device_data.npz to carry

Parts (each its own process; JSON results under --out, then one summary table):
- latency: rearec.latency.measure_latency over the Video Games test rows, SASRec + PRL, d = 256,
  K = 0..5, cached / uncached x CUDA graphs / eager, median of --repeats after a warm-up (and capture).
- training: rows/s of SASRec + PRL (K = 2, tau 0.5, alpha 5, gamma 0.01, noisy view + RCL on), d = 256,
  batch 2048, in padded / bucketed / packed with bf16 autocast: fit()'s loop body (zero_grad, autocast,
  train_step / train_step_packed, Adam step) on batches each mode's own epoch order yields, picked by
  bench_training_modes.pick_strata (one per cost stratum, so the sample follows the epoch's mix);
  modes interleaved per round; peak GPU memory per mode.
- sharing: bench_harness.py --gpu's four trials (PRL K = 2, d = 256, synthetic data, batch 256) as four
  processes on the one GPU at once (what `gpu: 0.25` schedules) vs one after another (`gpu: 1`):
  aggregate trials per second and each trial's peak GPU memory; bench_harness.py --gpu itself (Ray +
  DuckDB) runs too where ray and duckdb import.
- tests: pytest tests/test_static_eval.py tests/test_kv_cache.py (CUDA-graph capture == eager; skipped on CPU).
Data: bench/results/device_data.npz when present (the Video Games test rows of bench_latency.py and the
training split of bench_training_modes.py), else the built-in synthetic dataset; the summary says which.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bench/results/device_data.npz"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


# ----------------------------------------------------------------------------- data
def _ragged(prefix: str, rows) -> dict[str, np.ndarray]:
    lengths = rows.lengths()
    keep = np.arange(rows.max_len)[None, :] >= rows.max_len - lengths[:, None]  # left-padded histories
    return {f"{prefix}_items": rows.history[keep].astype(np.int32), f"{prefix}_lengths": lengths.astype(np.int32),
            f"{prefix}_target": rows.target.astype(np.int32), f"{prefix}_user": rows.user.astype(np.int32),
            f"{prefix}_timestamp": rows.timestamp, f"{prefix}_history_len": rows.history_len.astype(np.int32)}


def _rows(saved, prefix: str, max_len: int):
    from rearec.data.types import Rows

    lengths = saved[f"{prefix}_lengths"].astype(np.int64)
    history = np.zeros((len(lengths), max_len), dtype=np.int64)
    history[np.arange(max_len)[None, :] >= max_len - lengths[:, None]] = saved[f"{prefix}_items"]
    return Rows(user=saved[f"{prefix}_user"].astype(np.int64), history=history,
                target=saved[f"{prefix}_target"].astype(np.int64), timestamp=saved[f"{prefix}_timestamp"],
                history_len=saved[f"{prefix}_history_len"].astype(np.int64))


def bundle(opts) -> None:
    """Video Games test rows (bench_latency's split) and training split (bench_training_modes') -> npz."""
    import bench_latency
    import bench_training_modes

    from rearec.data import load_dataset

    test = load_dataset(bench_latency.DATASET, cache_dir=opts.cache_dir)
    train = load_dataset(bench_training_modes.DATASET, cache_dir=opts.cache_dir)
    seqs = train.train_sequences
    BUNDLE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(BUNDLE, max_len=train.train.max_len, test_n_items=test.n_items, train_n_items=train.n_items,
                        **_ragged("test", test.test), **_ragged("train", train.train), seq_user=seqs.user,
                        seq_offsets=seqs.offsets, seq_items=seqs.items.astype(np.int32), seq_is_target=seqs.is_target)
    print(f"wrote {BUNDLE} ({BUNDLE.stat().st_size / 2**20:.1f} MiB): {len(test.test)} test rows, "
          f"{len(train.train)} training rows; carry bench/results to the device machine")


def load_data(opts):
    """(latency rows, latency n_items, training data namespace, label)."""
    from rearec.data import load_dataset
    from rearec.data.types import Sequences

    if BUNDLE.exists() and not opts.quick:
        saved = np.load(BUNDLE)
        L = int(saved["max_len"])
        seqs = Sequences(user=saved["seq_user"], offsets=saved["seq_offsets"],
                         items=saved["seq_items"].astype(np.int64), is_target=saved["seq_is_target"])
        train = SimpleNamespace(train=_rows(saved, "train", L), train_sequences=seqs, n_items=int(saved["train_n_items"]))
        return _rows(saved, "test", L), int(saved["test_n_items"]), train, "amazon2018-videogames (bundle)"
    spec = {"name": "synthetic", "synthetic": {"n_users": 300, "n_items": 200}} if opts.quick else "synthetic"
    data = load_dataset(spec, cache_dir=str(Path(opts.out) / "data"))
    return data.test, data.n_items, data, f"synthetic{' (tiny)' if opts.quick else ''}"


def sizes(opts) -> dict:
    if opts.quick:
        return {"dim": 32, "batch": 128, "eval_batch": 128, "steps": [0, 1, 2], "repeats": 1, "batches": 2,
                "rounds": 1, "epochs": 1}
    return {"dim": 256, "batch": 2048, "eval_batch": 1024, "steps": list(range(6)), "repeats": opts.repeats,
            "batches": 3, "rounds": 3, "epochs": 3}


def _device(opts):
    import torch

    return torch.device("cuda" if torch.cuda.is_available() and not opts.cpu else "cpu")


# ----------------------------------------------------------------------------- parts
def part_latency(opts) -> dict:
    import torch

    from rearec.config import ModelConfig
    from rearec.latency import measure_latency

    s, device = sizes(opts), _device(opts)
    rows, n_items, _, label = load_data(opts)
    frame = measure_latency(rows, n_items, ModelConfig(hidden_size=s["dim"]), method="prl", steps=s["steps"],
                            repeats=s["repeats"], batch_size=s["eval_batch"], device=device, graphs=(True, False))
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
    return {"data": label, "rows": len(rows), "device": str(device), "table": frame.to_dict(orient="records"),
            "peak_gpu_mib": peak}


def _to(batch, device):
    from rearec.packing import PackedBatch

    if isinstance(batch, PackedBatch):
        return dataclasses.replace(batch, items=batch.items.to(device), ends=batch.ends.to(device),
                                   targets=batch.targets.to(device))
    return tuple(t.to(device) for t in batch)


def part_training(opts) -> dict:
    import torch
    from bench_training_modes import EPOCH, PRL, epoch_batches, pick_strata

    from rearec.config import MethodConfig, ModelConfig, TrainConfig
    from rearec.model import ReaRecModel
    from rearec.train import (
        batch_tokens,
        checkpointing,
        make_optimizer,
        seed_everything,
        train_step,
        train_step_packed,
    )

    s, device = sizes(opts), _device(opts)
    _, _, data, label = load_data(opts)
    amp = device.type == "cuda"
    cfg = TrainConfig()
    setups = {}
    for mode in ("padded", "bucketed", "packed"):
        batches = epoch_batches(data, mode, s["batch"])
        picks = pick_strata(batches, s["batches"], s["batch"])
        seed_everything(0)
        model = ReaRecModel.from_configs(ModelConfig(hidden_size=s["dim"]), MethodConfig(**PRL), data.n_items).to(device)
        setups[mode] = (model, make_optimizer(model, cfg), [_to(batches[i]["batch"], device) for i in picks],
                        [batches[i]["rows"] for i in picks])
    method = MethodConfig(**PRL)

    def run(mode, batch):  # fit()'s loop body, with its CPU-only checkpointing rule
        model, optimizer = setups[mode][:2]
        optimizer.zero_grad(set_to_none=True)
        wide = device.type == "cpu" and batch_tokens(batch) > cfg.checkpoint_tokens
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp), checkpointing(model, wide):
            if mode == "packed":
                train_step_packed(model, method, batch, EPOCH, cfg.loss_chunk)
            else:
                train_step(model, method, *batch, EPOCH, cfg.loss_chunk)
        optimizer.step()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for mode in setups:  # warm-up: one batch each
        run(mode, setups[mode][2][0])
    sync()
    rates = {m: [] for m in setups}
    peak = {}
    modes = list(setups)
    for r in range(s["rounds"]):
        for mode in modes[r % 3:] + modes[: r % 3]:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            for batch in setups[mode][2]:
                run(mode, batch)
            sync()
            rates[mode].append(sum(setups[mode][3]) / (time.perf_counter() - t0))
            if device.type == "cuda":
                peak[mode] = max(peak.get(mode, 0.0), torch.cuda.max_memory_allocated() / 2**20)
    return {"data": label, "device": str(device), "amp_bf16": amp, "batch": s["batch"], "dim": s["dim"],
            "rows_per_s": {m: float(np.median(v)) for m, v in rates.items()}, "rounds": rates,
            "picked_shapes": {m: [list(b[0].shape) if isinstance(b, tuple) else list(b.items.shape)
                                  for b in setups[m][2]] for m in setups}, "peak_gpu_mib": peak}


def part_trial(opts) -> None:
    """One harness-like trial (bench_harness.gpu_study): fit + the trial's test-latency measurement."""
    import torch
    from bench_harness import gpu_study

    from rearec.config import MethodConfig, ModelConfig, TrainConfig
    from rearec.data import load_dataset
    from rearec.latency import time_inference
    from rearec.train import fit

    started = time.perf_counter()
    s, device = sizes(opts), _device(opts)
    study = gpu_study(0.25, s["epochs"])
    params = {**study["params"], "hidden_size": s["dim"]}
    spec = {"name": "synthetic", "synthetic": {"n_users": 300, "n_items": 200}} if opts.quick else "synthetic"
    data = load_dataset(spec, cache_dir=str(Path(opts.out) / "data"))
    train = TrainConfig(max_epochs=params["max_epochs"], patience=params["patience"], batch_size=params["batch_size"],
                        seed=opts.seed)
    method = MethodConfig(**study["methods"][0])
    res = fit(data, ModelConfig(hidden_size=params["hidden_size"]), method, train, device=device)
    for cached in (True, True, False):  # warm-up + one timing each, as harness.trial.measure_test_latency
        time_inference(res.model, method, data.test, train.eval_batch_size, device, cached)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
    Path(opts.result).write_text(json.dumps({"seed": opts.seed, "fit_s": res.wall_seconds, "peak_gpu_mib": peak,
                                             "process_s": time.perf_counter() - started}))


def part_sharing(opts) -> dict:
    out = Path(opts.out)
    cmd = [sys.executable, str(Path(__file__).resolve()), "trial", "--out", opts.out] + (["--quick"] if opts.quick else [])
    cmd += ["--cpu"] if opts.cpu else []
    result: dict = {"device": str(_device(opts))}
    for label, together in (("4 x gpu 0.25", True), ("1 x gpu 1", False)):
        t0 = time.perf_counter()
        procs, files = [], []
        for seed in range(4):
            files.append(out / f"trial-{'shared' if together else 'alone'}-{seed}.json")
            p = subprocess.Popen([*cmd, "--seed", str(seed), "--result", str(files[-1])])
            if together:
                procs.append(p)
            elif p.wait():
                raise RuntimeError(f"trial seed {seed} failed (rc {p.returncode})")
        for p in procs:
            if p.wait():
                raise RuntimeError(f"a shared trial failed (rc {p.returncode})")
        wall = time.perf_counter() - t0
        trials = [json.loads(f.read_text()) for f in files]
        result[label] = {"wall_s": wall, "trials_per_s": 4 / wall, "trials": trials}
    result["throughput_ratio"] = result["4 x gpu 0.25"]["trials_per_s"] / result["1 x gpu 1"]["trials_per_s"]
    return result


def part_tests(opts) -> dict:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_static_eval.py",
                           "tests/test_kv_cache.py"], cwd=REPO, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    return {"rc": proc.returncode, "summary": lines[-1] if lines else proc.stderr[-500:], "tail": proc.stdout[-3000:]}


def part_harness(opts) -> dict:
    """bench_harness.py --gpu itself, where Ray and DuckDB import (not in the device image by default)."""
    import importlib.util

    missing = [m for m in ("ray", "duckdb") if importlib.util.find_spec(m) is None]
    if missing or _device(opts).type != "cuda":
        why = [f"{', '.join(missing)} not importable"] if missing else []
        why += ["no GPU"] if _device(opts).type != "cuda" else []
        return {"skipped": "skipped: " + "; ".join(why)}
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    target = Path(opts.out) / "harness.json"
    proc = subprocess.run([sys.executable, "bench/bench_harness.py", "--gpu", "--epochs", "3", "--out", str(target)],
                          cwd=REPO, env=env, capture_output=True, text=True)
    gpu = target.with_name("harness_gpu.json")
    return {"rc": proc.returncode, "result": json.loads(gpu.read_text()) if gpu.exists() else None,
            "tail": (proc.stdout + proc.stderr)[-2000:]}


# ----------------------------------------------------------------------------- summary
def summary(opts) -> None:
    out = Path(opts.out)

    def read(name):
        path = out / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    print("\n=== device check summary ===")
    lat = read("latency")
    if lat:
        import pandas as pd

        t = pd.DataFrame(lat["table"])
        print(f"\nInference latency, test set ({lat['data']}, {lat['rows']} rows, {lat['device']}; s, +% vs K=0 "
              f"in the same column; peak GPU memory {lat['peak_gpu_mib']:.0f} MiB)")
        cols = [(c, g) for g in (True, False) for c in (True, False) if ((t.cached == c) & (t.graphs == g)).any()]
        names = {(True, True): "cached+graphs", (True, False): "cached eager", (False, True): "uncached+graphs",
                 (False, False): "uncached eager"}
        print(f"{'K':>2s} " + " ".join(f"{names[c]:>24s}" for c in cols))
        for k in sorted(t.reasoning_steps.unique()):
            cells = []
            for c, g in cols:
                row = t[(t.reasoning_steps == k) & (t.cached == c) & (t.graphs == g)].iloc[0]
                cells.append(f"{row.seconds:12.4f} ({row.increase_pct:+6.1f}%)")
            print(f"{k:2d} " + " ".join(f"{x:>24s}" for x in cells))
        for c, g in cols:
            part = t[(t.cached == c) & (t.graphs == g)].set_index("reasoning_steps").seconds
            if 0 in part.index and 2 in part.index:
                print(f"K=2 / K=0 {names[c, g]}: {part[2] / part[0]:.3f}"
                      + (" (target <= 1.10 with graphs; paper 1.035)" if c and g else ""))
    tr = read("training")
    if tr:
        print(f"\nTraining rows/s, SASRec + PRL K=2, d={tr['dim']}, batch {tr['batch']}, "
              f"{'bf16 autocast' if tr['amp_bf16'] else 'fp32'} ({tr['data']}, {tr['device']})")
        for mode, rate in tr["rows_per_s"].items():
            peak = tr["peak_gpu_mib"].get(mode, float("nan"))
            print(f"  {mode:8s} {rate:10.0f} rows/s  (x{rate / tr['rows_per_s']['padded']:.2f} padded; "
                  f"peak GPU {peak:.0f} MiB; batches {tr['picked_shapes'][mode]})")
    sh = read("sharing")
    if sh:
        print(f"\nGPU sharing, bench_harness --gpu's 4 trials as processes ({sh['device']})")
        for label in ("4 x gpu 0.25", "1 x gpu 1"):
            x = sh[label]
            peaks = ", ".join(f"{t['peak_gpu_mib']:.0f}" for t in x["trials"])
            fits = ", ".join(f"{t['fit_s']:.1f}" for t in x["trials"])
            print(f"  {label:13s} wall {x['wall_s']:7.1f} s, {x['trials_per_s']:.3f} trials/s; fit s per trial "
                  f"{fits}; peak GPU MiB per trial {peaks}")
        print(f"  aggregate throughput 4 x gpu 0.25 / 1 x gpu 1: {sh['throughput_ratio']:.2f}x")
    hb = read("harness")
    if hb:
        got = hb.get("result") or {}
        res = got.get("throughput_ratio_shared_over_exclusive")
        text = hb.get("skipped") or f"ratio {res if res is None else round(res, 2)}x (rc {hb.get('rc')})"
        for gpu in ("gpu=0.25", "gpu=1"):
            if "peak_gpu_mib_per_trial" in got.get(gpu, {}):
                text += f"; {gpu} peak GPU MiB per trial {got[gpu]['peak_gpu_mib_per_trial']}"
        print(f"  bench_harness.py --gpu (Ray + DuckDB): {text}")
    ts = read("tests")
    if ts:
        print(f"\nCUDA-graph tests (tests/test_static_eval.py, tests/test_kv_cache.py): {ts['summary']}")
    failed = [p for p in opts.parts.split(",") if read(p) is None]
    print(f"\nparts without a result: {', '.join(failed) or 'none'}; JSON in {out}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["bundle", "latency", "training", "sharing", "tests", "harness",
                                         "summary", "trial"])
    parser.add_argument("--out", default=os.environ.get("OUT") or "/tmp/device_check")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a CPU run of every part")
    parser.add_argument("--cpu", action="store_true", help="run on CPU even where CUDA is available")
    parser.add_argument("--repeats", type=int, default=10, help="latency: timed passes per setting")
    parser.add_argument("--parts", default="latency,training,sharing,tests,harness")
    parser.add_argument("--cache-dir", default=str(REPO / "data"), help="bundle: rearec.data cache folder")
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    Path(opts.out).mkdir(parents=True, exist_ok=True)
    if opts.part == "bundle":
        return bundle(opts)
    if opts.part == "summary":
        return summary(opts)
    import torch

    # the four sharing trials split the cores (on a 2-core box two OpenMP threads per process under load stall)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 4) if opts.part == "trial" else min(8, os.cpu_count() or 1))
    if opts.part == "trial":
        return part_trial(opts)
    parts = {"latency": part_latency, "training": part_training, "sharing": part_sharing, "tests": part_tests,
             "harness": part_harness}
    t0 = time.perf_counter()
    result = parts[opts.part](opts)
    result["seconds"] = time.perf_counter() - t0
    result["loadavg"] = os.getloadavg()
    (Path(opts.out) / f"{opts.part}.json").write_text(json.dumps(result, indent=1, default=str))
    print(f"{opts.part}: done in {result['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
