"""`build_report`: the views, every section a study has data for, and `reports/<study>/README.md`."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import yaml

from rearec.errors import did_you_mean

from ..datasets import parse_datasets
from ..errors import HarnessError
from ..keys import PROTOCOL
from ..store import RunLock, Store
from . import adaptive, analyses, sections, verdicts
from .context import Context, Section
from .figure_process import FigureProcess
from .status import cell_status, describe_cell, expected_cells, first_line, parse_definition
from .tables import table_markdown, to_markdown, variant_label, write_csv, write_table
from .views import create_views, describe, snapshot_study

SECTIONS = (verdicts.claims, sections.overall, sections.steps, sections.sensitivity, sections.ablation,
            analyses.subgroups, analyses.oracle, analyses.similarity, analyses.latency, adaptive.adaptive)
GENERATED = ("*.png", "*.csv", "*.tex", "README.md")
MAX_LISTED = 40  # trials not completed, listed in the README (the CSV has all)


def _study_row(con, db: Path, study: str) -> dict:
    names = [r[0] for r in con.execute("SELECT study FROM studies ORDER BY study").fetchall()]
    if not names:
        raise HarnessError(f"{db}: no studies in this database (run one first: harness run studies/<file>.yaml)")
    if study not in names:
        raise HarnessError(f"{db}: study {study!r}: not in this database{did_you_mean(study, names)}; "
                           f"studies: {', '.join(names)}")
    row = con.execute("SELECT study, file, planned, algorithm, definition, updated_at FROM studies WHERE study = ?",
                      [study]).fetchone()
    return dict(zip(("study", "file", "planned", "algorithm", "definition", "updated_at"), row, strict=True))


def _clean(folder: Path) -> None:
    """Remove what an earlier report wrote (only generated kinds of files), so nothing stale remains."""
    folder.mkdir(parents=True, exist_ok=True)
    for pattern in GENERATED:
        for path in folder.glob(pattern):
            path.unlink()


def _protocol(ctx: Context) -> list[str]:
    rows = ctx.q("""SELECT DISTINCT r.dataset, r.dataset_hash, t.params->>'$.dataset_spec.split' AS split,
                           t.params->>'$.mask_history' AS mask_history, t.params->>'$.protocol.version' AS version
                    FROM report_trials r JOIN trials t USING (trial_key) WHERE r.study = ? ORDER BY 1""")
    lines = [f"- Full ranking over all items (no sampled negatives); ties count against the target. Metrics: "
             f"{', '.join(PROTOCOL['metrics'])}, averaged over evaluation samples (interactions).",
             f"- Selection: each trial keeps its best epoch on validation {ctx.selection_metric} (early stopping); "
             f"each table row uses the configuration with the best mean validation {ctx.selection_metric} over its "
             "seeds. Test metrics are computed once, at the chosen epoch, and never used to choose anything.",
             f"- Groups: {PROTOCOL['user_groups']}; {PROTOCOL['item_groups']}.",
             "- Step conventions: Step-k uses the hidden state after k reasoning steps (Step-0 = the sequence "
             "encoder); Output = the method's own representation (mean of steps 0..K for ERL, step K otherwise)."]
    for dataset, part in rows.groupby("dataset", sort=False):
        splits = sorted(set(part.split.dropna()))
        lines.append(f"- `{dataset}` split: {'; '.join(f'`{s}`' for s in splits) or 'unknown'}"
                     + (f" ({part.dataset_hash.nunique()} different processed versions of this dataset: "
                        "numbers from different versions are not paired)" if part.dataset_hash.nunique() > 1 else ""))
    if rows.mask_history.nunique() > 1:
        lines.append("- **Mixed protocols**: some trials exclude history items from the ranking (mask_history), "
                     "others do not.")
    if rows.version.nunique() > 1:
        lines.append(f"- **Mixed protocol versions**: {', '.join(sorted(set(rows.version.dropna())))}.")
    return lines


STATISTICS = """- Cells with two or more seeds show mean ± the 95 % confidence half-width `t(0.975, n-1) · s / sqrt(n)` over
  the seeds of the chosen configuration (macro `report_ci95`); one seed shows the single value.
- Each row's mean is over its own completed seeds (a failed seed leaves it out; the Trials column says so);
  the paired tests use only the seeds both sides completed.
- Improvements over the reference (Base, or the ablated method) carry two paired tests, both two-sided:
  **over seeds** (`*`): paired t-test on the test metric, pairs matched by seed (needs ≥ 2 common seeds;
  view `report_seed_tests`); **over evaluation samples** (`†`): paired t-test on per-sample test metric values
  (from `sample_ranks`; each sample's value averaged over the seeds both sides have; view
  `report_sample_tests`). Samples of one user are not independent, so `†` is indicative.
- Multiple comparisons: Holm-Bonferroni within each table and test kind (every variant x metric x dataset x
  backbone comparison of that table is one family); a mark means adjusted p < 0.05. The CSV files hold raw
  and adjusted p-values (`*_p_seeds`, `*_p_seeds_holm`, `*_p_samples`, `*_p_samples_holm`)."""


def _status_lines(info: dict, counts: dict, live: bool) -> list[str]:
    done, failed, running = (counts.get(s, 0) for s in ("completed", "failed", "running"))
    planned = int(info["planned"] or 0)
    pending = max(0, planned - done - failed - running)
    line = (f"**Trials:** {planned} planned · {done} completed · {failed} failed · {running} running · "
            f"{pending} pending.")
    if counts.get("pruned"):
        line += (f" {counts['pruned']} of the completed trials were stopped early by ASHA and stay out of the "
                 "tables.")
    if running and not live:
        line += (" No `harness run` holds this database now, so the running ones were interrupted: run the study "
                 "again to finish them.")
    if done < planned:
        line += " **This report is partial**: cells without completed trials say why (see Trials not completed)."
    return [line]


def _not_completed(ctx: Context, folder: Path) -> list[str]:
    rows = ctx.q("""SELECT status, dataset, backbone, variant, reasoning_steps, kl_lambda, tau, alpha, gamma, seed,
                           trial_key, error FROM report_trials WHERE study = ? AND status IN ('failed', 'running')
                    ORDER BY status, dataset, backbone, variant, reasoning_steps, seed""")
    incomplete = ctx.cells[(ctx.cells.completed < ctx.cells.expected)]
    if rows.empty and incomplete.empty:
        return ["Every planned trial is complete."]
    out = []
    if len(rows):
        write_csv(rows, folder / "trials_not_completed.csv")
        shown = pd.DataFrame({"Status": rows.status, "Dataset": rows.dataset, "Backbone": rows.backbone,
                              "Method": rows.variant.map(variant_label), "K": rows.reasoning_steps,
                              "Seed": rows.seed, "Trial": rows.trial_key.str[:12],
                              "Reason": [first_line(e) if s == "failed" else "" for s, e in
                                         zip(rows.status, rows.error, strict=True)]})
        out += [to_markdown(shown.head(MAX_LISTED)), "",
                f"{len(rows)} trials failed or running"
                + (f" ({MAX_LISTED} listed)" if len(rows) > MAX_LISTED else "")
                + "; all with full errors in [`trials_not_completed.csv`](trials_not_completed.csv) "
                  "(`harness status -v` prints them too)."]
    if len(incomplete):
        cells = pd.DataFrame({"Dataset": incomplete.dataset, "Backbone": incomplete.backbone,
                              "Method": incomplete.variant.map(variant_label), "K": incomplete.reasoning_steps,
                              "Trials": [describe_cell(r) for _, r in incomplete.iterrows()]})
        out += ["", "Cells (dataset, backbone, method, K) with trials not completed:", "",
                to_markdown(cells.head(MAX_LISTED))]
    return out


def _write_section(section: Section, folder: Path) -> list[str]:
    lines = [f"## {section.title}", ""] + section.text
    for table in section.tables:
        write_table(table, folder)
        lines += [table_markdown(table), ""]
    for name, caption in section.figures:
        lines += [f"![{caption}]({name})", ""]
    if section.views:
        lines.append("Views: " + ", ".join(f"`{v}`" for v in section.views))
    return lines + [""]


def build_report(db_path: str | Path, study: str, out_dir: str | Path = "reports") -> Path:
    """Write ``<out_dir>/<study>/README.md`` with its tables (CSV, LaTeX) and figures (PNG); returns the README."""
    db = Path(db_path)
    if not db.exists():
        raise HarnessError(f"{db}: no such database (run a study first, or pass --db)")
    store = Store(db)  # read-write: the views are (re)created in the database for `harness sql`
    folder = Path(out_dir) / study
    with store.connect() as con, ExitStack() as stack:
        con.execute("SET enable_progress_bar = false")  # the CLI prints one line, not DuckDB's progress bars
        created = create_views(con)
        info = _study_row(con, db, study)
        # the figure process starts now, so its imports overlap the snapshot; figures render in it while the
        # sections run their SQL (figure_process.py says why a process)
        jobs = stack.enter_context(FigureProcess())
        # the adaptive section's per-sample pass (NumPy, most of it without the GIL) runs beside the sections
        pending = snapshot_study(con, study, created, background=stack.enter_context(ThreadPoolExecutor(1)))
        definition = json.loads(info["definition"]) if info["definition"] else {}
        parsed, why = parse_definition(definition, info["file"] or f"{study}.yaml")
        present = con.execute("SELECT status, dataset, backbone, variant, reasoning_steps, error, finished_at "
                              "FROM report_trials WHERE study = ? AND status <> 'pending'", [study]).df()
        cells = cell_status(present, expected_cells(parsed) if parsed is not None else None)
        datasets = [r.name for r in parse_datasets(parsed)] if parsed is not None else []
        order = {"dataset": datasets + sorted(set(cells.dataset.dropna()) - set(datasets)),
                 "backbone": list(parsed.backbones) if parsed is not None else sorted(set(cells.backbone.dropna()))}
        metric = con.execute("SELECT metric FROM report_selection_metric WHERE study = ?", [study]).fetchone()[0]
        _clean(folder)
        ctx = Context(con, study, parsed, cells, order, folder, created, metric, figure_jobs=jobs, pending=pending)
        results = [make(ctx) for make in SECTIONS]
        ctx.ready(*pending)  # a pending table no section read: wait for it (and raise its error) all the same
        counts = dict(con.execute("SELECT status, count(*) FROM report_trials WHERE study = ? GROUP BY 1 UNION ALL "
                                  "SELECT 'pruned', count(*) FROM report_trials WHERE study = ? AND pruned",
                                  [study, study]).fetchall())
        not_completed = _not_completed(ctx, folder)
        protocol = _protocol(ctx)
        for future in ctx.futures:
            future.result()  # re-raise a figure's error here (figures render meanwhile)
    lines = [f"# Report: study `{study}`", ""]
    if definition.get("description"):
        lines += [definition["description"], ""]
    lines += [f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `harness report {study}` from "
              f"`{db}` (study file `{info['file']}`, {info['algorithm']} search, registered "
              f"{info['updated_at']:%Y-%m-%d %H:%M} UTC).", ""]
    lines += _status_lines(info, counts, RunLock(db).held_elsewhere()) + [""]
    lines += ["Sections: " + " · ".join(f"[{s.title.split(' (')[0].split(':')[0]}](#{_anchor(s.title)})"
                                         + ("" if s.present else " (no data)") for s in results), ""]
    for section in results:
        lines += _write_section(section, folder)
    lines += ["## Trials not completed", ""] + not_completed + [""]
    lines += ["## Settings", "", "The study definition as stored in the database (`studies.definition`):", "",
              "```yaml", yaml.safe_dump(definition, sort_keys=False, allow_unicode=True).rstrip(), "```", ""]
    if why:
        lines += [f"_The stored definition no longer parses ({why}); expected cells and sensitivity panels are "
                  "not shown._", ""]
    lines += ["## Evaluation protocol", ""] + protocol + ["", "## Statistics", "", STATISTICS, ""]
    lines += ["## Reproduce with SQL", "", "Every number above comes from these views in the database "
              f"(`harness sql --db {db} \"SELECT * FROM report_best_results WHERE study = '{study}'\"`):", ""]
    lines += [f"- `{name}`: {text}" for name, text in describe(created)] + [""]
    readme = folder / "README.md"
    readme.write_text("\n".join(lines), encoding="utf-8")
    return readme


def _anchor(title: str) -> str:
    keep = "".join(ch for ch in title.lower() if ch.isalnum() or ch in " -")
    return keep.replace(" ", "-")
