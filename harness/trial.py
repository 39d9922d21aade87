"""The trial function Ray runs: rearec objects from a resolved trial, fit, per-epoch reports, files.

Everything a trial writes goes under its own directory `<runs>/<study>/<trial_key[:12]>/` (see
harness.artifacts); the driver ingests it into DuckDB. `execute` has no Ray in it and is what tests
call directly; `run_trial` is the Ray Tune function trainable around it.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from rearec.config import METRICS, MethodConfig, ModelConfig, TrainConfig

from .artifacts import (
    RESULT,
    TrialOutput,
    epochs_frame,
    evaluation_frames,
    signals_frame,
    trial_dir,
    write_json,
    write_parquet,
)
from .cost import Meter
from .keys import TrialSpec
from .store import utcnow

_DATA_CACHE: dict[tuple[str, str], Any] = {}  # reused across trials of one Ray actor (reuse_actors=True)


def _load_data(spec: TrialSpec, cache_dir: str):
    from rearec.data import load_dataset

    from .keys import canonical_json

    key = (canonical_json(spec.dataset_spec), cache_dir)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # one dataset per worker at a time keeps memory flat
        _DATA_CACHE[key] = load_dataset(spec.dataset_spec, cache_dir)
    data = _DATA_CACHE[key]
    if data.content_hash != spec.dataset_hash:
        raise RuntimeError(f"dataset {spec.dataset}: processed content hash {data.content_hash[:12]} differs from "
                           f"the planned {spec.dataset_hash[:12]} (the data changed since planning; re-run the study)")
    return data


def item_features(model_cfg: ModelConfig, data, cache_dir: str):
    """Frozen item-text features for a text-based backbone (None for ID-based ones): the item attributes
    rendered as in paper §2.1, encoded by ``text_encoder`` and PCA-reduced to ``pca_dim``, cached under the
    dataset cache by content hash. A fine-tuned MoRec encoder gets the texts themselves."""
    from rearec.config import TEXT_BACKBONES

    if model_cfg.backbone not in TEXT_BACKBONES:
        return None
    from rearec.data import text

    if model_cfg.backbone == "morec" and model_cfg.finetune_text_encoder:
        return ["", *text.item_texts(data)]
    return text.item_embeddings(data, encoder=model_cfg.text_encoder, pca_dim=model_cfg.pca_dim, cache_dir=cache_dir)


def _clean(directory: Path) -> None:
    """Remove what an interrupted earlier attempt left (event files, partial results)."""
    if directory.is_symlink():
        directory.unlink()
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)


def trial_env(device: str) -> dict[str, Any]:
    import torch

    env = {"host": socket.gethostname(), "platform": platform.platform(), "torch_threads": torch.get_num_threads(),
           "gpu": None, "cuda": torch.version.cuda}
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.cuda.current_device())
    return env


def execute(spec: TrialSpec, out_dir: str | Path, cache_dir: str = "data", device: str = "cpu",
            threads: int | None = None, report: Callable[[dict], None] | None = None,
            where: dict[str, Any] | None = None, gpu_fraction: float | None = None) -> TrialOutput:
    """Train and evaluate one trial, writing TensorBoard events and result files into ``out_dir``.

    ``where``: the Ray placement of this attempt (node_id, the GPU ids Ray granted); it goes into
    `trial.json` at the start, so the driver knows where a trial ran even when its node dies mid-trial.
    ``gpu_fraction``: the share of a GPU Ray granted (the study's resources.gpu) that weights gpu_seconds on
    CUDA; None on CUDA means the whole device (see harness.cost)."""
    meter = Meter(device.startswith("cuda"), gpu_fraction)  # first: the trial's own CPU and wall time from here
    import torch
    from torch.utils.tensorboard import SummaryWriter

    from rearec.train import fit

    out_dir = Path(out_dir)
    _clean(out_dir)
    started = utcnow()
    where = {"host": socket.gethostname(), "node_id": None, **(where or {})}
    write_json(out_dir / "trial.json", {**spec.to_dict(), "started_at": started.isoformat(), **where})
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but torch sees no CUDA device on {socket.gethostname()}")
    on_cuda = device.startswith("cuda")
    if on_cuda:  # per trial: a reused actor's earlier trials must not count
        torch.cuda.reset_peak_memory_stats()
    data = _load_data(spec, cache_dir)
    metric = spec.train["selection_metric"]
    writer = SummaryWriter(log_dir=str(out_dir))
    writer.add_text("trial", f"`{spec.key}`\n\n{spec.label()}")
    best = -math.inf

    def on_epoch(log) -> bool:
        nonlocal best
        best = max(best, log.valid[metric])
        writer.add_scalar("train/loss", log.train_loss, log.epoch)
        writer.add_scalar("train/epoch_seconds", log.seconds, log.epoch)
        for name, value in log.valid.items():
            writer.add_scalar(f"valid/{name}", value, log.epoch)
        for step, values in log.valid_steps.items():
            for name, value in values.items():
                writer.add_scalar(f"valid_by_step/{name}/step_{step}", value, log.epoch)
        writer.flush()
        if report is not None:  # an ASHA stop ends the thread inside this call (Ray raises SystemExit)
            report({"epoch": log.epoch, "train_loss": log.train_loss, "epoch_seconds": log.seconds,
                    **{f"valid/{m}": log.valid[m] for m in METRICS}, f"best_valid/{metric}": best,
                    "trial_key": spec.key, "host": where["host"], "node_id": where["node_id"],
                    **{k: v for k, v in meter.figures().items() if v is not None}})  # so far: a pruned trial's cost
        return False

    try:
        model_cfg = ModelConfig.from_dict(spec.model)
        fitted = fit(data, model_cfg, MethodConfig.from_dict(spec.method), TrainConfig.from_dict(spec.train),
                     device=device, on_epoch=on_epoch, item_features=item_features(model_cfg, data, cache_dir))
        for name, value in fitted.test.metrics().items():  # test only at the epoch chosen on validation
            writer.add_scalar(f"test/{name}", value, fitted.best_epoch)
    finally:
        writer.close()
    latency = measure_test_latency(fitted.model, MethodConfig.from_dict(spec.method), data.test,
                                   int(spec.train["eval_batch_size"]), device,
                                   graphs=bool(spec.train.get("cuda_graphs", True)))
    frames = [evaluation_frames(split, ev) for split, ev in (("valid", fitted.valid), ("test", fitted.test))]
    metrics = pd.concat([f[0] for f in frames], ignore_index=True)
    ranks = pd.concat([f[1] for f in frames], ignore_index=True)
    similarity = pd.concat([f[2] for f in frames], ignore_index=True)
    epochs = epochs_frame(fitted.epochs)
    for name, frame in (("epochs", epochs), ("metrics", metrics), ("ranks", ranks), ("similarity", similarity)):
        write_parquet(out_dir / f"{name}.parquet", frame)
    signals = [f for split, ev in (("valid", fitted.valid), ("test", fitted.test))
               if (f := signals_frame(split, ev)) is not None]  # only with train.step_signals
    signals = pd.concat(signals, ignore_index=True) if signals else None
    if signals is not None:
        write_parquet(out_dir / "signals.parquet", signals)
    result = {"key": spec.key, "best_epoch": fitted.best_epoch, "epochs": len(fitted.epochs),
              "wall_seconds": fitted.wall_seconds, "n_parameters": fitted.n_parameters, "device": device,
              "started_at": started.isoformat(), "finished_at": utcnow().isoformat(), "env": trial_env(device),
              "pid": os.getpid(), "latency": latency, "host": where["host"], "node_id": where["node_id"],
              # Ray does not cap a fractional GPU's memory: this peak is what to size the fraction from
              "peak_gpu_bytes": int(torch.cuda.max_memory_allocated()) if on_cuda else None}
    if where.get("ray_gpu_ids") is not None:
        result["env"]["ray_gpu_ids"] = where["ray_gpu_ids"]
    if meter.gpu_fraction is not None:
        result["env"]["gpu_fraction"] = meter.gpu_fraction
    result.update(meter.figures())  # last, just before the file that marks the trial complete
    write_json(out_dir / RESULT, result)  # last: its presence marks the trial complete
    return TrialOutput(result, epochs, metrics, ranks, similarity, signals)


def measure_test_latency(model, method, rows, batch_size: int, device: str, repeats: int = 3,
                         graphs: bool = True) -> list[dict]:
    """Paper Table 4 for the trained model: median seconds of test-set full-ranking inference with and
    without the KV cache (one warm-up pass first; on CUDA with ``graphs``, TrainConfig.cuda_graphs, the
    replayed CUDA graphs). Timings share the CPU with concurrent trials, so studies meant for latency
    run one trial at a time (studies/latency.yaml)."""
    import statistics

    from rearec.latency import time_inference

    time_inference(model, method, rows, batch_size, device, cached=True, graphs=graphs)  # warm-up
    out = []
    for cached in (True, False):
        runs = [time_inference(model, method, rows, batch_size, device, cached=cached, graphs=graphs)
                for _ in range(repeats)]
        out.append({"split": "test", "cached": cached, "seconds": statistics.median(runs), "rows": len(rows)})
    return out


def resolve(config: dict[str, Any]) -> TrialSpec:
    """The TrialSpec of a Ray trial config: a grid trial carries it, an Optuna trial carries its group."""
    if "trial" in config:
        return TrialSpec.from_dict(config["trial"])
    from .expand import resolve_point

    return resolve_point(config["group"], config.get("params", {}))


def run_trial(config: dict[str, Any]) -> None:
    """Ray Tune function trainable (`tune.report` per epoch; results as files in the trial directory)."""
    from ray import tune

    ctx = config["context"]
    spec = resolve(config)
    out = trial_dir(ctx["runs"], ctx["study"], spec.key)
    execute(spec, out, cache_dir=ctx["cache_dir"], device=ctx["device"], threads=ctx.get("threads"),
            report=tune.report, where=ray_placement(), gpu_fraction=ctx.get("gpu_fraction"))


def ray_placement() -> dict[str, Any]:
    """Where Ray placed this trial: its node id and the GPU ids it granted (logical ones included; all
    hosts of a one-machine test cluster share a hostname, so only the node id tells them apart)."""
    import ray

    context = ray.get_runtime_context()
    return {"node_id": context.get_node_id(), "ray_gpu_ids": list(context.get_accelerator_ids().get("GPU", []))}
