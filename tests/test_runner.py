"""The runner on a real local Ray (2 CPUs): retries and failures, resume, sharing, ASHA, Optuna, devices."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ResourceError
from harness.runner import RunOptions, StudyRunner, resolve_resources
from harness.store import Store
from harness.study import Resources, load_study


@pytest.mark.parametrize("requested, device, cluster, expected, warns", [
    (Resources(1, 0.25), "auto", (0, 2, 0), (Resources(1, 0.0), "cpu"), True),
    (Resources(1, 0.25), "auto", (4, 8, 2), (Resources(1, 0.25), "cuda"), False),
    (Resources(1, 0.0), "auto", (4, 8, 2), (Resources(1, 0.0), "cpu"), False),
    (Resources(1, 0.25), "cpu", (4, 8, 2), (Resources(1, 0.0), "cpu"), False),
    (Resources(1, 0.0), "cuda", (1, 8, 1), (Resources(1, 1.0), "cuda"), False),
])
def test_resolve_resources(requested, device, cluster, expected, warns):
    warnings = []
    assert resolve_resources(requested, device, *cluster, warn=warnings.append) == expected
    assert bool(warnings) == warns
    if warns:
        assert "no GPU" in warnings[0] and "CPU" in warnings[0]


@pytest.mark.parametrize("requested, device, cluster, problem", [
    (Resources(1, 0.25), "cuda", (0, 2, 0), "no GPUs"),
    (Resources(4, 0.0), "auto", (0, 2, 0), "largest node has 2"),
    (Resources(1, 2.0), "auto", (2, 8, 1), "largest node has 1"),
])
def test_resolve_resources_fails_instead_of_hanging(requested, device, cluster, problem):
    with pytest.raises(ResourceError, match=problem):
        resolve_resources(requested, device, *cluster)


def run(study_file, raw, tmp_path: Path, data_cache: Path, **options):
    lines: list[str] = []
    study = load_study(study_file(raw, f"{raw['name']}.yaml"))
    opts = RunOptions(db=tmp_path / "results.duckdb", runs=tmp_path / "runs", cache_dir=data_cache, **options)
    summary = StudyRunner(study, opts, out=lines.append).run()
    return summary, lines, Store(tmp_path / "results.duckdb", read_only=True)


def test_grid_run_retries_records_failures_and_resumes(ray_local, study_file, tmp_path, data_cache, capsys, tiny_study):
    # prl with max_len 5 fails inside fit (the data's histories are longer); the two others complete.
    raw = tiny_study(methods=["base", {"name": "erl", "reasoning_steps": 1},
                              {"name": "prl", "reasoning_steps": 1, "max_len": 5}],
                     resources={"cpu": 1, "gpu": 0.25})
    summary, lines, store = run(study_file, raw, tmp_path, data_cache, retries=1)
    text = "\n".join(lines)
    assert "WARNING" in text and "no GPU" in text  # gpu 0.25 on a GPU-less cluster: CPU fallback, no hang
    assert "retrying" in text and "FAILED" in text and "done 2/3" in text
    assert summary["completed"] == 2 and len(summary["failed"]) == 1
    (error,) = summary["failed"].values()
    assert "max_len" in error
    trials = store.query("SELECT trial_key, method, status, error, started_at, device, run_dir FROM trials "
                         "ORDER BY method")
    assert list(trials.status) == ["completed", "completed", "failed"] and list(trials.device[:2]) == ["cpu", "cpu"]
    assert "max_len" in trials.error[2]
    for run_dir in trials.run_dir[:2]:
        assert (Path(run_dir) / "result.json").exists() and list(Path(run_dir).glob("events.out.tfevents.*"))
        assert Path(run_dir).parent == tmp_path / "runs" / "tiny"
    assert store.query("SELECT count(*) AS n FROM metrics")["n"][0] == 36 * 2 * (2 + 3)
    assert set(store.query("SELECT study FROM study_trials").study) == {"tiny"}
    from harness.cli import main

    assert main(["status", "--db", str(tmp_path / "results.duckdb")]) == 0
    status = capsys.readouterr().out
    assert "tiny (grid" in status and "2/3 completed, 1 failed" in status
    assert f"failed {trials.trial_key[2][:12]} synthetic/prl: " in status and "max_len" in status

    # Resume: completed trials are skipped (not re-run: same started_at), the failed one runs again.
    summary, lines, store = run(study_file, raw, tmp_path, data_cache)
    assert summary["skipped"] == 2 and summary["completed"] == 0 and len(summary["failed"]) == 1
    again = store.query("SELECT trial_key, started_at FROM trials WHERE status = 'completed' ORDER BY method")
    assert list(again.started_at) == list(trials.started_at[:2])

    # The same trial declared by another study runs once and belongs to both; its directory shows up there.
    raw2 = tiny_study(name="tiny2", methods=["base"])
    summary, lines, store = run(study_file, raw2, tmp_path, data_cache)
    assert summary["skipped"] == 1 and summary["completed"] == 0 and "0 to run" in "\n".join(lines)
    base_key = trials.trial_key[0]
    assert set(store.query("SELECT study FROM study_trials WHERE trial_key = ?", [base_key]).study) == {"tiny", "tiny2"}
    link = tmp_path / "runs" / "tiny2" / base_key[:12]
    assert link.is_symlink() and (link / "result.json").exists()


def test_device_cuda_without_gpu_fails_before_launching(ray_local, study_file, tmp_path, data_cache, tiny_study):
    with pytest.raises(ResourceError, match="no GPUs"):
        run(study_file, tiny_study(name="gpu", resources={"cpu": 1, "gpu": 0.25}), tmp_path, data_cache,
            device="cuda")
    store = Store(tmp_path / "results.duckdb", read_only=True)
    assert store.query("SELECT count(*) AS n FROM trials")["n"][0] == 0
    assert not (tmp_path / "runs" / "gpu").exists()


def test_asha_prunes_poor_trials_and_records_them(ray_local, study_file, tmp_path, data_cache, tiny_study):
    # two good learning rates first, then two hopeless ones: ASHA stops the latter at its first rung
    raw = tiny_study(name="asha", methods=["base"], concurrency=2, asha={"grace_period": 1, "reduction_factor": 2},
                     params={**tiny_study()["params"], "max_epochs": 3, "patience": 3,
                             "lr": [0.01, 0.005, 1e-7, 2e-7]})
    summary, lines, store = run(study_file, raw, tmp_path, data_cache)
    assert summary["completed"] == 4 and not summary["failed"]
    rows = store.query("SELECT t.trial_key, t.pruned, t.status, t.epochs, count(m.value) AS n_metrics FROM trials t "
                       "LEFT JOIN metrics m USING (trial_key) GROUP BY ALL")
    assert set(rows.status) == {"completed"}
    pruned = rows[rows.pruned]
    assert len(pruned) >= 1 and (pruned.epochs < 3).all() and (pruned.n_metrics == 0).all()
    assert (rows[~rows.pruned].n_metrics > 0).all()
    lrs = set(store.query("SELECT CAST(params->>'$.lr' AS DOUBLE) AS lr FROM trials WHERE pruned").lr)
    assert {1e-7, 2e-7} <= lrs, "\n".join(lines)  # (a good one may also lose at the second rung)


def test_optuna_search_uses_its_budget_and_resumes_with_earlier_results(ray_local, study_file, tmp_path, data_cache, tiny_study):
    raw = tiny_study(name="tpe", methods=[{"name": "erl", "reasoning_steps": 1,
                                           "kl_lambda": {"low": 0.001, "high": 0.1, "log": True}}],
                     search={"algorithm": "optuna", "num_samples": 3, "seed": 1},
                     params={**tiny_study()["params"], "max_epochs": 1})
    summary, lines, store = run(study_file, raw, tmp_path, data_cache)
    assert summary["completed"] == 3 and not summary["failed"]
    lambdas = store.query("SELECT kl_lambda FROM trials").kl_lambda
    assert len(set(lambdas)) == 3 and ((lambdas >= 0.001) & (lambdas <= 0.1)).all()
    raw["search"]["num_samples"] = 4  # extend the budget: only one more trial, TPE warm-started with three
    summary, lines, store = run(study_file, raw, tmp_path, data_cache)
    assert summary["skipped"] == 3 and summary["completed"] == 1
    assert "3 earlier results reused" in "\n".join(lines)
    assert store.query("SELECT count(*) AS n FROM study_trials WHERE study = 'tpe'")["n"][0] == 4


def test_progress_line_counts_best_and_eta():
    from harness.progress import Progress

    lines = []
    progress = Progress(total=4, metric="best_valid/ndcg@20", out=lines.append)
    assert "ETA ?" in progress.line() and "pending 4" in progress.line()
    progress.running.update({"a": 0.5, "b": 0.0})
    progress.done, progress.failed = 1, 1
    progress.observe(0.3, "erl k1")
    progress.observe(0.2, "base k2")
    line = progress.line()
    assert "done 1/4 | running 2 | failed 1 | pending 0" in line and "best valid/ndcg@20 0.3000 (erl k1)" in line
    assert "ETA ?" not in line
    progress.show()
    progress.show()  # nothing changed: no second line
    assert len(lines) == 1


def test_a_ray_tune_abort_keeps_results_and_exits_3(ray_local, study_file, tmp_path, data_cache, monkeypatch,
                                                    capsys, tiny_study):
    import harness.runner as runner_module
    from harness.cli import main

    def out_of_memory(*args, **kwargs):  # what Ray Tune raises when its memory monitor kills a trial actor
        raise RuntimeError("Caught unexpected exception: 1 worker(s) were killed due to the node running low "
                           "on memory.\nMemory on the node ...")

    monkeypatch.setattr(runner_module, "_tune_run", out_of_memory)
    path = study_file(tiny_study(name="abort"), "abort.yaml")
    code = main(["run", str(path), "--db", str(tmp_path / "r.duckdb"), "--runs", str(tmp_path / "runs"),
                 "--cache-dir", str(data_cache)])
    out = capsys.readouterr().out
    assert code == 3 and "Ray Tune stopped early: RuntimeError: Caught unexpected exception" in out
    assert "run the same command again" in out and "2 not finished" in out
