"""TensorBoard run names: what a trial is (dataset, backbone, method, K, varied settings, seed, key), and
`harness tensorboard STUDY` serving only that study's trials (real runs, real TensorBoard)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.names import run_name, study_names, varied_settings
from harness.runner import RunOptions, StudyRunner
from harness.study import load_study
from harness.tensorboard import build_logdir, study_runs

ROOT = Path(__file__).resolve().parent.parent
HARNESS = [sys.executable, "-m", "harness.cli"]


def flat(method: str, key: str, **settings) -> tuple[str, dict]:
    base = {"dataset": "yelp", "backbone": "sasrec", "method": method, "reasoning_steps": 0, "seed": 0,
            "kl_lambda": 0.05, "tau": 1.0, "lr": 0.001, "hidden_size": 64, "dataset_hash": key}
    return key * 64, {**base, **settings}


def test_names_show_the_settings_that_vary_within_each_method():
    trials = dict([
        flat("base", "a"),
        flat("erl", "b", reasoning_steps=2, kl_lambda=0.01),
        flat("erl", "c", reasoning_steps=2, kl_lambda=0.1),
        flat("prl", "d", reasoning_steps=2, tau=0.5, lr=0.0005),
        flat("prl", "e", reasoning_steps=2, tau=2.0, seed=1),
    ])
    varied = varied_settings(list(trials.values()))
    # lr differs across the study (all trials show it); kl_lambda only among ERL trials, tau among PRL ones;
    # the base trial carries ERL's default kl_lambda, which it does not use: not shown
    assert varied == {"base": ["lr"], "erl": ["lr", "kl_lambda"], "prl": ["lr", "tau"]}
    names = study_names(trials)
    assert names["a" * 64] == "yelp sasrec base lr=0.001 seed=0 aaaaaaaaaaaa"
    assert names["b" * 64] == "yelp sasrec erl K=2 lr=0.001 kl_lambda=0.01 seed=0 bbbbbbbbbbbb"
    assert names["d" * 64] == "yelp sasrec prl K=2 lr=0.0005 tau=0.5 seed=0 dddddddddddd"
    assert names["e" * 64] == "yelp sasrec prl K=2 lr=0.001 tau=2 seed=1 eeeeeeeeeeee"
    assert len(set(names.values())) == 5


def test_names_are_safe_directory_names_and_bounded():
    key, params = flat("erl", "f", dataset="my/data,set:v1", reasoning_steps=1, kl_lambda=0.5,
                       text_fields=["title"] * 100)
    name = run_name(params, key, ["kl_lambda", "text_fields"])
    assert "/" not in name and "," not in name and ":" not in name
    assert name.startswith("my_data_set_v1 sasrec erl K=1 kl_lambda=0.5 ")
    assert name.endswith(" ... seed=0 ffffffffffff") and len(name.encode()) <= 200  # the long list gave way


@pytest.fixture(scope="module")
def two_studies(ray_local, tmp_path_factory, data_cache, tiny_study):
    """`names` (base + ERL with two lambdas) and `other` (the same base trial + PRL), one runs folder."""
    root = tmp_path_factory.mktemp("names")
    options = RunOptions(db=root / "results.duckdb", runs=root / "runs", cache_dir=data_cache)
    for raw in (tiny_study(name="names", methods=["base", {"name": "erl", "reasoning_steps": 1,
                                                           "kl_lambda": [0.01, 0.1]}]),
                tiny_study(name="other", methods=["base", {"name": "prl", "reasoning_steps": 1}])):
        path = root / f"{raw['name']}.yaml"
        path.write_text(json.dumps(raw))
        summary = StudyRunner(load_study(path), options, out=lambda line: None).run()
        assert not summary["failed"] and not summary["internal_errors"]
    return root


def tensorboard_runs(logdir: Path) -> dict[str, list[str]]:
    """Run name -> scalar tags, as TensorBoard's own event multiplexer reads the logdir."""
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    multiplexer = EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    return {run: sorted(multiplexer.GetAccumulator(run).Tags()["tensors"]) for run in multiplexer.Runs()}


def test_tensorboard_reads_readable_names_of_the_study_trials_only(two_studies, tmp_path):
    runs = two_studies / "runs"
    seen = tensorboard_runs(build_logdir(study_runs(runs, "names"), tmp_path / "names"))
    base, erl_small, erl_large = sorted(seen)
    assert base.startswith("synthetic sasrec base seed=0 ") and len(base.rsplit(" ", 1)[1]) == 12
    assert erl_small.startswith("synthetic sasrec erl K=1 kl_lambda=0.01 seed=0 ")
    assert erl_large.startswith("synthetic sasrec erl K=1 kl_lambda=0.1 seed=0 ")
    for tags in seen.values():  # each name is a real run with the trial's curves
        assert {"train/loss", "valid/ndcg@20", "test/ndcg@20"} <= set(tags)

    other = tensorboard_runs(build_logdir(study_runs(runs, "other"), tmp_path / "other"))
    # the shared base trial (a symlink in runs/other/) and PRL; none of the ERL trials of `names`
    assert sorted(other) == [base, next(n for n in other if " prl K=1 " in n)]
    assert (runs / "other" / base.rsplit(" ", 1)[1]).is_symlink()

    # the tree follows the study: without one ERL trial, lambda no longer varies, so the other ERL run
    # is renamed without it; the base run keeps its link
    logdir = tmp_path / "names"
    before = {p.name: os.readlink(p) for p in logdir.iterdir()}
    target = Path(before[erl_large])
    target.rename(target.with_name("_moved"))
    build_logdir(study_runs(runs, "names"), logdir)
    target.with_name("_moved").rename(target)
    renamed = erl_small.replace(" kl_lambda=0.01", "")
    assert {p.name: os.readlink(p) for p in logdir.iterdir()} == {base: before[base], renamed: before[erl_small]}


def test_tensorboard_command_serves_the_tree_and_removes_it_on_sigterm(two_studies):
    # (tests/test_cli.py asks the served TensorBoard for its runs over HTTP: 2, through this symlink tree)
    import psutil

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    board = subprocess.Popen([*HARNESS, "tensorboard", "other", "--port", str(port)], cwd=two_studies, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        line = board.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line and "(2 trials in runs/other)" in line
        def started() -> list[str]:  # TensorBoard's command line once the harness has exec'd it
            children = psutil.Process(board.pid).children()
            command = children[0].cmdline() if children else []
            return command if "--logdir" in command else []

        deadline = time.monotonic() + 60
        while not (command := started()):
            assert time.monotonic() < deadline, "no TensorBoard process"
            time.sleep(0.2)
        tensorboard = psutil.Process(board.pid).children()
        tree = Path(command[command.index("--logdir") + 1])
        assert tree.name.startswith("harness-tensorboard-other-") and command[-4:] == ["--host", "127.0.0.1",
                                                                                      "--port", str(port)]
        assert sorted(p.name for p in tree.iterdir()) == sorted(study_runs(two_studies / "runs", "other"))
        board.send_signal(signal.SIGTERM)  # the harness process only: it stops TensorBoard and removes the tree
        assert board.wait(timeout=60) == 128 + signal.SIGTERM
        assert not tree.exists()
        assert not psutil.wait_procs(tensorboard, timeout=30)[1]  # TensorBoard stopped too
    finally:
        try:
            os.killpg(board.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
