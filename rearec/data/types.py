"""Array containers that the data layer hands to the model core: rows, per-user sequences, splits."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PAD = 0  # item id 0 is padding everywhere; real items are 1..n_items


@dataclass(frozen=True)
class Rows:
    """(history -> target) samples, one per interaction, as the paper's protocol builds them.

    Histories are truncated to the last ``max_len`` items and *left*-padded with ``PAD`` so the most
    recent item sits in the last column; a batch can then drop leading all-pad columns.
    """

    user: np.ndarray  # (N,) int64 user index 0..n_users-1
    history: np.ndarray  # (N, max_len) int64, left-padded with 0, oldest -> newest
    target: np.ndarray  # (N,) int64 in 1..n_items
    timestamp: np.ndarray  # (N,) int64 timestamp of the target interaction (dataset units)
    history_len: np.ndarray  # (N,) int64 untruncated history length (user groups use it)

    def __post_init__(self) -> None:
        n = len(self.target)
        for name in ("user", "timestamp", "history_len"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Rows.{name}: length {len(getattr(self, name))} != {n} targets")
        if self.history.ndim != 2 or self.history.shape[0] != n:
            raise ValueError(f"Rows.history: shape {self.history.shape}, expected ({n}, max_len)")

    def __len__(self) -> int:
        return len(self.target)

    @property
    def max_len(self) -> int:
        return int(self.history.shape[1])

    def lengths(self) -> np.ndarray:
        """(N,) number of non-pad items in each (truncated) history."""
        return (self.history != PAD).sum(axis=1)

    def take(self, index: np.ndarray) -> Rows:
        return Rows(
            user=self.user[index],
            history=self.history[index],
            target=self.target[index],
            timestamp=self.timestamp[index],
            history_len=self.history_len[index],
        )


@dataclass(frozen=True)
class Sequences:
    """Per-user chronological training sequences in CSR form (packed-prefix training reads these).

    ``items[offsets[u]:offsets[u+1]]`` is user ``u``'s training-period sequence. ``is_target`` marks the
    positions that are training targets (predicted from everything before them in the sequence); the
    first position of a user is never a target. Every training row in ``SplitData.train`` corresponds to
    exactly one marked position (its history is the truncated prefix before it).
    """

    user: np.ndarray  # (U,) int64 user index
    offsets: np.ndarray  # (U+1,) int64
    items: np.ndarray  # (T,) int64 in 1..n_items
    is_target: np.ndarray  # (T,) bool

    def __len__(self) -> int:
        return len(self.user)


@dataclass(frozen=True)
class SplitData:
    """A processed dataset: train / valid / test rows plus what the core and the harness need."""

    name: str
    n_users: int
    n_items: int  # item ids run 1..n_items; 0 is padding
    train: Rows
    valid: Rows
    test: Rows
    train_sequences: Sequences
    item_ids: np.ndarray  # (n_items + 1,) object: raw item id per index, item_ids[0] == ""
    params: dict = field(default_factory=dict)  # every preprocessing parameter, recorded
    content_hash: str = ""  # hash of the processed splits, used in trial keys
    item_text: dict | None = None  # optional {raw item id: {attribute: value}} for text encoders

    def item_popularity(self) -> np.ndarray:
        """(n_items + 1,) int64 count of each item among training interactions (pad = 0)."""
        return np.bincount(self.train_sequences.items, minlength=self.n_items + 1).astype(np.int64)
