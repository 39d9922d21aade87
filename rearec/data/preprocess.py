"""Raw interactions -> filtered, split, re-indexed rows (the paper's protocol), all vectorised in numpy.

Pipeline (docs/released-code.md, "Data preparation"):
1. rating filter on interactions (Yelp) — or later on targets only (Amazon);
2. stable sort by (user, timestamp, file order); optional dedup of (user, item) keeping the earliest;
3. iterative k-core on users and items;
4. each interaction is a candidate row: target = the interaction, history = *all* the user's earlier
   interactions (an evaluation row's history may hold earlier valid-period items), truncated to max_len;
5. split by absolute cuts / time-span quantiles / leave-one-out;
6. train rows: target rating filter, history >= min_history_train, required attribute on target + history;
7. train vocabulary = train targets and every item in a train row's history; eval rows: target rating
   filter, history >= min_history_eval, target and *every* history item in the vocabulary.

Ids: items are numbered 1..n by their first timestamp (ties: raw id order) among the vocabulary; users
0..U-1 likewise among users with at least one row; rows and sequences are ordered by (user, time). So the
output depends on the logical log only, not on how the file orders users (within a user, equal
timestamps keep file order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import DataError
from .sources import RawData
from .spec import DatasetSpec
from .types import PAD, Rows, Sequences

SPLITS = ("train", "valid", "test")


@dataclass
class Processed:
    """Everything the cache stores: rows as compact truncated histories, sequences, id maps."""

    rows: dict[str, dict[str, np.ndarray]]  # split -> user, target, timestamp, history_len, hist_offsets, hist_items
    seq_user: np.ndarray  # (U_train,) int64
    seq_offsets: np.ndarray  # (U_train + 1,) int64
    seq_items: np.ndarray  # (T,) int64
    seq_is_target: np.ndarray  # (T,) bool
    item_ids: np.ndarray  # (n_items + 1,) object, [0] == ""
    n_users: int
    notes: dict  # resolved split cuts, counts after each step


def _user_segments(user: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For arrays sorted by user: (starts (S,), segment id per element (N,), position within segment (N,))."""
    new = np.ones(len(user), dtype=bool)
    new[1:] = user[1:] != user[:-1]
    starts = np.flatnonzero(new)
    seg = np.cumsum(new) - 1
    pos = np.arange(len(user)) - starts[seg]
    return starts, seg, pos


def _prefix_count(flag: np.ndarray, starts: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """(N,) number of True flags strictly before each element within its user segment."""
    c = np.cumsum(flag, dtype=np.int64)
    exclusive = c - flag
    return exclusive - exclusive[starts][seg]


def kcore(user: np.ndarray, item: np.ndarray, k: int) -> np.ndarray:
    """(N,) bool mask of interactions kept by iterative k-core on users and items (each >= k)."""
    keep = np.ones(len(user), dtype=bool)
    if k <= 1:
        return keep
    n_u, n_i = int(user.max()) + 1, int(item.max()) + 1
    while True:
        u_count = np.bincount(user[keep], minlength=n_u)
        i_count = np.bincount(item[keep], minlength=n_i)
        new = keep & (u_count[user] >= k) & (i_count[item] >= k)
        if new.sum() == keep.sum():
            return new
        keep = new


def _by_first_time(codes: np.ndarray, ts: np.ndarray, wanted: np.ndarray, raw_ids: np.ndarray) -> np.ndarray:
    """Code values in ``wanted`` (a bool mask over codes) ordered by their first timestamp, then raw id.

    Independent of file layout, so the same log in two file formats gets the same ids.
    """
    first = np.full(len(wanted), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, codes, ts)
    cand = np.flatnonzero(wanted)
    id_rank = np.empty(len(cand), dtype=np.int64)
    id_rank[np.argsort(raw_ids[cand].astype(str), kind="stable")] = np.arange(len(cand))
    return cand[np.lexsort((id_rank, first[cand]))]


def _split_ids(spec: DatasetSpec, ts: np.ndarray, pos: np.ndarray, seg: np.ndarray, starts: np.ndarray,
               raw: RawData) -> tuple[np.ndarray, dict]:
    """(N,) int8 split id per interaction (0 train, 1 valid, 2 test) and the resolved cuts."""
    split = spec.split
    lo, hi = int(ts.min()), int(ts.max())
    where = f"column {raw.ts_column!r}"
    if split.method == "leave_one_out":
        length = np.diff(np.append(starts, len(ts)))[seg]
        out = np.where(pos == length - 1, 2, np.where(pos == length - 2, 1, 0)).astype(np.int8)
        return out, {"method": "leave_one_out"}
    if split.method == "quantile":
        t_valid = lo + split.valid_quantile * (hi - lo)
        t_test = lo + split.test_quantile * (hi - lo)
        out = np.where(ts > t_test, 2, np.where(ts > t_valid, 1, 0)).astype(np.int8)
        return out, {"method": "quantile", "valid_after": t_valid, "test_after": t_test, "min": lo, "max": hi}
    cuts = [_cut_value(v, spec, raw) for v in (split.valid_from, split.test_from)]
    if not cuts[0] < cuts[1]:
        raise DataError(raw.file, where, f"split.test_from ({cuts[1]}) is not after split.valid_from ({cuts[0]})")
    for name, cut in zip(("valid_from", "test_from"), cuts, strict=True):
        if not lo < cut <= hi:
            raise DataError(raw.file, where, f"split.{name} = {cut} is outside the data's time range: after "
                            f"filtering, timestamps span {lo} .. {hi}, so a split would be empty")
    out = np.where(ts >= cuts[1], 2, np.where(ts >= cuts[0], 1, 0)).astype(np.int8)
    return out, {"method": "absolute", "valid_from": cuts[0], "test_from": cuts[1], "min": lo, "max": hi}


def _cut_value(value: int | float | str, spec: DatasetSpec, raw: RawData) -> float:
    if not isinstance(value, str):
        return value
    try:
        stamp = pd.Timestamp(value)
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
    except (ValueError, TypeError):
        raise DataError(raw.file, "", f"split cut {value!r} is not a number or an ISO date") from None
    step = pd.Timedelta(milliseconds=1) if spec.timestamp_unit == "ms" else pd.Timedelta(seconds=1)
    return (stamp - pd.Timestamp(0, tz="UTC")) // step


def process(spec: DatasetSpec, raw: RawData) -> Processed:
    notes: dict = {"raw_interactions": int(len(raw.user))}
    user_codes, user_uniq = pd.factorize(raw.user)
    item_codes, item_uniq = pd.factorize(raw.item)
    notes["raw_users"], notes["raw_items"] = int(len(user_uniq)), int(len(item_uniq))  # before any filter
    user_uniq, item_uniq = np.asarray(user_uniq, dtype=object), np.asarray(item_uniq, dtype=object)
    user_codes, item_codes = user_codes.astype(np.int64), item_codes.astype(np.int64)
    ts, rating = raw.timestamp, raw.rating

    keep = np.ones(len(ts), dtype=bool)
    if spec.rating_above is not None and spec.rating_filter == "interactions":
        if rating is None:
            raise DataError(raw.file, "", "rating_above is set but the source has no rating column")
        keep &= rating > spec.rating_above
        notes["after_rating_filter"] = int(keep.sum())
    # Stable (user, timestamp) order; file order breaks ties because both argsorts are stable.
    order = np.flatnonzero(keep)
    order = order[np.argsort(ts[order], kind="stable")]
    order = order[np.argsort(user_codes[order], kind="stable")]
    u, i, t = user_codes[order], item_codes[order], ts[order]
    r = rating[order] if rating is not None else None
    if spec.dedup and len(u):
        _, first = np.unique(u * (int(item_codes.max()) + 1) + i, return_index=True)
        mask = np.zeros(len(u), dtype=bool)
        mask[first] = True  # np.unique's first index is the earliest in time (arrays sorted by user, time)
        u, i, t = u[mask], i[mask], t[mask]
        r = r[mask] if r is not None else None
        notes["after_dedup"] = int(len(u))
    if len(u):
        mask = kcore(u, i, spec.kcore)
        u, i, t = u[mask], i[mask], t[mask]
        r = r[mask] if r is not None else None
    if len(u) == 0:
        what = f"{spec.kcore}-core" if spec.kcore > 1 else "filtering"
        raise DataError(raw.file, "", f"no interactions left after {what} (rating_above={spec.rating_above}, "
                        f"kcore={spec.kcore}); the dataset is empty")
    notes["after_kcore"] = int(len(u))

    # Item attributes: every surviving item must have a row in the items file.
    has_attr = None
    if raw.items is not None:
        known = pd.Index(raw.items.ids).get_indexer(item_uniq)  # item code -> items-table row, -1 = missing
        present = np.zeros(len(item_uniq), dtype=bool)
        present[np.unique(i)] = True
        missing = np.flatnonzero(present & (known < 0))
        if len(missing):
            sample = ", ".join(repr(str(x)) for x in item_uniq[missing[:5]])
            raise DataError(raw.items.file, f"column {raw.items.key_column!r}", f"{len(missing)} item(s) of the "
                            f"interactions have no row in the items file, e.g. {sample}")
        if spec.train_requires_attribute is not None:
            values = raw.items.attrs.get(spec.train_requires_attribute)
            if values is None:
                raise DataError(raw.items.file, f"column {spec.train_requires_attribute!r}", "missing (named by "
                                "train_requires_attribute; add it to text_fields)")
            has_attr = np.zeros(len(item_uniq), dtype=bool)
            has_attr[known >= 0] = np.array([v is not None for v in values], dtype=bool)[known[known >= 0]]
    elif spec.train_requires_attribute is not None:
        raise DataError(raw.file, "", f"train_requires_attribute={spec.train_requires_attribute!r} needs an items file")

    starts, seg, pos = _user_segments(u)
    split, notes["split"] = _split_ids(spec, t, pos, seg, starts, raw)

    target_ok = np.ones(len(u), dtype=bool)
    if spec.rating_above is not None and spec.rating_filter == "targets":
        if r is None:
            raise DataError(raw.file, "", "rating_above is set but the source has no rating column")
        target_ok = r > spec.rating_above
    train_row = (split == 0) & target_ok & (pos >= spec.min_history_train)
    if has_attr is not None:
        lacking = ~has_attr[i]
        train_row &= ~lacking & (_prefix_count(lacking, starts, seg) == 0)

    # Vocabulary: everything up to and including each user's last train row (targets + their histories).
    last_train = np.maximum.reduceat(np.where(train_row, pos, -1), starts)  # (S,) -1 = no train row
    in_train_seq = pos <= last_train[seg]
    vocab = np.zeros(len(item_uniq), dtype=bool)
    vocab[i[in_train_seq]] = True
    oov = ~vocab[i]
    eval_ok = target_ok & (pos >= spec.min_history_eval) & ~oov & (_prefix_count(oov, starts, seg) == 0)
    masks = {"train": train_row, "valid": (split == 1) & eval_ok, "test": (split == 2) & eval_ok}
    for name, mask in masks.items():
        notes[f"{name}_candidates"] = int((split == SPLITS.index(name)).sum())
        if not mask.any():
            raise DataError(raw.file, "", f"no {name} rows remain after filtering ({notes[f'{name}_candidates']} "
                            f"interactions fall in the {name} period; check split, min_history_*, rating_above)")

    # Deterministic ids by first appearance in time (ties: raw id order).
    items_sorted = _by_first_time(i, t, vocab, item_uniq)
    item_index = np.zeros(len(item_uniq), dtype=np.int64)
    item_index[items_sorted] = np.arange(1, len(items_sorted) + 1)
    any_row = masks["train"] | masks["valid"] | masks["test"]
    wanted_users = np.zeros(len(user_uniq), dtype=bool)
    wanted_users[u[any_row]] = True
    users_sorted = _by_first_time(u, t, wanted_users, user_uniq)
    user_index = np.full(len(user_uniq), -1, dtype=np.int64)
    user_index[users_sorted] = np.arange(len(users_sorted))

    new_item, new_user = item_index[i], user_index[u]  # item 0 = out of vocabulary (in no kept row)

    def by_user(mask: np.ndarray) -> np.ndarray:
        # Positions ordered by (user index, time): users are contiguous, so a stable sort by user suffices.
        positions = np.flatnonzero(mask)
        return positions[np.argsort(new_user[positions], kind="stable")]

    rows = {name: _rows(by_user(mask), new_user, new_item, t, pos, spec.max_len) for name, mask in masks.items()}
    # Training sequences: a user's interactions up to the last train row; train rows are the marked ones.
    seq_pos = by_user(in_train_seq)
    seq_user, seq_counts = np.unique(new_user[seq_pos], return_counts=True)
    seq_offsets = np.concatenate([[0], np.cumsum(seq_counts)]).astype(np.int64)
    item_ids = np.concatenate([[""], item_uniq[items_sorted].astype(str)]).astype(object)
    return Processed(
        rows=rows,
        seq_user=seq_user.astype(np.int64),
        seq_offsets=seq_offsets,
        seq_items=new_item[seq_pos],
        seq_is_target=train_row[seq_pos],
        item_ids=item_ids,
        n_users=int(len(users_sorted)),
        notes=notes,
    )


def _rows(positions: np.ndarray, user: np.ndarray, item: np.ndarray, ts: np.ndarray, pos: np.ndarray,
          max_len: int) -> dict[str, np.ndarray]:
    """Rows at sorted-array ``positions``: history = the previous min(pos, max_len) elements (same user)."""
    hist_len = pos[positions]
    keep = np.minimum(hist_len, max_len)
    offsets = np.concatenate([[0], np.cumsum(keep)]).astype(np.int64)
    # Element j of row r's truncated history sits at positions[r] - keep[r] + j.
    row_of = np.repeat(np.arange(len(positions)), keep)
    within = np.arange(offsets[-1]) - offsets[:-1][row_of]
    hist_items = item[positions[row_of] - keep[row_of] + within]
    return {"user": user[positions], "target": item[positions], "timestamp": ts[positions],
            "history_len": hist_len.astype(np.int64), "hist_offsets": offsets, "hist_items": hist_items}


def to_rows(part: dict[str, np.ndarray], max_len: int) -> Rows:
    """Compact rows -> Rows with a (N, max_len) left-padded history matrix (newest item in the last column)."""
    offsets, values = part["hist_offsets"], part["hist_items"]
    n = len(part["target"])
    lens = np.diff(offsets)
    history = np.zeros((n, max_len), dtype=np.int64)  # PAD == 0; calloc'd pages are cheap to allocate
    assert PAD == 0
    row_of = np.repeat(np.arange(n), lens)
    col = max_len - lens[row_of] + (np.arange(len(values)) - offsets[:-1][row_of])
    history[row_of, col] = values
    return Rows(user=part["user"].astype(np.int64), history=history, target=part["target"].astype(np.int64),
                timestamp=part["timestamp"].astype(np.int64), history_len=part["history_len"].astype(np.int64))


def to_sequences(p: Processed) -> Sequences:
    return Sequences(user=p.seq_user.astype(np.int64), offsets=p.seq_offsets.astype(np.int64),
                     items=p.seq_items.astype(np.int64), is_target=p.seq_is_target.astype(bool))
