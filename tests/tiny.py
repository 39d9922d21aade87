"""A tiny in-memory SplitData with a learnable pattern (item i is followed by item i+1), for core tests."""

from __future__ import annotations

import numpy as np

from rearec.data.types import Rows, Sequences, SplitData


def _rows(seqs: list[list[int]], users: list[int], positions: list[list[int]], max_len: int) -> Rows:
    hist, target, user, hlen = [], [], [], []
    for u, seq, pos in zip(users, seqs, positions, strict=True):
        for p in pos:
            h = seq[max(0, p - max_len):p]
            hist.append([0] * (max_len - len(h)) + h)
            target.append(seq[p])
            user.append(u)
            hlen.append(p)
    n = len(target)
    return Rows(
        user=np.asarray(user, dtype=np.int64),
        history=np.asarray(hist, dtype=np.int64).reshape(n, max_len),
        target=np.asarray(target, dtype=np.int64),
        timestamp=np.arange(n, dtype=np.int64),
        history_len=np.asarray(hlen, dtype=np.int64),
    )


def tiny_data(n_users: int = 60, n_items: int = 30, max_len: int = 8, seed: int = 0) -> SplitData:
    """Each user walks i, i+1, i+2 ... (mod n_items) from a random start, with occasional random jumps.
    The last two positions of every user are valid and test rows; the rest are training rows."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n_users):
        length = int(rng.integers(5, 14))
        cur = int(rng.integers(1, n_items + 1))
        seq = []
        for _ in range(length):
            seq.append(cur)
            cur = cur % n_items + 1 if rng.random() < 0.9 else int(rng.integers(1, n_items + 1))
        seqs.append(seq)
    users = list(range(n_users))
    train_seqs = [s[:-2] for s in seqs]
    train = _rows(seqs, users, [list(range(1, len(s) - 2)) for s in seqs], max_len)
    valid = _rows(seqs, users, [[len(s) - 2] for s in seqs], max_len)
    test = _rows(seqs, users, [[len(s) - 1] for s in seqs], max_len)
    lengths = np.array([len(s) for s in train_seqs])
    items = np.concatenate([np.asarray(s, dtype=np.int64) for s in train_seqs])
    is_target = np.ones(len(items), dtype=bool)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    is_target[offsets[:-1]] = False
    return SplitData(
        name="tiny", n_users=n_users, n_items=n_items, train=train, valid=valid, test=test,
        train_sequences=Sequences(np.arange(n_users), offsets, items, is_target),
        item_ids=np.array([""] + [f"i{j}" for j in range(1, n_items + 1)], dtype=object),
        params={"generator": "tests/tiny.py", "seed": seed}, content_hash=f"tiny-{seed}",
    )
