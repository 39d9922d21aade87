"""Pure functions from view rows to report frames: the comparison tables (Tables 2-3, ablation)."""

from __future__ import annotations

import pandas as pd

from rearec.config import METRICS

from . import stats
from .status import describe_cell
from .tables import SHORT, Table, config_label, fmt_mean_ci, fmt_pct, missing, variant_label, variant_rank

GROUP = ["dataset", "backbone"]
TEST_KEYS = ["dataset", "backbone", "variant", "reference", "metric"]


def ordered(frame: pd.DataFrame, order: dict[str, list]) -> pd.DataFrame:
    """Sort by the study's own order of datasets / backbones, then by the paper's order of variants."""
    keys = {}
    for col, values in order.items():
        if col in frame.columns:
            pos = {v: i for i, v in enumerate(values)}
            keys[f"_{col}"] = frame[col].map(pos).fillna(len(pos)).to_numpy()
            keys[col] = frame[col].to_numpy()
    if "variant" in frame.columns:
        keys["_variant"] = frame["variant"].map({v: variant_rank(v) for v in frame["variant"].unique()}).to_numpy()
        keys["variant"] = frame["variant"].to_numpy()
    if not keys or frame.empty:
        return frame
    index = pd.DataFrame(keys).sort_values(list(keys), kind="stable").index
    return frame.iloc[index]


def cells_by_variant(cells: pd.DataFrame) -> pd.DataFrame:
    """Cell counts summed over K; the first failure reason kept."""
    if cells.empty:
        return cells
    sums = cells.groupby([*GROUP, "variant"], dropna=False)[["expected", "completed", "failed", "running", "pending"]].sum()
    errors = cells.dropna(subset=["error"]).groupby([*GROUP, "variant"])["error"].first()
    return sums.join(errors).reset_index()


def tests_with_p(tests: pd.DataFrame, n_col: str) -> pd.DataFrame:
    """Add t, p and the Holm-adjusted p (the family: every row of ``tests``)."""
    tests = tests.copy()
    tests["t"], tests["p"] = stats.paired_t_many(tests[n_col], tests["mean_diff"], tests["sd_diff"])
    tests["p_holm"] = stats.holm(tests["p"].to_numpy())
    return tests


def _marks(seed_p, sample_p) -> str:
    return ("*" if stats.significant(seed_p) else "") + ("†" if stats.significant(sample_p) else "")


def comparison_table(name: str, title: str, results: pd.DataFrame, improvements: pd.DataFrame,
                     seed_tests: pd.DataFrame, sample_tests: pd.DataFrame, cells: pd.DataFrame,
                     blocks: list[tuple[str, list[str]]], order: dict[str, list]) -> Table | None:
    """Rows `reference / variant / (Improv.)` per dataset x backbone, like the paper's Tables 2-3.

    ``results``: report_best_results rows; ``improvements``: report_improvements rows; ``*_tests``:
    tests_with_p frames (their p_holm already adjusted over this table's family); ``blocks``: (reference,
    [variants]) pairs; ``cells``: cells_by_variant rows (trial counts, failure reasons)."""
    wanted = {v for ref, vs in blocks for v in [ref, *vs]}
    groups = pd.concat([results[GROUP], cells[cells.variant.isin(wanted)][GROUP]]).drop_duplicates()
    if groups.empty:
        return None
    res = {(r.dataset, r.backbone, r.variant, r.metric): r for r in results.itertuples(index=False)}
    imp = {(r.dataset, r.backbone, r.variant, r.reference, r.metric): r for r in improvements.itertuples(index=False)}
    seed_p = {tuple(r[k] for k in TEST_KEYS): r for r in seed_tests.to_dict("records")}
    sample_p = {tuple(r[k] for k in TEST_KEYS): r for r in sample_tests.to_dict("records")}
    cell = {(r.dataset, r.backbone, r.variant): r._asdict() for r in cells.itertuples(index=False)}
    data_rows, display_rows, notes = [], [], []
    for dataset, backbone in ordered(groups, order)[GROUP].itertuples(index=False):
        for reference, variants in blocks:
            present = [v for v in [reference, *variants] if (dataset, backbone, v) in cell
                       or (dataset, backbone, v, METRICS[0]) in res]
            if not any(v != reference for v in present):
                continue
            for v in [reference, *variants]:
                if v not in present:
                    continue
                ref = None if v == reference else reference
                first = res.get((dataset, backbone, v, METRICS[0]))
                status = describe_cell(cell[(dataset, backbone, v)]) if (dataset, backbone, v) in cell else "–"
                data = {"dataset": dataset, "backbone": backbone, "variant": v, "reference": ref,
                        "config": config_label(first._asdict()) if first is not None else None,
                        "reasoning_steps": getattr(first, "reasoning_steps", None),
                        "kl_lambda": getattr(first, "kl_lambda", None), "tau": getattr(first, "tau", None),
                        "alpha": getattr(first, "alpha", None), "gamma": getattr(first, "gamma", None),
                        "valid_score": getattr(first, "valid_score", None),
                        "n_configs": getattr(first, "n_candidates", None), "trials": status}
                shown = {"Dataset": dataset, "Backbone": backbone, "Method": variant_label(v),
                         "Config": data["config"] or "–"}
                marks_row = {}
                for metric in METRICS:
                    r = res.get((dataset, backbone, v, metric))
                    data[f"{metric}_mean"] = r.mean if r is not None else None
                    data[f"{metric}_ci95"] = r.ci95 if r is not None else None
                    data[f"{metric}_n"] = r.n if r is not None else 0
                    shown[SHORT[metric]] = fmt_mean_ci(r.mean, r.ci95) if r is not None else _absent(cell, dataset,
                                                                                                      backbone, v)
                    if ref is None:
                        continue
                    i = imp.get((dataset, backbone, v, ref, metric))
                    key = (dataset, backbone, v, ref, metric)
                    sp, pp = seed_p.get(key), sample_p.get(key)
                    data[f"{metric}_improvement_pct"] = i.improvement_pct if i is not None else None
                    for label, test, n_col in (("seeds", sp, "n_pairs"), ("samples", pp, "n_samples")):
                        data[f"{metric}_p_{label}"] = test["p"] if test is not None else None
                        data[f"{metric}_p_{label}_holm"] = test["p_holm"] if test is not None else None
                        data[f"{metric}_n_{label}"] = test[n_col] if test is not None else 0
                    marks_row[SHORT[metric]] = fmt_pct(i.improvement_pct if i is not None else None,
                                                       _marks(sp["p_holm"] if sp is not None else None,
                                                              pp["p_holm"] if pp is not None else None))
                avg = next((i.avg_improvement_pct for m in METRICS
                            if (i := imp.get((dataset, backbone, v, ref, m))) is not None), None)
                data["avg_improvement_pct"] = avg
                shown["Avg."] = "-" if ref is None else fmt_pct(avg)
                shown["Trials"] = status
                data_rows.append(data)
                display_rows.append(shown)
                if ref is not None and first is not None:
                    display_rows.append({"Dataset": "", "Backbone": "", "Method": "(Improv.)", "Config": "",
                                         **marks_row, "Avg.": "", "Trials": ""})
                c = cell.get((dataset, backbone, v))
                if c is not None and c["failed"] and not missing(c.get("error")):
                    notes.append(f"{dataset}/{backbone}/{variant_label(v)}: {int(c['failed'])} failed; first error: "
                                 f"{_oneline(c['error'])}")
    if not data_rows:
        return None
    return Table(name, title, pd.DataFrame(data_rows), pd.DataFrame(display_rows), notes)


def _oneline(text: str, limit: int = 300) -> str:
    from .status import first_line

    return first_line(text, limit)


def _absent(cell: dict, dataset: str, backbone: str, v: str) -> str:
    c = cell.get((dataset, backbone, v))
    if c is None:
        return "missing"
    if c["running"]:
        return "running"
    if c["failed"]:
        return "failed"
    return "pending" if c["pending"] else "missing"
