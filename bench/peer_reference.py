"""The authors' released ReaRec (runnable fork Honghui-BAO/ReaRec) as a throughput reference.

Two roles:

1. ``write_peer_data(data, folder, name)`` (imported by bench_core_throughput.py, our venv): writes our
   processed rows in the released reader's format, ``<folder>/<name>/<name>.{train,valid,test}.remap.csv``
   with ``user_id, item_id, history_id`` (space-separated ids, oldest first; docs/released-code.md,
   "The released reader's files"). Our ids 1..n become 0..n-1, so their reader's ``n_items = max id + 2``
   gives n real items plus their pad row n, i.e. the same vocabulary (their softmax also carries the pad row).

2. ``python bench/peer_reference.py worker ...`` (run with the *peer's* venv, never ours): imports their
   ``models.PRL`` / ``helpers.BaseReader`` / ``helpers.BaseRunner`` from ``--src``, reads the CSVs with their
   reader, builds their model and optimizer from their own argument parsers, collates the given batches
   with their ``Dataset.collate_batch`` (before timing), and then times exactly the body of their
   ``BaseRunner.fit`` loop per batch: ``zero_grad; out = model(batch, epoch); loss = model.loss(out);
   loss.backward(); optimizer.step(); loss.detach().cpu().numpy()``. The orchestrator drives it through a
   line protocol on stdin/stdout (see ``bench/worker_protocol`` in bench_core_throughput.py).

Their code is never copied into this repository; the worker imports it from outside at run time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

CSV_NAME = "VideoGames"


def _history_strings(history: np.ndarray) -> list[str]:
    """Left-padded (N, L) rows (0 = pad, ids 1..n) -> 'a b c' strings of 0-based ids, oldest first."""
    out = []
    for row in history:
        ids = row[row > 0] - 1
        out.append(" ".join(map(str, ids.tolist())))
    return out


def write_peer_data(data, folder: str | os.PathLike, name: str = CSV_NAME) -> Path:
    """Write ``data`` (rearec.data.SplitData) as the released reader's CSVs; reuse them if already written
    for the same content hash. Returns the dataset folder ``<folder>/<name>``."""
    import pandas as pd

    root = Path(folder) / name
    stamp = root / "content_hash.txt"
    if stamp.exists() and stamp.read_text().strip() == data.content_hash:
        return root
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        rows = getattr(data, split)
        frame = pd.DataFrame({
            "user_id": rows.user,
            "item_id": rows.target - 1,
            "history_id": _history_strings(rows.history),
        })
        frame.to_csv(root / f"{name}.{split}.remap.csv", index=False)
    stamp.write_text(data.content_hash + "\n")
    return root


# ----------------------------------------------------------------------------- worker (peer venv)
def memory_status() -> dict[str, float]:
    """VmRSS / VmHWM of this process in MiB (Linux)."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) / 1024.0
    return out


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peer_args(src: Path, argv: list[str]):
    """Their argument namespace, built with their own parsers (main.py / BaseReader / BaseRunner / PRL)."""
    sys.path.insert(0, str(src))
    from helpers.BaseReader import BaseReader  # noqa: E402  (their code, imported from --src)
    from helpers.BaseRunner import BaseRunner
    from models.PRL import PRL

    parser = argparse.ArgumentParser()
    parser.add_argument("--gpu", type=str, default="")
    parser.add_argument("--random_seed", type=int, default=0)
    parser.add_argument("--log_file", type=str, default="peer.log")
    parser.add_argument("--train", type=int, default=1)
    parser = BaseReader.parse_data_args(parser)
    parser = BaseRunner.parse_runner_args(parser)
    parser = PRL.parse_model_args(parser)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        raise SystemExit(f"peer worker: unknown peer arguments {unknown}")
    return args, BaseReader, BaseRunner, PRL


def worker(opts: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(opts.threads)
    src = Path(opts.src).resolve()
    args, BaseReader, BaseRunner, PRL = _peer_args(src, opts.peer_args)
    args.device = torch.device("cpu")
    args.model_path = ""
    torch.manual_seed(args.random_seed)
    np.random.seed(args.random_seed)

    t0 = time.perf_counter()
    corpus = BaseReader(args)
    model = PRL(args, corpus).to(args.device)
    runner = BaseRunner(args)
    model.optimizer = runner._build_optimizer(model)
    dataset = PRL.Dataset(model, corpus, "train")
    index = np.load(opts.batches)  # (n_batches, batch_size) row indices into the train split
    collate_s = []
    batches = []
    for rows in index:
        c0 = time.perf_counter()
        batches.append(dataset.collate_batch([dataset[int(i)] for i in rows]))
        collate_s.append(time.perf_counter() - c0)
    setup_s = time.perf_counter() - t0

    def one(batch) -> float:
        # == the body of their BaseRunner.fit loop (helpers/BaseRunner.py), minus tqdm and batch_to_gpu
        model.optimizer.zero_grad()
        out_dict = model(batch, epoch=opts.epoch)
        loss = model.loss(out_dict)
        loss.backward()
        model.optimizer.step()
        return float(loss.detach().cpu().data.numpy())

    model.train()
    mem_setup = memory_status()
    one(batches[0])  # warm-up
    _ready({
        "impl": "peer", "n_items_with_pad": int(corpus.n_items), "train_rows": len(dataset),
        "batch_rows": int(index.shape[1]), "n_batches": len(batches), "setup_s": setup_s,
        "collate_s_per_batch": float(np.median(collate_s)), "epoch": opts.epoch,
        "noise_active": opts.epoch > args.warmup, "threads": torch.get_num_threads(),
        "mem_after_setup": mem_setup, "mem_after_warmup": memory_status(),
    })
    _serve({"peer": lambda: [one(b) for b in batches]}, {"peer": index.shape[0] * index.shape[1]})


def _ready(info: dict) -> None:
    print("ready " + json.dumps(info), flush=True)


def _serve(rounds: dict, rows_per_round: dict) -> None:
    """Line protocol on stdin/stdout: 'round NAME' runs rounds[NAME]() once and answers
    'result {seconds, cpu_seconds, rows, loss_mean, rss_before_mib, peak_rss_mib}' (process CPU time: with one
    thread it barely depends on other load; the peak RSS is reset before the round, so it is this round's peak); 'quit' answers 'final {mem}' and ends."""
    for line in sys.stdin:
        cmd, _, name = line.strip().partition(" ")
        if cmd == "round":
            reset_ok = reset_peak_rss()
            before = memory_status()["VmRSS"]
            start, cpu = time.perf_counter(), time.process_time()
            losses = rounds[name]()
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            peak = memory_status()["VmHWM"] if reset_ok else float("nan")
            print("result " + json.dumps({"seconds": seconds, "cpu_seconds": cpu, "rows": rows_per_round[name], "loss_mean": float(np.mean(losses)),
                                          "rss_before_mib": before, "peak_rss_mib": peak}), flush=True)
        elif cmd == "quit":
            print("final " + json.dumps({"mem": memory_status()}), flush=True)
            return


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker", help="time the released PRL (run with the peer's python)")
    w.add_argument("--src", required=True, help="the released repository's src/ folder")
    w.add_argument("--batches", required=True, help=".npy (n_batches, batch_size) train-row indices")
    w.add_argument("--epoch", type=int, default=3, help="epoch passed to their forward (> --warmup: noise + RCL on)")
    w.add_argument("--threads", type=int, default=2)
    w.add_argument("peer_args", nargs=argparse.REMAINDER, help="after --: their CLI flags (--path, --dataset, ...)")
    opts = parser.parse_args(argv)
    if opts.peer_args and opts.peer_args[0] == "--":
        opts.peer_args = opts.peer_args[1:]
    worker(opts)


if __name__ == "__main__":
    main()
