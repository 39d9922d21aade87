"""Issue 14.4: how large RCL's loss and gradients are with dot-product vs cosine similarity (Eq. 11).

    .venv/bin/python bench/rcl_magnitudes.py                    # ~10-20 min on 2 busy cores
    .venv/bin/python bench/rcl_magnitudes.py --steps 100 --probes 0,50,100

Data: ``rearec.data.load_dataset`` on shared/datasets/amazon2018-videogames (generic table source:
205,708 training rows, 13,917 items); a fixed random ``--user-fraction`` of the users (seed 0) keeps all
their training rows; the vocabulary is not cut. Model: SASRec + PRL (paper formulation), d = 256, K = 2,
2 layers, 2 heads, FFN 300, dropout 0.5, tau 0.5, alpha 5, gamma 0.01 (noise std 0.1), RCL on from the
first step. For each ``rcl_similarity`` (dot, cosine) a model starts from the same initial weights
(seed 0) and trains ``--steps`` steps (rearec.train.train_step + Adam, bucketed batches of
``--batch-size`` rows, seed 0); at each probe step a fixed probe batch of ``--probe-rows`` rows is run
once in training mode (dropout on, fixed seed) and we record:
- rcl: the RCL loss (sum over the K steps of the batch-mean InfoNCE), and K log(B) for scale (its value
  when all similarities are equal); active: the share of (row, step) InfoNCE terms above 0.01;
- |dRCL/dr~| and |dRCL/dr|: the mean per-row L2 norm of RCL's gradient w.r.t. the noisy and the clean
  reasoning states r_1..r_K (and the largest row's, for the noisy states);
- |dRCL/dtheta| and |dCE/dtheta|: the global L2 norm of the parameter gradient of RCL alone and of the
  full-vocabulary PRL CE alone (both batch means, as trained);
- tiny: the fraction of RCL's nonzero parameter-gradient entries below 1e-30 (float32 denormals start at
  1.2e-38; flush-to-zero is switched off during a probe so they are counted, not zeroed);
- |r|: the mean state norm at steps 1..K, and cos+: the mean cosine between a noisy state and its clean twin.
Training itself runs with seed_everything's denormal flush, as fit does.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared/datasets/amazon2018-videogames"


def probe(model, method, history, target, seed: int) -> dict[str, float]:
    import torch

    from rearec.objectives import rcl_loss
    from rearec.train import _noise, backward_loss

    model.train()
    model.zero_grad(set_to_none=True)
    torch.set_flush_denormal(False)
    torch.manual_seed(seed)
    r0, caches, key_ok = model.encode_items(history)
    states = model.reason(r0, caches, key_ok, model.K)  # (B, K+1, d)
    noise = _noise(method, (len(target), model.K, states.shape[-1]), states)
    noisy = model.reason_from(r0, caches, key_ok, states, noise)  # (B, K, d)
    clean = states[:, 1:]
    clean.retain_grad()
    noisy.retain_grad()
    rcl = rcl_loss(method, clean, noisy)
    rcl.backward(retain_graph=True)
    grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
    flat = torch.cat(grads)
    nonzero = flat[flat != 0]
    with torch.no_grad():  # per-(row, step) InfoNCE terms, to see how the batch mean is made up
        a, b = (noisy, clean) if method.rcl_similarity == "dot" else (
            torch.nn.functional.normalize(noisy, dim=-1), torch.nn.functional.normalize(clean, dim=-1))
        logits = torch.einsum("ikd,jkd->kij", a, b) / method.tau  # (K, B, B)
        labels = torch.arange(len(target)).repeat(model.K)
        terms = torch.nn.functional.cross_entropy(logits.reshape(-1, len(target)), labels, reduction="none")
    out = {
        "rcl": float(rcl),
        "logB": float(model.K * np.log(len(target))),
        "active": float((terms > 0.01).float().mean()),
        "g_noisy_max": float(noisy.grad.norm(dim=-1).max()),
        "g_noisy": float(noisy.grad.norm(dim=-1).mean()),
        "g_clean": float(clean.grad.norm(dim=-1).mean()),
        "g_params_rcl": float(flat.norm()),
        "tiny": float((nonzero.abs() < 1e-30).float().mean()) if len(nonzero) else float("nan"),
        "state_norm": float(clean.detach().norm(dim=-1).mean()),
        "cos_pos": float(torch.nn.functional.cosine_similarity(noisy.detach(), clean.detach(), dim=-1).mean()),
    }
    model.zero_grad(set_to_none=True)
    backward_loss(model, method, states, None, target, 1024)  # the CE part alone
    out["g_params_ce"] = float(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).norm())
    model.zero_grad(set_to_none=True)
    torch.set_flush_denormal(True)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", default=str(SHARED / "interactions.tsv.gz"))
    parser.add_argument("--cache-dir", default=str(REPO / "data"))
    parser.add_argument("--user-fraction", type=float, default=0.2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--probe-rows", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--probes", default="0,100,200,300")
    parser.add_argument("--tau", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from rearec.batching import train_batches
    from rearec.config import MethodConfig, ModelConfig, TrainConfig
    from rearec.data import load_dataset
    from rearec.model import ReaRecModel
    from rearec.train import make_optimizer, seed_everything, train_step

    torch.set_num_threads(args.threads)
    data = load_dataset({"interactions": args.interactions}, cache_dir=args.cache_dir)
    users = np.unique(data.train.user)
    keep = np.random.default_rng(0).choice(users, int(round(args.user_fraction * len(users))), replace=False)
    rows = data.train.take(np.flatnonzero(np.isin(data.train.user, keep)))
    probe_idx = np.sort(np.random.default_rng(1).choice(len(rows), min(args.probe_rows, len(rows)), replace=False))
    width = max(int(rows.lengths()[probe_idx].max()), 1)
    p_hist = torch.from_numpy(np.ascontiguousarray(rows.history[probe_idx, rows.max_len - width:])).long()
    p_target = torch.from_numpy(rows.target[probe_idx]).long()
    probes = sorted({int(s) for s in args.probes.split(",")})
    print(f"data: {len(keep)} of {data.n_users} users (fraction {args.user_fraction}, seed 0), {len(rows)} training "
          f"rows, {data.n_items} items; d={args.hidden}, K=2, tau={args.tau}, train batch {args.batch_size}, "
          f"probe batch {len(probe_idx)}, {args.threads} thread(s)")
    results = {}
    for similarity in ("dot", "cosine"):
        seed_everything(0)
        method = MethodConfig(name="prl", reasoning_steps=2, tau=args.tau, alpha=5.0, gamma=0.01,
                              rcl_similarity=similarity)
        model = ReaRecModel.from_configs(ModelConfig(hidden_size=args.hidden), method, data.n_items)
        optimizer = make_optimizer(model, TrainConfig())
        rng = np.random.default_rng(0)
        batches = iter(())
        step, start = 0, time.perf_counter()
        while True:
            if step in probes:
                results[similarity, step] = probe(model, method, p_hist, p_target, seed=123)
                r = results[similarity, step]
                print(f"  {similarity:6s} step {step:4d}: rcl {r['rcl']:.4g}  |dRCL/dr~| {r['g_noisy']:.3g}  "
                      f"|dRCL/dtheta| {r['g_params_rcl']:.3g}  |dCE/dtheta| {r['g_params_ce']:.3g}  "
                      f"({time.perf_counter() - start:.0f} s, load {Path('/proc/loadavg').read_text().split()[0]})")
            if step >= probes[-1]:
                break
            try:
                history, target = next(batches)
            except StopIteration:
                batches = train_batches(rows, args.batch_size, "bucketed", rng)
                history, target = next(batches)
            model.train()
            optimizer.zero_grad(set_to_none=True)
            train_step(model, method, history, target, epoch=1, chunk=1024)
            optimizer.step()
            step += 1
    print(f"\nload after: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    print("\n| similarity | step | RCL loss (K log B) | terms > 0.01 | mean (max) ‖dRCL/dr̃‖ | mean ‖dRCL/dr‖ "
          "| ‖dRCL/dθ‖ | ‖dCE/dθ‖ | tiny (<1e-30) share of RCL param grads | mean ‖r_k‖ | cos(r̃, r) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (similarity, step), r in results.items():
        print(f"| {similarity} | {step} | {r['rcl']:.4g} ({r['logB']:.2f}) | {r['active']:.3f} | "
              f"{r['g_noisy']:.3g} ({r['g_noisy_max']:.3g}) | {r['g_clean']:.3g} | "
              f"{r['g_params_rcl']:.3g} | {r['g_params_ce']:.3g} | {r['tiny']:.3g} | {r['state_norm']:.3g} | "
              f"{r['cos_pos']:.4f} |")


if __name__ == "__main__":
    main()
