"""Packed-prefix training batches: one causal pass per user sequence yields every prefix's encoding.

A user's training sequence s_0..s_{T-1} with target positions t (Sequences.is_target) is cut into
*windows* of at most max_len input items. The per-row protocol trains target t on the history
s_{max(0, t-L)}..s_{t-1} (L = max_len), positions counted from its oldest item. A window whose inputs
start at the user's first item reproduces that exactly for every target t <= L, so users whose sequence
fits in L + 1 items train exactly as per-row. Longer users get extra windows: targets t > L are grouped
in strides of S = L // 2, and a group whose last target is h is trained inside the window
s_{h-L}..s_{h-1}; its targets then see between L - S + 1 and L history items (per-row: L), with
positions counted from the window start. bench/bench_training_modes.py measures what that changes
(``deviation``: history lengths vs per-row; ``quality``: validation NDCG@20, bucketed vs packed).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .data.types import Sequences

MEGABATCH = 50  # batches per window-length sorting window (as in batching.py)


@dataclass(frozen=True)
class Windows:
    start: np.ndarray  # (W,) index of the window's first input item in Sequences.items
    length: np.ndarray  # (W,) number of input items
    offsets: np.ndarray  # (W+1,) the window's targets are target_*[offsets[w]:offsets[w+1]]
    target_col: np.ndarray  # (N,) column of the target's last history item inside its window
    target_item: np.ndarray  # (N,) target item id
    target_pos: np.ndarray  # (N,) the target's index in Sequences.items (links back to per-row rows)

    @property
    def n_targets(self) -> np.ndarray:
        return np.diff(self.offsets)


def build_windows(seqs: Sequences, max_len: int) -> Windows:
    """Cut every user's sequence into windows as the module docstring describes."""
    if max_len < 2:
        raise ValueError(f"max_len: packed training needs max_len >= 2, got {max_len!r}")
    stride = max_len // 2
    target_pos = np.flatnonzero(seqs.is_target)
    user = np.searchsorted(seqs.offsets, target_pos, side="right") - 1
    t = target_pos - seqs.offsets[user]  # position of the target in its user's sequence (>= 1)
    if (t < 1).any():
        raise ValueError("train_sequences.is_target: a user's first item cannot be a target")
    group = np.where(t <= max_len, 0, (t - max_len - 1) // stride + 1)  # window index within the user
    key = user * (int(group.max(initial=0)) + 1) + group
    boundaries = np.flatnonzero(np.diff(key)) + 1 if len(key) else np.zeros(0, dtype=np.int64)
    firsts = np.concatenate([[0], boundaries]).astype(np.int64) if len(key) else np.zeros(0, dtype=np.int64)
    offsets = np.concatenate([firsts, [len(key)]]).astype(np.int64)
    lasts = offsets[1:] - 1
    last_t = t[lasts]
    w_user, w_group = user[firsts], group[firsts]
    # group 0 starts at the user's first item; later groups end at their last target
    w_start_t = np.where(w_group == 0, 0, last_t - max_len)
    w_len = last_t - w_start_t
    col = t - 1 - np.repeat(w_start_t, np.diff(offsets))
    return Windows(
        start=seqs.offsets[w_user] + w_start_t,
        length=w_len.astype(np.int64),
        offsets=offsets,
        target_col=col.astype(np.int64),
        target_item=seqs.items[target_pos].astype(np.int64),
        target_pos=target_pos.astype(np.int64),
    )


@dataclass
class PackedBatch:
    items: torch.Tensor  # (U, L_b) left-padded window inputs
    ends: torch.Tensor  # (U, P_b) column of each prefix's last item, -1 for empty slots
    targets: torch.Tensor  # (U, P_b) target ids, 0 for empty slots
    target_pos: np.ndarray  # (N,) Sequences.items index of each real target, in ends >= 0 order
    users: torch.Tensor  # (U,) the user index of each window (RCL keeps a user's prefixes apart)

    @property
    def n_rows(self) -> int:
        return len(self.target_pos)


def make_batch(seqs: Sequences, win: Windows, index: np.ndarray, device="cpu") -> PackedBatch:
    """Assemble windows ``index`` into padded tensors (vectorised gathers, no per-item loops)."""
    lengths, counts = win.length[index], win.n_targets[index]
    L, P = int(lengths.max()), int(counts.max())
    cols = np.arange(L)
    pad = L - lengths  # left padding per window
    src = win.start[index, None] + cols[None, :] - pad[:, None]  # (U, L) source index, < start = padding
    valid = cols[None, :] >= pad[:, None]
    items = np.where(valid, seqs.items[np.where(valid, src, 0)], 0)
    slot = np.arange(P)
    has = slot[None, :] < counts[:, None]  # (U, P)
    tidx = np.where(has, win.offsets[index, None] + slot[None, :], 0)
    ends = np.where(has, win.target_col[tidx] + pad[:, None], -1)
    targets = np.where(has, win.target_item[tidx], 0)
    users = np.searchsorted(seqs.offsets, win.start[index], side="right") - 1  # two windows can share one
    return PackedBatch(
        items=torch.from_numpy(items).long().to(device),
        ends=torch.from_numpy(ends).long().to(device),
        targets=torch.from_numpy(targets).long().to(device),
        target_pos=win.target_pos[tidx[has]],
        users=torch.from_numpy(seqs.user[users]).long().to(device),
    )


def packed_batches(
    seqs: Sequences, win: Windows, batch_rows: int, rng: np.random.Generator, device="cpu"
) -> Iterator[PackedBatch]:
    """One epoch: windows shuffled, length-sorted inside megabatches, grouped so each batch holds about
    ``batch_rows`` targets (whole windows, so a batch can exceed it by less than one window), and the
    batch order shuffled again."""
    if len(win.length) == 0:
        raise ValueError("train: no training targets to pack")
    perm = rng.permutation(len(win.length))
    counts = win.n_targets
    mean_targets = max(float(counts.mean()), 1.0)
    window = int(batch_rows * MEGABATCH / mean_targets) + 1
    batches = []
    for s in range(0, len(perm), window):
        chunk = perm[s : s + window]
        chunk = chunk[np.argsort(win.length[chunk], kind="stable")]
        ends = np.cumsum(counts[chunk])
        cut = np.searchsorted(ends, np.arange(batch_rows, ends[-1] + batch_rows, batch_rows), side="left") + 1
        starts = np.concatenate([[0], cut[:-1]])
        batches.extend(chunk[a:b] for a, b in zip(starts, np.minimum(cut, len(chunk)), strict=True) if b > a)
    for i in rng.permutation(len(batches)):
        yield make_batch(seqs, win, batches[i], device)
