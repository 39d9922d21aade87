"""`build_report` and `harness report`: files, figures, honest gaps, expected cells, CLI errors."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.expand import expand
from harness.report import build_report
from harness.report.status import expected_cells
from harness.report.variants import full_variant, labels
from harness.store import Store, trial_row
from harness.study import load_study

ROOT = Path(__file__).resolve().parent.parent
HARNESS = [sys.executable, "-m", "harness.cli"]


@pytest.fixture(scope="module")
def db(report_db):
    return report_db.path


@pytest.fixture(scope="module")
def demo(db, tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    readme = build_report(db, "demo", out)
    return readme, readme.read_text(encoding="utf-8")


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_report_files_tables_and_figures(demo):
    readme, text = demo
    folder = readme.parent
    assert readme.name == "README.md" and folder.name == "demo"
    for name in ("fig2_oracle", "fig4_subgroups", "fig5_steps", "fig7_ablation", "fig9_similarity"):
        path = folder / f"{name}.png"
        assert path.stat().st_size > 5000
        width, height = png_size(path)
        assert 300 <= width <= 3000 and 200 <= height <= 3000
        assert f"]({name}.png)" in text
    for name in ("table2_overall_id", "table_steps", "table_ablation", "table_subgroups", "table_oracle",
                 "table_similarity", "table4_latency"):
        assert len(pd.read_csv(folder / f"{name}.csv")) > 0
        tex = (folder / f"{name}.tex").read_text()
        assert tex.startswith("\\begin{table}") and "\\toprule" in tex and "\\bottomrule" in tex
    assert not (folder / "table3_overall_text.csv").exists()  # no text backbone in this study
    for part in ("## Settings", "kl_lambda:", "## Evaluation protocol", "Full ranking over all items",
                 "## Statistics", "Holm-Bonferroni", "`report_best_results`", "_No data for this section in this "
                 "study: the study has no sensitivity blocks._"):
        assert part in text


def test_overall_csv_values_and_marks(demo):
    folder = demo[0].parent
    table = pd.read_csv(folder / "table2_overall_id.csv").set_index("variant")
    erl = table.loc["erl"]
    assert erl["config"] == "K=2, λ=0.01" and erl["n_configs"] == 3
    assert erl["ndcg@20_mean"] == pytest.approx((0.12 + 0.13 + 0.15) / 3)
    assert erl["ndcg@20_improvement_pct"] == pytest.approx(100 * ((0.12 + 0.13 + 0.15) / 3 / 0.11 - 1))
    assert erl["avg_improvement_pct"] == pytest.approx(24.2424, abs=1e-3)
    assert erl["ndcg@20_n_seeds"] == 3 and erl["ndcg@20_n_samples"] == 40
    assert erl["ndcg@20_p_seeds_holm"] >= erl["ndcg@20_p_seeds"]  # adjusted over the table's comparisons
    assert table.loc["base", "ndcg@20_ci95"] == pytest.approx(0.0248414, rel=1e-4)


def test_missing_failed_and_running_cells_say_why(demo, report_demo):
    folder = demo[0].parent
    text = demo[1]
    table = pd.read_csv(folder / "table2_overall_id.csv").set_index("variant")
    assert table.loc["prl", "trials"].startswith("2/3: 1 failed (") and report_demo.FAILED[2] in table.loc["prl", "trials"]
    assert table.loc["erl", "trials"] == "8/9: 1 running"
    assert table.loc["naive", "trials"] == "0/3: 3 pending" and pd.isna(table.loc["naive", "ndcg@20_mean"])
    assert "| Naive | – | pending | pending | pending | pending |" in text
    assert "21 planned · 16 completed · 1 failed · 1 running · 3 pending" in text and "partial" in text
    assert "the running ones were interrupted" in text  # no `harness run` holds the database
    assert "| failed | synthetic | sasrec | +PRL | 2 | 2 |" in text and report_demo.FAILED[2] in text
    rows = pd.read_csv(folder / "trials_not_completed.csv")
    assert set(rows.status) == {"failed", "running"} and rows.error.str.contains("CUDA out of memory").any()


def test_sensitivity_section(db, tmp_path):
    text = build_report(db, "sens", tmp_path).read_text()
    tau = pd.read_csv(tmp_path / "sens" / "table_sensitivity_prl_tau.csv")
    alpha = pd.read_csv(tmp_path / "sens" / "table_sensitivity_prl_alpha.csv")
    assert list(tau.value) == [0.5, 1.0] and list(alpha.value) == [2.0, 5.0]
    assert tau["mean"].tolist() == pytest.approx([0.1 + t / 10 + 5.0 / 100 for t in (0.5, 1.0)])  # alpha pinned at 5
    assert alpha["mean"].tolist() == pytest.approx([0.1 + 0.5 / 10 + a / 100 for a in (2.0, 5.0)])  # tau pinned
    assert "| synthetic | sasrec | +PRL | 0.2000 | 0.2500 | τ=1 | 1 |" in text  # a row per dataset x backbone x variant
    assert png_size(tmp_path / "sens" / "fig6_sensitivity.png")[0] > 300
    assert "Overall performance" in text and "does not have both" in text  # no Base in this study


def test_half_finished_study_reports_what_is_missing(db, tmp_path):
    """A study that has barely started: its one complete trial (shared with the sens study, same key) is
    reported, every other cell says pending, and nothing crashes."""
    copy = tmp_path / "r.duckdb"
    shutil.copy(db, copy)
    study = load_study(ROOT / "studies/ablation.yaml", ["datasets=[synthetic]"])
    trials = expand(study)
    Store(copy).register_study(study.name, study.file, len(trials), "grid", dict(study.raw), [t.key for t in trials])
    text = build_report(copy, "ablation", tmp_path / "out").read_text()
    assert "12 planned · 1 completed · 0 failed · 0 running · 11 pending" in text
    assert "| synthetic | sasrec | ERL w/o KL | 2 | 0/3: 3 pending |" in text
    assert "| synthetic | sasrec | +PRL | 2 | 1/3: 2 pending |" in text
    ablation = pd.read_csv(tmp_path / "out" / "ablation" / "table_ablation.csv").set_index("variant")
    assert ablation.loc["prl", "ndcg@20_n"] == 1 and ablation.loc["prl w/o RCL", "trials"] == "0/3: 3 pending"
    assert pd.isna(ablation.loc["prl", "ndcg@20_improvement_pct"])  # nothing to compare with yet


def test_expected_cells_agree_with_the_expansion():
    for name in ("overall", "steps", "ablation", "latency", "subgroups", "sensitivity", "quickstart"):
        study = load_study(ROOT / f"studies/{name}.yaml", ["datasets=[synthetic]"])
        cells = expected_cells(study).set_index(["dataset", "backbone", "variant", "reasoning_steps"])["expected"]
        trials = expand(study)
        rows = pd.DataFrame([trial_row(t, "pending") for t in trials])
        # each stored trial's variant as report_trials names it: the paper's name + its non-default settings
        rows["variant"] = [full_variant(v, *labels(t.params())) for v, t in zip(rows.variant, trials, strict=True)]
        counts = rows.groupby(["dataset", "backbone", "variant", "reasoning_steps"]).size()
        assert cells.sort_index().to_dict() == counts.sort_index().to_dict(), name


def test_errors_for_missing_database_unknown_study_and_empty_database(db, tmp_path):
    with pytest.raises(HarnessError, match="no such database"):
        build_report(tmp_path / "none.duckdb", "demo", tmp_path)
    with pytest.raises(HarnessError, match=r"study 'dmeo': not in this database \(did you mean 'demo'\?\); studies: demo, sens"):
        build_report(db, "dmeo", tmp_path)
    Store(tmp_path / "empty.duckdb")
    with pytest.raises(HarnessError, match="no studies in this database"):
        build_report(tmp_path / "empty.duckdb", "demo", tmp_path)


def test_cli_report(db, tmp_path, capsys):
    run = subprocess.run([*HARNESS, "report", "sens", "--db", str(db), "--out", str(tmp_path)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"report for study sens: {tmp_path / 'sens' / 'README.md'}"
    assert (tmp_path / "sens" / "fig6_sensitivity.png").stat().st_size > 0
    assert main(["report", "nope", "--db", str(db)]) == 2
    assert "study 'nope': not in this database" in capsys.readouterr().err
    assert main(["report", "studies/none.yaml", "--db", str(db)]) == 2
    assert "no such study file" in capsys.readouterr().err
    assert main(["sql", "--db", str(db), "--format", "csv",
                 "SELECT variant, round(avg_improvement_pct, 4) AS avg FROM report_improvements WHERE "
                 "study = 'demo' AND reference = 'base' AND variant = 'erl' LIMIT 1"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "erl,24.2424"  # the views stay for `harness sql`
