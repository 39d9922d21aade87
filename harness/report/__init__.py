"""Reports: SQL views over the results store, paper tables (Markdown / CSV / LaTeX) and PNG figures.

`build_report(db, study)` writes `reports/<study>/`; `harness report STUDY` is its command line.
The names below load on first use, so a process that needs one module of this package (the figure
process, figure_process.py) does not import all of them.
"""

from __future__ import annotations

__all__ = ["build_report", "create_views"]


def __getattr__(name: str):
    if name == "build_report":
        from .build import build_report

        return build_report
    if name == "create_views":
        from .views import create_views

        return create_views
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
