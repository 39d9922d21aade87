"""Training throughput of SASRec + PRL (K = 2, d = 256), ours vs the authors' released code, in one run.

    .venv/bin/python bench/bench_core_throughput.py                  # ~4-5 min on the 2-core box
    .venv/bin/python bench/bench_core_throughput.py --batches 2 --repeats 2 --variants peer,paper

What is measured (see bench/README.md):
- Rows: ``rearec.data.load_dataset`` on shared/datasets/amazon2018-videogames (every prefix before the
  80 %-of-time-span cut, history truncated to 50). The same rows are written in the released reader's CSV
  format (bench/peer_reference.py) and read by *their* reader.
- Batches: one epoch's bucketed order (rearec.batching.train_order, seed 0) is cut into full batches of
  ``--batch-size``; ``--batches`` of them are picked by width strata (pick_batches) so their mean padded
  width follows the epoch's. Ours trains on these row sets; the released code on ``--peer-batches`` of the
  same sets (it pads every row to 50, so its cost per batch does not depend on which rows it gets).
- Each implementation runs in its own process (separate peak RSS), torch.set_num_threads(2). One warm-up
  batch, then per round every picked batch once; rounds alternate between the implementations (order
  rotated each round). Throughput = rows / seconds of a round; we report the median over rounds.
- Per batch, ours = zero_grad + rearec.train.train_step + Adam step (the body of rearec.train.fit's loop);
  theirs = the body of their BaseRunner.fit loop. Batch assembly / collation is excluded for both (theirs
  is reported separately). Epoch 3 is passed to both, so the released code's noisy view + RCL (active
  after its 2 warm-up epochs) is on, as it is for most of a training run.
- Variants of ours: ``paper`` (default formulation: the noisy view reuses the clean item encoding),
  ``released`` (re-encodes the items for the noisy view, as the released code's batch doubling does),
  ``padded`` (paper formulation, every batch padded to 50 like the released code: isolates bucketing; it
  runs on the released code's batches, since at width 50 the rows do not change the cost).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PEER_HOME = REPO.parent / "peer"
DATASET = {
    "interactions": str(REPO.parent / "shared/datasets/amazon2018-videogames/interactions.tsv.gz"),
    "items": str(REPO.parent / "shared/datasets/amazon2018-videogames/items.tsv.gz"),
}
VARIANTS = {  # name -> (formulation, batching)
    "paper": ("paper", "bucketed"),
    "released": ("released", "bucketed"),
    "padded": ("paper", "padded"),
}
TAU, ALPHA, GAMMA, K = 0.5, 5.0, 0.01, 2  # the fork's PRL defaults (τ 0.5, α 5, γ 0.01, K 2)


def load_rows(cache_dir: Path):
    sys.path.insert(0, str(REPO))
    from rearec.data import load_dataset

    return load_dataset(DATASET, cache_dir=cache_dir)


def pick_batches(data, batch_size: int, n: int, seed: int = 0) -> tuple[np.ndarray, dict]:
    """``n`` full batches of one bucketed epoch, stratified by padded width: the epoch's batches sorted by
    width are cut into ``n`` equal strata and each stratum gives the batch whose width is nearest to the
    stratum's mean, so the picked mean width follows the epoch's (cost is about linear in width)."""
    from rearec.batching import train_order

    lengths = data.train.lengths()
    order = [b for b in train_order(len(data.train), lengths, batch_size, "bucketed", np.random.default_rng(seed))
             if len(b) == batch_size]
    widths = np.array([max(int(lengths[b].max()), 1) for b in order])
    ranked = np.argsort(widths, kind="stable")
    picks = [int(s[np.argmin(np.abs(widths[s] - widths[s].mean()))]) for s in np.array_split(ranked, n)]
    info = {"epoch_full_batches": len(order), "epoch_mean_width": float(widths.mean()),
            "picked_widths": widths[picks].tolist(), "picked_mean_width": float(widths[picks].mean())}
    return np.stack([order[i] for i in picks]), info


# ----------------------------------------------------------------------------- our worker
def our_worker(opts: argparse.Namespace) -> None:
    """One process for every variant of ours (each round resets and reads the peak RSS, so the peak is
    per variant); keeping one process keeps the box's memory for the released code's large peak."""
    import torch

    sys.path.insert(0, str(REPO))
    from peer_reference import _ready, _serve, memory_status

    from rearec.config import MethodConfig, ModelConfig, TrainConfig
    from rearec.model import ReaRecModel
    from rearec.train import make_optimizer, seed_everything, train_step

    torch.set_num_threads(opts.threads)
    t0 = time.perf_counter()
    data = load_rows(Path(opts.cache_dir))
    index = np.load(opts.batches)
    peer_index = np.load(opts.peer_batches_file)
    lengths = data.train.lengths()
    model_cfg, train_cfg = ModelConfig(), TrainConfig()
    rounds, info, rows_per_round = {}, {}, {}
    seed_everything(0)
    for name in opts.variant.split(","):
        formulation, batching = VARIANTS[name]
        method = MethodConfig(name="prl", reasoning_steps=K, tau=TAU, alpha=ALPHA, gamma=GAMMA,
                              formulation=formulation)
        model = ReaRecModel.from_configs(model_cfg, method, data.n_items)
        optimizer = make_optimizer(model, train_cfg)
        batches = []
        for rows in (index if batching == "bucketed" else peer_index):  # padded: width 50, rows don't matter
            width = max(int(lengths[rows].max()), 1) if batching == "bucketed" else data.train.max_len
            history = data.train.history[rows, data.train.max_len - width:]
            batches.append((torch.from_numpy(np.ascontiguousarray(history)).long(),
                            torch.from_numpy(data.train.target[rows]).long()))

        def one(batch, model=model, method=method, optimizer=optimizer) -> float:
            # == the body of rearec.train.fit's batch loop (no autocast, no clipping: CPU defaults)
            optimizer.zero_grad(set_to_none=True)
            loss = train_step(model, method, batch[0], batch[1], opts.epoch, train_cfg.loss_chunk)
            optimizer.step()
            return loss

        model.train()
        one(batches[0])  # warm-up
        rounds[name] = lambda one=one, batches=batches: [one(b) for b in batches]
        rows_per_round[name] = sum(len(b[1]) for b in batches)
        info[name] = {"formulation": formulation, "batching": batching,
                      "widths": [int(b[0].shape[1]) for b in batches]}
    _ready({
        "impl": "ours", "variants": info, "n_items": data.n_items, "train_rows": len(data.train),
        "batch_rows": int(index.shape[1]), "setup_s": time.perf_counter() - t0, "epoch": opts.epoch,
        "loss_chunk": train_cfg.loss_chunk, "threads": torch.get_num_threads(), "mem_after_warmup": memory_status(),
    })
    _serve(rounds, rows_per_round)


# ----------------------------------------------------------------------------- orchestrator
class Worker:
    def __init__(self, name: str, cmd: list[str], log: Path):
        self.name = name
        env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
        self.log = open(log, "w")  # noqa: SIM115 (closed in finish)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True, env=env, cwd=REPO)
        self.info = self._expect("ready")

    def _expect(self, tag: str) -> dict:
        for line in self.proc.stdout:
            if line.startswith(tag + " "):
                return json.loads(line[len(tag) + 1:])
        self.proc.wait()
        raise RuntimeError(f"{self.name}: worker ended (rc {self.proc.returncode}; -9 is often the OOM killer); "
                           f"see {self.log.name}")

    def round(self, variant: str) -> dict:
        self.proc.stdin.write(f"round {variant}\n")
        self.proc.stdin.flush()
        return self._expect("result")

    def finish(self) -> dict:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        final = self._expect("final")
        self.proc.wait(timeout=60)
        self.log.close()
        return final


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--batches", type=int, default=6, help="our batches timed per round (width strata)")
    parser.add_argument("--peer-batches", type=int, default=1,
                        help="the released code's batches per round, taken from ours (it pads every row to 50, "
                             "so its cost does not depend on which rows)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; the median round is reported")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--variants", default="peer,paper,released,padded",
                        help="comma list of: peer, " + ", ".join(VARIANTS))
    parser.add_argument("--epoch", type=int, default=3, help="epoch given to both (> 2: released noise/RCL on)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peer-src", default=str(PEER_HOME / "ReaRec/src"))
    parser.add_argument("--peer-python", default=str(PEER_HOME / "venv/bin/python"))
    parser.add_argument("--workdir", default=str(PEER_HOME / "run"), help="peer CSVs, batch indices, logs, JSON")
    parser.add_argument("--cache-dir", default=str(PEER_HOME / "cache"), help="rearec.data cache folder")
    parser.add_argument("--batches-file", help=argparse.SUPPRESS)
    parser.add_argument("--peer-batches-file", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.worker:
        opts.variant = opts.worker
        opts.batches = opts.batches_file
        our_worker(opts)
        return

    work = Path(opts.workdir)
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    started = time.perf_counter()
    data = load_rows(Path(opts.cache_dir))
    index, pick_info = pick_batches(data, opts.batch_size, opts.batches)
    batches_file = work / "batches.npy"
    np.save(batches_file, index)
    k = max(1, min(opts.peer_batches, len(index)))
    peer_index = index[np.unique(np.linspace(0, len(index) - 1, k).round().astype(int))]
    peer_file = work / "peer_batches.npy"
    np.save(peer_file, peer_index)
    names = [v.strip() for v in opts.variants.split(",") if v.strip()]
    ours = [n for n in names if n != "peer"]
    for name in ours:
        if name not in VARIANTS:
            raise SystemExit(f"--variants: unknown variant {name!r}; choose from peer, {', '.join(VARIANTS)}")
    workers: dict[str, Worker] = {}
    if "peer" in names:
        from peer_reference import CSV_NAME, write_peer_data

        write_peer_data(data, work / "peer-data", CSV_NAME)
        cmd = [opts.peer_python, str(REPO / "bench/peer_reference.py"), "worker", "--src", opts.peer_src,
               "--batches", str(peer_file), "--epoch", str(opts.epoch), "--threads", str(opts.threads),
               "--", "--path", str(work / "peer-data"), "--dataset", CSV_NAME,
               "--batch_size", str(opts.batch_size), "--temperature", str(TAU), "--temp_scale", str(ALPHA),
               "--noise_factor", str(GAMMA), "--reason_step", str(K), "--emb_size", "256"]
        print("starting the released code's worker (their reader + model; ~1-2 min) ...", flush=True)
        workers["peer"] = Worker("peer", cmd, work / "worker-peer.log")
    if ours:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", ",".join(ours), "--batches-file",
               str(batches_file), "--peer-batches-file", str(peer_file), "--epoch", str(opts.epoch), "--threads", str(opts.threads),
               "--cache-dir", opts.cache_dir]
        print(f"starting our worker ({', '.join(ours)}) ...", flush=True)
        workers["ours"] = Worker("ours", cmd, work / "worker-ours.log")
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(opts.repeats):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate: no variant keeps a fixed slot
        for name in order:
            res = workers["peer" if name == "peer" else "ours"].round(name)
            runs[name].append(res)
            print(f"round {r + 1} {name:9s} {res['seconds']:7.2f} s  {res['rows'] / res['seconds']:8.0f} rows/s  "
                  f"peak RSS {res['peak_rss_mib']:.0f} MiB", flush=True)
    for w in workers.values():
        w.finish()
    load_after = os.getloadavg()

    summary = {"pick": pick_info, "batch_size": opts.batch_size, "batches": opts.batches,
               "peer_batches": len(peer_index), "repeats": opts.repeats,
               "epoch": opts.epoch, "loadavg_before": load_before, "loadavg_after": load_after,
               "wall_s": time.perf_counter() - started,
               "workers": {k: w.info for k, w in workers.items()}, "results": {}}
    for name in names:
        rates = [x["rows"] / x["seconds"] for x in runs[name]]
        summary["results"][name] = {
            "rows_per_s_median": float(np.median(rates)), "rows_per_s": rates,
            "s_per_batch_median": float(np.median([x["seconds"] * opts.batch_size / x["rows"] for x in runs[name]])),
            "rows_per_cpu_s_median": float(np.median([x["rows"] / x["cpu_seconds"] for x in runs[name]])),
            "peak_rss_mib": max(x["peak_rss_mib"] for x in runs[name]),
            "rss_before_mib": min(x["rss_before_mib"] for x in runs[name]),
        }
    (work / "throughput.json").write_text(json.dumps(summary, indent=2))

    res = summary["results"]
    peer = res.get("peer", {}).get("rows_per_s_median")
    print(f"\nrows: {len(data.train)} train rows, {data.n_items} items; epoch {opts.epoch}; ours: {opts.batches} "
          f"batches x {opts.batch_size} rows, padded widths {pick_info['picked_widths']} (mean "
          f"{pick_info['picked_mean_width']:.1f}; the epoch's {pick_info['epoch_full_batches']} full batches: "
          f"mean {pick_info['epoch_mean_width']:.1f}); released code and 'padded': {summary['peer_batches']} of them, width 50")
    peer_cpu = res.get("peer", {}).get("rows_per_cpu_s_median")
    print(f"{'impl':10s} {'rows/s (median)':>16s} {'s/batch':>8s} {'x peer':>7s} {'rows/CPU-s':>11s} {'x peer':>7s} "
          f"{'peak RSS MiB':>13s} {'idle RSS MiB':>13s}  per-round rows/s")
    for name, x in res.items():
        ratio = f"{x['rows_per_s_median'] / peer:7.2f}" if peer else "      -"
        cpu_ratio = f"{x['rows_per_cpu_s_median'] / peer_cpu:7.2f}" if peer_cpu else "      -"
        print(f"{name:10s} {x['rows_per_s_median']:16.0f} {x['s_per_batch_median']:8.2f} {ratio} "
              f"{x['rows_per_cpu_s_median']:11.0f} {cpu_ratio} {x['peak_rss_mib']:13.0f} {x['rss_before_mib']:13.0f}  "
              + " ".join(f"{v:.0f}" for v in x["rows_per_s"]))
    if "peer" in workers:
        print(f"peer collate (their Dataset + collate_batch, excluded above): "
              f"{workers['peer'].info['collate_s_per_batch']:.2f} s/batch")
    print(f"loadavg before {load_before}, after {load_after}; wall {summary['wall_s']:.0f} s; "
          f"JSON: {work / 'throughput.json'}")


if __name__ == "__main__":
    main()
