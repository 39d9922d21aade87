"""Sanity check of the embedded synthetic dataset: a trained SASRec must clearly beat most-popular, and the
item popularity must have a long tail. Also times the quickstart's three configurations.

    .venv/bin/python bench/synthetic_sanity.py [--epochs 20] [--quickstart] [--device cuda] [--threads 2]

Prints the dataset's Table 1 statistics, long-tail figures (share of training interactions on the top
20 % items, Gini), test NDCG@20 / Recall@20 of MostPop and of SASRec (base), and with --quickstart the
wall time of SASRec base / ERL / PRL at K = 2 with the quickstart study's small settings.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from rearec.config import MethodConfig, ModelConfig, TrainConfig
from rearec.data import dataset_stats, format_stats, load_dataset
from rearec.metrics import summarize, target_ranks
from rearec.train import fit


def most_popular(data) -> dict[str, float]:
    """Every test row gets the same ranking: training popularity, padding last (pessimistic ties)."""
    scores = torch.as_tensor(data.item_popularity(), dtype=torch.float32)
    scores[0] = -torch.inf
    target = torch.as_tensor(data.test.target)
    ranks = target_ranks(scores.expand(len(target), -1), target).numpy()
    return summarize(ranks)


def show(log) -> None:
    print(f"  epoch {log.epoch}: loss {log.train_loss:.3f}, valid NDCG@20 {log.valid['ndcg@20']:.4f} "
          f"({log.seconds:.1f} s){' *' if log.is_best else ''}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="max epochs for the SASRec check (patience 3)")
    parser.add_argument("--quickstart", action="store_true", help="also time base / ERL / PRL (K=2), 8 epochs")
    parser.add_argument("--cache-dir", default=None, help="dataset cache (default: a temporary folder)")
    parser.add_argument("--device", default="cpu", help="device for the SASRec check (the quickstart runs on CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--training", default="bucketed", choices=["bucketed", "padded", "packed"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cache = args.cache_dir or tempfile.mkdtemp(prefix="rearec-synth-")
    t0 = time.perf_counter()
    data = load_dataset("synthetic", cache)
    print(f"prepared + loaded synthetic in {time.perf_counter() - t0:.2f} s")
    stats = dataset_stats(data)
    print(format_stats(stats))
    pop = np.sort(data.item_popularity()[1:])[::-1]
    print(f"\nlong tail: top 20 % of items hold {stats['top20_item_share']:.1%} of training interactions; "
          f"Gini {stats['item_gini']:.3f}; the least popular half holds {pop[len(pop) // 2:].sum() / pop.sum():.1%}")

    baseline = most_popular(data)
    model = ModelConfig(hidden_size=64, ffn_size=128, num_layers=2, num_heads=2)
    train = TrainConfig(batch_size=512, max_epochs=args.epochs, patience=3, seed=0, training=args.training)
    t0, c0 = time.perf_counter(), time.process_time()
    print()
    result = fit(data, model, MethodConfig(), train, device=args.device, on_epoch=show)
    sasrec = result.test.metrics()
    print(f"SASRec base on {args.device}: best epoch {result.best_epoch} of {len(result.epochs)}, {time.perf_counter() - t0:.1f} s "
          f"wall, {time.process_time() - c0:.1f} s CPU")
    print("| model | test NDCG@10 | test NDCG@20 | test Recall@10 | test Recall@20 |")
    print("|---|---:|---:|---:|---:|")
    for name, m in (("MostPop", baseline), ("SASRec (base)", sasrec)):
        print(f"| {name} | {m['ndcg@10']:.4f} | {m['ndcg@20']:.4f} | {m['recall@10']:.4f} | {m['recall@20']:.4f} |")
    ratio = sasrec["ndcg@20"] / max(baseline["ndcg@20"], 1e-12)
    print(f"SASRec / MostPop NDCG@20 = {ratio:.1f}x")

    if args.quickstart:
        quick = TrainConfig(batch_size=512, max_epochs=8, patience=3, seed=0, training=args.training)
        methods = [MethodConfig(), MethodConfig(name="erl", reasoning_steps=2, kl_lambda=0.05),
                   MethodConfig(name="prl", reasoning_steps=2, tau=0.5, alpha=5.0, gamma=0.01)]
        total, total_cpu = 0.0, 0.0
        print(f"\nquickstart on CPU, {torch.get_num_threads()} torch threads, training={args.training}")
        print("| quickstart trial | epochs | wall s | CPU s | test NDCG@20 |")
        print("|---|---:|---:|---:|---:|")
        for method in methods:
            t0, c0 = time.perf_counter(), time.process_time()
            res = fit(data, model, method, quick)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            total, total_cpu = total + seconds, total_cpu + cpu
            print(f"| {method.name} K={method.reasoning_steps} | {len(res.epochs)} | {seconds:.1f} | {cpu:.1f} | "
                  f"{res.test.metrics()['ndcg@20']:.4f} |")
        print(f"quickstart total: {total:.1f} s wall, {total_cpu:.1f} s CPU")


if __name__ == "__main__":
    main()
