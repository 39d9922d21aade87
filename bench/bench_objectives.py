"""Issue 13.5: what a training epoch of ERL and PRL costs relative to base, before and after the loss rewrite.

    .venv/bin/python bench/bench_objectives.py                       # 3 rounds, ~3-5 min on an idle core
    .venv/bin/python bench/bench_objectives.py --rounds 5 --profile erl

Data: ``rearec.data.load_dataset`` on shared/datasets/amazon2018-videogames (generic table source, as in
bench_training_modes.py: 205,708 training rows, 13,917 items); a fixed random ``--user-fraction`` of the
users (seed 0) keeps every training row of those users; the vocabulary is not cut, so each row's softmax
runs over all 13,917 items as in a real trial.
Model: SASRec, d = 64, 2 layers, 2 heads, FFN 300, dropout 0.5, batch 2048, loss_chunk 1024, Adam,
``torch.set_num_threads(1)``, training mode 'bucketed'. Methods: base; ERL K = 2 (paper formulation,
lambda 0.05); PRL K = 2 (paper formulation, tau 0.5, alpha 5, gamma 0.01, noisy view + RCL on).

Each method runs with two loss implementations side by side in one process:
- ``ref``: rearec/objectives.py as of ``--reference-rev`` (default 009afee, the code before issue 13.5),
  read with ``git show`` into a temporary module outside the repository and patched into rearec.train
  in place of the current ``vocab_loss`` (dot-product scoring, the only one it knows);
- ``new``: the current rearec/objectives.py.
One epoch = rearec.batching.train_batches (seed 0, the same row order for every variant) and, per batch,
zero_grad + rearec.train.train_step + Adam step, exactly fit's loop body; validation is not timed. Every
variant gets the same initial weights (seed 0) and a one-batch warm-up; then ``--rounds`` rounds time one
epoch of every variant, in an order rotated each round so load drifts hit all alike. Reported: median
wall and process-CPU seconds per epoch, and each method's ratio to base with the same implementation.
The first batch's loss of ref and new is printed side by side (they must agree).
``--profile METHOD`` then prints torch.profiler's top operators (self CPU time) over a few batches.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared/datasets/amazon2018-videogames"

METHODS = {
    "base": {"name": "base"},
    "erl": {"name": "erl", "reasoning_steps": 2, "kl_lambda": 0.05},
    "prl": {"name": "prl", "reasoning_steps": 2, "tau": 0.5, "alpha": 5.0, "gamma": 0.01},
}


def load_reference(rev: str):
    """rearec/objectives.py at ``rev`` as an importable module (its relative import made absolute)."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:rearec/objectives.py"],
                            check=True, capture_output=True, text=True).stdout
    source = source.replace("from .config import", "from rearec.config import")
    path = Path(tempfile.mkdtemp(prefix="ref_objectives_")) / "ref_objectives.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("ref_objectives", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def subsample(data, fraction: float, seed: int):
    users = np.unique(data.train.user)
    keep = np.random.default_rng(seed).choice(users, int(round(fraction * len(users))), replace=False)
    return data.train.take(np.flatnonzero(np.isin(data.train.user, keep))), len(keep)


class Variant:
    def __init__(self, label, method_cfg, model_cfg, n_items, vocab_loss):
        self.label, self.method, self.vocab_loss = label, method_cfg, vocab_loss
        self.model_cfg, self.n_items = model_cfg, n_items
        self.reset()

    def reset(self):
        """Fresh model and optimizer from seed 0: every variant starts from the same weights."""
        import torch

        from rearec.config import TrainConfig
        from rearec.model import ReaRecModel
        from rearec.train import make_optimizer

        torch.manual_seed(0)
        self.model = ReaRecModel.from_configs(self.model_cfg, self.method, self.n_items)
        self.optimizer = make_optimizer(self.model, TrainConfig())

    def batches(self, rows, batch_size):
        from rearec.batching import train_batches

        return train_batches(rows, batch_size, "bucketed", np.random.default_rng(0))

    def step(self, history, target, chunk):
        import rearec.train as train

        train.vocab_loss = self.vocab_loss  # the implementation this variant measures
        self.optimizer.zero_grad(set_to_none=True)
        loss = train.train_step(self.model, self.method, history, target, epoch=1, chunk=chunk)
        self.optimizer.step()
        return loss

    def epoch(self, rows, batch_size, chunk):
        batches = list(self.batches(rows, batch_size))  # batch assembly is not timed
        wall, cpu = time.perf_counter(), time.process_time()
        for history, target in batches:
            self.step(history, target, chunk)
        return time.perf_counter() - wall, time.process_time() - cpu


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", default=str(SHARED / "interactions.tsv.gz"))
    parser.add_argument("--cache-dir", default=str(REPO / "data"))
    parser.add_argument("--user-fraction", type=float, default=0.05)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--loss-chunk", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reference-rev", default="009afee")
    parser.add_argument("--methods", default="base,erl,prl")
    parser.add_argument("--impls", default="ref,new")
    parser.add_argument("--profile", default=None, help="a method: print its top operators (new implementation)")
    args = parser.parse_args(argv)

    import torch

    import rearec.objectives as current
    from rearec.config import MethodConfig, ModelConfig
    from rearec.data import load_dataset
    from rearec.train import seed_everything

    torch.set_num_threads(args.threads)
    seed_everything(0)  # deterministic kernels and the denormal flush, as fit does
    data = load_dataset({"interactions": args.interactions}, cache_dir=args.cache_dir)
    rows, n_users = subsample(data, args.user_fraction, 0)
    print(f"data: {n_users} of {data.n_users} users (fraction {args.user_fraction}, seed 0), "
          f"{len(rows)} training rows, {data.n_items} items; d={args.hidden}, batch {args.batch_size}, "
          f"loss_chunk {args.loss_chunk}, {args.threads} thread(s), bucketed")
    reference = load_reference(args.reference_rev)

    def ref_loss(method, states, item_w, target, *_, **__):  # the old signature knew dot products only
        return reference.vocab_loss(method, states, item_w, target)

    impls = {"ref": ref_loss, "new": current.vocab_loss}
    model_cfg = ModelConfig(hidden_size=args.hidden)
    variants = []
    for name in args.methods.split(","):
        for impl in args.impls.split(","):
            variants.append(Variant(f"{name}/{impl}", MethodConfig(**METHODS[name]), model_cfg, data.n_items,
                                    impls[impl]))
    first = next(iter(variants[0].batches(rows, args.batch_size)))
    for v in variants:  # warm-up, and the first batch's loss (same weights, batch and dropout masks)
        torch.manual_seed(1)
        print(f"  first-batch loss {v.label:9s} {v.step(*first, args.loss_chunk):.6f}")
    for v in variants:  # restart from the same weights so every variant's epochs are alike
        v.reset()
    times = {v.label: [] for v in variants}
    for r in range(args.rounds):
        order = variants[r % len(variants):] + variants[: r % len(variants)]
        print(f"round {r + 1}: load {loadavg()}")
        for v in order:
            wall, cpu = v.epoch(rows, args.batch_size, args.loss_chunk)
            times[v.label].append((wall, cpu))
            print(f"  {v.label:9s} wall {wall:7.2f} s  cpu {cpu:7.2f} s")
    print(f"load after: {loadavg()}")
    print("\n| method | impl | epoch wall s (median) | epoch CPU s | wall / base | CPU / base |")
    print("|---|---|---|---|---|---|")
    med = {k: np.median(np.array(t), 0) for k, t in times.items()}
    for v in variants:
        name, impl = v.label.split("/")
        base = med.get(f"base/{impl}")
        ratio = (f"{med[v.label][0] / base[0]:.2f}", f"{med[v.label][1] / base[1]:.2f}") if base is not None else ("-", "-")
        print(f"| {name} | {impl} | {med[v.label][0]:.2f} | {med[v.label][1]:.2f} | {ratio[0]} | {ratio[1]} |")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        v = Variant(f"{args.profile}/new", MethodConfig(**METHODS[args.profile]), model_cfg, data.n_items,
                    current.vocab_loss)
        batches = list(v.batches(rows, args.batch_size))[:4]
        v.step(*batches[0], args.loss_chunk)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for history, target in batches[1:]:
                v.step(history, target, args.loss_chunk)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
