"""Test-set inference latency for K = 0..5 reasoning steps, with and without the KV cache (paper Table 4)."""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import pandas as pd
import torch

from .batching import eval_batches
from .config import MethodConfig, ModelConfig
from .data.types import Rows
from .metrics import target_ranks
from .model import ReaRecModel
from .objectives import inference_state


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def time_inference(model: ReaRecModel, method: MethodConfig, rows: Rows, batch_size: int = 1024,
                   device: str | torch.device = "cpu", cached: bool = True) -> float:
    """Seconds to rank all items for every row of ``rows`` with the method's own representation."""
    device = torch.device(device)
    model.eval()
    batches = list(eval_batches(rows, batch_size, device))  # data movement is not part of the timing
    _sync(device)
    start = time.perf_counter()
    for _, history, target in batches:
        states = model(history) if cached else model.forward_uncached(history)
        target_ranks(model.scores(inference_state(method, states)), target - 1)
    _sync(device)
    return time.perf_counter() - start


def measure_latency(
    rows: Rows,
    n_items: int,
    model_cfg: ModelConfig,
    method: str = "prl",
    steps: Iterable[int] = range(6),
    repeats: int = 5,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> pd.DataFrame:
    """Median inference seconds per (steps, cached) over ``repeats`` runs after one warm-up.

    Timing does not depend on trained weights, so each K gets a freshly initialised model of the same
    architecture. Columns: reasoning_steps, cached, seconds, increase_pct (vs K = 0 with the same cache
    setting), runs (the individual timings).
    """
    if repeats < 1:
        raise ValueError(f"repeats: must be >= 1, got {repeats!r}")
    records = []
    for K in steps:
        torch.manual_seed(seed)
        cfg = MethodConfig(name="base" if K == 0 else method, reasoning_steps=K)
        model = ReaRecModel.from_configs(model_cfg, cfg, n_items).to(device)
        for cached in (True, False):
            time_inference(model, cfg, rows, batch_size, device, cached)  # warm-up
            runs = [time_inference(model, cfg, rows, batch_size, device, cached) for _ in range(repeats)]
            records.append({"reasoning_steps": K, "cached": cached, "seconds": float(np.median(runs)), "runs": runs})
    frame = pd.DataFrame(records)
    base = frame[frame.reasoning_steps == 0].set_index("cached")["seconds"]
    frame["increase_pct"] = [100.0 * (s / base[c] - 1.0) if c in base.index else float("nan")
                             for s, c in zip(frame.seconds, frame.cached, strict=True)]
    return frame
