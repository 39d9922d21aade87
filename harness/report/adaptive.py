"""Report section: adaptive reasoning depth, stopping rules evaluated offline on stored step signals."""

from __future__ import annotations

import pandas as pd

from rearec.config import METRICS

from . import figures
from .adaptive_views import CONFIDENCE, CONVERGENCE
from .context import MAX_PANELS, Context, Section, absent
from .frames import GROUP, ordered
from .tables import SHORT, Table, fmt_mean_ci, fmt_number, fmt_pct, method_of, variant_label

MAIN = "ndcg@20"
MAX_COMBOS = 6  # dataset x backbone x variant blocks in Markdown; the CSV has all
VIEWS = ["report_adaptive", "report_adaptive_choice", "report_adaptive_curves", "report_adaptive_seeds",
         "report_adaptive_trials"]
RULE_TEXT = {"fixed": "Fixed depth", "confidence": "Confidence", "convergence": "Convergence",
             "agreement": "Agreement", "oracle": "Oracle (upper bound)"}
_ORDER = {"fixed": 0, "confidence": 1, "convergence": 2, "agreement": 3, "oracle": 4}

EXPLAIN = (
    "Each trained model (the configuration chosen on validation per variant, every seed) stops each sample at "
    "the first depth k whose signal passes a threshold and recommends from the depth-k read-out: r_k, or for ERL "
    "the mean of r_0..r_k (what ERL outputs if it stops there); a sample that never passes stops at K, the "
    "method's own output. **Confidence** c: top-1 probability ≥ c (softmax of the ranking scores over all "
    "items, temperature 1); **convergence** ε: depth ≥ 1 and KL(p_k ‖ p_(k−1)) ≤ ε; **agreement** m: the top-1 "
    "item stayed the same for m consecutive depths. Thresholds run over fixed grids (c: "
    f"{', '.join(f'{c:g}' for c in CONFIDENCE)}, never; ε: ∞, {', '.join(f'{e:g}' for e in CONVERGENCE[1:])}, "
    "never; m: 1-4, never) and are chosen on **validation** only: the best mean validation "
    "{metric} over seeds, ties to the smaller validation depth; the test columns are the chosen threshold's. "
    "Fixed depth k reads every sample out at k; the oracle takes each sample's best depth (ties: the earliest), "
    "a post-hoc upper bound, not a rule.")
COST = ("Cost: test-set inference seconds of the mean depth d, interpolated linearly between the study's K = 0 "
        "time t_0 (its Base trials, same dataset and backbone, KV cache) and the trial's own time at its K: "
        "t_0 + (t_K − t_0) d / K (each cached step adds one position); Cost Inc. is over t_0. It is the ideal "
        "per-sample cost: a batch that runs until its deepest sample stops pays more unless it drops finished "
        "rows.")


def _threshold(row) -> str:
    if row.rule in ("fixed", "oracle"):
        return "–"
    return str(row.label)


def adaptive(ctx: Context) -> Section:
    key, title = "adaptive", "Adaptive reasoning depth: stopping rules against fixed depth"
    if "report_adaptive" not in ctx.views:
        return absent(key, title, "this database has no step_signals table yet", VIEWS)
    ctx.ready("report_adaptive_seeds")  # built beside the earlier sections (views.snapshot_study)
    data = ctx.frame("report_adaptive")
    if data.empty:
        return absent(key, title, "no trial of a variant with reasoning steps stored per-sample step signals "
                      "(set `step_signals: true` in the study's params; trials that ran without it keep their "
                      "key, so re-run them in a fresh database or a study of their own)", VIEWS)
    data = ordered(data, ctx.order)
    main = data[data.metric == MAIN]
    rows = []
    cell = {(r.dataset, r.backbone, r.variant, r.rule, r.position, r.metric): (r.mean, r.ci95)
            for r in data.itertuples(index=False)}
    combos = main[[*GROUP, "variant"]].drop_duplicates()
    combos = combos.assign(_p=combos.variant.map(method_of).map({"prl": 0, "erl": 1}).fillna(2)).sort_values(
        "_p", kind="stable").drop(columns="_p")
    by_combo = dict(list(main.groupby([*GROUP, "variant"], sort=False)))
    for dataset, backbone, v in combos.head(MAX_COMBOS).itertuples(index=False):
        part = by_combo[(dataset, backbone, v)]
        part = part.assign(_o=part.rule.map(_ORDER)).sort_values(["_o", "position"], kind="stable")
        for r in part.itertuples(index=False):
            metrics = {m: cell.get((dataset, backbone, v, r.rule, r.position, m), (None, None)) for m in METRICS}
            rows.append({"Dataset": dataset, "Backbone": backbone, "Method": variant_label(v),
                         "K": int(r.reasoning_steps), "Policy": RULE_TEXT.get(r.rule, r.rule)
                         + (f" {int(r.position)}" if r.rule == "fixed" else ""),
                         "Threshold (valid)": _threshold(r),
                         "Mean depth": fmt_mean_ci(r.depth, r.depth_ci95, 2),
                         **{SHORT[m]: fmt_mean_ci(*metrics[m]) for m in METRICS},
                         f"valid {SHORT.get(ctx.selection_metric, ctx.selection_metric)}": fmt_number(r.valid_score),
                         "Cost (s)": fmt_number(r.cost_seconds, 3), "Cost Inc.": fmt_pct(r.cost_increase_pct,
                                                                                             arrow=False),
                         "Seeds": int(r.n)})
    notes = [EXPLAIN.replace("{metric}", SHORT.get(ctx.selection_metric, ctx.selection_metric)), COST,
             "Cells: test mean ± 95 % t-interval over seeds (one seed: the value). Mean depth: reasoning steps "
             "actually run per test sample (0 = the sequence encoder only)."]
    if len(combos) > MAX_COMBOS:
        notes.append(f"Showing {MAX_COMBOS} of {len(combos)} dataset/backbone/method combinations (PRL and ERL "
                     "first); the CSV has every policy of every one.")
    slower = data[(data.rule == "fixed") & (data.metric == MAIN) & (data.cost_increase_pct < 0)]
    if len(slower):
        notes.append("Some trials timed their own K faster than the K = 0 trials (negative Cost Inc.): their "
                     "timings shared the machine with other trials; time them one at a time "
                     "(studies/latency.yaml's `concurrency: 1`) before reading costs.")
    table = Table("table_adaptive", "Test accuracy against mean reasoning depth: fixed depths, stopping rules "
                  "(thresholds chosen on validation) and the per-sample oracle", data, pd.DataFrame(rows), notes)
    curves = ctx.frame("report_adaptive_curves")
    curves = curves[curves.split == "test"].rename(columns={MAIN: "mean"})
    shown = combos.head(MAX_PANELS)
    ctx.figure(figures.adaptive_figure, curves.merge(shown, on=[*GROUP, "variant"]),
               main.merge(shown, on=[*GROUP, "variant"]), ctx.out / "fig_adaptive_depth.png")
    return Section(key, title, True, [], [table], [("fig_adaptive_depth.png", "Test NDCG@20 against mean depth: "
                                                    "fixed depths, stopping rules and the oracle")], views=VIEWS)
