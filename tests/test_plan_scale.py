"""Studies of any size: counted from their axes before expansion, refused above a cap, planned fast with the
same keys as before; `harness plan` before the data exists (the real overall and sensitivity studies)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import EXIT_DATA_MISSING, StudyError
from harness.expand import (
    DatasetRef,
    check_size,
    expand,
    make_trial,
    placeholder_datasets,
    search_groups,
    study_size,
    validate,
)
from harness.keys import TrialSpec, trial_key
from harness.study import load_study, parse_study
from rearec.config import MethodConfig, ModelConfig, TrainConfig
from rearec.identity import Trial, applies, in_key

ROOT = Path(__file__).resolve().parent.parent
HARNESS = [sys.executable, "-m", "harness.cli"]


def reference_key(dataset: DatasetRef, backbone: str, method: str, point: dict, seed: int) -> tuple[str, dict]:
    """The key as the rule in rearec/identity.py defines it, computed field by field with no cache."""
    sections = {"model": {"backbone": backbone}, "method": {"name": method},
                "train": {"seed": seed, "selection_metric": "ndcg@20"}}
    owner = {f.name: s for s, cls in (("model", ModelConfig), ("method", MethodConfig), ("train", TrainConfig))
             for f in dataclasses.fields(cls)}
    for name, value in point.items():
        sections[owner[name]][name] = value
    trial = Trial(ModelConfig.from_dict(sections["model"]), MethodConfig.from_dict(sections["method"]),
                  TrainConfig.from_dict(sections["train"]))
    keyed, read = {}, {}
    for name, cfg in trial._asdict().items():
        fields = [f for f in dataclasses.fields(cfg) if applies(f, trial)]
        read[name] = {f.name: getattr(cfg, f.name) for f in fields}
        keyed[name] = {f.name: getattr(cfg, f.name) for f in fields if in_key(f, getattr(cfg, f.name))}
    key = trial_key(dataset.spec, dataset.content_hash, keyed["model"], keyed["method"], keyed["train"])
    return key, read


def test_fast_expansion_gives_the_keys_and_settings_of_the_rule():
    ref = DatasetRef(0, "d", {"name": "d", "interactions": "/x/a.tsv", "kcore": 5}, "ab" * 32)
    other = DatasetRef(1, "e", {"name": "e", "interactions": "/x/b.tsv"}, "cd" * 32)
    points = [{}, {"reasoning_steps": 2, "kl_lambda": 0.01}, {"reasoning_steps": 3, "tau": 0.5, "alpha": 5.0},
              {"reasoning_steps": 1, "rcl": False, "formulation": "released", "training": "packed"},
              {"hidden_size": 32, "weight_decay": 0.0}, {"hidden_size": 32, "weight_decay": -0.0}]
    seen = set()
    for dataset, backbone, method, point, seed in itertools.product(
            (ref, other), ("sasrec", "bert4rec", "unisrec", "morec"), ("base", "erl", "prl"), points, (0, 3)):
        if method == "base":
            point = {k: v for k, v in point.items() if k not in ("reasoning_steps",)}
        else:
            point = {"reasoning_steps": 1, **point}
        if backbone == "bert4rec" and point.get("training") == "packed":
            continue  # packed training is for causal backbones only
        for _ in range(2):  # the second build is served from the caches
            spec = make_trial(dataset, backbone, method, point, seed, "ndcg@20")
            key, read = reference_key(dataset, backbone, method, point, seed)
            assert spec.key == key
            assert {"model": spec.model, "method": spec.method, "train": spec.train} == read
        seen.add(spec.key)
    # 0.0 and -0.0 are different JSON, so different keys, as they always were
    keys = {make_trial(ref, "sasrec", "base", {"weight_decay": w}, 0, "ndcg@20").key for w in (0.0, -0.0)}
    assert len(keys) == 2


def test_expansion_with_real_datasets_reuses_the_validated_configs(study_file, tiny_dataset, tiny_study):
    raw = tiny_study(methods=["base", {"name": "prl", "reasoning_steps": [1, 2], "tau": [0.5, 1.0]}], seeds=[0, 1],
                     datasets=[tiny_dataset, {**tiny_dataset, "min_history": 3}])
    study = load_study(study_file(raw))
    placeholder = expand(study)
    refs = [dataclasses.replace(r, content_hash=f"{r.index}" * 64) for r in placeholder_datasets(study)]
    real = expand(study, refs)
    assert len(placeholder) == len(real) == 2 * (2 + 2 * 2 * 2)
    for t in real:  # every key is the rule's, for the real content hash
        point = {k: t.method[k] for k in ("reasoning_steps", "tau") if t.method["name"] == "prl"}
        point.update(raw["params"])
        ref = next(r for r in refs if r.spec == t.dataset_spec)
        assert t.key == reference_key(ref, "sasrec", t.method["name"], point, t.seed)[0]


def test_size_is_counted_from_the_axes_without_expanding(tiny_study):
    overall, sensitivity = (load_study(ROOT / f"studies/{n}.yaml") for n in ("overall", "sensitivity"))
    size = study_size(overall)
    assert size.total == 2520 == len(expand(overall))
    assert "datasets 5 x backbones 4 x seeds 3" in size.text and "tau 6 x alpha 6 = 36" in size.text
    size = study_size(sensitivity)  # (tau 0.5, alpha 5.0) is the pinned point twice: counted once
    assert size.total == 32 == len(expand(sensitivity)) and "pinned point once instead of 2 times" in size.text
    # an upper bound where only expansion can tell: a repeated value, one method entry twice
    twice = parse_study(tiny_study(methods=["base", "base"], params={**tiny_study()["params"],
                                                                      "lr": [0.001, 0.002]}), "t.yaml")
    assert study_size(twice).total == 4 and len(expand(twice)) == 2 and not study_size(twice).exact
    # Optuna: groups x num_samples, capped by a discrete space's size (no configuration twice)
    tpe = parse_study(tiny_study(methods=[{"name": "erl", "reasoning_steps": {"values": [1, 2]}},
                                          {"name": "erl", "reasoning_steps": 1,
                                           "kl_lambda": {"low": 0.001, "high": 0.1}}],
                                 search={"algorithm": "optuna", "num_samples": 5}, seeds=[0, 1]), "t.yaml")
    size = study_size(tpe)
    assert size.exact and size.total == 2 * (2 + 5) and "capped at the 2 configurations" in size.text
    assert validate(tpe) == 14 and [g.budget(5) for g in search_groups(tpe)] == [2, 2, 5, 5]


def _huge(tiny_study, name: str = "huge") -> dict:
    ten = [round(0.1 * (i + 1), 2) for i in range(10)]
    return tiny_study(name=name, methods=[{"name": "prl", "reasoning_steps": 2, "tau": ten, "alpha": ten,
                                           "gamma": ten}],
                      params={**tiny_study()["params"], "lr": ten, "weight_decay": ten, "dropout": ten,
                              "input_dropout": ten})


def test_a_huge_study_is_refused_at_once_naming_its_axes(tmp_path, capsys, tiny_study):
    study = parse_study(_huge(tiny_study), "huge.yaml")
    started = time.process_time()
    with pytest.raises(StudyError) as info:
        check_size(study)
    assert time.process_time() - started < 0.5
    message = str(info.value)
    assert message.startswith("huge.yaml: at most 10,000,000 trials = datasets 1 x backbones 1 x seeds 1 x ")
    for axis in ("tau 10", "alpha 10", "gamma 10", "lr 10", "weight_decay 10", "dropout 10", "input_dropout 10"):
        assert axis in message
    assert "above the limit of 100,000 trials" in message and "--max-trials 10000000" in message
    (tmp_path / "huge.yaml").write_text(json.dumps(_huge(tiny_study)))
    started = time.monotonic()
    for command in ("plan", "run"):  # a subprocess: the real CLI, imports included
        result = subprocess.run([*HARNESS, command, "huge.yaml"], cwd=tmp_path, capture_output=True,
                                              text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert result.returncode == 2 and "at most 10,000,000 trials" in result.stderr, result.stderr
    assert time.monotonic() - started < 60  # generous: the box is shared (bench/bench_plan.py has the figure)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.yaml"]  # nothing written, no Ray


def test_max_trials_moves_the_cap(tmp_path, data_cache, capsys, monkeypatch, tiny_study):
    from harness import runner

    (tmp_path / "s.yaml").write_text(json.dumps(tiny_study(seeds=[0, 1, 2])))  # 6 trials
    seen = []
    monkeypatch.setattr(runner.StudyRunner, "run", lambda self: seen.append(self.options.max_trials) or
                        {"completed": 0, "skipped": 6, "failed": {}, "interrupted": 0, "internal_errors": [],
                         "aborted": None})
    old = os.getcwd()
    try:
        os.chdir(tmp_path)
        for command in ("plan", "run"):
            assert main([command, "s.yaml", "--max-trials", "5", "--cache-dir", str(data_cache)]) == 2
            assert "at most 6 trials" in capsys.readouterr().err
        assert main(["plan", "s.yaml", "--max-trials", "6", "--cache-dir", str(data_cache)]) == 0
        assert "grid search, 6 trials" in capsys.readouterr().out
        assert main(["run", "s.yaml", "--max-trials", "6", "--cache-dir", str(data_cache)]) == 0
        assert seen == [6]  # the runner plans under the same cap
    finally:
        os.chdir(old)
    study = load_study(tmp_path / "s.yaml")
    with pytest.raises(StudyError, match="at most 6 trials"):
        runner.make_plan(study, runner.RunOptions(cache_dir=data_cache, max_trials=5), None, log=lambda _: None)


def test_planning_ten_thousand_trials_is_fast(study_file, data_cache, tiny_study):
    ten = [round(0.1 * (i + 1), 2) for i in range(10)]
    raw = tiny_study(methods=[{"name": "prl", "reasoning_steps": 2, "tau": ten, "alpha": ten}],
                     params={**tiny_study()["params"], "lr": [0.001 * (i + 1) for i in range(10)]},
                     seeds=list(range(10)))
    from harness import expand as expand_module
    from harness.datasets import resolve_datasets
    from harness.runner import RunOptions, make_plan

    path = study_file(raw)
    resolve_datasets(load_study(path), data_cache, log=lambda _: None)  # prepared before timing
    expand_module._TEMPLATES.clear()
    expand_module._SECTION_CACHE.clear()
    started = time.process_time()
    study = load_study(path)
    assert validate(study) == 10_000
    plan = make_plan(study, RunOptions(cache_dir=data_cache), None, log=lambda _: None)
    cpu = time.process_time() - started
    assert plan.planned == 10_000 and len({t.key for t in plan.trials}) == 10_000
    assert cpu < 2.0, f"planning 10,000 trials took {cpu:.2f} s of CPU"


def _plan(capsys, cwd: Path, *args) -> tuple[int, str]:
    old = os.getcwd()
    try:
        os.chdir(cwd)
        code = main(["plan", *map(str, args)])
    finally:
        os.chdir(old)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("name, trials, missing", [
    ("overall", 2520, ["yelp", "amazon2023-video-games", "amazon2023-software", "amazon2023-cds-and-vinyl",
                       "amazon2023-baby-products"]),
    ("sensitivity", 32, ["yelp", "amazon2023-video-games"]),
])
def test_plan_on_a_fresh_clone_counts_trials_and_names_the_missing_datasets(tmp_path, capsys, name, trials,
                                                                           missing):
    code, out = _plan(capsys, tmp_path, ROOT / f"studies/{name}.yaml")
    assert code == EXIT_DATA_MISSING == 5, out
    assert f"grid search, {trials} trials" in out and f"not prepared: {len(missing)} of {len(missing)} datasets" in out
    for i, dataset in enumerate(missing):
        raw = tmp_path / "data" / "raw" / dataset
        assert f"datasets[{i}] {dataset}: {raw}: raw folder not found" in out
        assert f"get its official files into {raw}/" in out and f"`harness data prepare {dataset}`" in out
    assert not (tmp_path / "results.duckdb").exists()


def test_plan_with_some_datasets_prepared_resolves_those(tmp_path, capsys, data_cache, tiny_dataset):
    (tmp_path / "raw-yelp").mkdir()
    code, out = _plan(capsys, tmp_path, ROOT / "studies/sensitivity.yaml", "--cache-dir", data_cache, "--set",
                      f"datasets=[{json.dumps(tiny_dataset)}, {{name: yelp, raw_dir: {tmp_path / 'raw-yelp'}}}]")
    assert code == EXIT_DATA_MISSING, out
    assert "dataset synthetic:" in out and "users" in out  # the prepared one is resolved (and its keys known)
    assert "not prepared: 1 of 2 datasets (yelp)" in out and "yelp_academic_dataset_review.json: file not found" in out
    assert f"--raw-dir {tmp_path / 'raw-yelp'}" in out and f"--cache-dir {data_cache}" in out
    # a path the study names that does not exist is a mistake in the study, not data to fetch: exit 2
    code, out = _plan(capsys, tmp_path, ROOT / "studies/sensitivity.yaml", "--set",
                      "datasets=[{interactions: nowhere/inter.tsv}]")
    assert code == 2 and "nowhere/inter.tsv" in out


def test_trialspec_build_still_checks_keys_on_the_way_back():
    ref = DatasetRef(0, "d", {"name": "d"}, "0" * 64)
    trial = make_trial(ref, "bert4rec", "prl", {"reasoning_steps": 2, "tau": 0.5}, 1, "ndcg@20")
    assert TrialSpec.from_dict(json.loads(json.dumps(trial.to_dict()))) == trial


def test_run_without_the_data_says_how_to_get_it_and_starts_nothing(tmp_path, capsys):
    old = os.getcwd()
    try:
        os.chdir(tmp_path)
        code = main(["run", str(ROOT / "studies/sensitivity.yaml")])
    finally:
        os.chdir(old)
    err = capsys.readouterr().err
    assert code == 2 and "datasets[0]: yelp: " in err and "raw folder not found" in err
    assert f"get its official files into {tmp_path / 'data' / 'raw' / 'yelp'}/" in err
    assert not (tmp_path / "results.duckdb").exists() and not (tmp_path / "runs").exists()


def test_the_driver_store_keeps_its_connection_only_while_writes_follow(tmp_path):
    import pickle

    from harness.store import Store

    ref = DatasetRef(0, "d", {"name": "d"}, "0" * 64)
    trials = [make_trial(ref, "sasrec", "base", {}, seed, "ndcg@20") for seed in range(3)]
    store = Store(tmp_path / "r.duckdb", linger=0.3)
    for trial in trials:
        store.mark_running(trial, "s", str(tmp_path), "cpu")
    assert store._held is not None  # one open database for the run's writes
    assert set(store.statuses([t.key for t in trials]).values()) == {"running"}
    copy = pickle.loads(pickle.dumps(store))  # Ray Tune pickles its callbacks, and the store with them
    assert copy._held is None and copy.linger == 0.3
    time.sleep(1.0)
    assert store._held is None  # closed once idle: other processes (status, sql) can open the file
    assert len(Store(tmp_path / "r.duckdb", read_only=True).query("SELECT * FROM trials")) == 3
    store.mark_abandoned({trials[0].key: "abandoned: test"})
    store.close()
    assert store._held is None
    assert Store(tmp_path / "r.duckdb", read_only=True).statuses([trials[0].key]) == {trials[0].key: "abandoned"}


def test_status_and_sql_read_while_a_driver_writes_back_to_back(tmp_path):
    writer = f"""
import time
from harness.expand import DatasetRef, make_trial
from harness.store import Store
store = Store({str(tmp_path / 'r.duckdb')!r}, linger=0.5)
ref = DatasetRef(0, "d", {{"name": "d"}}, "0" * 64)
print("writing", flush=True)
end, seed = time.monotonic() + 14, 0
while time.monotonic() < end:  # a write every 50 ms: the connection is never idle for its linger
    store.mark_running(make_trial(ref, "sasrec", "base", {{}}, seed, "ndcg@20"), "s", "/tmp", "cpu")
    seed += 1
    time.sleep(0.05)
store.close()
"""
    process = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert process.stdout.readline().strip() == "writing"
        time.sleep(1.0)
        from harness.store import Store

        for _ in range(2):  # a reader as `harness status` opens it (10 s timeout), twice in the busy phase
            n = Store(tmp_path / "r.duckdb", read_only=True, timeout=10).query("SELECT count(*) AS n FROM trials")
            assert n["n"][0] > 0
    finally:
        process.wait(timeout=60)
    assert process.returncode == 0
