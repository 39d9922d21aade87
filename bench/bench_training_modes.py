"""Issue 7 figures: training modes 'padded' (every row padded to 50), 'bucketed' and 'packed', side by side.

    .venv/bin/python bench/bench_training_modes.py deviation           # seconds
    .venv/bin/python bench/bench_training_modes.py throughput --batches 3 --repeats 3
                                          # ~9 min idle, 15-40 min when other sessions load the box
    .venv/bin/python bench/bench_training_modes.py throughput --extra "packed+fix=packed@/tmp/patched"
                                          # + a worker importing rearec from /tmp/patched/rearec (A/B a patch)
    .venv/bin/python bench/bench_training_modes.py memory              # one subprocess per (mode, loss_chunk,
                                          # checkpointing); --before PATH adds older code, --now PATH a snapshot
    .venv/bin/python bench/bench_training_modes.py ckptcost --threads 1   # time cost of checkpointing
    .venv/bin/python bench/bench_training_modes.py quality             # 6 short fits, 3 seed processes
    .venv/bin/python bench/bench_training_modes.py all                 # the four in that order

Data: ``rearec.data.load_dataset`` on shared/datasets/amazon2018-videogames (generic table source, no
filters, quantile split at 80 % / 90 % of the time span, histories truncated to 50): 205,708 training rows
(every prefix of a user's training-period sequence with a non-empty history), 13,917 items.
Model: SASRec + PRL (paper formulation, K = 2, tau 0.5, alpha 5, gamma 0.01; noisy view + RCL on),
d = 256, 2 layers, 2 heads, FFN 300, dropout 0.5, batch 2048 rows, Adam, torch.set_num_threads(2).

throughput -- one epoch of each mode is cut into batches exactly as rearec.train.fit does (seed 0:
  rearec.batching.train_order for padded/bucketed, rearec.packing.packed_batches for packed). From each
  mode's own epoch, ``--batches`` full batches are picked, one per equal-count stratum of a per-batch cost
  proxy (padded tokens; for packed item tokens + reasoning slots), each the batch nearest its stratum's
  mean cost, so each sample follows its epoch's mix (mean cost per row printed for both) and its rows/s
  estimates that mode's rows/s over one full epoch of the same 205,708 rows. Every mode
  runs in its own persistent worker process (same seed -> identical initial weights, checked) holding
  the dataset like a real training process; one warm-up batch each, then rounds in which the modes are
  interleaved batch by batch (ABC, BCA, CAB, ...) so machine load hits them alike. Per batch: zero_grad
  + rearec.train.train_step / train_step_packed + Adam step (fit's loop body; batch assembly excluded and
  reported separately). rows/s of a round = rows trained / wall seconds; we report the median over rounds,
  the per-round ratios and CPU seconds per 1k rows (less sensitive to load than wall time). A last
  round runs an instrumented copy of the step (phase_step below) to show where the time goes.
memory -- a fresh subprocess per (code, mode, loss_chunk, checkpoint_tokens) loads the data, builds the
  model and trains (one warm-up pass, then --mem-repeats timed passes) on that mode's heaviest batches of
  the epoch (padded: any full batch; bucketed: its widest; packed: the batches with the most item tokens /
  reasoning-attention cells / rows) with fit()'s checkpointing rule; peak RSS = VmHWM of the process.
ckptcost -- in one process, process CPU seconds per step with checkpointing never / by fit()'s rule on a
  stratified sample of the bucketed epoch, and never / always on its widest batch, alternating per step.
deviation -- packed windows (rearec.packing.build_windows) vs per-row histories for every training target.
quality -- d = 64, a random 10 % of users (vocabulary cut to their training items), PRL K = 2, seeds 0-2
  (one process per seed, 1 thread each), bucketed vs packed, <= 4 epochs with early stopping on
  validation NDCG@20: mean +- 95 % CI (t, 2 dof), Welch's t-test, and the paired (same seed = same
  initial weights) difference.
Load: with 2 OpenMP threads per process and a load average above the core count, each parallel region
  waits for a descheduled thread; the many small ops of bucketed/packed steps suffer far more than the
  large GEMMs of padded ones, so ratios shrink with load. Report ``uptime`` with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared/datasets/amazon2018-videogames"
DATASET = {
    "name": "amazon2018-videogames",
    "interactions": str(SHARED / "interactions.tsv.gz"),
    "items": str(SHARED / "items.tsv.gz"),
    "split": {"method": "quantile", "valid_quantile": 0.8, "test_quantile": 0.9},
}
MODES = ("padded", "bucketed", "packed")
PRL = {"name": "prl", "reasoning_steps": 2, "tau": 0.5, "alpha": 5.0, "gamma": 0.01}  # formulation 'paper'
EPOCH = 3  # passed to the step: PRL's noisy view + RCL are on (as after any warm-up)


# ----------------------------------------------------------------------------- shared helpers
def load(cache_dir: str):
    from rearec.data import load_dataset

    return load_dataset(DATASET, cache_dir=cache_dir)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def memory_status() -> dict[str, float]:
    """VmRSS / VmHWM of this process in MiB, plus getrusage's ru_maxrss (MiB)."""
    out = {"ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) / 1024.0
    return out


def epoch_batches(data, mode: str, batch_size: int, seed: int = 0) -> list[dict]:
    """One epoch of ``mode`` exactly as fit() batches it: [{'batch', 'rows', 'cost', ...}] in epoch order."""
    from rearec.batching import _to_batch, train_order
    from rearec.packing import build_windows, packed_batches

    rng = np.random.default_rng(seed)
    out = []
    if mode == "packed":
        win = build_windows(data.train_sequences, data.train.max_len)
        for b in packed_batches(data.train_sequences, win, batch_size, rng):
            U, L = b.items.shape
            P = b.ends.shape[1]
            out.append({"batch": b, "rows": b.n_rows, "tokens": U * L, "slots": U * P,
                        "cost": U * L + U * P, "attn": U * P * (L + PRL["reasoning_steps"] * P),
                        "shape": [U, L, P]})
        return out
    lengths = data.train.lengths()
    for index in train_order(len(data.train), lengths, batch_size, mode, rng):
        history, target = _to_batch(data.train, index, lengths, mode == "bucketed", "cpu")
        out.append({"batch": (history, target), "rows": len(index), "tokens": history.numel(),
                    "cost": history.numel(), "shape": list(history.shape)})
    return out


def pick_strata(batches: list[dict], n: int, batch_size: int) -> list[int]:
    """Indices of ``n`` batches, one per stratum: the full batches sorted by cost are cut into ``n`` equal
    strata and from each the batch whose cost is nearest the stratum's mean cost is taken, so the sample's
    mean cost per row matches the epoch's (a median pick would miss the long-history tail)."""
    full = [i for i, b in enumerate(batches) if b["rows"] >= batch_size * 0.98]
    full.sort(key=lambda i: batches[i]["cost"])
    picks = []
    for stratum in np.array_split(np.array(full), n):
        cost = np.array([batches[i]["cost"] for i in stratum], dtype=float)
        picks.append(int(stratum[np.argmin(np.abs(cost - cost.mean()))]))
    return picks


def heaviest(batches: list[dict], mode: str, batch_size: int) -> list[int]:
    full = [i for i, b in enumerate(batches) if b["rows"] >= batch_size * 0.98] or list(range(len(batches)))
    if mode == "padded":
        return [full[0]]
    if mode == "bucketed":
        return [max(full, key=lambda i: batches[i]["tokens"])]
    keys = ("tokens", "attn", "rows")
    return sorted({max(range(len(batches)), key=lambda i, k=k: batches[i][k]) for k in keys})


def build_model(data, dim: int = 256, seed: int = 0):
    """fit()'s set-up: seed_everything (deterministic algorithms on, as in fit), model, Adam."""
    from rearec.config import MethodConfig, ModelConfig, TrainConfig
    from rearec.model import ReaRecModel
    from rearec.train import make_optimizer, seed_everything

    seed_everything(seed)
    method = MethodConfig(**PRL)
    model = ReaRecModel.from_configs(ModelConfig(hidden_size=dim), method, data.n_items)
    optimizer = make_optimizer(model, TrainConfig())
    model.train()
    return model, method, optimizer


def step(model, method, optimizer, mode: str, batch, chunk: int, checkpoint_tokens: int | None = None) -> float:
    """The body of rearec.train.fit's batch loop (CPU: no autocast, no clipping), including fit's
    activation-checkpointing rule (TrainConfig.checkpoint_tokens; None = off, as code without it)."""
    import contextlib

    from rearec import train

    optimizer.zero_grad(set_to_none=True)
    ctx = contextlib.nullcontext()
    if checkpoint_tokens is not None:
        ctx = train.checkpointing(model, train.batch_tokens(batch) > checkpoint_tokens)
    with ctx:
        if mode == "packed":
            loss = train.train_step_packed(model, method, batch, EPOCH, chunk)
        else:
            loss = train.train_step(model, method, batch[0], batch[1], EPOCH, chunk)
    optimizer.step()
    return loss


def phase_step(model, method, optimizer, mode: str, batch, chunk: int) -> dict[str, list[float]]:
    """An instrumented copy of step() (train_step[_packed] + backward_loss, always the chunked path, which
    gives the same loss and gradients): {phase: [wall s, cpu s]}. Keep in sync with rearec/train.py."""
    import torch

    from rearec.objectives import rcl_loss, uses_rcl, vocab_loss
    from rearec.train import _noise

    out: dict[str, list[float]] = {}
    clock = [time.perf_counter(), time.process_time()]

    def lap(name: str) -> None:
        w, c = time.perf_counter(), time.process_time()
        out[name] = [w - clock[0], c - clock[1]]
        clock[:] = [w, c]

    optimizer.zero_grad(set_to_none=True)
    packed = mode == "packed"
    if packed:
        r0, caches, mask = model.encode_packed(batch.items, batch.ends)
    else:
        history, target = batch
        r0, caches, mask = model.encode_items(history)
    lap("encode items")
    if packed:
        grouped = model.reason_groups(r0, caches, mask, model.K)
        real = batch.ends >= 0
        states, target = grouped[real], batch.targets[real]
    else:
        states = model.reason(r0, caches, mask, model.K)
    lap("reason (clean)")
    noisy = None
    if uses_rcl(method, EPOCH):
        if packed:
            U, P, _, d = grouped.shape
            noise = _noise(method, (U, P, model.K, d), grouped)
            noisy = model.reason_groups(r0, caches, mask, model.K, feed=grouped, noise=noise)[:, :, 1:][real]
        else:
            noise = _noise(method, (len(target), model.K, states.shape[-1]), states)
            noisy = model.reason_from(r0, caches, mask, states, noise)
    lap("reason (noisy view)")
    B = len(target)
    extra = rcl_loss(method, states[:, 1:], noisy) if noisy is not None else None
    lap("rcl forward")
    item_w = model.candidates()
    detached = states.detach().requires_grad_(True)
    for i in range(0, B, chunk):
        part = vocab_loss(method, detached[i : i + chunk], item_w, target[i : i + chunk], model.scoring) / B
        part.backward()
    lap("vocab loss fwd+bwd")
    tensors, grads = [states], [detached.grad]
    if extra is not None:
        tensors.append(extra)
        grads.append(torch.ones_like(extra))
    torch.autograd.backward(tensors, grads)
    lap("backward (rcl, reasoning, encoder)")
    optimizer.step()
    lap("adam step")
    return out


def param_checksum(model) -> float:
    return float(sum(p.detach().double().sum() * (i + 1) for i, p in enumerate(model.parameters())))


# ----------------------------------------------------------------------------- workers
def _send(tag: str, payload) -> None:
    sys.stdout.write(f"{tag} {json.dumps(payload)}\n")
    sys.stdout.flush()


def worker(opts: argparse.Namespace) -> None:
    """Throughput worker for one mode: serves 'run J' / 'phase J' / 'quit' on stdin."""
    if opts.rearec_path:
        sys.path.insert(0, opts.rearec_path)
    import torch

    import rearec

    torch.set_num_threads(opts.threads)
    data = load(opts.cache_dir)
    batches = torch.load(opts.batches_file, weights_only=False)
    model, method, optimizer = build_model(data)
    checksum = param_checksum(model)
    warm = torch.load(opts.warmup_file, weights_only=False)
    t0 = time.perf_counter()
    step(model, method, optimizer, opts.mode, warm, opts.loss_chunk)
    _send("ready", {"mode": opts.mode, "rearec": rearec.__file__, "checksum": checksum, "warmup_s": time.perf_counter() - t0,
                    "threads": torch.get_num_threads(), "mem": memory_status()})
    for line in sys.stdin:
        cmd, *arg = line.split()
        if cmd == "quit":
            break
        b = batches[int(arg[0])]
        batch, rows = b["batch"], b["rows"]
        if cmd == "run":
            w, c = time.perf_counter(), time.process_time()
            loss = step(model, method, optimizer, opts.mode, batch, opts.loss_chunk)
            _send("result", {"rows": rows, "wall": time.perf_counter() - w, "cpu": time.process_time() - c,
                             "loss": loss})
        elif cmd == "phase":
            phases = phase_step(model, method, optimizer, opts.mode, batch, opts.loss_chunk)
            _send("result", {"rows": rows, "phases": phases})
    _send("final", {"mem": memory_status()})


def memworker(opts: argparse.Namespace) -> None:
    """Peak-RSS worker: one mode, one loss_chunk, one checkpointing setting, the mode's heaviest batches:
    one warm-up pass, then ``--mem-repeats`` timed passes (Adam state included)."""
    if opts.rearec_path:
        sys.path.insert(0, opts.rearec_path)
    import torch

    import rearec

    torch.set_num_threads(opts.threads)
    data = load(opts.cache_dir)
    model, method, optimizer = build_model(data)
    batches = torch.load(opts.batches_file, weights_only=False)
    before = memory_status()
    t0 = time.perf_counter()
    ckpt = None if opts.checkpoint_tokens in (None, "none") else int(opts.checkpoint_tokens)
    seconds: list[list[float]] = [[] for _ in batches]
    for r in range(1 + opts.mem_repeats):
        for i, b in enumerate(batches):
            w = time.perf_counter()
            step(model, method, optimizer, opts.mode, b["batch"], opts.loss_chunk, ckpt)
            if r:
                seconds[i].append(time.perf_counter() - w)
    _send("final", {"mode": opts.mode, "loss_chunk": opts.loss_chunk, "rearec": rearec.__file__,
                    "checkpoint_tokens": ckpt, "before_training": before,
                    "after": memory_status(), "shapes": [b["shape"] for b in batches],
                    "rows": [b["rows"] for b in batches], "seconds": time.perf_counter() - t0,
                    "batch_seconds": seconds, "loadavg": loadavg()})


class Worker:
    def __init__(self, name: str, cmd: list[str], log: Path):
        env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
        self.name = name
        self.log = open(log, "w")  # noqa: SIM115 (closed in finish)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True, env=env, cwd=REPO)

    def expect(self, tag: str) -> dict:
        for line in self.proc.stdout:
            if line.startswith(tag + " "):
                return json.loads(line[len(tag) + 1 :])
        self.proc.wait()
        raise RuntimeError(f"{self.name}: worker ended (rc {self.proc.returncode}); see {self.log.name}")

    def ask(self, cmd: str) -> dict:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.expect("result")

    def finish(self) -> dict:
        if self.proc.stdin:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        final = self.expect("final")
        self.proc.wait(timeout=120)
        self.log.close()
        return final


def _self_cmd(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


# ----------------------------------------------------------------------------- parts
def run_deviation(opts: argparse.Namespace, data=None) -> dict:
    """Packed windows vs per-row histories over every training target."""
    from rearec.packing import build_windows

    data = data or load(opts.cache_dir)
    seqs, L = data.train_sequences, data.train.max_len
    win = build_windows(seqs, L)
    user = np.searchsorted(seqs.offsets, win.target_pos, side="right") - 1
    t = win.target_pos - seqs.offsets[user]
    per_row = np.minimum(t, L)
    packed = win.target_col + 1
    # cross-check: the per-row lengths are exactly the training rows' history lengths
    assert np.array_equal(np.sort(per_row), np.sort(data.train.lengths())), "per-row lengths disagree with rows"
    dev = packed < per_row
    seq_len = np.diff(seqs.offsets)
    long_users = int((seq_len > L + 1).sum())
    short = per_row[dev] - packed[dev]
    res = {
        "train_rows": int(len(data.train)), "targets": int(len(t)), "users": int(len(seqs)),
        "windows": int(len(win.length)), "users_longer_than_max_len_plus_1": long_users,
        "targets_of_long_users": int(np.isin(user, np.flatnonzero(seq_len > L + 1)).sum()),
        "deviating_targets": int(dev.sum()), "deviating_fraction": float(dev.mean()),
        "mean_per_row_history_deviating": float(per_row[dev].mean()) if dev.any() else 0.0,
        "mean_packed_history_deviating": float(packed[dev].mean()) if dev.any() else 0.0,
        "mean_shortening_items": float(short.mean()) if dev.any() else 0.0,
        "mean_shortening_fraction": float((short / per_row[dev]).mean()) if dev.any() else 0.0,
        "min_packed_history_deviating": int(packed[dev].min()) if dev.any() else 0,
        "max_shortening_items": int(short.max()) if dev.any() else 0,
        "mean_history_all_per_row": float(per_row.mean()), "mean_history_all_packed": float(packed.mean()),
        "history_items_lost_fraction": float(1 - packed.sum() / per_row.sum()),
    }
    print(f"deviation: {res['deviating_targets']:,} of {res['targets']:,} training targets "
          f"({100 * res['deviating_fraction']:.2f} %; all among the {res['targets_of_long_users']:,} targets of the "
          f"{long_users} users longer than {L + 1}) see a "
          f"shorter history when packed: mean {res['mean_packed_history_deviating']:.1f} vs "
          f"{res['mean_per_row_history_deviating']:.1f} items per-row (-{res['mean_shortening_items']:.1f} items, "
          f"-{100 * res['mean_shortening_fraction']:.1f} %, min {res['min_packed_history_deviating']}); "
          f"history items lost over all targets: {100 * res['history_items_lost_fraction']:.2f} %", flush=True)
    return res


def run_throughput(opts: argparse.Namespace, data=None) -> dict:
    import torch

    work = Path(opts.workdir)
    work.mkdir(parents=True, exist_ok=True)
    load_before = loadavg()
    started = time.perf_counter()
    data = data or load(opts.cache_dir)
    modes = [m.strip() for m in opts.modes.split(",")]
    workers: dict[str, Worker] = {}
    picks_info = {}
    for mode in modes:
        t0 = time.perf_counter()
        batches = epoch_batches(data, mode, opts.batch_size)
        assembly_s = time.perf_counter() - t0
        picks = pick_strata(batches, opts.batches, opts.batch_size)
        cost = np.array([b["cost"] for b in batches], dtype=float)
        picks_info[mode] = {
            "epoch_batches": len(batches), "epoch_rows": int(sum(b["rows"] for b in batches)),
            "epoch_assembly_s": assembly_s, "epoch_mean_cost_per_row": float(cost.sum() / len(data.train)),
            "picked": picks, "picked_shapes": [batches[i]["shape"] for i in picks],
            "picked_rows": [batches[i]["rows"] for i in picks],
            "picked_mean_cost_per_row": float(sum(batches[i]["cost"] for i in picks)
                                              / sum(batches[i]["rows"] for i in picks)),
        }
        torch.save([batches[i] for i in picks], work / f"batches-{mode}.pt")
        warm_cost = [b["cost"] + 1e9 * (b["rows"] < 64) for b in batches]
        cheapest = int(np.argmin(warm_cost))
        torch.save(batches[cheapest]["batch"], work / f"warmup-{mode}.pt")
        print(f"{mode:8s}: epoch of {len(batches)} batches, assembly {assembly_s:.1f} s, cost/row "
              f"{picks_info[mode]['epoch_mean_cost_per_row']:.2f} (picked {picks_info[mode]['picked_mean_cost_per_row']:.2f}), "
              f"picked shapes {picks_info[mode]['picked_shapes']}", flush=True)
        del batches
    names = {m: (m, opts.now) for m in modes}  # --now: a snapshot of the current code
    for spec in opts.extra or []:  # NAME=MODE@PATH: MODE's batches, rearec imported from PATH (A/B a patch)
        name, rest = spec.split("=", 1)
        mode, path = rest.split("@", 1)
        assert mode in modes, f"--extra {spec}: mode {mode!r} is not among --modes"
        names[name] = (mode, path)
    for name, (mode, path) in names.items():
        workers[name] = Worker(name, _self_cmd(
            "worker", "--mode", mode, "--batches-file", str(work / f"batches-{mode}.pt"),
            "--warmup-file", str(work / f"warmup-{mode}.pt"), "--cache-dir", opts.cache_dir,
            "--threads", str(opts.threads), "--loss-chunk", str(opts.loss_chunk), "--rearec-path", path),
            work / f"worker-{name}.log")
    modes = list(names)
    ready = {m: w.expect("ready") for m, w in workers.items()}
    sums = {m: r["checksum"] for m, r in ready.items()}
    assert len(set(sums.values())) == 1, f"initial weights differ between workers: {sums}"
    print(f"workers ready (identical initial weights, checksum {next(iter(sums.values())):.6f})", flush=True)

    rounds: list[dict[str, dict]] = []
    for r in range(opts.repeats):
        acc = {m: {"rows": 0, "wall": 0.0, "cpu": 0.0, "batch_wall": []} for m in modes}
        for j in range(opts.batches):
            shift = (r * opts.batches + j) % len(modes)
            for m in modes[shift:] + modes[:shift]:
                res = workers[m].ask(f"run {j}")
                acc[m]["rows"] += res["rows"]
                acc[m]["wall"] += res["wall"]
                acc[m]["cpu"] += res["cpu"]
                acc[m]["batch_wall"].append(res["wall"])
        rounds.append(acc)
        print(f"round {r + 1}/{opts.repeats} (load {loadavg()}): " + "  ".join(
            f"{m} {a['rows'] / a['wall']:.0f} rows/s ({a['rows']} rows, {a['wall']:.0f} s, "
            f"{1000 * a['cpu'] / a['rows']:.1f} cpu-s/1k rows)" for m, a in acc.items()), flush=True)
    phases: dict[str, dict[str, list[float]]] = {}
    if opts.phase_rounds:
        for j in range(opts.batches):
            shift = j % len(modes)
            for m in modes[shift:] + modes[:shift]:
                res = workers[m].ask(f"phase {j}")
                tot = phases.setdefault(m, {"rows": [0, 0]})
                tot["rows"][0] += res["rows"]
                for name, (w, c) in res["phases"].items():
                    tot.setdefault(name, [0.0, 0.0])
                    tot[name][0] += w
                    tot[name][1] += c
    finals = {m: w.finish() for m, w in workers.items()}
    load_after = loadavg()

    results = {}
    for m in modes:
        rates = [a[m]["rows"] / a[m]["wall"] for a in rounds]
        results[m] = {
            "rows_per_s_median": float(np.median(rates)), "rows_per_s": rates,
            "rows_per_round": rounds[0][m]["rows"],
            "cpu_s_per_1k_rows_median": float(np.median([1000 * a[m]["cpu"] / a[m]["rows"] for a in rounds])),
            "batch_wall_s": [a[m]["batch_wall"] for a in rounds],
            "peak_rss_mib_over_sample": finals[m]["mem"]["VmHWM"], "ready": ready[m],
        }
    ratios = {}
    if "padded" in modes:
        for m in modes:
            per_round = [(a[m]["rows"] / a[m]["wall"]) / (a["padded"]["rows"] / a["padded"]["wall"]) for a in rounds]
            cpu_round = [(a["padded"]["cpu"] / a["padded"]["rows"]) / (a[m]["cpu"] / a[m]["rows"]) for a in rounds]
            ratios[m] = {"vs_padded_of_medians": results[m]["rows_per_s_median"] / results["padded"]["rows_per_s_median"],
                         "vs_padded_per_round": per_round, "vs_padded_median_of_rounds": float(np.median(per_round)),
                         "vs_padded_cpu_time_median": float(np.median(cpu_round))}
    summary = {"dataset": DATASET, "train_rows": len(data.train), "n_items": data.n_items,
               "batch_size": opts.batch_size, "batches_per_round": opts.batches, "repeats": opts.repeats,
               "loss_chunk": opts.loss_chunk, "threads": opts.threads, "epoch": EPOCH, "method": PRL,
               "picks": picks_info, "results": results, "ratios": ratios, "phases": phases,
               "loadavg_before": load_before, "loadavg_after": load_after,
               "wall_s": time.perf_counter() - started}
    (work / "throughput.json").write_text(json.dumps(summary, indent=2))
    print(f"\nthroughput ({opts.batches} batches x {opts.repeats} rounds per mode, batch {opts.batch_size}, "
          f"loss_chunk {opts.loss_chunk}, {opts.threads} threads)")
    print(f"{'mode':9s} {'rows/s med':>10s} {'x padded':>9s} {'x padded/round':>15s} {'x padded cpu':>12s} "
          f"{'cpu-s/1k rows':>13s} {'peak RSS MiB':>12s}  per-round rows/s")
    for m, x in results.items():
        rt = ratios.get(m, {})
        print(f"{m:9s} {x['rows_per_s_median']:10.1f} {rt.get('vs_padded_of_medians', float('nan')):9.2f} "
              f"{rt.get('vs_padded_median_of_rounds', float('nan')):15.2f} "
              f"{rt.get('vs_padded_cpu_time_median', float('nan')):12.2f} {x['cpu_s_per_1k_rows_median']:13.1f} "
              f"{x['peak_rss_mib_over_sample']:12.0f}  " + " ".join(f"{v:.1f}" for v in x["rows_per_s"]))
    if phases:
        names = [k for k in next(iter(phases.values())) if k != "rows"]
        print("\nwhere the time goes (instrumented round; wall s per 1k rows, share of the step):")
        print(f"{'phase':38s} " + " ".join(f"{m:>17s}" for m in phases))
        for name in names:
            cells = []
            for p in phases.values():
                total = sum(v[0] for k, v in p.items() if k != "rows")
                cells.append(f"{1000 * p[name][0] / p['rows'][0]:8.2f} ({100 * p[name][0] / total:4.1f}%)")
            print(f"{name:38s} " + " ".join(f"{c:>17s}" for c in cells))
    print(f"loadavg before {load_before}, after {load_after}; wall {summary['wall_s']:.0f} s; "
          f"JSON {work / 'throughput.json'}", flush=True)
    return summary


def _checkpoint_values(spec: str) -> list[int | None]:
    from rearec.config import TrainConfig

    default = TrainConfig().checkpoint_tokens
    return [None if v == "none" else default if v == "default" else int(v) for v in spec.split(",")]


def run_memory(opts: argparse.Namespace, data=None) -> dict:
    """Peak RSS per (code, mode, loss_chunk, checkpointing), each in its own fresh process, plus the
    step time of those heaviest batches and the share of an epoch that the checkpointing rule touches."""
    import torch

    from rearec.train import batch_tokens

    work = Path(opts.workdir)
    work.mkdir(parents=True, exist_ok=True)
    data = data or load(opts.cache_dir)
    load_before = loadavg()
    chunks = [int(c) for c in opts.chunks.split(",")]
    checkpoints = _checkpoint_values(opts.checkpoints)
    codes = [("now", opts.now)] + ([("before", opts.before)] if opts.before else [])
    jobs, shares = [], {}
    for mode in [m.strip() for m in opts.modes.split(",")]:
        batches = epoch_batches(data, mode, opts.batch_size)
        heavy = heaviest(batches, mode, opts.batch_size)
        path = work / f"heavy-{mode}.pt"
        torch.save([batches[i] for i in heavy], path)
        tokens = np.array([batch_tokens(b["batch"]) for b in batches])
        shares[mode] = {str(c): {"batches": float((tokens > c).mean()), "tokens": float(tokens[tokens > c].sum() / tokens.sum())}
                        for c in checkpoints if c is not None}
        del batches
        mode_chunks = chunks if (mode != "bucketed" or opts.all_chunks) else [opts.loss_chunk]
        for code, code_path in codes:
            for c in mode_chunks:
                for ckpt in checkpoints if code == "now" else [None]:  # older code has no checkpointing
                    jobs.append((code, code_path, mode, c, ckpt, path))
    results = []
    for code, code_path, mode, chunk, ckpt, path in jobs:
        name = f"mem-{code}-{mode}-{chunk}-{ckpt}"
        w = Worker(name, _self_cmd(
            "memworker", "--mode", mode, "--batches-file", str(path), "--cache-dir", opts.cache_dir,
            "--threads", str(opts.threads), "--loss-chunk", str(chunk), "--rearec-path", code_path,
            "--checkpoint-tokens", str(ckpt).lower(), "--mem-repeats", str(opts.mem_repeats)), work / f"{name}.log")
        w.proc.stdin.close()
        w.proc.stdin = None
        res = w.finish()
        res["code"] = code
        results.append(res)
        per_batch = [float(np.median(s)) for s in res["batch_seconds"]]
        print(f"memory {code:6s} {mode:8s} loss_chunk {chunk:5d} checkpoint_tokens {str(ckpt):>6s}: peak RSS "
              f"{res['after']['VmHWM']:7.0f} MiB (before training {res['before_training']['VmRSS']:5.0f} MiB); "
              f"batches {res['shapes']}: s/batch {', '.join(f'{x:.2f}' for x in per_batch)}; "
              f"load {res['loadavg']}", flush=True)
    for mode, by in shares.items():
        for c, share in by.items():
            print(f"{mode:8s} checkpoint_tokens {c}: {100 * share['batches']:.1f} % of an epoch's batches, "
                  f"{100 * share['tokens']:.1f} % of its item tokens are checkpointed", flush=True)
    summary = {"batch_size": opts.batch_size, "results": results, "epoch_share_checkpointed": shares,
               "loadavg_before": load_before, "loadavg_after": loadavg()}
    (work / "memory.json").write_text(json.dumps(summary, indent=2))
    return summary


def run_ckptcost(opts: argparse.Namespace, data=None) -> dict:
    """Time cost of activation checkpointing, in this process (``--threads``, process CPU seconds, which
    other load barely moves at 1 thread): per step, never vs fit()'s rule (TrainConfig.checkpoint_tokens)
    on a stratified sample of the bucketed epoch (its cost per row matches the epoch's, so the ratio
    estimates the epoch's), and never vs always on the epoch's widest batch; settings alternate per step."""
    import torch

    from rearec.config import TrainConfig

    torch.set_num_threads(opts.threads)
    data = data or load(opts.cache_dir)
    rule = TrainConfig().checkpoint_tokens
    batches = epoch_batches(data, "bucketed", opts.batch_size)
    picks = pick_strata(batches, opts.batches, opts.batch_size)
    widest = max(range(len(batches)), key=lambda i: batches[i]["tokens"])
    model, method, optimizer = build_model(data)
    step(model, method, optimizer, "bucketed", batches[picks[0]]["batch"], opts.loss_chunk)  # warm-up
    cpu: dict[str, list[float]] = {"never": [], "rule": [], "widest never": [], "widest always": []}
    for r in range(opts.repeats):
        for name, setting, chosen in (("never", None, picks), ("rule", rule, picks),
                                      ("widest never", None, [widest]), ("widest always", 1, [widest])):
            c = time.process_time()
            for i in chosen:
                step(model, method, optimizer, "bucketed", batches[i]["batch"], opts.loss_chunk, setting)
            cpu[name].append(time.process_time() - c)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} cpu-s" for k, v in cpu.items()) + f"; load {loadavg()}",
              flush=True)
    med = {k: float(np.median(v)) for k, v in cpu.items()}
    tokens = np.array([b["tokens"] for b in batches])
    res = {"checkpoint_tokens": rule, "picked_shapes": [batches[i]["shape"] for i in picks],
           "widest_shape": batches[widest]["shape"], "cpu_s": cpu, "median_cpu_s": med,
           "epoch_cost": med["rule"] / med["never"] - 1, "widest_cost": med["widest always"] / med["widest never"] - 1,
           "epoch_share_batches": float((tokens > rule).mean()),
           "epoch_share_tokens": float(tokens[tokens > rule].sum() / tokens.sum()), "threads": opts.threads}
    print(f"checkpointing time cost ({opts.threads} thread(s), process CPU, median of {opts.repeats}): epoch sample "
          f"{res['picked_shapes']} {100 * res['epoch_cost']:+.1f} %; widest batch {res['widest_shape']} "
          f"{100 * res['widest_cost']:+.1f} %; the rule checkpoints {100 * res['epoch_share_batches']:.1f} % of the "
          f"epoch's batches ({100 * res['epoch_share_tokens']:.1f} % of its item tokens)", flush=True)
    Path(opts.workdir).mkdir(parents=True, exist_ok=True)
    (Path(opts.workdir) / "ckptcost.json").write_text(json.dumps(res, indent=2))
    return res


def subsample(data, frac: float, seed: int, remap_items: bool = True):
    """SplitData restricted to a random fraction of the users (all their rows in every split).

    With ``remap_items`` the vocabulary shrinks to the items of the kept users' training sequences
    (renumbered 1..n in their old order), so the full-vocabulary softmax shrinks with the subsample;
    valid/test rows whose target falls outside it are dropped, out-of-vocabulary history items are removed
    from their histories (the same rows for both modes).
    """
    import dataclasses

    from rearec.data.types import Rows, Sequences

    rng = np.random.default_rng(seed)
    users = np.unique(np.concatenate([data.train.user, data.valid.user, data.test.user]))
    keep_users = np.sort(rng.choice(users, max(1, int(round(frac * len(users)))), replace=False))
    seqs = data.train_sequences
    keep = np.isin(seqs.user, keep_users)
    lengths = np.diff(seqs.offsets)
    item_keep = np.repeat(keep, lengths)
    items = seqs.items[item_keep]
    lut = np.arange(data.n_items + 1)
    n_items = data.n_items
    if remap_items:
        vocab = np.unique(items)
        lut = np.zeros(data.n_items + 1, dtype=np.int64)
        lut[vocab] = np.arange(1, len(vocab) + 1)
        n_items = len(vocab)
    sub = Sequences(user=seqs.user[keep], offsets=np.concatenate([[0], np.cumsum(lengths[keep])]).astype(np.int64),
                    items=lut[items], is_target=seqs.is_target[item_keep])

    def rows(r: Rows) -> Rows:
        r = r.take(np.flatnonzero(np.isin(r.user, keep_users) & (lut[r.target] > 0)))
        history = lut[r.history]  # out-of-vocabulary history items (eval rows only) -> dropped, re-left-padded
        history = np.take_along_axis(history, np.argsort(history != 0, axis=1, kind="stable"), 1)
        return dataclasses.replace(r, history=history, target=lut[r.target])

    item_ids = data.item_ids[np.concatenate([[0], np.flatnonzero(lut[1:] > 0) + 1])] if remap_items else data.item_ids
    out = dataclasses.replace(data, n_items=n_items, train=rows(data.train), valid=rows(data.valid),
                              test=rows(data.test), train_sequences=sub, item_ids=item_ids)
    assert len(out.train) == len(data.train.take(np.flatnonzero(np.isin(data.train.user, keep_users))))
    return out, len(keep_users)


def quality_configs(opts: argparse.Namespace):
    from rearec.config import MethodConfig, ModelConfig

    return ModelConfig(hidden_size=opts.dim), MethodConfig(**PRL)


def qworker(opts: argparse.Namespace) -> None:
    """Quality worker: one seed, bucketed then packed, fit() with early stopping -> JSON lines."""
    import torch

    from rearec.config import TrainConfig
    from rearec.train import fit

    torch.set_num_threads(opts.threads)
    sub, _ = subsample(load(opts.cache_dir), opts.users_frac, opts.subsample_seed)
    model_cfg, method = quality_configs(opts)
    for mode in ("bucketed", "packed"):
        cfg = TrainConfig(batch_size=opts.q_batch_size, max_epochs=opts.max_epochs, patience=opts.patience,
                          training=mode, seed=opts.seed)
        t0 = time.perf_counter()

        def on_epoch(log, mode=mode) -> None:
            print(f"seed {opts.seed} {mode} epoch {log.epoch}: loss {log.train_loss:.3f} valid NDCG@20 "
                  f"{log.valid['ndcg@20']:.4f} ({log.seconds:.0f} s)", file=sys.stderr, flush=True)

        res = fit(sub, model_cfg, method, cfg, on_epoch=on_epoch)
        _send("result", {"mode": mode, "seed": opts.seed, "valid_ndcg20": res.valid.metrics()["ndcg@20"],
                         "test_ndcg20": res.test.metrics()["ndcg@20"], "best_epoch": res.best_epoch,
                         "epochs": len(res.epochs), "wall_s": time.perf_counter() - t0,
                         "valid_curve": [e.valid["ndcg@20"] for e in res.epochs],
                         "train_loss": [e.train_loss for e in res.epochs]})
    _send("final", {})


def run_quality(opts: argparse.Namespace, data=None) -> dict:
    from scipy import stats

    work = Path(opts.workdir)
    work.mkdir(parents=True, exist_ok=True)
    load_before = loadavg()
    started = time.perf_counter()
    data = data or load(opts.cache_dir)
    sub, n_users = subsample(data, opts.users_frac, opts.subsample_seed)
    print(f"quality: {n_users} users ({opts.users_frac:.0%}), {len(sub.train)} train / {len(sub.valid)} valid / "
          f"{len(sub.test)} test rows, {sub.n_items} items (remapped); d {opts.dim}, batch {opts.q_batch_size}, "
          f"<= {opts.max_epochs} epochs, patience {opts.patience}; one process per seed, "
          f"{opts.q_threads} thread(s) each", flush=True)
    seeds = [int(s) for s in opts.seeds.split(",")]
    procs = [Worker(f"quality-seed{s}", _self_cmd(
        "qworker", "--seed", str(s), "--cache-dir", opts.cache_dir, "--threads", str(opts.q_threads),
        "--users-frac", str(opts.users_frac), "--subsample-seed", str(opts.subsample_seed), "--dim", str(opts.dim),
        "--q-batch-size", str(opts.q_batch_size), "--max-epochs", str(opts.max_epochs),
        "--patience", str(opts.patience)), work / f"quality-seed{s}.log") for s in seeds]
    runs = []
    for w in procs:
        w.proc.stdin.close()
        w.proc.stdin = None
        for _ in range(2):
            run = w.expect("result")
            runs.append(run)
            print(f"  {run['mode']:8s} seed {run['seed']}: valid NDCG@20 {run['valid_ndcg20']:.4f} (best epoch "
                  f"{run['best_epoch']}/{run['epochs']}), test {run['test_ndcg20']:.4f}, {run['wall_s']:.0f} s", flush=True)
        w.finish()

    def ci(values):
        v = np.asarray(values, dtype=float)
        half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
        return float(v.mean()), float(half)

    by = {m: [r["valid_ndcg20"] for r in sorted(runs, key=lambda r: r["seed"]) if r["mode"] == m]
          for m in ("bucketed", "packed")}
    welch = stats.ttest_ind(by["packed"], by["bucketed"], equal_var=False)
    diff = np.array(by["packed"]) - np.array(by["bucketed"])  # same seed = same initial weights
    summary = {"users": n_users, "train_rows": len(sub.train), "valid_rows": len(sub.valid), "n_items": sub.n_items,
               "dim": opts.dim, "batch_size": opts.q_batch_size, "max_epochs": opts.max_epochs,
               "patience": opts.patience, "runs": runs, "mean_ci95": {m: ci(v) for m, v in by.items()},
               "welch_t": float(welch.statistic), "welch_p": float(welch.pvalue),
               "paired_diff_mean_ci95": ci(diff), "loadavg_before": load_before, "loadavg_after": loadavg(),
               "wall_s": time.perf_counter() - started}
    (work / "quality.json").write_text(json.dumps(summary, indent=2))
    for m, (mean, half) in summary["mean_ci95"].items():
        print(f"quality {m:8s}: valid NDCG@20 {mean:.4f} +- {half:.4f} (95 % CI, n={len(by[m])})")
    print(f"Welch t = {welch.statistic:.2f}, p = {welch.pvalue:.3f}; paired (same seed) packed - bucketed = "
          f"{summary['paired_diff_mean_ci95'][0]:+.4f} +- {summary['paired_diff_mean_ci95'][1]:.4f}; "
          f"wall {summary['wall_s']:.0f} s", flush=True)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["all", "deviation", "throughput", "memory", "ckptcost", "quality", "worker",
                                         "memworker", "qworker"])
    parser.add_argument("--cache-dir", default=str(REPO / "data"), help="rearec.data cache folder")
    parser.add_argument("--workdir", default="/tmp/bench_training_modes", help="batches, logs and JSON results")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--batches", type=int, default=3, help="throughput: batches per mode per round")
    parser.add_argument("--repeats", type=int, default=3, help="throughput: timed rounds (median reported)")
    parser.add_argument("--phase-rounds", type=int, default=1, choices=[0, 1], help="throughput: instrumented round")
    parser.add_argument("--loss-chunk", type=int, default=1024, help="TrainConfig.loss_chunk (default 1024)")
    parser.add_argument("--chunks", default="256,1024,2048", help="memory: loss_chunk values")
    parser.add_argument("--all-chunks", action="store_true", help="memory: sweep chunks for bucketed too")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--users-frac", type=float, default=0.1, help="quality: user subsample")
    parser.add_argument("--subsample-seed", type=int, default=0)
    parser.add_argument("--dim", type=int, default=64, help="quality: hidden size")
    parser.add_argument("--q-batch-size", type=int, default=256, help="quality: batch size")
    parser.add_argument("--max-epochs", type=int, default=4, help="quality: epoch cap")
    parser.add_argument("--patience", type=int, default=2, help="quality: early-stopping patience")
    parser.add_argument("--seeds", default="0,1,2", help="quality: seeds")
    parser.add_argument("--q-threads", type=int, default=1, help="quality: torch threads per seed process")
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--extra", action="append", metavar="NAME=MODE@PATH",
                        help="throughput: an extra worker of MODE importing rearec from PATH (A/B a patch)")
    parser.add_argument("--rearec-path", default="", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoints", default="none,default",
                        help="memory: checkpoint_tokens values ('none' = off, 'default' = TrainConfig's)")
    parser.add_argument("--before", default="",
                        help="memory: also run each job with rearec imported from this folder (older code)")
    parser.add_argument("--now", default="", help="memory / throughput / ckptcost: import the current rearec from "
                                                   "this folder (a snapshot) instead of the repository")
    parser.add_argument("--mem-repeats", type=int, default=2, help="memory: timed passes after the warm-up")
    parser.add_argument("--checkpoint-tokens", help=argparse.SUPPRESS)  # memworker
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--batches-file", help=argparse.SUPPRESS)
    parser.add_argument("--warmup-file", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.now and opts.part in ("deviation", "ckptcost"):  # in-process parts: import that snapshot
        sys.path.insert(0, opts.now)
    if opts.part == "worker":
        return worker(opts)
    if opts.part == "memworker":
        return memworker(opts)
    if opts.part == "qworker":
        return qworker(opts)
    print(f"{opts.part}: uptime load {loadavg()}, {os.cpu_count()} CPUs", flush=True)
    data = load(opts.cache_dir)
    parts = ["deviation", "throughput", "memory", "quality"] if opts.part == "all" else [opts.part]
    runners = {"deviation": run_deviation, "throughput": run_throughput, "memory": run_memory,
               "ckptcost": run_ckptcost, "quality": run_quality}
    out = {p: runners[p](opts, data) for p in parts}
    Path(opts.workdir).mkdir(parents=True, exist_ok=True)
    if "deviation" in out:
        (Path(opts.workdir) / "deviation.json").write_text(json.dumps(out["deviation"], indent=2))
    print(f"done: uptime load {loadavg()}", flush=True)


if __name__ == "__main__":
    main()
