"""Report sections comparing trained configurations: overall tables, reasoning steps, sensitivity, ablation."""

from __future__ import annotations

import math

import pandas as pd

from rearec.config import METRICS, TEXT_BACKBONES

from ..expand import merged_params
from ..store import variant
from ..study import Choice, Range
from . import figures
from .context import MAX_PANELS, Context, Section, absent
from .frames import GROUP, comparison_table, ordered, tests_with_p
from .status import _method_dict, describe_cell
from .tables import SHORT, Table, fmt_mean_ci, method_of, variant_label, variant_rank

MAIN = "ndcg@20"


def _legend(ctx: Context, n_seed: int, n_sample: int, reference: str) -> list[str]:
    return [f"Cells: test mean ± 95 % t-interval over seeds (a single value when one seed). The configuration of "
            f"each row is the one with the best mean validation {ctx.selection_metric} among its completed "
            "configurations (Config); test never takes part in the choice.",
            f"(Improv.): relative change of the test mean over {reference}; Avg.: mean of the four changes. "
            f"* paired t-test over seeds ({n_seed} comparisons with ≥ 2 common seeds), † paired t-test over test "
            f"samples ({n_sample} comparisons with per-sample ranks); both two-sided, Holm-Bonferroni-adjusted "
            "within this table, p < 0.05."]


def _comparison(ctx: Context, name: str, title: str, blocks, references: list[str], backbones=None) -> Table | None:
    res = ctx.frame("report_best_results")
    imp, seed, sample = (f[f.reference.isin(references)] for f in (
        ctx.frame("report_improvements"), ctx.frame("report_seed_tests"), ctx.frame("report_sample_tests")))
    cells = ctx.variant_cells
    if backbones is not None:
        res, imp, seed, sample, cells = (f[f.backbone.isin(backbones)] if len(f) else f
                                         for f in (res, imp, seed, sample, cells))
    seed, sample = tests_with_p(seed, "n_pairs"), tests_with_p(sample, "n_samples")
    table = comparison_table(name, title, res, imp, seed, sample, cells, blocks, ctx.order)
    if table is not None:
        n_seed = int(seed.p.notna().sum()) if len(seed) else 0
        n_sample = int(sample.p.notna().sum()) if len(sample) else 0
        table.notes = _legend(ctx, n_seed, n_sample, variant_label(blocks[0][0])) + table.notes
    return table


def reference_blocks(ctx: Context, pairs: dict[str, tuple[str, ...]]) -> list[tuple[str, list[str]]]:
    """(reference, [variants compared with it]) for references whose paper variant is a key of ``pairs``
    (compared with the paper variants it lists; () = every other one). Completed comparisons come from
    report_comparisons; planned cells without results join the reference of the same kind with the same
    settings (else the first), so they show as pending. A reference with settings is its own block."""
    comps = ctx.frame("report_comparisons")
    comps = comps[comps.reference.map(method_of).isin(list(pairs))] if len(comps) else comps
    blocks: dict[str, set[str]] = {}
    for ref, v in zip(comps.reference, comps.variant, strict=True):
        blocks.setdefault(ref, set()).add(v)
    cells = ctx.variant_cells
    planned = sorted(set(cells.variant), key=lambda v: (variant_rank(v), v)) if len(cells) else []
    for kind, compared in pairs.items():
        refs = [r for r in dict.fromkeys([*blocks, *planned]) if method_of(r) == kind]
        for v in planned:
            m = method_of(v)
            if m == kind or (compared and m not in compared) or (not compared and m in pairs):
                continue
            if not refs or any(v in vs for r, vs in blocks.items() if method_of(r) == kind):
                continue
            same = [r for r in refs if r.partition(" [")[2] == v.partition(" [")[2]]
            blocks.setdefault((same or refs)[0], set()).add(v)
    return [(ref, sorted(vs, key=lambda v: (variant_rank(v), v)))
            for ref, vs in sorted(blocks.items(), key=lambda kv: (variant_rank(kv[0]), kv[0]))]


def overall(ctx: Context) -> Section:
    key, title = "overall", "Overall performance (Tables 2-3)"
    views = ["report_best_results", "report_improvements", "report_seed_tests", "report_sample_tests",
             "report_comparisons"]
    cells = ctx.variant_cells
    blocks = reference_blocks(ctx, {"base": ()})
    if not blocks or not any(vs for _, vs in blocks):
        return absent(key, title, "the overall table compares Base with reasoning variants; this study does not "
                      "have both", views)
    backbones = list(dict.fromkeys(cells.backbone))
    kinds = [("table2_overall_id", "Table 2: ID-based backbones", [b for b in backbones if b not in TEXT_BACKBONES]),
             ("table3_overall_text", "Table 3: text-based backbones", [b for b in backbones if b in TEXT_BACKBONES])]
    tables = [t for name, label, bbs in kinds if bbs
              if (t := _comparison(ctx, name, f"{label}: Base and reasoning variants (test)", blocks,
                                   [ref for ref, _ in blocks], bbs)) is not None]
    return Section(key, title, True, [], tables, views=views)


def ablation(ctx: Context) -> Section:
    key, title = "ablation", "Ablation (Fig. 7): ERL vs ERL w/o KL, PRL vs PRL w/o RCL"
    views = ["report_best_results", "report_improvements", "report_seed_tests", "report_sample_tests"]
    blocks = reference_blocks(ctx, {"erl w/o KL": ("erl",), "prl w/o RCL": ("prl",)})
    if not blocks:
        return absent(key, title, "no full method together with its ablation (erl with kl_lambda 0, prl with "
                      "rcl false)", views)
    table = _comparison(ctx, "table_ablation", "Ablation: the full method against its ablation (test)", blocks,
                        [ref for ref, _ in blocks])
    if table is None:
        return absent(key, title, "no completed ablation trials yet", views)
    section = Section(key, title, True, [], [table], views=views)
    res = ctx.frame("report_best_results")
    res = ordered(res[(res.metric == MAIN) & res.variant.isin([v for ref, fulls in blocks for v in [ref, *fulls]])],
                  ctx.order)
    if len(res):
        wide = res.pivot_table(index=GROUP, columns="variant", values=["mean", "ci95"], aggfunc="first", dropna=False)
        wide = wide.reindex(pd.MultiIndex.from_frame(res[GROUP].drop_duplicates()))  # the study's order
        frame = pd.DataFrame({"label": [f"{d}\n{b}" for d, b in wide.index]})
        series = []
        for ref, fulls in blocks:
            for v in [ref, *fulls]:
                frame[v] = wide["mean"][v].to_numpy() if v in wide["mean"] else math.nan
                frame[f"{v} ci"] = wide["ci95"][v].to_numpy() if v in wide["ci95"] else math.nan
                series.append((v, variant_label(v), f"{v} ci", figures.color(v)))
        frame = frame.head(MAX_PANELS)
        ctx.figure(figures.bars_figure, frame, series, ctx.out / "fig7_ablation.png",
                   "Ablation: test NDCG@20 (± 95 % CI)")
        section.figures.append(("fig7_ablation.png", "Test NDCG@20 of each method and its ablation"))
    return section


def steps(ctx: Context) -> Section:
    key, title = "steps", "Reasoning steps (Fig. 5): NDCG@20 against K"
    frame = ctx.frame("report_steps")
    nonbase = frame[frame.variant.map(method_of) != "base"]
    if nonbase.empty or nonbase.groupby([*GROUP, "variant"]).reasoning_steps.nunique().max() < 2:
        return absent(key, title, "needs a reasoning variant trained at two or more values of K", ["report_steps"])
    main = ordered(frame[frame.metric == MAIN], ctx.order)
    ks = sorted(int(k) for k in main.reasoning_steps.unique())
    cells = ctx.cells.set_index(["dataset", "backbone", "variant", "reasoning_steps"])
    rows = []
    for (dataset, backbone), part in main.groupby(GROUP, sort=False):
        for v in sorted(part.variant.unique(), key=variant_rank):
            line = part[part.variant == v].set_index("reasoning_steps")
            row = {"Dataset": dataset, "Backbone": backbone, "Method": variant_label(v)}
            for k in ks:
                if k in line.index:
                    row[f"K={k}"] = fmt_mean_ci(line.loc[k, "mean"], line.loc[k, "ci95"])
                elif (dataset, backbone, v, k) in cells.index:
                    row[f"K={k}"] = describe_cell(cells.loc[(dataset, backbone, v, k)])
                else:
                    row[f"K={k}"] = ""
            rows.append(row)
    table = Table("table_steps", "Test NDCG@20 per reasoning steps K (configuration per K chosen on validation)",
                  ordered(frame, ctx.order), pd.DataFrame(rows),
                  ["Cells: mean ± 95 % t-interval over seeds; a cell that is not complete shows its trial counts."])
    ctx.figure(figures.steps_figure, main[main.groupby(GROUP, sort=False).ngroup() < 4],
               ctx.out / "fig5_steps.png")
    return Section(key, title, True, [], [table], [("fig5_steps.png", "Test NDCG@20 against reasoning steps K")],
                   views=["report_steps"])


def _matches(params: dict, pinned: dict) -> bool:
    for name, value in pinned.items():
        got = params.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(got, (int, float)):
            if not math.isclose(float(got), float(value), rel_tol=1e-9, abs_tol=1e-12):
                return False
        elif got != value:
            return False
    return True


def sensitivity_panels(study) -> list[dict]:
    """One panel per (method entry, varied parameter): its variant, values and the pinned settings."""
    panels = []
    for entry in study.methods:
        params, sensitivity, _ = merged_params(study, entry)
        pinned = {k: v for k, v in params.items() if not isinstance(v, (Choice, Range))}
        for name, choice in sensitivity.items():
            others = {**{k: v for k, v in pinned.items() if k != name}, "method": entry.name}
            panels.append({"variant": variant(_method_dict(entry.name, {**pinned, name: choice.values[0]})),
                           "method": entry.name, "parameter": name, "values": list(choice.values), "pinned": others})
    return panels


def sensitivity(ctx: Context) -> Section:
    import json

    key, title = "sensitivity", "Hyper-parameter sensitivity (Fig. 6)"
    if ctx.parsed is None:
        return absent(key, title, "the stored study definition could not be read", ["report_configs"])
    panels = sensitivity_panels(ctx.parsed)
    if not panels:
        return absent(key, title, "the study has no sensitivity blocks", ["report_configs"])
    methods = sorted({p["method"] for p in panels})
    configs = ctx.q(f"""SELECT c.*, p.params FROM report_configs c JOIN (
            SELECT r.config_id, any_value(t.params) AS params FROM report_trials r JOIN trials t USING (trial_key)
            WHERE r.study = ? AND r.usable AND r.method IN ({', '.join('?' * len(methods))})
            GROUP BY r.config_id) p USING (config_id)
        WHERE c.study = ? AND ((c.split = 'valid' AND c.metric = ?) OR (c.split = 'test' AND c.metric = ?))""",
                    *methods, ctx.study, ctx.selection_metric, MAIN)
    params = {cid: json.loads(p) for cid, p in configs[["config_id", "params"]].drop_duplicates("config_id")
              .itertuples(index=False)}
    valid = configs[configs.split == "valid"].set_index("config_id")["mean"]
    test = configs[configs.split == "test"].set_index("config_id")
    rows = []
    for panel in panels:
        ids = [c for c, p in params.items() if _matches(p, panel["pinned"])]
        for cid in ids:
            p = params[cid]
            value = p.get(panel["parameter"])
            if cid not in test.index or cid not in valid.index or value not in panel["values"]:
                continue
            t = test.loc[cid]
            if method_of(t["variant"]) != panel["variant"]:
                continue
            rows.append({"parameter": panel["parameter"], "variant": t["variant"], "dataset": p.get("dataset"),
                         "backbone": p.get("backbone"), "value": value, "config_id": cid, "valid_score": valid[cid],
                         "n": t["n"], "mean": t["mean"], "ci95": t["ci95"]})
    if not rows:
        return absent(key, title, "no completed trials on the sensitivity grid yet", ["report_configs"])
    points = pd.DataFrame(rows)
    best = points.sort_values(["valid_score", "config_id"], ascending=[False, True]).drop_duplicates(
        ["parameter", "variant", "dataset", "backbone", "value"])  # a grid under a sensitivity value: best on valid
    best = ordered(best.sort_values("value", kind="stable"), ctx.order)  # datasets, backbones; values ascending
    tables = [_sensitivity_table(ctx, panel, part) for panel in panels
              if len(part := best[(best.parameter == panel["parameter"])
                                  & (best.variant.map(method_of) == panel["variant"])])]
    names: dict[str, int] = {}
    for table in tables:  # two blocks varying the same parameter of the same method: distinct files
        names[table.name] = names.get(table.name, 0) + 1
        table.name += f"_{names[table.name]}" if names[table.name] > 1 else ""
    rank = {p["parameter"]: i for i, p in reversed(list(enumerate(panels)))}  # the study's order of parameters
    panel_keys = best[["parameter", "dataset", "backbone"]].drop_duplicates()
    panel_keys = panel_keys.sort_values("parameter", key=lambda c: c.map(rank), kind="stable").head(MAX_PANELS)
    ctx.figure(figures.sensitivity_figure, best.merge(panel_keys), ctx.out / "fig6_sensitivity.png")
    return Section(key, title, True, [], tables, [("fig6_sensitivity.png", "Test NDCG@20 against τ, α (PRL) and "
                                                   "λ (ERL), one at a time")], views=["report_configs"])


def _sensitivity_table(ctx: Context, panel: dict, points: pd.DataFrame) -> Table:
    """One row per dataset x backbone, one column per declared value (test NDCG@20), the best on validation."""
    symbol = figures.SYMBOLS.get(panel["parameter"], panel["parameter"])
    pinned = ", ".join(f"{figures.SYMBOLS.get(k, k)}={v:g}" for k, v in panel["pinned"].items()
                       if k in ("reasoning_steps", "kl_lambda", "tau", "alpha", "gamma"))
    rows = []
    for (dataset, backbone, name), part in points.groupby([*GROUP, "variant"], sort=False):
        by_value = {v: r for v, r in zip(part.value, part.to_dict("records"), strict=True)}
        row = {"Dataset": dataset, "Backbone": backbone, "Method": variant_label(name)}
        for value in panel["values"]:
            r = by_value.get(value)
            row[f"{symbol}={value:g}"] = fmt_mean_ci(r["mean"], r["ci95"]) if r else "not completed"
        top = max(by_value.values(), key=lambda r: r["valid_score"])
        row[f"best on valid {SHORT.get(ctx.selection_metric, ctx.selection_metric)}"] = f"{symbol}={top['value']:g}"
        row["Seeds"] = int(part.n.max())
        rows.append(row)
    name = f"table_sensitivity_{panel['variant'].split()[0]}_{panel['parameter']}"
    return Table(name, f"{variant_label(panel['variant'])}: test NDCG@20 against {symbol} ({pinned})",
                 points.drop(columns=["config_id"]), pd.DataFrame(rows),
                 ["Cells: test mean ± 95 % t-interval over seeds; every other setting pinned as in the study file; "
                  "'not completed': no completed trial at that value yet (see Trials not completed)."])


__all__ = ["overall", "ablation", "steps", "sensitivity", "METRICS"]
