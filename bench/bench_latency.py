"""Reasoning overhead at inference: test-set full-ranking time for K = 0..5, KV-cached vs uncached.

    .venv/bin/python bench/bench_latency.py                     # K = 0..5, 5 repeats, ~3-4 min on 2 cores
    .venv/bin/python bench/bench_latency.py --steps 0,2,5 --repeats 3 --threads 1 --interleaved
    .venv/bin/python bench/bench_latency.py --steps 0,2,5 --threads 1 --before /tmp/old   # old code side by side
    .venv/bin/python bench/bench_latency.py --device cuda --graphs both                    # Table 4 on a GPU

Runs ``rearec.latency.measure_latency`` (one warm-up pass, then the median of ``--repeats`` passes over all
test rows: encode, reason K steps, score all items, rank the target) on the Video Games test rows
(``rearec.data.load_dataset`` on shared/datasets/amazon2018-videogames), SASRec + PRL, d = 256 and the
other ModelConfig defaults, torch.set_num_threads(--threads). ``--interleaved`` times every setting once
per round instead, so load that drifts hits all alike; ``--before PATH`` adds the ``rearec`` package found
in PATH (e.g. ``git archive HEAD rearec | tar -x -C PATH`` before a change) to those rounds, imported
under another name, with identically initialised models.

Also printed: the FLOP model of the same batches (per row: T item tokens and K reasoning tokens at
2 layers x (8 d^2 + 4 d ffn) FLOPs, attention 4 d per key and layer, scoring 2 d N), its K = 2 / K = 0 and
uncached / cached ratios, and the targets of issue 13: cached K = 2 / K = 0 within 2 % of the FLOP
ratio, uncached / cached at K = 5 >= 3.5 (CPU); with graphs on a GPU, K = 2 / K = 0 <= 1.10.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASET = {
    "interactions": str(REPO.parent / "shared/datasets/amazon2018-videogames/interactions.tsv.gz"),
    "items": str(REPO.parent / "shared/datasets/amazon2018-videogames/items.tsv.gz"),
}


def load_code(path: str, name: str):
    """Import the ``rearec`` package under ``path`` as ``name`` (its relative imports stay inside it)."""
    root = Path(path) / "rearec"
    spec = importlib.util.spec_from_file_location(name, root / "__init__.py", submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def flops(rows, steps: int, cfg, n_items: int, batch_size: int, cached: bool) -> float:
    """FLOPs of time_inference on ``rows`` (eval_batches' trimmed widths), SASRec, one scored representation."""
    import numpy as np

    d, ffn, layers = cfg.hidden_size, cfg.ffn_size, cfg.num_layers
    token = layers * (8 * d * d + 4 * d * ffn)  # qkv + out projections, FFN: 2 FLOPs per multiply-add
    lengths = np.sort(rows.lengths())
    total = 0.0
    for i in range(0, len(lengths), batch_size):
        n, T = len(lengths[i : i + batch_size]), max(int(lengths[i : i + batch_size].max()), 1)
        if cached:  # T item tokens over T keys each, then K steps of one token over T + k keys
            per_row = T * token + layers * 4 * d * T * T
            per_row += sum(token + layers * 4 * d * (T + k) for k in range(1, steps + 1))
        else:  # step k re-encodes T + k tokens
            per_row = sum((T + k) * token + layers * 4 * d * (T + k) ** 2 for k in range(steps + 1))
        total += n * (per_row + 2 * d * n_items)
    return total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="0,1,2,3,4,5", help="comma list of K")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1024, help="eval batch size (released code: 1024)")
    parser.add_argument("--split", default="test", choices=["test", "valid"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", default=str(REPO.parent / "peer/cache"), help="rearec.data cache folder")
    parser.add_argument("--json", help="also write the table here")
    parser.add_argument("--interleaved", action="store_true",
                        help="instead of measure_latency's K-by-K order, time every (code, K, cached) once per "
                             "round (rearec.latency.time_inference), so load that drifts hits every setting "
                             "alike; also reports process CPU seconds (with --threads 1 they barely depend on load)")
    parser.add_argument("--before", help="folder holding an older rearec/ package to time side by side (interleaved)")
    parser.add_argument("--now", help="import the current rearec/ from this folder (a snapshot) instead of the repo")
    parser.add_argument("--graphs", default="on", choices=["on", "off", "both"],
                        help="CUDA graphs (TrainConfig.cuda_graphs; no effect on CPU)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the paper's 1.035 is on an A100)")
    parser.add_argument("--rows", help="read the rows from this .npz (written by --save-rows) instead of the dataset")
    parser.add_argument("--save-rows", help="write the chosen rows and n_items to this .npz, e.g. for another machine")
    opts = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    if opts.now:
        sys.path.insert(0, opts.now)
    import numpy as np
    import torch

    from rearec.config import ModelConfig
    from rearec.data import Rows, load_dataset
    from rearec.latency import measure_latency

    torch.set_num_threads(opts.threads)
    load_before = os.getloadavg()
    started = time.perf_counter()
    if opts.rows:
        saved = np.load(opts.rows)
        rows = Rows(**{k: saved[k] for k in ("user", "history", "target", "timestamp", "history_len")})
        n_items = int(saved["n_items"])
    else:
        data = load_dataset(DATASET, cache_dir=opts.cache_dir)
        rows, n_items = getattr(data, opts.split), data.n_items
    if opts.save_rows:
        np.savez_compressed(opts.save_rows, n_items=n_items, user=rows.user, history=rows.history,
                            target=rows.target, timestamp=rows.timestamp, history_len=rows.history_len)
    steps = [int(k) for k in opts.steps.split(",")]
    model_cfg = ModelConfig(hidden_size=256)
    graphs = {"on": (True,), "off": (False,), "both": (True, False)}[opts.graphs]
    codes = {"now": "rearec"}
    if opts.before:
        codes["before"] = load_code(opts.before, "rearec_before").__name__
    if opts.interleaved or opts.before:
        frame = interleaved(rows, n_items, steps, opts.repeats, opts.batch_size, opts.device, codes, graphs)
    else:
        frame = measure_latency(rows, n_items, model_cfg, method="prl", steps=steps, repeats=opts.repeats,
                                batch_size=opts.batch_size, device=opts.device, graphs=graphs)
        frame["code"] = "now"
    load_after = os.getloadavg()

    where = torch.cuda.get_device_name() if opts.device.startswith("cuda") else f"cpu, {torch.get_num_threads()} threads"
    print(f"{opts.split} rows: {len(rows)}, items: {n_items}, mean history length {rows.lengths().mean():.2f}; "
          f"d = {model_cfg.hidden_size}, batch {opts.batch_size}, {where}, torch {torch.__version__}, "
          f"median of {opts.repeats}")
    f = {(k, c): flops(rows, k, model_cfg, n_items, opts.batch_size, c) for k in steps for c in (True, False)}
    if 0 in steps:
        print("FLOP model (GFLOP): " + "; ".join(f"K={k}: cached {f[k, True] / 1e9:.1f}, uncached {f[k, False] / 1e9:.1f}"
                                                 for k in steps))
    verdicts = report(frame, f, steps)
    print(f"loadavg before {load_before}, after {load_after}; wall {time.perf_counter() - started:.0f} s")
    if opts.json:
        Path(opts.json).write_text(json.dumps({
            "rows": len(rows), "n_items": n_items, "device": where, "repeats": opts.repeats, "batch_size": opts.batch_size,
            "table": frame.to_dict(orient="records"), "verdicts": verdicts,
            "loadavg_before": load_before, "loadavg_after": load_after}, indent=2, default=str))


def report(frame, f, steps) -> dict:
    """Print one table per (code, graphs) and the issue's targets; returns the verdicts."""
    verdicts = {}
    for (code, graphed), part in frame.groupby(["code", "graphs"], sort=False):
        table = part.pivot(index="reasoning_steps", columns="cached", values="seconds")
        cpu = part.pivot(index="reasoning_steps", columns="cached", values="cpu_seconds") if "cpu_seconds" in part else None
        label = f"{code}{', graphs' if graphed else ''}"
        print(f"\n[{label}] {'K':>2s} {'cached s':>9s} {'+% vs K=0':>10s} {'uncached s':>11s} {'+% vs K=0':>10s} "
              f"{'uncached/cached':>16s} {'FLOP ratio':>11s}" + ("  cpu-s cached / uncached" if cpu is not None else ""))
        for k in table.index:
            c, u = table.loc[k, True], table.loc[k, False]
            c0, u0 = table.loc[0, True] if 0 in table.index else float("nan"), table.loc[0, False] if 0 in table.index else float("nan")
            line = (f"{'':{len(label) + 2}s} {k:2d} {c:9.3f} {100 * (c / c0 - 1):9.1f}% {u:11.3f} {100 * (u / u0 - 1):9.1f}% "
                    f"{u / c:16.2f} {f[k, False] / f[k, True]:11.2f}")
            if cpu is not None:
                line += f"  {cpu.loc[k, True]:.3f} / {cpu.loc[k, False]:.3f}"
            print(line)
        v = verdicts.setdefault(label, {})
        if 0 in table.index and 2 in table.index:
            ratio, model_ratio = table.loc[2, True] / table.loc[0, True], f[2, True] / f[0, True]
            v["k2_over_k0_cached"], v["k2_over_k0_flops"] = ratio, model_ratio
            off = ratio / model_ratio - 1
            print(f"K=2 / K=0 (cached): {ratio:.3f}; FLOP ratio {model_ratio:.3f}; {100 * off:+.1f} % "
                  f"(target within 2 %) {'OK' if abs(off) <= 0.02 else 'MISSED'}"
                  + (f"; graphs target <= 1.10 {'OK' if ratio <= 1.10 else 'MISSED'}" if graphed else ""))
            if cpu is not None:
                cratio = cpu.loc[2, True] / cpu.loc[0, True]
                v["k2_over_k0_cached_cpu_time"] = cratio
                print(f"  in process CPU time: {cratio:.3f} ({100 * (cratio / model_ratio - 1):+.1f} % vs FLOP ratio)")
        if 5 in table.index:
            speed = table.loc[5, False] / table.loc[5, True]
            v["k5_uncached_over_cached"], v["k5_flops"] = speed, f[5, False] / f[5, True]
            print(f"K=5 uncached / cached: {speed:.2f}x; FLOP ratio {f[5, False] / f[5, True]:.2f}x "
                  f"(target >= 3.5x) {'OK' if speed >= 3.5 else 'MISSED'}")
            if cpu is not None:
                v["k5_uncached_over_cached_cpu_time"] = cpu.loc[5, False] / cpu.loc[5, True]
                print(f"  in process CPU time: {cpu.loc[5, False] / cpu.loc[5, True]:.2f}x")
    return verdicts


def interleaved(rows, n_items, steps, repeats, batch_size, device, codes, graphs):
    """measure_latency's table, but each round times every (code, graphs, K, cached) once, in a rotating
    order; ``codes`` maps a label to an importable rearec package name."""
    import numpy as np
    import pandas as pd
    import torch

    settings = []
    for code, package in codes.items():
        config = importlib.import_module(f"{package}.config")
        latency = importlib.import_module(f"{package}.latency")
        model_mod = importlib.import_module(f"{package}.model")
        for K in steps:  # the same models as measure_latency: seed 0, fresh init per K
            torch.manual_seed(0)
            cfg = config.MethodConfig(name="base" if K == 0 else "prl", reasoning_steps=K)
            model = model_mod.ReaRecModel.from_configs(config.ModelConfig(hidden_size=256), cfg, n_items).to(device)
            for g in graphs if code == "now" else (False,):
                kwargs = {"graphs": g} if code == "now" else {}
                used = g and torch.device(device).type == "cuda"
                settings += [(code, used, K, cached, model, cfg, latency.time_inference, kwargs) for cached in (True, False)]
    runs = {s[:4]: ([], []) for s in settings}
    for r in range(repeats + 1):  # round 0 is the warm-up (and the graph capture)
        order = settings[r % len(settings):] + settings[: r % len(settings)]
        for code, used, K, cached, model, cfg, time_inference, kwargs in order:
            cpu = time.process_time()
            wall = time_inference(model, cfg, rows, batch_size, device, cached, **kwargs)
            if r:
                runs[code, used, K, cached][0].append(wall)
                runs[code, used, K, cached][1].append(time.process_time() - cpu)
    records = [{"code": code, "graphs": used, "reasoning_steps": K, "cached": c, "seconds": float(np.median(w)),
                "runs": w, "cpu_seconds": float(np.median(p))} for (code, used, K, c), (w, p) in runs.items()]
    return pd.DataFrame(records)


if __name__ == "__main__":
    main()
