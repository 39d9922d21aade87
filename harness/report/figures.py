"""PNG figures (matplotlib, Agg canvas, no pyplot state) from report frames; one function per figure."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .tables import method_of, missing, variant_label, variant_rank

COLORS = {"base": "#7f7f7f", "naive": "#9467bd", "rpe": "#1f77b4", "erl": "#ff7f0e", "prl": "#2ca02c",
          "erl w/o KL": "#ffbb78", "prl w/o RCL": "#98df8a"}
SYMBOLS = {"tau": "τ", "alpha": "α", "kl_lambda": "λ", "gamma": "γ", "reasoning_steps": "K"}
DPI = 100


def color(variant: str) -> str:
    """The paper's colour of a variant's method (settings that set a row apart show as line style / hatch)."""
    return COLORS.get(method_of(variant), "k")


def line_style(variant: str) -> str:
    return "-" if method_of(variant) == variant else ":"


def _panels(n: int, ncols: int, size: tuple[float, float] = (3.6, 2.8)) -> tuple[Figure, list]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows + 0.4), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n)]
    fig.subplots_adjust(left=0.09 if ncols > 1 else 0.16, right=0.98, bottom=0.16 if nrows == 1 else 0.08,
                        top=0.86 if nrows == 1 else 0.92, wspace=0.32, hspace=0.5)
    return fig, axes


def _legend_right(fig: Figure, ax) -> None:
    """One legend for the whole figure, in a margin on the right (never over the data)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.subplots_adjust(right=0.86)
        fig.legend(handles, labels, loc="upper right", fontsize=7, frameon=False, bbox_to_anchor=(0.995, 0.9))


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, pil_kwargs={"compress_level": 1})  # fast zlib level: the files stay small
    return path


def _err(values) -> np.ndarray | None:
    e = np.array([0.0 if missing(v) else float(v) for v in values])
    return e if e.any() else None


def steps_figure(steps: pd.DataFrame, path: Path, metric_label: str = "NDCG@20") -> Path:
    """Fig. 5: one panel per dataset x backbone, metric against K per variant; Base as a dashed line.

    ``steps``: dataset, backbone, variant, reasoning_steps, mean, ci95."""
    combos = steps[["dataset", "backbone"]].drop_duplicates().itertuples(index=False)
    combos = list(combos)
    fig, axes = _panels(len(combos), 3)
    for ax, (dataset, backbone) in zip(axes, combos, strict=True):
        part = steps[(steps.dataset == dataset) & (steps.backbone == backbone)]
        ks = sorted(int(k) for k in part.reasoning_steps.unique() if k > 0)
        variants = sorted(part.variant.unique(), key=variant_rank)
        for i, v in enumerate(variants):
            line = part[part.variant == v].sort_values("reasoning_steps")
            if method_of(v) == "base" or (line.reasoning_steps == 0).all():
                ax.axhline(line["mean"].iloc[0], color=color(v), ls="--" if method_of(v) == v else ":", lw=1.2,
                           label=variant_label(v))
                continue
            dodge = 0.06 * (i - (len(variants) - 1) / 2)  # error bars side by side, not on top of each other
            ax.errorbar(line.reasoning_steps + dodge, line["mean"], yerr=_err(line.ci95), marker="o", ms=4,
                        capsize=2, color=color(v), ls=line_style(v), label=variant_label(v))
        ax.set_xticks(ks or [0])
        ax.set_title(f"{dataset} / {backbone}", fontsize=9)
        ax.set_xlabel("reasoning steps K", fontsize=8)
        ax.set_ylabel(metric_label, fontsize=8)
        ax.tick_params(labelsize=7)
    _legend_right(fig, axes[0])
    fig.suptitle(f"Test {metric_label} against reasoning steps (configuration per K chosen on validation)", fontsize=10)
    return _save(fig, path)


def sensitivity_figure(points: pd.DataFrame, path: Path, metric_label: str = "NDCG@20") -> Path:
    """Fig. 6: one panel per parameter x dataset x backbone; test metric (± CI) against the value.

    ``points``: parameter, dataset, backbone, variant, value, mean, ci95."""
    panels = list(points[["parameter", "dataset", "backbone"]].drop_duplicates().itertuples(index=False))
    fig, axes = _panels(len(panels), 3)
    for ax, (param, dataset, backbone) in zip(axes, panels, strict=True):
        part = points[(points.parameter == param) & (points.dataset == dataset) & (points.backbone == backbone)]
        for v in sorted(part.variant.unique(), key=variant_rank):
            line = part[part.variant == v].sort_values("value")
            x = np.arange(len(line))  # categorical axis: the paper's grids are not evenly spaced
            ax.errorbar(x, line["mean"], yerr=_err(line.ci95), marker="o", ms=4, capsize=3,
                        color=color(v), ls=line_style(v), label=variant_label(v))
            ax.set_xticks(x, [f"{val:g}" for val in line.value], fontsize=7)
        ax.set_title(f"{variant_label(part.variant.iloc[0])} {SYMBOLS.get(param, param)} — {dataset} / {backbone}",
                     fontsize=9)
        ax.set_xlabel(SYMBOLS.get(param, param), fontsize=8)
        ax.set_ylabel(metric_label, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"Test {metric_label} against one hyper-parameter, the others pinned", fontsize=10)
    return _save(fig, path)


def bars_figure(frame: pd.DataFrame, series: list[tuple[str, str, str | None, str]], path: Path, title: str,
                ylabel: str = "NDCG@20") -> Path:
    """Grouped bars, one group per row of ``frame`` (its ``label``); ``series``: (column, legend, CI column
    or None, colour). Used by the ablation (Fig. 7) and oracle (Fig. 2) figures."""
    n = len(frame)
    fig, (ax,) = _panels(1, 1, size=(max(5.5, 0.5 * n * len(series) + 2.5), 3.4))
    width = 0.8 / len(series)
    x = np.arange(n)
    for i, (col, legend, ci, colour) in enumerate(series):
        values = frame[col].astype(float).to_numpy()
        ax.bar(x + (i - (len(series) - 1) / 2) * width, np.nan_to_num(values), width,
               yerr=_err(frame[ci]) if ci else None, capsize=2, color=colour, label=legend,
               hatch=None if method_of(legend) == legend or " [" not in legend else "//")
    ax.set_xticks(x, frame["label"], fontsize=7)
    fig.subplots_adjust(bottom=0.24)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=10)
    _legend_right(fig, ax)
    return _save(fig, path)


def subgroups_figure(frame: pd.DataFrame, path: Path, metric_label: str = "NDCG@20") -> Path:
    """Fig. 4: per dataset x backbone x variant, two panels (user groups, item groups), one bar per step.

    ``frame``: dataset, backbone, variant, step (<NA> = output), user_group, mean."""
    combos = list(frame[["dataset", "backbone", "variant"]].drop_duplicates().itertuples(index=False))
    fig, axes = _panels(2 * len(combos), 2, size=(4.2, 2.8))
    cmap = ["#c6dbef", "#6baed6", "#2171b5", "#08306b", "#041a3a", "#000000"]
    for i, (dataset, backbone, v) in enumerate(combos):
        part = frame[(frame.dataset == dataset) & (frame.backbone == backbone) & (frame.variant == v)]
        steps = sorted(int(s) for s in part.step.dropna().unique())
        for ax, prefix in zip(axes[2 * i: 2 * i + 2], ("user:UG", "item:IG"), strict=True):
            groups = [f"{prefix}{g}" for g in range(4)]
            x = np.arange(len(groups))
            width = 0.8 / max(1, len(steps))
            for j, s in enumerate(steps):
                vals = part[part.step == s].set_index("user_group")["mean"].reindex(groups).to_numpy(dtype=float)
                ax.bar(x + (j - (len(steps) - 1) / 2) * width, np.nan_to_num(vals), width,
                       color=cmap[min(j, len(cmap) - 1)], label=f"Step-{s}")
            ax.set_xticks(x, [g.split(":")[1] for g in groups], fontsize=7)
            ax.set_title(f"{dataset} / {backbone} / {variant_label(v)}: {'users' if prefix[0] == 'u' else 'items'}",
                         fontsize=8)
            ax.set_ylabel(metric_label, fontsize=8)
            ax.tick_params(labelsize=7)
    _legend_right(fig, axes[0])
    fig.suptitle(f"Test {metric_label} per user group (history length) and item group (popularity), per step",
                 fontsize=10)
    return _save(fig, path)


def similarity_figure(frame: pd.DataFrame, path: Path) -> Path:
    """Fig. 9: one heatmap of mean cosine similarity between steps per dataset x backbone x variant.

    ``frame``: dataset, backbone, variant, step_a, step_b, cosine."""
    combos = list(frame[["dataset", "backbone", "variant"]].drop_duplicates().itertuples(index=False))
    fig, axes = _panels(len(combos), 4, size=(2.8, 2.9))
    vmin = min(0.0, float(frame.cosine.min()))
    for ax, (dataset, backbone, v) in zip(axes, combos, strict=True):
        part = frame[(frame.dataset == dataset) & (frame.backbone == backbone) & (frame.variant == v)]
        k = int(max(part.step_a.max(), part.step_b.max())) + 1
        grid = np.full((k, k), np.nan)
        grid[part.step_a.astype(int), part.step_b.astype(int)] = part.cosine.astype(float)
        image = ax.imshow(grid, vmin=vmin, vmax=1.0, cmap="viridis")
        if k <= 4:
            for a in range(k):
                for b in range(k):
                    if not np.isnan(grid[a, b]):
                        ax.text(b, a, f"{grid[a, b]:.2f}", ha="center", va="center", fontsize=6,
                                color="white" if grid[a, b] < 0.6 else "black")
        ax.set_xticks(range(k), [f"S{s}" for s in range(k)], fontsize=7)
        ax.set_yticks(range(k), [f"S{s}" for s in range(k)], fontsize=7)
        ax.set_title(f"{variant_label(v)} — {dataset} / {backbone}", fontsize=8)
    fig.colorbar(image, ax=axes, fraction=0.03, pad=0.02).ax.tick_params(labelsize=6)  # one shared scale
    fig.suptitle("Cosine similarity between reasoning steps' hidden states (test)", fontsize=10)
    return _save(fig, path)


RULE_STYLE = {"confidence": ("#1f77b4", "o"), "convergence": ("#d62728", "s"), "agreement": ("#9467bd", "^")}


def adaptive_figure(curves: pd.DataFrame, chosen: pd.DataFrame, path: Path, metric_label: str = "NDCG@20") -> Path:
    """Accuracy against mean depth, one panel per dataset x backbone x variant: fixed depths (black line),
    each stopping rule over its threshold grid (thin line; the validation-chosen threshold as a large
    marker) and the per-sample oracle (star), all on test.

    ``curves``: dataset, backbone, variant, rule, position, depth, mean (test, every grid point);
    ``chosen``: dataset, backbone, variant, rule, depth, mean (test, the table's rows)."""
    combos = list(curves[["dataset", "backbone", "variant"]].drop_duplicates().itertuples(index=False))
    fig, axes = _panels(len(combos), 3, size=(3.8, 3.0))
    for ax, (dataset, backbone, v) in zip(axes, combos, strict=True):
        part = curves[(curves.dataset == dataset) & (curves.backbone == backbone) & (curves.variant == v)]
        mine = chosen[(chosen.dataset == dataset) & (chosen.backbone == backbone) & (chosen.variant == v)]
        fixed = part[part.rule == "fixed"].sort_values("depth")
        ax.plot(fixed.depth, fixed["mean"], color="k", marker=".", lw=1.2, label="fixed depth")
        for rule, (colour, marker) in RULE_STYLE.items():
            line = part[part.rule == rule].sort_values("position")
            if len(line):
                ax.plot(line.depth, line["mean"], color=colour, lw=0.7, alpha=0.6)
            pick = mine[mine.rule == rule]
            if len(pick):
                ax.plot(pick.depth, pick["mean"], color=colour, marker=marker, ms=7, ls="none", label=rule)
        oracle = mine[mine.rule == "oracle"]
        if len(oracle):
            ax.plot(oracle.depth, oracle["mean"], color="#2ca02c", marker="*", ms=10, ls="none", label="oracle")
        ax.set_title(f"{variant_label(v)} — {dataset} / {backbone}", fontsize=8)
        ax.set_xlabel("mean reasoning depth (steps)", fontsize=8)
        ax.set_ylabel(f"test {metric_label}", fontsize=8)
        ax.tick_params(labelsize=7)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.subplots_adjust(bottom=0.3 if len(axes) <= 3 else 0.14, top=0.8 if len(axes) <= 3 else 0.9)  # legend below
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=7, frameon=False)
    fig.suptitle(f"Adaptive depth: test {metric_label} against mean depth\nthin lines: every threshold · "
                 "markers: the threshold chosen on validation · star: per-sample oracle", fontsize=9)
    return _save(fig, path)
