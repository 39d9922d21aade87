"""What a study planned against what the database holds: per-cell trial counts, failures, pending work.

A cell is a (dataset, backbone, variant, K). Expected counts come from the study's stored definition,
enumerated the way `harness.expand` does (grid product x one-at-a-time sensitivity values x seeds,
duplicates once) but without building every trial's configs, so it stays fast for large studies.
"""

from __future__ import annotations

import itertools
from typing import Any

import pandas as pd

from rearec.config import MethodConfig

from ..datasets import parse_datasets
from ..errors import HarnessError
from ..expand import merged_params
from ..store import variant
from ..study import Choice, Range, Study, parse_study

CELL = ["dataset", "backbone", "variant", "reasoning_steps"]
_DEFAULTS = MethodConfig()


def parse_definition(definition: dict, file: str) -> tuple[Study | None, str | None]:
    """The stored study definition parsed again, or (None, why not)."""
    try:
        return parse_study(definition, file), None
    except HarnessError as exc:
        return None, str(exc)


def _method_dict(name: str, point: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "kl_lambda": point.get("kl_lambda", _DEFAULTS.kl_lambda), "rcl": point.get("rcl", True)}


def expected_cells(study: Study) -> pd.DataFrame:
    """Columns CELL + expected (trial count; NaN for Optuna cells, whose count is the search budget)."""
    names = [ref.name for ref in parse_datasets(study)]
    counts: dict[tuple, float] = {}
    seen: set[tuple] = set()
    for dataset, backbone, entry in itertools.product(names, study.backbones, study.methods):
        params, sensitivity, _ = merged_params(study, entry)
        pinned = {k: v for k, v in params.items() if not isinstance(v, (Choice, Range))}
        if study.search.algorithm != "grid":
            k = 0 if entry.name == "base" else pinned.get("reasoning_steps", _DEFAULTS.reasoning_steps)
            key = (dataset, backbone, variant(_method_dict(entry.name, pinned)), k)
            counts[key] = counts.get(key, 0) + study.search.num_samples * len(study.seeds)
            continue
        axes = [(k, v.values) for k, v in params.items() if isinstance(v, Choice)]
        changes = [{}] if not sensitivity else [{n: v} for n, c in sensitivity.items() for v in c.values]
        for combo in itertools.product(*(values for _, values in axes)):
            point = {**pinned, **{name: value for (name, _), value in zip(axes, combo, strict=True)}}
            for change in changes:
                trial_point = {**point, **change}
                for seed in study.seeds:
                    ident = (dataset, backbone, entry.name, seed, *sorted(trial_point.items()))
                    if ident in seen:
                        continue
                    seen.add(ident)
                    k = 0 if entry.name == "base" else trial_point.get("reasoning_steps", _DEFAULTS.reasoning_steps)
                    key = (dataset, backbone, variant(_method_dict(entry.name, trial_point)), int(k))
                    counts[key] = counts.get(key, 0) + 1
    frame = pd.DataFrame([(*k, n) for k, n in counts.items()], columns=[*CELL, "expected"])
    return frame


def cell_status(present: pd.DataFrame, expected: pd.DataFrame | None) -> pd.DataFrame:
    """Per cell: expected, completed, failed, running, pending and the first failure's reason.

    ``present``: rows of report_trials (status, CELL, error, finished_at) that have a trial row."""
    counts = (present.assign(n=1).pivot_table(index=CELL, columns="status", values="n", aggfunc="sum", fill_value=0)
              if len(present) else pd.DataFrame(columns=CELL).set_index(CELL))
    for status in ("completed", "failed", "running"):
        if status not in counts.columns:
            counts[status] = 0
    counts = counts[["completed", "failed", "running"]].reset_index()
    failed = present[present.status == "failed"].sort_values("finished_at", na_position="last")
    errors = failed.groupby(CELL, dropna=False)["error"].first().rename("error").reset_index()
    cells = counts.merge(errors, on=CELL, how="left")
    if expected is not None and len(expected):
        cells = expected.merge(cells, on=CELL, how="outer")
    else:
        cells["expected"] = float("nan")
    for status in ("completed", "failed", "running"):
        cells[status] = cells[status].fillna(0).astype(int)
    present_n = cells[["completed", "failed", "running"]].sum(axis=1)
    cells["pending"] = (cells["expected"] - present_n).clip(lower=0)
    cells["expected"] = cells["expected"].where(cells["expected"].notna(), present_n)
    cells["pending"] = cells["pending"].fillna(0).astype(int)
    return cells.reset_index(drop=True)


def first_line(text: Any, limit: int = 160) -> str:
    """The last non-empty line of an error (a traceback ends with the exception), shortened."""
    if not isinstance(text, str) or not text.strip():
        return "no error recorded"
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = lines[-1]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def describe_cell(row: Any) -> str:
    """'3/3' when complete, else e.g. '1/3: 1 failed (CUDA out of memory), 1 pending'."""
    expected = int(row["expected"]) if row["expected"] == row["expected"] else 0
    text = f"{int(row['completed'])}/{max(expected, int(row['completed']))}"
    parts = []
    if row["failed"]:
        parts.append(f"{int(row['failed'])} failed ({first_line(row.get('error'), 80)})")
    if row["running"]:
        parts.append(f"{int(row['running'])} running")
    if row["pending"]:
        parts.append(f"{int(row['pending'])} pending")
    return text + (": " + ", ".join(parts) if parts else "")
