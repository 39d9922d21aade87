"""What every report section receives (the connection, the study, its cells) and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .tables import Table
from .views import materialise

MAX_PANELS = 6  # figures stay readable and fast; the CSV next to each figure has every row


@dataclass
class Context:
    con: Any  # duckdb connection with the report views
    study: str
    parsed: Any  # harness.study.Study of the stored definition, or None when it no longer parses
    cells: pd.DataFrame  # status.cell_status rows (per dataset, backbone, variant, K)
    order: dict[str, list]  # the study's own order of datasets and backbones
    out: Path
    views: list[str]
    selection_metric: str = "ndcg@20"
    figure_jobs: Any = None  # executor-like (submit -> Future) rendering figures while SQL runs, as build_report's
    # figure_process.FigureProcess; None = inline
    futures: list = field(default_factory=list)
    pending: dict = field(default_factory=dict)  # snapshot tables still being built (views.snapshot_study)
    _frames: dict[str, pd.DataFrame] = field(default_factory=dict)

    def q(self, sql: str, *params: Any) -> pd.DataFrame:
        """Run ``sql`` with the study name as its first parameter (string columns as Python objects: the
        sections look values up row by row, which Arrow-backed strings make slow)."""
        frame = self.con.execute(sql, [self.study, *params]).df()
        for col in frame.columns[frame.dtypes == "str"]:
            frame[col] = frame[col].astype(object)
        return frame

    def ready(self, *tables: str) -> None:
        """Wait for these pending snapshot tables and materialise them (a section calls it before reading
        views built on them; a table that is not pending is already there)."""
        for name in tables:
            if name in self.pending:
                materialise(self.con, name, self.pending.pop(name).result())

    def frame(self, view: str) -> pd.DataFrame:
        """Every row of ``view`` for this study, queried once per report (sections share them)."""
        if view not in self._frames:
            self._frames[view] = _sorted(self.q(f"SELECT * FROM {view} WHERE study = ?"))
        return self._frames[view]

    @property
    def variant_cells(self) -> pd.DataFrame:
        """cells summed over K (per dataset, backbone, variant), computed once."""
        from .frames import cells_by_variant

        if "__variant_cells__" not in self._frames:
            self._frames["__variant_cells__"] = cells_by_variant(self.cells)
        return self._frames["__variant_cells__"]

    def figure(self, render, *args, **kwargs) -> None:
        """Render a figure (a pure function of frames writing one PNG), in the background when possible."""
        if self.figure_jobs is None:
            render(*args, **kwargs)
        else:
            self.futures.append(self.figure_jobs.submit(render, *args, **kwargs))


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in one order whatever order DuckDB's threads return them in (views have no ORDER BY), so the
    same database gives the same report: sorted by every column of scalars, in column order."""
    cols = [c for c in frame.columns if frame[c].dtype != object
            or isinstance(frame[c].dropna().iloc[0] if frame[c].notna().any() else "", str)]
    if not cols or frame.empty:
        return frame
    return frame.sort_values(cols, kind="stable", na_position="last").reset_index(drop=True)


@dataclass
class Section:
    key: str
    title: str
    present: bool
    text: list[str] = field(default_factory=list)  # Markdown paragraphs
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (file name, caption)
    views: list[str] = field(default_factory=list)  # the views its numbers come from


def absent(key: str, title: str, why: str, views: list[str] | None = None) -> Section:
    return Section(key, title, False, [f"_No data for this section in this study: {why}._", ""], views=views or [])
