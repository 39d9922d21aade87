"""Reasoning overhead at inference: test-set full-ranking time for K = 0..5, KV-cached vs uncached.

    .venv/bin/python bench/bench_latency.py                     # K = 0..5, 5 repeats, ~3-4 min on 2 cores
    .venv/bin/python bench/bench_latency.py --steps 0,2,5 --repeats 3

Runs ``rearec.latency.measure_latency`` (one warm-up pass, then the median of ``--repeats`` passes over all
test rows: encode, reason K steps, score all items, rank the target) on the Video Games test rows
(``rearec.data.load_dataset`` on shared/datasets/amazon2018-videogames), SASRec + PRL, d = 256 and the
other ModelConfig defaults, torch.set_num_threads(2). Targets (issue 2, "Speed"): K = 2 / K = 0 <= 1.05
(cached; the paper reports 1.035 on an A100), uncached / cached at K = 5 >= 3.
"""

from __future__ import annotations

import argparse
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
                        help="instead of measure_latency's K-by-K order, time every (K, cached) once per round "
                             "(rearec.latency.time_inference), so load that drifts hits every setting alike; "
                             "also reports process CPU seconds (with --threads 1 they barely depend on other load)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the paper's 1.035 is on an A100)")
    parser.add_argument("--rows", help="read the rows from this .npz (written by --save-rows) instead of the dataset")
    parser.add_argument("--save-rows", help="write the chosen rows and n_items to this .npz, e.g. for another machine")
    opts = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
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
    if opts.interleaved:
        frame = interleaved(rows, n_items, model_cfg, steps, opts.repeats, opts.batch_size, opts.device)
    else:
        frame = measure_latency(rows, n_items, model_cfg, method="prl", steps=steps, repeats=opts.repeats,
                                batch_size=opts.batch_size, device=opts.device)
    load_after = os.getloadavg()

    if opts.interleaved:
        cpu = frame.pivot(index="reasoning_steps", columns="cached", values="cpu_seconds")
        print("process CPU seconds (median): " + "; ".join(
            f"K={k}: cached {cpu.loc[k, True]:.3f}, uncached {cpu.loc[k, False]:.3f}" for k in cpu.index))
        if 0 in cpu.index and 2 in cpu.index:
            print(f"CPU-time K=2 / K=0 (cached): {cpu.loc[2, True] / cpu.loc[0, True]:.3f}")
        if 5 in cpu.index:
            print(f"CPU-time K=5 uncached / cached: {cpu.loc[5, False] / cpu.loc[5, True]:.2f}x")
    where = torch.cuda.get_device_name() if opts.device.startswith("cuda") else f"cpu, {torch.get_num_threads()} threads"
    print(f"{opts.split} rows: {len(rows)}, items: {n_items}, mean history length {rows.lengths().mean():.2f}; "
          f"d = {model_cfg.hidden_size}, batch {opts.batch_size}, {where}, torch {torch.__version__}, "
          f"median of {opts.repeats}")
    table = frame.pivot(index="reasoning_steps", columns="cached", values="seconds")
    inc = frame.pivot(index="reasoning_steps", columns="cached", values="increase_pct")
    print(f"{'K':>2s} {'cached s':>9s} {'+% vs K=0':>10s} {'uncached s':>11s} {'+% vs K=0':>10s} {'uncached/cached':>16s}")
    for k in table.index:
        c, u = table.loc[k, True], table.loc[k, False]
        print(f"{k:2d} {c:9.3f} {inc.loc[k, True]:9.1f}% {u:11.3f} {inc.loc[k, False]:9.1f}% {u / c:16.2f}")
    verdicts = {}
    if 0 in table.index and 2 in table.index:
        ratio = table.loc[2, True] / table.loc[0, True]
        verdicts["k2_over_k0_cached"] = ratio
        print(f"K=2 / K=0 (cached): {ratio:.3f}  (target <= 1.05; paper 1.035 on an A100) "
              f"{'OK' if ratio <= 1.05 else 'MISSED'}")
    if 5 in table.index:
        speed = table.loc[5, False] / table.loc[5, True]
        verdicts["k5_uncached_over_cached"] = speed
        print(f"K=5 uncached / cached: {speed:.2f}x  (target >= 3x) {'OK' if speed >= 3 else 'MISSED'}")
    print(f"loadavg before {load_before}, after {load_after}; wall {time.perf_counter() - started:.0f} s")
    if opts.json:
        Path(opts.json).write_text(json.dumps({
            "rows": len(rows), "n_items": n_items, "device": where, "repeats": opts.repeats, "batch_size": opts.batch_size,
            "table": frame.to_dict(orient="records"), "verdicts": verdicts,
            "loadavg_before": load_before, "loadavg_after": load_after}, indent=2))


def interleaved(rows, n_items, model_cfg, steps, repeats, batch_size, device):
    """measure_latency's table, but each round times every (K, cached) setting once, in a rotating order."""
    import numpy as np
    import pandas as pd
    import torch

    from rearec.config import MethodConfig
    from rearec.latency import time_inference
    from rearec.model import ReaRecModel

    settings = []
    for K in steps:  # the same models as measure_latency: seed 0, fresh init per K
        torch.manual_seed(0)
        cfg = MethodConfig(name="base" if K == 0 else "prl", reasoning_steps=K)
        model = ReaRecModel.from_configs(model_cfg, cfg, n_items).to(device)
        settings += [(K, cached, model, cfg) for cached in (True, False)]
    runs = {(K, c): ([], []) for K, c, _, _ in settings}
    for r in range(repeats + 1):  # round 0 is the warm-up
        order = settings[r % len(settings):] + settings[: r % len(settings)]
        for K, cached, model, cfg in order:
            cpu = time.process_time()
            wall = time_inference(model, cfg, rows, batch_size, device, cached)
            if r:
                runs[K, cached][0].append(wall)
                runs[K, cached][1].append(time.process_time() - cpu)
    records = [{"reasoning_steps": K, "cached": c, "seconds": float(np.median(w)), "runs": w,
                "cpu_seconds": float(np.median(p))} for (K, c), (w, p) in runs.items()]
    frame = pd.DataFrame(records)
    base = frame[frame.reasoning_steps == 0].set_index("cached")["seconds"]
    frame["increase_pct"] = [100.0 * (s / base[c] - 1.0) if c in base.index else float("nan")
                             for s, c in zip(frame.seconds, frame.cached, strict=True)]
    return frame


if __name__ == "__main__":
    main()
