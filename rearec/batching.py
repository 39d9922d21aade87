"""Mini-batches of (history -> target) rows, padded to max_len or only to each batch's longest history.

Histories are stored left-padded to max_len, so trimming a batch to its longest history is a slice of
the last columns; with positions counted from the oldest item (model.py) the trim changes no output.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from .data.types import Rows

MEGABATCH = 50  # batches per length-sorting window: more = less padding, less mixing of lengths


def _to_batch(rows: Rows, index: np.ndarray, lengths: np.ndarray, trim: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(int(lengths[index].max()), 1) if trim else rows.max_len
    history = torch.from_numpy(np.ascontiguousarray(rows.history[index, rows.max_len - width :])).long()
    target = torch.from_numpy(rows.target[index]).long()
    return history.to(device), target.to(device)


def train_order(n: int, lengths: np.ndarray, batch_size: int, mode: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Row indices of each batch for one epoch.

    'padded': a seeded shuffle cut into batches. 'bucketed': the same shuffle, then each window of
    MEGABATCH batches is sorted by history length (stable, so ties keep the shuffled order), cut into
    batches, and the batch order is shuffled again -- random across epochs, little padding.
    """
    perm = rng.permutation(n)
    if mode == "padded":
        return [perm[i : i + batch_size] for i in range(0, n, batch_size)]
    if mode != "bucketed":
        raise ValueError(f"training: unknown batching mode {mode!r}")
    batches = []
    window = batch_size * MEGABATCH
    for start in range(0, n, window):
        chunk = perm[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def train_batches(
    rows: Rows, batch_size: int, mode: str, rng: np.random.Generator, device="cpu"
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (history (B, L_b), target (B,)) for one training epoch."""
    if len(rows) == 0:
        raise ValueError("train: no training rows")
    lengths = rows.lengths()
    for index in train_order(len(rows), lengths, batch_size, mode, rng):
        yield _to_batch(rows, index, lengths, mode == "bucketed", device)


def eval_batches(rows: Rows, batch_size: int, device="cpu") -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """Yield (row indices, history (B, L_b), target (B,)) in length order, each batch trimmed."""
    lengths = rows.lengths()
    order = np.argsort(lengths, kind="stable")
    for i in range(0, len(order), batch_size):
        index = order[i : i + batch_size]
        history, target = _to_batch(rows, index, lengths, True, device)
        yield index, history, target
