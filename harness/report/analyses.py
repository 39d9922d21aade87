"""Report sections that look inside trained models: subgroups, oracle step, step similarity, latency."""

from __future__ import annotations

import pandas as pd

from . import figures
from .context import MAX_PANELS, Context, Section, absent
from .frames import GROUP, ordered
from .tables import Table, fmt_mean_ci, fmt_number, fmt_pct, method_of, variant_label, write_csv

MAIN = "ndcg@20"
MAX_COMBOS = 6  # dataset x backbone x variant blocks shown in Markdown and figures; the CSV has all


def _top(frame: pd.DataFrame, ctx: Context, keys: list[str], n: int) -> pd.DataFrame:
    """The first ``n`` key combinations in the study's order (PRL first among variants, as in the paper)."""
    combos = ordered(frame[keys].drop_duplicates(), ctx.order)
    combos = combos.assign(_prl=(combos.variant.map(method_of) != "prl").astype(int)).sort_values("_prl",
                                                                                                kind="stable")
    return combos.drop(columns="_prl").head(n).merge(frame, on=keys)  # rows in the combinations' order


def subgroups(ctx: Context) -> Section:
    key, title = "subgroups", "User and item subgroups (Fig. 4): NDCG@20 per reasoning step"
    data = ctx.frame("report_subgroups")
    data = data[data.user_group != "all"]
    main = data[(data.metric == MAIN) & (data.reasoning_steps >= 1)] if len(data) else data
    if main.empty:
        return absent(key, title, "no per-group metrics of a variant with reasoning steps", ["report_subgroups"])
    keys = [*GROUP, "variant"]
    shown = _top(main, ctx, keys, MAX_COMBOS)
    rows = []
    for (dataset, backbone, v), part in shown.groupby(keys, sort=False):
        steps = sorted(int(s) for s in part.step.dropna().unique())
        for group, g in sorted(part.groupby("user_group"), key=lambda kv: (kv[0][0] != "u", kv[0])):
            by_step = g.set_index(g.step.astype("Int64"))
            row = {"Dataset": dataset, "Backbone": backbone, "Method": variant_label(v),
                   "Group": group.split(":")[1]}
            for s in steps:
                row[f"Step-{s}"] = fmt_mean_ci(by_step.loc[s, "mean"], by_step.loc[s, "ci95"]) if s in by_step.index \
                    else "–"
            out = g[g.step.isna()]
            row["Output"] = fmt_mean_ci(out["mean"].iloc[0], out["ci95"].iloc[0]) if len(out) else "–"
            first, last = (by_step.loc[steps[0], "mean"], by_step.loc[steps[-1], "mean"]) if steps else (None, None)
            row[f"Step-{steps[-1]} vs Step-0"] = fmt_pct(100 * (last / first - 1) if first else None)
            rows.append(row)
    n_combos = len(main[keys].drop_duplicates())
    notes = ["UG0-UG3: quartiles of the untruncated history length (UG0 shortest); IG0-IG3: target popularity "
             "groups of equal sample counts (IG0 least popular). Configuration: the variant's choice on validation."]
    if n_combos > MAX_COMBOS:
        notes.append(f"Showing {MAX_COMBOS} of {n_combos} dataset/backbone/method combinations; the CSV has all "
                     "metrics for all of them.")
    table = Table("table_subgroups", "Test NDCG@20 per user / item group and reasoning step", data,
                  pd.DataFrame(rows), notes)
    ctx.figure(figures.subgroups_figure, _top(main, ctx, keys, 2), ctx.out / "fig4_subgroups.png")
    return Section(key, title, True, [], [table], [("fig4_subgroups.png", "Test NDCG@20 per group and step")],
                   views=["report_subgroups"])


def oracle(ctx: Context) -> Section:
    key, title = "oracle", "Oracle reasoning step (Fig. 2): each sample's best step against the method's output"
    views = ["report_oracle", "report_oracle_steps", "report_best_results"]
    data = ctx.frame("report_oracle")
    data = data[data.reasoning_steps >= 1]
    if data.empty:
        return absent(key, title, "no per-sample ranks (sample_ranks) of a variant with reasoning steps", views)
    shares = ctx.frame("report_oracle_steps")
    best = ctx.frame("report_best_results")
    comps = ctx.frame("report_comparisons")  # each variant's Base (the one with the same settings)
    refs = comps[comps.reference.map(method_of) == "base"][[*GROUP, "variant", "reference"]] if len(comps) \
        else pd.DataFrame(columns=[*GROUP, "variant", "reference"])
    base = best[best.variant.map(method_of) == "base"][[*GROUP, "variant", "metric", "mean", "ci95"]].rename(
        columns={"variant": "reference", "mean": "base_mean", "ci95": "base_ci95"})
    data = data.merge(refs, on=[*GROUP, "variant"], how="left").merge(base, on=[*GROUP, "reference", "metric"],
                                                                       how="left")
    data = ordered(data, ctx.order)
    data["output_vs_base_pct"] = 100 * (data.output_mean / data.base_mean - 1)
    data["oracle_vs_base_pct"] = 100 * (data.oracle_mean / data.base_mean - 1)
    data["oracle_vs_output_pct"] = 100 * (data.oracle_mean / data.output_mean - 1)
    main = data[data.metric == MAIN]
    share_text = {key: ", ".join(f"{int(step)}: {100 * share:.0f}%" for step, share in
                                 sorted(zip(part.step, part.share, strict=True)))
                  for key, part in shares.groupby([*GROUP, "variant"])}
    rows = []
    for r in main.itertuples(index=False):
        rows.append({"Dataset": r.dataset, "Backbone": r.backbone, "Method": variant_label(r.variant),
                     "K": int(r.reasoning_steps), "Base": fmt_mean_ci(r.base_mean, r.base_ci95),
                     "Output": fmt_mean_ci(r.output_mean, r.output_ci95),
                     "Oracle": fmt_mean_ci(r.oracle_mean, r.oracle_ci95),
                     "Output vs Base": fmt_pct(r.output_vs_base_pct), "Oracle vs Base": fmt_pct(r.oracle_vs_base_pct),
                     "Oracle vs Output": fmt_pct(r.oracle_vs_output_pct),
                     "Best step (share)": share_text.get((r.dataset, r.backbone, r.variant), "–")})
    table = Table("table_oracle", "Post-hoc oracle: test NDCG@20 when each sample takes its best step 0..K",
                  data, pd.DataFrame(rows),
                  ["Oracle: per test sample the step 0..K that ranks the target highest (a post-hoc upper bound, "
                   "not a method); Output: the method's own representation; Base: the Base row of the same "
                   "dataset and backbone; best step share: ties go to the earliest step. Mean ± 95 % t-interval "
                   "over seeds. From per-sample ranks (sample_ranks)."])
    section = Section(key, title, True, [], [table], views=views)
    if not shares.empty:
        shares_path = ctx.out / "table_oracle_best_step.csv"
        write_csv(ordered(shares, ctx.order), shares_path)
        table.notes.append(f"Best-step shares per dataset, backbone and method: [`{shares_path.name}`]"
                           f"({shares_path.name}).")
    priority = main.assign(_p=main.variant.map(method_of).map({"prl": 0, "erl": 1}).fillna(2)).sort_values(
        "_p", kind="stable")
    fig = priority.drop(columns="_p").head(MAX_PANELS)
    fig = fig.assign(label=[f"{d}\n{b}\n{variant_label(v)}" for d, b, v in
                            zip(fig.dataset, fig.backbone, fig.variant, strict=True)])
    ctx.figure(figures.bars_figure, fig, [("base_mean", "Base", "base_ci95", figures.COLORS["base"]),
                              ("output_mean", "Output", "output_ci95", "#1f77b4"),
                              ("oracle_mean", "Oracle step", "oracle_ci95", "#d62728")],
               ctx.out / "fig2_oracle.png", "Test NDCG@20: Base, method output, post-hoc best step")
    section.figures.append(("fig2_oracle.png", "Base, the method's output and the post-hoc oracle step"))
    return section


def similarity(ctx: Context) -> Section:
    key, title = "similarity", "Reasoning-state similarity (Fig. 9)"
    data = ctx.frame("report_similarity")
    data = data[(data.split == "test") & (data.reasoning_steps >= 1)]
    if data.empty:
        return absent(key, title, "no step-similarity rows of a variant with reasoning steps", ["report_similarity"])
    data = ordered(data, ctx.order)
    rows = []
    for (dataset, backbone, v), part in data.groupby([*GROUP, "variant"], sort=False):
        k = int(part.reasoning_steps.iloc[0])
        off = part[part.step_a != part.step_b]
        last = part[(part.step_a == k) & (part.step_b == k - 1)]
        rows.append({"Dataset": dataset, "Backbone": backbone, "Method": variant_label(v), "K": k,
                     "Mean cosine, distinct steps": fmt_number(off.cosine.mean(), 3),
                     f"cos(step {k}, step {k - 1})": fmt_number(last.cosine.iloc[0] if len(last) else None, 3),
                     "Seeds": int(part.n.max())})
    table = Table("table_similarity", "Cosine similarity between reasoning steps' hidden states (test)", data,
                  pd.DataFrame(rows), ["High similarity between distinct steps means the steps repeat each other "
                                       "(the paper's reasoning-pattern degradation)."])
    combo = ordered(data[GROUP].drop_duplicates(), ctx.order).head(1)  # Fig. 9: the variants of one dataset
    shown = data.merge(combo, on=GROUP)
    shown = shown.merge(shown[[*GROUP, "variant"]].drop_duplicates().head(MAX_PANELS), on=[*GROUP, "variant"])
    ctx.figure(figures.similarity_figure, shown, ctx.out / "fig9_similarity.png")
    caption = f"Step-to-step cosine similarity, {combo.dataset.iloc[0]} / {combo.backbone.iloc[0]}"
    return Section(key, title, True, [], [table], [("fig9_similarity.png", caption)],
                   views=["report_similarity"])


def latency(ctx: Context) -> Section:
    key, title = "latency", "Inference latency (Table 4): seconds per K, with and without the KV cache"
    if "report_latency" not in ctx.views:
        return absent(key, title, "this database has no latency table yet", ["report_latency"])
    data = ctx.frame("report_latency")
    if data.empty:
        return absent(key, title, "no latency measurements for this study's trials", ["report_latency"])
    if (data.split == "test").any():
        data = data[data.split == "test"]
    data = ordered(data, ctx.order)
    ks = sorted(int(k) for k in data.reasoning_steps.unique())
    rows = []
    label = {k: "Base" if k == 0 else f"Step-{k}" for k in ks}
    for (dataset, backbone, cached), part in data.groupby([*GROUP, "cached"], sort=False):
        base = part[part.reasoning_steps == 0]
        for v in [x for x in part.variant.unique() if method_of(x) != "base"] or list(base.variant.unique()[:1]):
            line = pd.concat([base, part[part.variant == v]]).drop_duplicates("reasoning_steps")
            line = dict(zip(line.reasoning_steps, line.to_dict("records"), strict=True))
            head = {"Dataset": dataset, "Backbone": backbone, "Method": variant_label(v),
                    "KV cache": "yes" if cached else "no"}
            secs = {label[k]: fmt_mean_ci(line[k]["seconds"], line[k]["ci95"]) if k in line else "–" for k in ks}
            inc = {label[k]: "–" if k not in line else "-" if k == 0 else
                   fmt_pct(line[k]["cost_increase_pct"], arrow=False) for k in ks}
            rows.append({**head, "Row": "seconds", **secs})
            rows.append({**{c: "" for c in head}, "Row": "Cost Inc.", **inc})
    table = Table("table4_latency", "Test-set inference seconds and cost increase over K = 0", data,
                  pd.DataFrame(rows), ["Seconds: mean over the completed trials of the cell (± 95 % t-interval when "
                                       "several); Cost Inc.: relative to the Base (K = 0) time with the same cache "
                                       "setting. Devices: see the trials' `device` column."])
    return Section(key, title, True, [], [table], views=["report_latency"])
