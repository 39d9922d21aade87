"""Dataset statistics in the paper's Table 1 form, plus split sizes and the popularity long tail."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .types import SplitData


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0 = all equal, -> 1 = all mass on one item)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    return float((2 * np.arange(1, n + 1) - n - 1).dot(x) / (n * total))


def dataset_stats(data: SplitData) -> dict[str, Any]:
    """Table 1 columns: #interactions = rows over the three splits (as the paper counted them); ``raw_*`` are
    the distinct users / items and the interactions in the raw files, before any filter."""
    sizes = {name: len(getattr(data, name)) for name in ("train", "valid", "test")}
    inter = sum(sizes.values())
    pop = data.item_popularity()[1:]  # training interactions per item (sequences, histories included)
    top = np.sort(pop)[::-1]
    k20 = max(1, int(round(0.2 * len(top))))
    notes = data.params.get("notes", {})
    return {
        "dataset": data.name,
        # The raw file's counts before any filter (None for a cache prepared before they were recorded).
        "raw_users": notes.get("raw_users"),
        "raw_items": notes.get("raw_items"),
        "raw_interactions": notes.get("raw_interactions"),
        "users": data.n_users,
        "items": data.n_items,
        "avg_inter_per_user": inter / data.n_users if data.n_users else 0.0,
        "avg_inter_per_item": inter / data.n_items if data.n_items else 0.0,
        "interactions": inter,
        "sparsity": 1.0 - inter / (data.n_users * data.n_items) if data.n_users and data.n_items else 1.0,
        "train_rows": sizes["train"],
        "valid_rows": sizes["valid"],
        "test_rows": sizes["test"],
        "train_sequence_items": int(len(data.train_sequences.items)),
        "avg_history_len": {name: float(getattr(data, name).history_len.mean()) if sizes[name] else 0.0
                            for name in sizes},
        "top20_item_share": float(top[:k20].sum() / top.sum()) if top.sum() else 0.0,
        "item_gini": gini(pop),
        "content_hash": data.content_hash,
    }


_ROWS = [
    ("#Users", "users", "{:,}"),
    ("#Users (raw, before filters)", "raw_users", "{:,}"),
    ("#Items", "items", "{:,}"),
    ("#Items (raw, before filters)", "raw_items", "{:,}"),
    ("#Avg. Inter. / User", "avg_inter_per_user", "{:.2f}"),
    ("#Avg. Inter. / Item", "avg_inter_per_item", "{:.2f}"),
    ("#Interactions", "interactions", "{:,}"),
    ("#Interactions (raw, before filters)", "raw_interactions", "{:,}"),
    ("Sparsity", "sparsity", "{:.2%}"),
    ("#Train rows", "train_rows", "{:,}"),
    ("#Valid rows", "valid_rows", "{:,}"),
    ("#Test rows", "test_rows", "{:,}"),
    ("Top-20% items' share", "top20_item_share", "{:.1%}"),
    ("Item Gini", "item_gini", "{:.3f}"),
]


def format_stats(stats: dict[str, Any] | Sequence[dict[str, Any]]) -> str:
    """A markdown table with one column per dataset, rows as in the paper's Table 1; each count is followed by
    the raw file's count before any filter ("n/a" for caches prepared before raw counts were recorded)."""
    items = [stats] if isinstance(stats, dict) else list(stats)
    header = ["Dataset", *[s["dataset"] for s in items]]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * len(items) + "|"]
    for label, key, fmt in _ROWS:
        cells = [fmt.format(s[key]) if s.get(key) is not None else "n/a" for s in items]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    if any(s.get(key) is None for s in items for _, key, _ in _ROWS):
        lines.append("\nn/a: cache prepared before raw counts were recorded; `harness data prepare --rebuild` "
                     "records them")
    return "\n".join(lines)
