"""Reports: SQL views over the results store, paper tables (Markdown / CSV / LaTeX) and PNG figures.

`build_report(db, study)` writes `reports/<study>/`; `harness report STUDY` is its command line.
"""

from .build import build_report
from .views import create_views

__all__ = ["build_report", "create_views"]
