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
from .static import check_rows, graph_count, runner_for, static_batches


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def time_inference(model: ReaRecModel, method: MethodConfig, rows: Rows, batch_size: int = 1024,
                   device: str | torch.device = "cpu", cached: bool = True, graphs: bool = True,
                   static: bool | None = None) -> float:
    """Seconds to rank all items for every row of ``rows`` with the method's own representation.

    ``graphs`` / ``static`` as in rearec.evaluate.evaluate: on CUDA the batches run at static shapes,
    each shape captured as a CUDA graph (once per model, before the clock starts) and replayed.
    """
    device = torch.device(device)
    model.eval()

    def ranks(model: ReaRecModel, history: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor]:
        states = model(history) if cached else model.forward_uncached(history)
        return (target_ranks(model.scores(inference_state(method, states)), target - 1),)

    # data movement is not part of the timing
    if static if static is not None else (graphs and device.type == "cuda"):
        check_rows(rows, model.n_items, model.cfg.max_len)
        run = runner_for(model, ("latency", method.name, cached), ranks, graphs)
        batches = list(static_batches(rows, batch_size, device))
        if graphs and device.type == "cuda":  # capture every shape now, so no timing includes a capture
            for _, history, target in {tuple(h.shape): (i, h, t) for i, h, t in batches}.values():
                run(history, target)
    else:
        batches = list(eval_batches(rows, batch_size, device))

        def run(history, target):
            return ranks(model, history, target)

    _sync(device)
    start = time.perf_counter()
    for _, history, target in batches:
        run(history, target)
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
    graphs: Iterable[bool] = (True,),
) -> pd.DataFrame:
    """Median inference seconds per (steps, cached) over ``repeats`` runs after one warm-up.

    Timing does not depend on trained weights, so each K gets a freshly initialised model of the same
    architecture. ``graphs``: the CUDA-graph settings to time (each a column value; no effect on CPU).
    Columns: reasoning_steps, cached, graphs (whether graphs really ran), seconds, increase_pct (vs K = 0
    with the same cache and graph setting), runs (the individual timings).
    """
    if repeats < 1:
        raise ValueError(f"repeats: must be >= 1, got {repeats!r}")
    records = []
    settings = sorted({bool(g) and torch.device(device).type == "cuda" for g in graphs}, reverse=True)  # CPU: eager
    for K in steps:
        torch.manual_seed(seed)
        cfg = MethodConfig(name="base" if K == 0 else method, reasoning_steps=K)
        model = ReaRecModel.from_configs(model_cfg, cfg, n_items).to(device)
        for graphed in settings:
            for cached in (True, False):
                time_inference(model, cfg, rows, batch_size, device, cached, graphed)  # warm-up (and capture)
                runs = [time_inference(model, cfg, rows, batch_size, device, cached, graphed) for _ in range(repeats)]
                used = graphed and graph_count(model, ("latency", cfg.name, cached)) > 0
                records.append({"reasoning_steps": K, "cached": cached, "graphs": used,
                                "seconds": float(np.median(runs)), "runs": runs})
    frame = pd.DataFrame(records)
    base = frame[frame.reasoning_steps == 0].set_index(["cached", "graphs"])["seconds"]
    frame["increase_pct"] = [100.0 * (s / base[c, g] - 1.0) if (c, g) in base.index else float("nan")
                             for s, c, g in zip(frame.seconds, frame.cached, frame.graphs, strict=True)]
    return frame
