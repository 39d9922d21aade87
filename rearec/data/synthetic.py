"""The embedded default dataset: a deterministic generator with the regularities sequential models exploit.

- Long-tail popularity: items belong to topics; within a topic, popularity follows a Zipf law, and the
  topics themselves are unevenly popular.
- Item-to-item transitions: every item has three successors (two in its topic, one in the next topic on
  a ring); with probability ``transition_prob`` the next item is a successor of the previous one.
- Drifting interests: a user sits in a current topic, which moves to a neighbouring topic with
  probability ``drift_prob`` per step; non-transition items are drawn from the current topic.
- Time: each user is active in a window inside two years, so time-based splits cut through users'
  sequences as in real logs. Seconds since the epoch, from 2020-01-01.

The loop runs over sequence steps (at most a few hundred), each step vectorised over all users.
"""

from __future__ import annotations

import numpy as np

from .sources import ItemTable, RawData
from .spec import SyntheticSpec

START = 1_577_836_800  # 2020-01-01T00:00:00Z
SPAN = 2 * 365 * 86_400
TOPIC_NAMES = ("Action", "Puzzle", "Racing", "Strategy", "Sports", "Horror", "Family", "Music", "Shooter",
               "Simulation", "Adventure", "Fighting", "Roleplay", "Platform", "Arcade", "Survival")
SUCCESSOR_PROBS = np.array([0.6, 0.25, 0.15])


def _topic_items(spec: SyntheticSpec) -> tuple[np.ndarray, list[np.ndarray]]:
    """(n_items,) topic of each item, and per topic its items (contiguous blocks)."""
    topic = np.arange(spec.n_items) * spec.n_topics // spec.n_items
    return topic, [np.flatnonzero(topic == c) for c in range(spec.n_topics)]


def generate(spec: SyntheticSpec) -> RawData:
    rng = np.random.default_rng(spec.seed)
    topic, members = _topic_items(spec)
    n_items, n_topics = spec.n_items, spec.n_topics

    # Zipf popularity within each topic (random rank order), topics unevenly popular (exponent 0.7).
    weight = np.empty(n_items)
    for items in members:
        ranks = rng.permutation(len(items)) + 1
        weight[items] = ranks.astype(float) ** -spec.zipf
    topic_weight = (rng.permutation(n_topics) + 1.0) ** -0.7
    topic_weight /= topic_weight.sum()
    cdf = [np.cumsum(weight[items]) / weight[items].sum() for items in members]

    def draw(topics: np.ndarray) -> np.ndarray:
        out = np.empty(len(topics), dtype=np.int64)
        for c in np.unique(topics):
            sel = np.flatnonzero(topics == c)
            k = np.searchsorted(cdf[c], rng.random(len(sel)), side="right")
            out[sel] = members[c][np.minimum(k, len(members[c]) - 1)]
        return out

    # Successors: two popular-ish items of the same topic and one of the next topic (never itself).
    successors = np.empty((n_items, 3), dtype=np.int64)
    for c, items in enumerate(members):
        nxt = (c + 1) % n_topics
        for slot, source in enumerate((c, c, nxt)):
            pick = draw(np.full(len(items), source))
            clash = pick == items
            while clash.any():
                pick[clash] = draw(np.full(int(clash.sum()), source))
                clash = pick == items
            successors[items, slot] = pick

    n_users = spec.n_users
    sigma = 0.6
    lengths = np.exp(rng.normal(np.log(spec.mean_length) - sigma**2 / 2, sigma, n_users))
    lengths = np.clip(np.rint(lengths), 3, 8 * spec.mean_length).astype(np.int64)
    current = rng.choice(n_topics, size=n_users, p=topic_weight)
    max_len = int(lengths.max())
    seq = np.zeros((n_users, max_len), dtype=np.int64)
    prev = np.full(n_users, -1, dtype=np.int64)
    for step in range(max_len):
        drift = rng.random(n_users) < spec.drift_prob
        current = np.where(drift, (current + rng.choice([-1, 1], n_users)) % n_topics, current)
        fresh = draw(current)
        follow = (prev >= 0) & (rng.random(n_users) < spec.transition_prob)
        slot = np.searchsorted(np.cumsum(SUCCESSOR_PROBS), rng.random(n_users), side="right").clip(0, 2)
        chosen = np.where(follow, successors[np.maximum(prev, 0), slot], fresh)
        # A followed successor in another topic pulls the user's interest along.
        current = np.where(follow, topic[chosen], current)
        seq[:, step], prev = chosen, chosen

    # Each user is active over a window of 20-60 % of the span, placed so that activity is uniform over
    # the span (windows may start before it or end after it; those interactions are never logged), so
    # the last 10-20 % of the time range holds a fair share of interactions.
    duration = rng.uniform(0.2, 0.6, n_users) * SPAN
    start = rng.uniform(-duration, SPAN)
    when = np.sort(np.where(np.arange(max_len)[None, :] < lengths[:, None], rng.random((n_users, max_len)),
                            np.inf), axis=1)
    when = start[:, None] + np.minimum(when, 1.0) * duration[:, None]
    valid = (np.arange(max_len)[None, :] < lengths[:, None]) & (when >= 0) & (when < SPAN)
    lengths = valid.sum(axis=1)
    users = np.repeat(np.arange(n_users), lengths)
    items = seq[valid]
    ts = START + np.floor(when[valid]).astype(np.int64)
    names = np.array([TOPIC_NAMES[c % len(TOPIC_NAMES)] + ("" if c < len(TOPIC_NAMES) else f" {c}")
                      for c in range(n_topics)], dtype=object)
    item_ids = np.array([f"i{k:05d}" for k in range(n_items)], dtype=object)
    item_table = ItemTable(
        file="<synthetic>",
        key_column="item_id",
        ids=item_ids,
        attrs={"title": np.array([f"{names[topic[k]]} title no. {k}" for k in range(n_items)], dtype=object),
               "category": names[topic]},
    )
    return RawData(file="<synthetic>", ts_column="timestamp",
                   user=np.array([f"u{k:05d}" for k in range(n_users)], dtype=object)[users],
                   item=item_ids[items], timestamp=ts, rating=None, items=item_table,
                   notes={"generator": "rearec.data.synthetic v1"})
