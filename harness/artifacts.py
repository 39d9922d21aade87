"""The on-disk results of one trial: what the trial function writes and the driver ingests.

`<runs>/<study>/<trial_key[:12]>/` holds TensorBoard event files, `trial.json` (the resolved trial),
`epochs.parquet`, `metrics.parquet`, `ranks.parquet`, `similarity.parquet`, `signals.parquet` (only with
`step_signals`) and, written last and atomically, `result.json`: its presence means the trial finished and everything else is complete.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rearec.config import METRICS

RESULT = "result.json"
SIGNAL_COLUMNS = ["split", "sample", "step", "rank", "entropy", "top1_prob", "top1_item", "kl_prev", "top1_repeats"]
EPOCH_COLUMNS = ["epoch", "train_loss", *(f"valid_{m.replace('@', '_')}" for m in METRICS), "seconds", "is_best"]


def trial_dir(runs: str | Path, study: str, key: str) -> Path:
    return Path(runs) / study / key[:12]


def write_json(path: Path, data: Any) -> None:
    """Write via a temporary name and rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, path)


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def epochs_frame(logs: list) -> pd.DataFrame:
    """One row per rearec EpochLog, columns as the `epochs` table."""
    rows = [[log.epoch, log.train_loss, *(log.valid.get(m) for m in METRICS), log.seconds, log.is_best]
            for log in logs]
    return pd.DataFrame(rows, columns=EPOCH_COLUMNS).astype({"epoch": "int64", "is_best": "bool"})


def evaluation_frames(split: str, evaluation) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(metrics, ranks, similarity) long frames of one rearec Evaluation; step <NA> = method output."""
    metrics = evaluation.summary().copy()
    metrics.insert(0, "split", split)
    ranks = evaluation.ranks  # (N, K + 2): columns 0..K are steps, the last is the method's output
    n, cols = ranks.shape
    step = pd.array(list(range(cols - 1)) + [None], dtype="Int64")
    rank_frame = pd.DataFrame({
        "split": split,
        "sample": np.tile(np.arange(n, dtype=np.int64), cols),  # column-major: all samples of step 0 first
        "step": step.repeat(n),
        "rank": np.asarray(ranks).T.reshape(-1).astype(np.int64),
    })
    sim = evaluation.step_similarity
    k = sim.shape[0]
    sim_frame = pd.DataFrame({"split": split, "step_a": [a for a in range(k) for _ in range(k)],
                              "step_b": [b for _ in range(k) for b in range(k)], "cosine": sim.reshape(-1)})
    return metrics, rank_frame, sim_frame


def signals_frame(split: str, evaluation) -> pd.DataFrame | None:
    """Long frame (SIGNAL_COLUMNS) of an Evaluation's per-depth signals (rearec.signals), None without them;
    kl_prev is NULL at depth 0. Rows are depth-major like the ranks frame."""
    sig = evaluation.signals
    if sig is None:
        return None
    n, depths = sig.rank.shape

    def flat(values: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(values.T).reshape(-1)

    kl = pd.array(flat(sig.kl_prev), dtype="Float32")
    kl[:n] = pd.NA  # depth 0 has no previous depth
    return pd.DataFrame({"split": split, "sample": np.tile(np.arange(n, dtype=np.int32), depths),
                         "step": np.repeat(np.arange(depths, dtype=np.int32), n), "rank": flat(sig.rank),
                         "entropy": flat(sig.entropy), "top1_prob": flat(sig.top1_prob),
                         "top1_item": flat(sig.top1_item), "kl_prev": kl, "top1_repeats": flat(sig.top1_repeats)})


@dataclass(frozen=True)
class TrialOutput:
    """Everything the driver stores for a finished trial."""

    result: dict
    epochs: pd.DataFrame
    metrics: pd.DataFrame
    ranks: pd.DataFrame
    similarity: pd.DataFrame
    signals: pd.DataFrame | None = None  # SIGNAL_COLUMNS rows, only for trials run with step_signals


def read_output(directory: str | Path, key: str) -> TrialOutput | None:
    """The finished output of trial ``key`` in ``directory``, or None if it is absent or incomplete."""
    directory = Path(directory)
    try:
        result = json.loads((directory / RESULT).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    if result.get("key") != key:
        return None
    frames = {}
    for name in ("epochs", "metrics", "ranks", "similarity", "signals"):
        path = directory / f"{name}.parquet"
        frames[name] = pd.read_parquet(path) if path.exists() else None
    if frames["epochs"] is None or frames["metrics"] is None:
        return None
    return TrialOutput(result, frames["epochs"], frames["metrics"],
                       frames["ranks"] if frames["ranks"] is not None else pd.DataFrame(
                           columns=["split", "sample", "step", "rank"]),
                       frames["similarity"] if frames["similarity"] is not None else pd.DataFrame(
                           columns=["split", "step_a", "step_b", "cosine"]), frames["signals"])
