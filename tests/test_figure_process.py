"""The report's figure process (harness/report/figure_process.py): same PNG bytes as rendering in the
caller, a figure's error comes back with its traceback, a dead child fails every unfinished figure."""

from __future__ import annotations

import os
import signal

import pandas as pd
import pytest

from harness.report import figures
from harness.report.figure_process import FigureError, FigureProcess


def steps_frame() -> pd.DataFrame:
    rows = [("ds", "sasrec", "base", 0, 0.10, 0.01)]
    rows += [("ds", "sasrec", "erl", k, 0.10 + 0.01 * k, 0.005) for k in (1, 2, 3)]
    return pd.DataFrame(rows, columns=["dataset", "backbone", "variant", "reasoning_steps", "mean", "ci95"])


def test_child_writes_the_bytes_the_caller_would(tmp_path):
    frame = steps_frame()
    figures.steps_figure(frame, tmp_path / "inline.png")
    with FigureProcess() as jobs:
        futures = [jobs.submit(figures.steps_figure, frame, tmp_path / f"child{i}.png") for i in range(2)]
        assert [f.result(timeout=60) for f in futures] == [None, None]
    inline = (tmp_path / "inline.png").read_bytes()
    assert len(inline) > 5000
    assert (tmp_path / "child0.png").read_bytes() == inline == (tmp_path / "child1.png").read_bytes()


def test_a_failing_figure_raises_with_its_traceback_and_the_next_one_still_renders(tmp_path):
    with FigureProcess() as jobs:
        bad = jobs.submit(figures.steps_figure, steps_frame().drop(columns="mean"), tmp_path / "bad.png")
        good = jobs.submit(figures.steps_figure, steps_frame(), tmp_path / "good.png")
        with pytest.raises(FigureError, match=r"(?s)figure steps_figure failed in the figure process:.*KeyError"):
            bad.result(timeout=60)
        assert good.result(timeout=60) is None
    assert (tmp_path / "good.png").stat().st_size > 5000 and not (tmp_path / "bad.png").exists()


def test_a_dead_child_fails_every_unfinished_figure(tmp_path):
    jobs = FigureProcess()
    os.kill(jobs._proc.pid, signal.SIGKILL)
    jobs._proc.wait()
    future = jobs.submit(figures.steps_figure, steps_frame(), tmp_path / "never.png")
    with pytest.raises(FigureError, match="figure steps_figure: not rendered: the figure process"):
        future.result(timeout=60)
    jobs.close()
    assert not (tmp_path / "never.png").exists()


def test_only_report_figure_functions_are_sent():
    with FigureProcess() as jobs, pytest.raises(ValueError, match="must live in harness.report"):
        jobs.submit(print, "x")


def test_an_unpicklable_job_raises_in_the_caller_and_the_stream_stays_usable(tmp_path):
    with FigureProcess() as jobs:
        with pytest.raises(Exception, match="pickle|lambda"):
            jobs.submit(figures.steps_figure, steps_frame(), tmp_path / "x.png", metric_label=lambda: None)
        assert jobs.submit(figures.steps_figure, steps_frame(), tmp_path / "ok.png").result(timeout=60) is None
    assert (tmp_path / "ok.png").stat().st_size > 5000
