"""Helpers for the data tests: writers of the official raw formats and a slow reference implementation.

The writers produce the exact field names and types of Amazon Reviews 2023 (raw ``<Cat>.jsonl``,
``meta_<Cat>.jsonl``, benchmark ``<Cat>.{train,valid,test}.csv`` with history) and the Yelp Open Dataset
(``yelp_academic_dataset_{review,business}.json``). ``reference_rows`` re-implements the released
notebooks' processing with plain Python loops, to check the vectorised pipeline row by row.
"""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

VALID_FROM = 1628643414042  # official Amazon 2023 cuts (ms)
TEST_FROM = 1658002729837
DAY_MS = 86_400_000


# ----------------------------------------------------------------------------------------- random logs
def random_log(seed: int, n_users: int, n_items: int, n: int, t_lo: int, t_hi: int, tick: int) -> list[dict]:
    """Interactions in a shuffled file order: popular items, ties (coarse ticks), repeats, ratings 1..5."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.6
    pop /= pop.sum()
    users = rng.integers(0, n_users, n)
    items = rng.choice(n_items, size=n, p=pop)
    ts = t_lo + rng.integers(0, (t_hi - t_lo) // tick, n) * tick  # coarse: many equal timestamps
    ratings = rng.choice([1.0, 2.0, 3.0, 4.0, 5.0], size=n, p=[0.1, 0.1, 0.15, 0.3, 0.35])
    return [{"user_id": f"U{u:03d}", "parent_asin": f"B{i:04d}", "rating": float(r), "timestamp": int(t)}
            for u, i, t, r in zip(users, items, ts, ratings, strict=True)]


# ----------------------------------------------------------------------------------------- Amazon 2023
def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def write_amazon_reviews(path: Path, records: list[dict]) -> Path:
    full = [{"rating": r["rating"], "title": "Great", "text": "Works &amp; fun<br />", "images": [],
             "asin": r["parent_asin"] + "X", "parent_asin": r["parent_asin"], "user_id": r["user_id"],
             "timestamp": r["timestamp"], "helpful_vote": 0, "verified_purchase": True} for r in records]
    return write_jsonl(path, full)


def write_amazon_meta(path: Path, titles: dict[str, str | None]) -> Path:
    meta = [{"main_category": "Video Games", "title": title, "average_rating": 4.2, "rating_number": 10,
             "features": ["f1"], "description": [f"About {asin}", "second line"],
             "price": 19.99 if k % 2 else "None", "images": [], "videos": [], "store": "S",
             "categories": ["Video Games"], "details": {"Brand": "X"}, "parent_asin": asin, "bought_together": None}
            for k, (asin, title) in enumerate(titles.items())]
    return write_jsonl(path, meta)


def official_5core(records: list[dict], k: int = 5) -> list[dict]:
    """Dedup (user, item) keeping the earliest, then iterative k-core — as the official scripts did."""
    ordered = sorted(enumerate(records), key=lambda e: (e[1]["user_id"], e[1]["timestamp"], e[0]))
    seen, kept = set(), []
    for _, r in ordered:
        if (r["user_id"], r["parent_asin"]) not in seen:
            seen.add((r["user_id"], r["parent_asin"]))
            kept.append(r)
    while True:
        uc = Counter(r["user_id"] for r in kept)
        ic = Counter(r["parent_asin"] for r in kept)
        new = [r for r in kept if uc[r["user_id"]] >= k and ic[r["parent_asin"]] >= k]
        if len(new) == len(kept):
            return new
        kept = new


def write_amazon_benchmark(folder: Path, category: str, records: list[dict]) -> None:
    """benchmark/5core/timestamp_w_his files: header user_id,parent_asin,rating,timestamp,history."""
    core = official_5core(records)
    history: dict[str, list[str]] = defaultdict(list)
    out = {"train": [], "valid": [], "test": []}
    for r in core:  # sorted by (user, time)
        split = "test" if r["timestamp"] >= TEST_FROM else "valid" if r["timestamp"] >= VALID_FROM else "train"
        out[split].append([r["user_id"], r["parent_asin"], r["rating"], r["timestamp"],
                           " ".join(history[r["user_id"]])])
        history[r["user_id"]].append(r["parent_asin"])
    for split, rows in out.items():
        with open(folder / f"{category}.{split}.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["user_id", "parent_asin", "rating", "timestamp", "history"])
            writer.writerows(rows)


# ----------------------------------------------------------------------------------------- Yelp
def yelp_date(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def write_yelp(folder: Path, records: list[dict], names: dict[str, str]) -> None:
    reviews = [{"review_id": f"R{k}", "user_id": r["user_id"], "business_id": r["parent_asin"],
                "stars": r["rating"], "useful": 0, "funny": 0, "cool": 1, "text": "Nice place",
                "date": yelp_date(r["timestamp"])} for k, r in enumerate(records)]
    business = [{"business_id": b, "name": name, "address": "1 Main St", "city": "Tucson", "state": "AZ",
                 "postal_code": "85701", "latitude": 32.2, "longitude": -110.9, "stars": 4.5, "review_count": 9,
                 "is_open": 1, "attributes": {"WiFi": "u'free'"} if k % 2 else None,
                 "categories": "Restaurants, Cafes", "hours": None} for k, (b, name) in enumerate(names.items())]
    write_jsonl(folder / "yelp_academic_dataset_review.json", reviews)
    write_jsonl(folder / "yelp_academic_dataset_business.json", business)


# ----------------------------------------------------------------------------------------- reference
def reference_rows(records: list[dict], *, rating_above: float | None, rating_filter: str, dedup: bool, kcore: int,
                   min_train: int, min_eval: int, cuts: tuple[float, float], cut_rule: str,
                   titled: set[str] | None, max_len: int = 50) -> dict[str, list[tuple]]:
    """Per split, sorted (target, timestamp, history_len, truncated history) tuples with raw ids.

    cut_rule 'from': valid iff t >= cuts[0] (Amazon, absolute cuts); 'after': cuts are fractions of the
    filtered data's time span and valid iff t > min + cuts[0] * (max - min) (the Yelp notebook).
    """
    recs = list(enumerate(records))
    if rating_above is not None and rating_filter == "interactions":
        recs = [e for e in recs if e[1]["rating"] > rating_above]
    recs.sort(key=lambda e: (e[1]["user_id"], e[1]["timestamp"], e[0]))
    if dedup:
        seen, kept = set(), []
        for e in recs:
            key = (e[1]["user_id"], e[1]["parent_asin"])
            if key not in seen:
                seen.add(key)
                kept.append(e)
        recs = kept
    while kcore > 1:
        uc = Counter(e[1]["user_id"] for e in recs)
        ic = Counter(e[1]["parent_asin"] for e in recs)
        new = [e for e in recs if uc[e[1]["user_id"]] >= kcore and ic[e[1]["parent_asin"]] >= kcore]
        if len(new) == len(recs):
            break
        recs = new
    if cut_rule == "after":
        lo, hi = min(e[1]["timestamp"] for e in recs), max(e[1]["timestamp"] for e in recs)
        cuts = (lo + cuts[0] * (hi - lo), lo + cuts[1] * (hi - lo))
    by_user: dict[str, list[dict]] = defaultdict(list)
    for _, r in recs:
        by_user[r["user_id"]].append(r)

    def split_of(t: int) -> int:
        if cut_rule == "from":
            return 2 if t >= cuts[1] else 1 if t >= cuts[0] else 0
        return 2 if t > cuts[1] else 1 if t > cuts[0] else 0

    def target_ok(r: dict) -> bool:
        return rating_above is None or rating_filter != "targets" or r["rating"] > rating_above

    train, candidates = [], []
    for seq in by_user.values():
        for p, r in enumerate(seq):
            hist = [x["parent_asin"] for x in seq[:p]]
            row = (r["parent_asin"], r["timestamp"], len(hist), tuple(hist[-max_len:]), hist)
            s = split_of(r["timestamp"])
            if s == 0:
                ok = target_ok(r) and len(hist) >= min_train
                if titled is not None:
                    ok = ok and r["parent_asin"] in titled and all(h in titled for h in hist)
                if ok:
                    train.append(row)
            else:
                candidates.append((s, r, row))
    vocab = {row[0] for row in train} | {h for row in train for h in row[4]}
    out = {"train": sorted(row[:4] for row in train), "valid": [], "test": []}
    for s, r, row in candidates:
        if target_ok(r) and row[2] >= min_eval and row[0] in vocab and all(h in vocab for h in row[4]):
            out["valid" if s == 1 else "test"].append(row[:4])
    out["valid"].sort()
    out["test"].sort()
    return out


def rows_as_tuples(data) -> dict[str, list[tuple]]:
    """The loaded SplitData's rows in reference_rows' form (raw item ids)."""
    ids = data.item_ids
    out = {}
    for name in ("train", "valid", "test"):
        rows = getattr(data, name)
        out[name] = sorted(
            (ids[t], int(ts), int(n), tuple(ids[h] for h in hist if h != 0))
            for t, ts, n, hist in zip(rows.target, rows.timestamp, rows.history_len, rows.history, strict=True))
    return out


def test_official_5core_helper_keeps_earliest_duplicate():
    recs = [{"user_id": "u", "parent_asin": "a", "rating": 5.0, "timestamp": 2},
            {"user_id": "u", "parent_asin": "a", "rating": 1.0, "timestamp": 1}]
    assert official_5core(recs, k=1) == [recs[1]]
