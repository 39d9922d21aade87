"""The rows of report_adaptive_seeds computed with NumPy, for the report's snapshot.

The view (harness/report/adaptive_views.py) is the definition `harness sql` shows; its per-sample pass is
one filtered aggregate per policy over every (sample, depth) row, which takes tens of seconds on a large
study. Here the same rows come from dense (samples x depths) arrays per trial and split: each policy's
stop depth is the first depth whose condition holds (conditions as the view's: float32 signals compared in
float64), the metrics those of the rank at that depth. tests/test_adaptive.py checks both give the same rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rearec.config import METRICS

from .adaptive_views import INF, policies

KEYS = ["study", "dataset", "backbone", "variant", "reasoning_steps", "config_id", "seed", "trial_key"]


def _metrics(rank: np.ndarray) -> list[np.ndarray]:
    """report_rank_metric of every metric over an int array (one relevant item; ties already in the rank)."""
    gain = 1.0 / np.log2(rank + 1.0)  # NDCG's gain, once for both cut-offs
    out = []
    for metric in METRICS:
        name, _, k = metric.partition("@")
        hit = rank <= int(k)
        out.append(hit.astype(np.float64) if name == "recall" else np.where(hit, gain, 0.0))
    return out


def _grids() -> list[tuple[str, list[int], list, np.ndarray]]:
    """Per rule: its policies' positions, thresholds (None = never) and the bounds a running maximum of
    the rule's score is compared with (score >= bound <=> the view's condition; never: +inf)."""
    out: dict[str, tuple[list, list]] = {}
    for i, (rule, th, _, _) in enumerate(policies()):
        out.setdefault(rule, ([], []))
        out[rule][0].append(i)
        out[rule][1].append(th)
    grids = []
    for rule, (positions, ths) in out.items():
        if rule == "convergence":  # KL <= eps  <=>  -KL >= -eps; eps = inf stops at depth 1, a finite bound
            bounds = [INF if t is None else -np.finfo(np.float64).max if t == INF else -t for t in ths]
        else:
            bounds = [INF if t is None else t for t in ths]
        bounds = np.array(bounds, dtype=np.float64)
        assert (np.diff(bounds) > 0).all(), rule  # _rule_means needs them ascending
        grids.append((rule, positions, ths, bounds))
    return grids


GRIDS = _grids()
LABELS = [label for _, _, label, _ in policies()]


def _rule_means(running: np.ndarray, values: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Mean over samples of ``values`` at each bound's stop depth: (V, G, T).

    ``running`` (G, D, S) is the running maximum of a rule's score, non-decreasing over depths; a sample
    stops at the first depth k with running_k >= bound (the last depth when none). With q_k = #{j : bound_j
    <= running_k} (bounds ascending), depth k is the stop for exactly the bounds j in [q_(k-1), q_k), so each
    (sample, depth) adds its value to that range of thresholds: a difference array over the T thresholds,
    O(G D S) work however many thresholds there are. ``values`` (V, G, D, S)."""
    G, D, S = running.shape
    T = len(bounds)
    hi = np.searchsorted(bounds, running, side="right")  # (G, D, S) = q_k
    hi[:, -1, :] = T  # the last depth takes every bound no earlier depth reached
    lo = np.concatenate([np.zeros((G, 1, S), dtype=hi.dtype), hi[:, :-1, :]], 1)
    base = (np.arange(G) * (T + 1))[:, None, None]
    live = np.flatnonzero((hi > lo).ravel())  # (sample, depth) pairs that are some bound's stop depth
    ilo, ihi = (base + lo).ravel()[live], (base + hi).ravel()[live]
    out = np.empty((len(values), G, T))
    for v, w in enumerate(values):
        w = w.reshape(-1)[live]
        diff = np.bincount(ilo, w, minlength=G * (T + 1)) - np.bincount(ihi, w, minlength=G * (T + 1))
        out[v] = np.cumsum(diff.reshape(G, T + 1), 1)[:, :T] / S
    return out


def _rows(p, kl, rep, rank) -> list[list[tuple]]:
    """Per group g, rows (rule, position, threshold, label, depth, *metrics); arrays (G, D, S): G trial /
    split groups of the same shape, D depths, S samples."""
    G, D, S = rank.shape
    depth = np.broadcast_to(np.arange(D, dtype=np.float64)[None, :, None], (G, D, S))
    values = np.stack([depth, *_metrics(rank)])  # (1 + M, G, D, S)
    with np.errstate(invalid="ignore"):
        scores = {"confidence": p.astype(np.float64),
                  "convergence": np.concatenate([np.full((G, 1, S), -INF), -kl[:, 1:].astype(np.float64)], 1),
                  "agreement": rep.astype(np.float64)}
    out: list[list[tuple]] = [[] for _ in range(G)]
    for rule, positions, ths, bounds in GRIDS:
        means = _rule_means(np.maximum.accumulate(scores[rule], axis=1), values, bounds)  # (1 + M, G, T)
        for g in range(G):
            out[g] += [(rule, i, th, LABELS[i], *means[:, g, j].tolist())
                       for j, (i, th) in enumerate(zip(positions, ths, strict=True))]
    best = rank.argmin(1)  # (G, S): the earliest depth with the best rank
    gi, si = np.arange(G)[:, None], np.arange(S)[None, :]
    oracle = np.stack([values[v][gi, best, si].mean(1) for v in range(len(values))])  # (1 + M, G)
    fixed = values[1:].mean(3)  # (M, G, D)
    for g in range(G):
        out[g].append(("oracle", -1, None, "oracle", *oracle[:, g].tolist()))
        out[g] += [("fixed", k, float(k), f"depth {k}", float(k), *fixed[:, g, k].tolist()) for k in range(D)]
    return out


def seeds_frame(con) -> pd.DataFrame:
    """report_adaptive_seeds' rows for the trials in report_adaptive_trials (as this connection sees them)."""
    return seeds_rows(*fetch_signals(con))


def fetch_signals(con) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The two queries seeds_rows needs: the adaptive trials (t, KEYS) and their step_signals as arrays
    (g = 2 t + is_test, sample, step, rank, top1_prob, kl_prev, top1_repeats). The rest is NumPy and
    needs no connection, so the report runs it beside its other sections (views.snapshot_study)."""
    trials = con.execute(f"SELECT t, {', '.join(KEYS)} FROM report_adaptive_trials").df()
    con.register("adaptive_trials", trials[["t", "trial_key"]])  # one numbering for both queries
    table = con.sql("""SELECT a.t * 2 + (s.split = 'test')::INT AS g, s.sample, s.step, s.rank, s.top1_prob,
                              coalesce(s.kl_prev, 'nan'::REAL) AS kl_prev, s.top1_repeats
                       FROM adaptive_trials a JOIN step_signals s ON s.trial_key = a.trial_key""").to_arrow_table()
    data = {name: table.column(name).to_numpy() for name in table.column_names}  # Arrow: the fastest fetch
    con.unregister("adaptive_trials")
    return trials, data


def seeds_rows(trials: pd.DataFrame, data: dict[str, np.ndarray]) -> pd.DataFrame:
    """fetch_signals' result -> report_adaptive_seeds' rows."""
    g, step, sample = (data[c].astype(np.int64) for c in ("g", "step", "sample"))
    records = []
    if len(g):
        # rows arrive in any order: place each at (group, depth, sample) of one flat array, no sort
        n = np.bincount(g)
        S = np.bincount(g, weights=step == 0).astype(np.int64)
        present = np.flatnonzero(n)
        D = np.zeros_like(n)
        D[present] = n[present] // S[present]
        if (S[present] * D[present] != n[present]).any() or (sample >= S[g]).any() or (step >= D[g]).any():
            raise ValueError("step_signals: a trial's rows are not one per sample and depth")
        offset = np.concatenate([[0], np.cumsum(n)[:-1]])
        dest = offset[g] + step * S[g] + sample
        flat = {}
        for name in ("rank", "top1_prob", "kl_prev", "top1_repeats"):
            flat[name] = np.empty(len(g), dtype=data[name].dtype)
            flat[name][dest] = data[name]
        shapes: dict[tuple[int, int], list[int]] = {}
        for group in present:
            shapes.setdefault((int(D[group]), int(S[group])), []).append(int(group))
        for (d, s), groups in shapes.items():  # groups of one shape at once: (G, D, S) arrays
            def stack(name, groups=groups, d=d, s=s):
                return np.stack([flat[name][offset[x]:offset[x] + d * s].reshape(d, s) for x in groups])
            rows = _rows(stack("top1_prob"), stack("kl_prev"), stack("top1_repeats"), stack("rank").astype(np.int64))
            for group, group_rows in zip(groups, rows, strict=True):
                records += [(group // 2, "test" if group % 2 else "valid", s, *row) for row in group_rows]
    frame = pd.DataFrame(records, columns=["t", "split", "n_samples", "rule", "position", "threshold", "label",
                                           "depth", *METRICS])
    frame = trials.merge(frame, on="t").drop(columns="t")
    frame["threshold"] = pd.array(frame["threshold"].astype("float64"), dtype="Float64")  # None -> NULL
    return frame[[*KEYS, "split", "rule", "position", "threshold", "label", "n_samples", "depth", *METRICS]]
