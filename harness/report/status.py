"""What a study planned against what the database holds: per-cell trial counts, failures, pending work,
and the lines of `harness status`.

A cell is a (dataset, backbone, variant, K). Expected counts come from the study's stored definition,
enumerated the way `harness.expand` does (grid product x one-at-a-time sensitivity values x seeds,
duplicates once) but without building every trial's configs, so it stays fast for large studies.
"""

from __future__ import annotations

import itertools
from typing import Any

import pandas as pd

from rearec.config import MethodConfig

from ..cost import spent_text
from ..datasets import parse_datasets
from ..errors import HarnessError
from ..expand import merged_params
from ..failures import headline, where_text
from ..store import Store, variant
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


def cell_variant(name: str, backbone: str, point: dict[str, Any], _cache: dict = {}) -> str:  # noqa: B006
    """The report's variant of a planned trial: the paper's name plus its non-default settings
    (harness/report/variants.py), as report_trials names the stored trial."""
    from .variants import READ, full_variant, labels

    key = (name, backbone, *[point.get(k) for k in READ])
    try:
        hash(key)
    except TypeError:  # an unhashable value (a list): its text identifies it
        key = (name, backbone, *[repr(point.get(k)) for k in READ])
    if key not in _cache:
        settings = labels({**point, "method": name, "backbone": backbone}, stored=False)
        _cache[key] = full_variant(variant(_method_dict(name, point)), *settings)
    return _cache[key]


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
            key = (dataset, backbone, cell_variant(entry.name, backbone, pinned), k)
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
                    key = (dataset, backbone, cell_variant(entry.name, backbone, trial_point), int(k))
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
    """The one line of an error: a traceback's last (the exception), or the harness's explanation of a
    lost node / worker (Ray's raw text follows it in the stored error), shortened."""
    return headline(text, limit) or "no error recorded"


def study_lines(store: Store, study: str, planned: int, algorithm: str, updated: Any, live: bool,
                verbose: bool = False) -> list[str]:
    """`harness status` for one study: counts against its current definition and the compute it spent
    (harness/cost.py), earlier members outside it, the nodes its trials ran on, and its failures (with where
    they ran)."""
    current = "coalesce(s.in_definition, TRUE)" if "in_definition" in store.columns("study_trials") else "TRUE"
    placed = {"host", "node_id"} <= store.columns("trials")
    counts = store.query(f"SELECT {current} AS current, coalesce(t.status, 'pending') AS status, count(*) AS n "
                         "FROM study_trials s LEFT JOIN trials t USING (trial_key) WHERE s.study = ? GROUP BY ALL",
                         [study])
    now = {status: int(n) for cur, status, n in counts.itertuples(index=False) if cur}
    outside = int(counts.loc[~counts["current"].astype(bool), "n"].sum())
    done, failed, running = now.pop("completed", 0), now.pop("failed", 0), now.pop("running", 0)
    now.pop("pending", None)
    abandoned = now.pop("abandoned", 0)  # interrupted Optuna samples outside the budget: they take no slot
    # a failed Optuna sample takes no slot either: a rerun draws a new one in its place (harness/search.py)
    pending = max(0, planned - done - (failed if algorithm == "grid" else 0) - running - sum(now.values()))
    state = "running" if live else "interrupted (re-run the study to finish them)"
    text = (f"{study} ({algorithm}, updated {updated:%Y-%m-%d %H:%M} UTC): {min(done, planned)}/{planned} completed"
            + (f" (+{done - planned} beyond the search budget)" if done > planned else "")
            + f", {failed} failed, {pending} pending" + (f", {running} {state}" if running else "")
            + "".join(f", {n} {status}" for status, n in sorted(now.items()))
            + (f", {abandoned} abandoned (interrupted; their search will not re-run them)" if abandoned else "")
            + "; " + spent_text(store, study, current))  # harness/cost.py
    lines = [text]
    if outside:
        lines.append(f"  {outside} earlier trial{'s' if outside != 1 else ''} of this study "
                     f"{'lie' if outside != 1 else 'lies'} outside its current definition (changed since they ran): "
                     "kept, not counted above")
    where = ("t.host, t.node_id" if placed else "NULL AS host, NULL AS node_id")
    if placed:
        nodes = store.query(f"SELECT t.host, t.node_id, count(*) AS n FROM study_trials s JOIN trials t USING "
                            f"(trial_key) WHERE s.study = ? AND {current} AND t.node_id IS NOT NULL GROUP BY ALL "
                            "ORDER BY n DESC, t.node_id", [study])
        if len(nodes):
            lines.append("  ran on: " + ", ".join(f"{where_text(h, nid)} ({n} trial{'s' if n != 1 else ''})"
                                                  for h, nid, n in nodes.itertuples(index=False)))
    failures = store.query(f"SELECT t.trial_key, t.dataset, t.method, t.error, {where} FROM trials t JOIN "
                           f"study_trials s USING (trial_key) WHERE s.study = ? AND {current} AND t.status = 'failed' "
                           "ORDER BY t.finished_at", [study])
    for key, dataset, method, error, host, node_id in failures.itertuples(index=False):
        text = error if verbose and isinstance(error, str) else headline(error) or "no error recorded"
        if isinstance(node_id, str) and node_id[:12] not in text:  # a lost node's message names it already
            text += f" [on {where_text(host, node_id)}]"
        lines.append(f"  failed {key[:12]} {dataset}/{method}: {text}")
    return lines


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
