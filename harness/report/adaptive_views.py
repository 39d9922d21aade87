"""SQL views of adaptive reasoning depth: stopping rules evaluated offline on the stored per-sample signals.

For a trained model (the configuration chosen on validation per variant, K >= 1, trials run with
`step_signals`), each rule stops a sample at the first depth k whose signal passes a threshold and
recommends with the depth-k read-out (rearec/signals.py: r_k, or for ERL the mean of r_0..r_k); a sample
that never passes stops at K, the method's own output. Rules (paper §5's open question; DTRec / ManCAR):

- confidence c: top-1 probability >= c;
- convergence eps: depth >= 1 and KL(p_k || p_{k-1}) <= eps;
- agreement m: the top-1 item has stayed the same for m consecutive depths (m = 1: it repeats).

Each rule's threshold runs over a fixed grid (below: data-independent, so nothing about either split
enters it) and is chosen on validation only: the grid point with the best mean validation score (the
study's selection metric, NDCG@20 by default) over the configuration's seeds; ties go to the smaller mean
validation depth, then the grid order. Test metrics at that threshold are reported per seed and averaged.
Fixed depths k = 0..K and the per-sample oracle (each sample's best depth; ties: the earliest) come from the
same rows. Cost: the trial's own cached test-set latency t_K and the study's K = 0 latency t_0 (mean of its
Base trials on the same dataset and backbone) give cost(d) = t_0 + (t_K - t_0) d / K for a mean depth d:
linear in depth, as each cached step adds one position -- the ideal per-sample cost (a batched
implementation pays for its deepest sample unless it compacts the batch).
"""

from __future__ import annotations

import math

from rearec.config import METRICS

INF = math.inf
# (rule, threshold, label, condition on one step_signals row); "never" keeps every sample at depth K.
CONFIDENCE = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7,
              0.8, 0.9, 0.95, 0.99)
CONVERGENCE = (INF, 10.0, 5.0, 2.0, 1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 5e-4, 2e-4, 1e-4,
               1e-5, 1e-6)
AGREEMENT = (1, 2, 3, 4)
RULES = ("confidence", "convergence", "agreement")


def _num(x: float) -> str:
    """A threshold as a DOUBLE literal: the float32 signals are compared in double precision."""
    return "'inf'::DOUBLE" if x == INF else f"{float(x)!r}::DOUBLE"


def policies() -> list[tuple[str, float | None, str, str]]:
    """(rule, threshold or None for never, label, SQL condition) in grid order; position = list index."""
    out = []
    for c in CONFIDENCE:
        out.append(("confidence", c, f"p≥{c:g}", f"top1_prob::DOUBLE >= {_num(c)}"))
    out.append(("confidence", None, "never", "FALSE"))
    for e in CONVERGENCE:
        out.append(("convergence", e, "ε=∞ (depth 1)" if e == INF else f"ε={e:g}",
                    "step >= 1" if e == INF else f"step >= 1 AND kl_prev::DOUBLE <= {_num(e)}"))
    out.append(("convergence", None, "never", "FALSE"))
    for m in AGREEMENT:
        out.append(("agreement", float(m), f"m={m}", f"top1_repeats >= {m}"))
    out.append(("agreement", None, "never", "FALSE"))
    return out


def _policy_table() -> str:
    rows = ", ".join(f"({i}, '{rule}', {'NULL' if th is None else _num(th)}, '{label}')"
                     for i, (rule, th, label, _) in enumerate(policies()))
    return f"(VALUES {rows}) AS p(position, rule, threshold, label)"


def _per_sample_columns() -> str:
    cols = []
    for i, (_, _, _, cond) in enumerate(policies()):
        cols.append(f"coalesce(min(step) FILTER ({cond}), max(step)) AS d{i}")
        cols.append(f"coalesce(arg_min(rank, step) FILTER ({cond}), arg_max(rank, step)) AS r{i}")
    return ",\n                   ".join(cols)


def _metric_cols(rank: str, suffix: str) -> list[str]:
    return [f"avg(report_rank_metric({rank}, '{m}')) AS \"{m}{suffix}\"" for m in METRICS]


_SEP = "#"  # column names "<metric>#<position>" of the wide per-trial frame


def _per_trial_columns() -> str:
    cols = []
    for i in range(len(policies())):
        cols += [f"avg(d{i}) AS \"depth{_SEP}{i}\"", *_metric_cols(f"r{i}", f"{_SEP}{i}")]
    cols += [f"avg(oracle_step) AS \"depth{_SEP}o\"", *_metric_cols("oracle_rank", f"{_SEP}o")]
    return ", ".join(cols)


def _unpivot_groups() -> str:
    names = [str(i) for i in range(len(policies()))] + ["o"]
    groups = []
    for n in names:
        cols = ", ".join(f'"{c}{_SEP}{n}"' for c in ["depth", *METRICS])
        groups.append(f'({cols}) AS "{"oracle" if n == "o" else n}"')
    return ", ".join(groups)


_SEEDS = f"""
        WITH sig AS MATERIALIZED (
            SELECT a.t, s.split, s.sample, s.step, s.rank, s.top1_prob, s.kl_prev, s.top1_repeats
            FROM report_adaptive_trials a JOIN step_signals s ON s.trial_key = a.trial_key),
        per_sample AS (  -- one row per sample: each policy's stop depth d<i> and the rank r<i> there
            SELECT t, split, min(rank) AS oracle_rank, arg_min(step, CAST(rank AS BIGINT) * 1024 + step) AS oracle_step,
                   {_per_sample_columns()}
            FROM sig GROUP BY t, split, sample),
        per_trial AS (
            SELECT t, split, count(*) AS n_samples, {_per_trial_columns()} FROM per_sample GROUP BY t, split),
        policy_rows AS (
            SELECT u.t, u.split, u.n_samples, u.policy, u.depth, {", ".join(f'u."{m}"' for m in METRICS)}
            FROM (UNPIVOT per_trial ON {_unpivot_groups()} INTO NAME policy VALUE depth,
                  {", ".join(f'"{m}"' for m in METRICS)}) u),
        fixed AS (  -- every sample at depth k: the read-out after k steps
            SELECT t, split, count(*) AS n_samples, 'fixed' AS rule, step AS position, CAST(step AS DOUBLE) AS threshold,
                   'depth ' || step AS label, avg(step) AS depth, {", ".join(_metric_cols("rank", ""))}
            FROM sig GROUP BY t, split, step)
        SELECT a.study, a.dataset, a.backbone, a.variant, a.reasoning_steps, a.config_id, a.seed, a.trial_key,
               x.split, x.rule, x.position, x.threshold, x.label, x.n_samples, x.depth,
               {", ".join(f'x."{m}"' for m in METRICS)}
        FROM (
            SELECT r.t, r.split, r.n_samples, coalesce(p.rule, 'oracle') AS rule,
                   coalesce(p.position, -1) AS position, p.threshold, coalesce(p.label, 'oracle') AS label,
                   r.depth, {", ".join(f'r."{m}"' for m in METRICS)}
            FROM policy_rows r LEFT JOIN {_policy_table()} ON r.policy = CAST(p.position AS VARCHAR)
            UNION ALL BY NAME SELECT * FROM fixed) x
        JOIN report_adaptive_trials a USING (t)"""

_MEANS = ", ".join(f'avg("{m}") AS "{m}", stddev_samp("{m}") AS "{m}_sd"' for m in METRICS)

ADAPTIVE_VIEWS: dict[str, tuple[str, str]] = {
    "report_adaptive_trials": ("the trials whose stored step signals the stopping rules read: every seed of the "
                               "configuration chosen on validation per variant (report_best), K >= 1 (a trial "
                               "run without step_signals adds no rows downstream)", """
        SELECT b.study, b.dataset, b.backbone, b.variant, b.reasoning_steps, b.config_id, r.seed, r.trial_key,
               row_number() OVER (ORDER BY r.trial_key) AS t  -- deterministic: the view is read twice
        FROM report_best b JOIN report_trials r ON r.study = b.study AND r.config_id = b.config_id AND r.usable
        WHERE b.reasoning_steps >= 1"""),
    "report_adaptive_seeds": ("per trial (seed) and split: mean depth and metrics of every stopping rule at every "
                              "grid threshold (rule, position, threshold, label), of each fixed depth (rule "
                              "'fixed') and of the per-sample oracle depth (rule 'oracle')", _SEEDS),
    "report_adaptive_curves": ("per configuration, split, rule and threshold: mean over seeds of depth and "
                               "metrics (the accuracy-versus-depth curves)", f"""
        SELECT study, dataset, backbone, variant, reasoning_steps, config_id, split, rule, position, threshold,
               label, count(*) AS n, avg(depth) AS depth, {_MEANS}
        FROM report_adaptive_seeds GROUP BY ALL"""),
    "report_adaptive_choice": ("each rule's threshold chosen on validation: the best mean validation selection "
                               "metric over seeds (ties: smaller validation depth, then grid order); test never "
                               "enters", """
        SELECT c.study, c.dataset, c.backbone, c.variant, c.reasoning_steps, c.config_id, c.rule, c.position,
               c.threshold, c.label, c.depth AS valid_depth, s.metric AS selection_metric,
               CASE s.metric WHEN 'ndcg@10' THEN c."ndcg@10" WHEN 'ndcg@20' THEN c."ndcg@20"
                             WHEN 'recall@10' THEN c."recall@10" WHEN 'recall@20' THEN c."recall@20" END AS valid_score
        FROM report_adaptive_curves c JOIN report_selection_metric s USING (study)
        WHERE c.split = 'valid' AND c.rule IN ('confidence', 'convergence', 'agreement')
        QUALIFY row_number() OVER (PARTITION BY c.study, c.config_id, c.rule
                                   ORDER BY valid_score DESC, c.depth, c.position) = 1"""),
    "report_adaptive": ("test metrics against mean depth per configuration: fixed depths K = 0..K_max, each "
                        "stopping rule at its validation-chosen threshold and the per-sample oracle (an upper "
                        "bound); mean and 95 % CI over seeds, with the inference cost of the mean depth "
                        "interpolated from the trial's own latency", f"""
        WITH base_latency AS (
            SELECT r.study, r.dataset, r.backbone, avg(l.seconds) AS t0
            FROM report_trials r JOIN latency l USING (trial_key)
            WHERE r.usable AND r.reasoning_steps = 0 AND l.cached AND l.split = 'test' GROUP BY ALL),
        own_latency AS (
            SELECT trial_key, avg(seconds) AS tk FROM latency WHERE cached AND split = 'test' GROUP BY ALL),
        picked AS (
            SELECT s.*, ch.valid_score, ch.valid_depth FROM report_adaptive_seeds s
            LEFT JOIN report_adaptive_choice ch ON ch.study = s.study AND ch.config_id = s.config_id
                 AND ch.rule = s.rule
            WHERE s.split = 'test' AND (s.rule IN ('fixed', 'oracle') OR s.position = ch.position)),
        costed AS (
            SELECT p.*, b.t0 + (o.tk - b.t0) * p.depth / p.reasoning_steps AS cost_seconds, b.t0
            FROM picked p LEFT JOIN own_latency o USING (trial_key)
            LEFT JOIN base_latency b ON b.study = p.study AND b.dataset = p.dataset AND b.backbone = p.backbone)
        SELECT *, report_ci95(sd, n) AS ci95, report_ci95(depth_sd, n) AS depth_ci95,
               report_ci95(cost_sd, n) AS cost_ci95, 100.0 * (cost_seconds / nullif(t0, 0) - 1) AS cost_increase_pct
        FROM (
            SELECT study, dataset, backbone, variant, reasoning_steps, config_id, rule, position, threshold, label,
                   any_value(valid_score) AS valid_score, any_value(valid_depth) AS valid_depth, metric,
                   count(*) AS n, avg(value) AS mean, stddev_samp(value) AS sd, avg(depth) AS depth,
                   stddev_samp(depth) AS depth_sd, avg(cost_seconds) AS cost_seconds,
                   stddev_samp(cost_seconds) AS cost_sd, avg(t0) AS t0, min(n_samples) AS n_samples,
                   list(seed ORDER BY seed) AS seeds
            FROM (UNPIVOT costed ON {", ".join(f'"{m}"' for m in METRICS)} INTO NAME metric VALUE value)
            GROUP BY ALL)"""),
}
ADAPTIVE_NEEDS = {name: "step_signals" for name in ADAPTIVE_VIEWS}
