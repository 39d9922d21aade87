"""Text-based backbones against SASRec: test NDCG@20 of UniSRec / MoRec / SASRec base, mean +- 95 % CI.

    .venv/bin/python bench/text_backbones_compare.py            # the reduced setting below, ~25 min on 2 idle cores
    .venv/bin/python bench/text_backbones_compare.py --quick    # a 1-minute smoke run of the script itself

Data: ../shared/datasets/amazon2018-videogames through the generic source (items file = titles), the
default split (80 % / 90 % quantiles of the time span), max_len 50. Item texts are rendered and encoded by
rearec.data.text.item_embeddings with the offline default encoder (all-MiniLM-L6-v2, mean pooling), cached
under data/embeddings after the first run (~2.5 min for 13.9k titles), then PCA to --pca-dim.

The paper's setting (d = 256, batch 2048, up to 300 epochs, patience 10) does not fit 9 runs on 2 CPU
cores, so all three backbones share one reduced setting (printed and saved with the results):
- training rows of a seeded --user-fraction of the users (the same users for every run);
- early stopping on a seeded subsample of --valid-rows validation rows; test = the *full* test split;
- d = --hidden, batch --batch, at most --max-epochs epochs, patience --patience, other ModelConfig /
  TrainConfig defaults (dropout 0.5, lr 1e-3, ...); UniSRec / MoRec use their defaults (8 experts,
  adaptor dropout 0.2, inductive); seeds vary initialisation and batch order only.
Runs go to --workers processes with one torch thread each. Results: bench/results/text_backbones_compare.*
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATASET = ROOT.parent / "shared" / "datasets" / "amazon2018-videogames"
BACKBONES = ("sasrec", "unisrec", "morec")
LABELS = {"sasrec": "SASRec", "unisrec": "UniSRec", "morec": "MoRec"}


def spec() -> dict:
    return {"interactions": str(DATASET / "interactions.tsv.gz"), "items": str(DATASET / "items.tsv.gz")}


def reduced_data(args):
    """The dataset with training rows of a user subsample and a validation subsample (test untouched)."""
    from rearec.data import load_dataset

    data = load_dataset(spec(), cache_dir=ROOT / "data")
    rng = np.random.default_rng(args.subsample_seed)
    users = np.unique(data.train.user)
    keep = rng.choice(users, size=max(1, int(round(args.user_fraction * len(users)))), replace=False)
    train = data.train.take(np.flatnonzero(np.isin(data.train.user, keep)))
    n_valid = min(args.valid_rows, len(data.valid))
    valid = data.valid.take(np.sort(rng.choice(len(data.valid), size=n_valid, replace=False)))
    return dataclasses.replace(data, train=train, valid=valid)


def run_one(job: dict) -> dict:
    """One fit (runs in a worker process)."""
    import torch

    torch.set_num_threads(1)
    from rearec.config import MethodConfig, ModelConfig, TrainConfig
    from rearec.data.text import item_embeddings
    from rearec.train import fit

    args = argparse.Namespace(**job["args"])
    data = reduced_data(args)
    model_cfg = ModelConfig(backbone=job["backbone"], hidden_size=args.hidden, pca_dim=args.pca_dim)
    features = None
    if job["backbone"] != "sasrec":
        features = item_embeddings(data, encoder=model_cfg.text_encoder, pca_dim=model_cfg.pca_dim,
                                   cache_dir=ROOT / "data")
    train_cfg = TrainConfig(batch_size=args.batch, loss_chunk=args.batch, max_epochs=args.max_epochs,
                            patience=args.patience, seed=job["seed"])
    started = time.perf_counter()

    def progress(log) -> None:
        print(f"    {job['backbone']} seed {job['seed']} epoch {log.epoch}: loss {log.train_loss:.3f} "
              f"valid ndcg@20 {log.valid['ndcg@20']:.4f} ({log.seconds:.0f} s)", flush=True)

    result = fit(data, model_cfg, MethodConfig(name="base"), train_cfg, item_features=features, on_epoch=progress)
    return {
        "backbone": job["backbone"], "seed": job["seed"], "best_epoch": result.best_epoch,
        "epochs": len(result.epochs), "seconds": round(time.perf_counter() - started, 1),
        "valid": result.valid.metrics(), "test": result.test.metrics(),
        "valid_curve": [round(e.valid["ndcg@20"], 5) for e in result.epochs],
        "n_parameters": result.n_parameters,
    }


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t-interval."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(x.mean()), float("nan")
    return float(x.mean()), float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))


def summarize(runs: list[dict], setting: dict) -> str:
    lines = ["| backbone | test NDCG@20 (mean ± 95 % CI) | test Recall@20 | valid NDCG@20 | best epoch | s / run |",
             "|---|---|---|---|---|---|"]
    for bb in BACKBONES:
        rs = [r for r in runs if r["backbone"] == bb]
        if not rs:
            continue
        ndcg = mean_ci([r["test"]["ndcg@20"] for r in rs])
        rec = mean_ci([r["test"]["recall@20"] for r in rs])
        val = mean_ci([r["valid"]["ndcg@20"] for r in rs])
        lines.append(f"| {bb} (n={len(rs)}) | {ndcg[0]:.4f} ± {ndcg[1]:.4f} | {rec[0]:.4f} ± {rec[1]:.4f} | "
                     f"{val[0]:.4f} ± {val[1]:.4f} | {np.mean([r['best_epoch'] for r in rs]):.1f} | "
                     f"{np.mean([r['seconds'] for r in rs]):.0f} |")
    lines.append("")
    lines.append("setting: " + json.dumps(setting, sort_keys=True))
    return "\n".join(lines)


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for i, bb in enumerate(BACKBONES):
        vals = [r["test"]["ndcg@20"] for r in runs if r["backbone"] == bb]
        if not vals:
            continue
        m, ci = mean_ci(vals)
        ax.bar(i, m, yerr=0 if np.isnan(ci) else ci, capsize=6, color=["#888", "#3a7", "#37a"][i])
        ax.scatter([i] * len(vals), vals, color="k", s=10, zorder=3)
    ax.set_xticks(range(len(BACKBONES)), [LABELS[b] for b in BACKBONES])
    ax.set_ylabel("test NDCG@20 (mean ± 95 % CI)")
    ax.set_title("base backbones, amazon2018-videogames (reduced)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=150)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--max-epochs", type=int, default=8)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--pca-dim", type=int, default=128)
    parser.add_argument("--user-fraction", type=float, default=0.1)
    parser.add_argument("--valid-rows", type=int, default=10000)
    parser.add_argument("--subsample-seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "text_backbones_compare")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (1 seed, 1 epoch, 2%% of users)")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.max_epochs, args.user_fraction, args.valid_rows = [0], 1, 0.02, 500
        args.out = args.out.with_name(args.out.name + "_quick")
    setting = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}

    # Encode once in the parent (cached afterwards) so the workers only read the cache.
    from rearec.data import load_dataset
    from rearec.data.text import item_embeddings

    t0 = time.perf_counter()
    data = load_dataset(spec(), cache_dir=ROOT / "data")
    item_embeddings(data, cache_dir=ROOT / "data")
    reduced = reduced_data(args)
    print(f"data: {data.n_items} items; train rows {len(reduced.train)} of {len(data.train)} "
          f"({args.user_fraction:.0%} of users); valid rows {len(reduced.valid)}; test rows {len(data.test)}; "
          f"features ready in {time.perf_counter() - t0:.0f} s", flush=True)

    jobs = [{"backbone": bb, "seed": s, "args": setting} for s in args.seeds for bb in BACKBONES]
    runs = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with cf.ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(run_one, job): job for job in jobs}
        for fut in cf.as_completed(futures):
            run = fut.result()
            runs.append(run)
            print(f"[{time.perf_counter() - t0:6.0f} s] {run['backbone']:8s} seed {run['seed']}: "
                  f"test ndcg@20 {run['test']['ndcg@20']:.4f}  valid {run['valid']['ndcg@20']:.4f}  "
                  f"best epoch {run['best_epoch']}/{run['epochs']}  {run['seconds']:.0f} s  "
                  f"curve {run['valid_curve']}", flush=True)
            args.out.with_suffix(".json").write_text(json.dumps({"setting": setting, "runs": runs}, indent=1))
    table = summarize(runs, setting)
    args.out.with_suffix(".md").write_text(table + "\n")
    plot(runs, args.out.with_suffix(".png"))
    print(table)
    print(f"total {time.perf_counter() - t0:.0f} s; wrote {args.out}.{{json,md,png}}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
