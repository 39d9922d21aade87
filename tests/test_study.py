"""Study files: parsing, expansion (grids, sensitivity, seeds, Optuna groups), overrides, trial keys."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.errors import StudyError
from harness.expand import DatasetRef, expand, make_trial, placeholder_datasets, resolve_point, search_groups
from harness.keys import TrialSpec, canonical_json, trial_key
from harness.study import PARAMS, Choice, Range, load_study, parse_study
from rearec.identity import key_view

ROOT = Path(__file__).resolve().parent.parent


def test_parameter_names_are_unique_across_config_sections():
    from rearec.config import MethodConfig, ModelConfig, TrainConfig

    names = [f.name for cls in (ModelConfig, MethodConfig, TrainConfig) for f in dataclasses.fields(cls)]
    assert len(names) == len(set(names)) == len(PARAMS)


def test_quickstart_is_base_erl_prl_at_k2():
    study = load_study(ROOT / "studies/quickstart.yaml")
    trials = expand(study)
    assert [(t.method["name"], t.method["reasoning_steps"]) for t in trials] == [("base", 0), ("erl", 2), ("prl", 2)]
    assert {t.dataset for t in trials} == {"synthetic"} and {t.seed for t in trials} == {0}


def test_sensitivity_study_is_one_at_a_time_as_in_the_paper():
    study = load_study(ROOT / "studies/sensitivity.yaml")
    assert study.resources.gpu == 0.25
    trials = expand(study)
    per_dataset = {}
    for t in trials:
        per_dataset.setdefault(t.dataset, []).append(t)
    assert set(per_dataset) == {"yelp", "amazon2023-video-games"}
    for ts in per_dataset.values():
        prl = [t.method for t in ts if t.method["name"] == "prl"]
        erl = [t.method for t in ts if t.method["name"] == "erl"]
        # tau varies with alpha pinned at 5.0; alpha varies with tau pinned at 0.5; (0.5, 5.0) appears once
        assert sorted(m["tau"] for m in prl if m["alpha"] == 5.0) == [0.05, 0.1, 0.5, 1.0, 2.0, 5.0]
        assert sorted(m["alpha"] for m in prl if m["tau"] == 0.5) == [1.0, 1.2, 1.5, 2.0, 5.0, 10.0]
        assert len(prl) == 11 and all(m["gamma"] == 0.01 for m in prl)
        assert sorted(m["kl_lambda"] for m in erl) == [0.001, 0.005, 0.01, 0.05, 0.1]
    assert len(trials) == 32 and len({t.key for t in trials}) == 32


def test_grid_product_seeds_and_base_ignores_study_wide_k(study_file, tiny_study):
    raw = tiny_study(methods=["base", "erl", "prl"], seeds=[0, 1],
                     params={**tiny_study()["params"], "reasoning_steps": [1, 2], "lr": [0.001, 0.01]})
    trials = expand(load_study(study_file(raw)))
    base = [t for t in trials if t.method["name"] == "base"]
    assert len(base) == 2 * 2  # lr x seeds; K does not apply to base (no duplicates either)
    assert {t.method["reasoning_steps"] for t in base} == {0}
    assert len([t for t in trials if t.method["name"] == "prl"]) == 2 * 2 * 2
    assert len(trials) == 4 + 8 + 8


def test_method_entry_overrides_study_params(study_file, tiny_study):
    raw = tiny_study(methods=[{"name": "erl", "reasoning_steps": 1, "max_epochs": 3}])
    (trial,) = expand(load_study(study_file(raw)))
    assert trial.train["max_epochs"] == 3 and trial.model["hidden_size"] == 16
    assert trial.train["selection_metric"] == "ndcg@20"


def test_set_overrides_are_typed_yaml(study_file, tiny_study):
    path = study_file(tiny_study())
    study = load_study(path, ["params.max_epochs=5", "methods[1].kl_lambda=1e-3", "seeds=[3, 4]",
                              "resources.gpu=0.5", "name=other"])
    assert study.params["max_epochs"] == 5 and study.methods[1].params["kl_lambda"] == 0.001
    assert study.seeds == (3, 4) and study.resources.gpu == 0.5 and study.name == "other"
    # a method given by name can still be overridden by index
    study = load_study(path, ["methods.0.max_epochs=1"])
    assert study.methods[0].params["max_epochs"] == 1


@pytest.mark.parametrize("override, where, problem", [
    ("params.max_epoch=3", "params.max_epoch", "did you mean 'max_epochs'"),
    ("methods[5].tau=1", "methods[5].tau", "out of range"),
    ("params=3=4", "params", "expected a mapping"),
    ("nonsense", "nonsense", "expected KEY=VALUE"),
    ("params.lr=[1, 2", "params.lr", "YAML"),
])
def test_bad_overrides_name_the_key(study_file, override, where, problem, tiny_study):
    with pytest.raises(StudyError) as info:
        load_study(study_file(tiny_study()), [override])
    assert where in str(info.value) and problem in str(info.value)


BAD_STUDIES = [
    # (mutation of the tiny study, key path in the message, problem in the message)
    ({"seed": [0]}, "seed", "unknown key (did you mean 'seeds'?)"),
    ({"methods": ["base", {"name": "erl", "reasoning_steps": 1, "kl_lamda": 0.1}]}, "methods[1].kl_lamda",
     "did you mean 'kl_lambda'"),
    ({"methods": ["bsae"]}, "methods[0].name", "did you mean 'base'"),
    ({"params": {"max_epochs": "ten"}}, "params.max_epochs", "expected an integer"),
    ({"params": {"hidden_size": 16, "num_heads": 3}}, "params.num_heads", "not divisible"),
    ({"backbones": ["bert4rec"], "params": {"clean_ratio": 1.0}}, "params.clean_ratio", "must be in [0, 1)"),
    ({"seeds": ["a"]}, "seeds[0]", "non-negative integer"),
    ({"methods": [{"name": "prl", "reasoning_steps": 1, "tau": [0.5, -1.0]}]}, "methods[0].tau[1]", "must be > 0"),
    ({"params": {"lr": {"low": 0.1, "high": 0.01, "log": True}}, "search": {"algorithm": "optuna"}}, "params.lr",
     "must be below high"),
    ({"params": {"lr": {"low": 0.0, "high": 0.1, "log": True}}, "search": {"algorithm": "optuna"}}, "params.lr.low",
     "log range needs low > 0"),
    ({"params": {"lr": {"low": 0.001, "high": 0.1}}}, "params.lr", "needs search.algorithm: optuna"),
    ({"params": {"lr": {"lo": 0.001, "high": 0.1}}, "search": {"algorithm": "optuna"}}, "params.lr.lo",
     "did you mean 'low'"),
    ({"params": {"backbone": "sasrec"}}, "params.backbone", "use backbones"),
    ({"selection": {"metric": "test/ndcg@20"}}, "selection.metric", "test metric"),
    ({"selection": {"metric": "valid/ndcg@30"}}, "selection.metric", "unknown metric"),
    ({"resources": {"cpu": 0}}, "resources.cpu", "must be > 0"),
    ({"resources": {"cpu": 1, "gpu": 1.5}}, "resources.gpu", "whole number"),
    ({"resources": {"cpu": 1, "gpus": 1}}, "resources.gpus", "did you mean 'gpu'"),
    ({"concurrency": 0}, "concurrency", "integer >= 1"),
    ({"backbones": ["sasrek"]}, "backbones[0]", "did you mean 'sasrec'"),
    ({"sensitivity": {"tau": [0.1]}, "search": {"algorithm": "optuna"}}, "sensitivity.tau",
     "need search.algorithm: grid"),
]


@pytest.mark.parametrize("mutation, where, problem", BAD_STUDIES)
def test_bad_study_errors_name_file_key_and_problem(study_file, mutation, where, problem, tiny_study):
    path = study_file(tiny_study(**mutation))
    with pytest.raises(StudyError) as info:
        study = load_study(path)
        expand(study) if study.search.algorithm == "grid" else search_groups(study)
    message = str(info.value)
    assert message.startswith(f"{path}: {where}: "), message
    assert problem in message


def test_missing_file_and_yaml_syntax_errors(tmp_path, study_file):
    with pytest.raises(StudyError, match="no such file"):
        load_study(tmp_path / "nope.yaml")
    path = study_file("name: x\nmethods: [base\nseeds: [0]\n")
    with pytest.raises(StudyError, match=r"study.yaml: line \d+, column \d+: YAML syntax error"):
        load_study(path)
    with pytest.raises(StudyError, match="duplicate key 'seeds'"):
        load_study(study_file("datasets: [synthetic]\nmethods: [base]\nseeds: [0]\nseeds: [1]\n"))
    with pytest.raises(StudyError, match="must be a mapping"):
        load_study(study_file("- a\n- b\n"))


def test_exponent_floats_without_a_dot_are_numbers(study_file):
    study = load_study(study_file("datasets: [synthetic]\nmethods: [base]\nparams: {lr: 1e-3, weight_decay: 5E-5}\n"))
    assert study.params == {"lr": 0.001, "weight_decay": 5e-5}


def test_trial_key_ignores_study_name_and_file_location(study_file, tiny_study):
    a = expand(load_study(study_file(tiny_study(name="one"), "a.yaml")))
    b = expand(load_study(study_file(tiny_study(name="two", methods=["base"]), "b.yaml")))
    assert b[0].key == a[0].key  # the same trial in two studies is one trial
    ref = DatasetRef(0, "d", {"name": "d", "interactions": "/x/a.tsv", "kcore": 5}, "h1")
    moved = dataclasses.replace(ref, spec={**ref.spec, "interactions": "/elsewhere/a.tsv"})
    t1 = make_trial(ref, "sasrec", "erl", {"reasoning_steps": 1}, 0, "ndcg@20")
    assert make_trial(moved, "sasrec", "erl", {"reasoning_steps": 1}, 0, "ndcg@20").key == t1.key
    for change in (dict(seed=1), dict(point={"reasoning_steps": 2}), dict(point={"reasoning_steps": 1, "tau": 0.5})):
        args = {"dataset": ref, "backbone": "sasrec", "method": "erl", "point": {"reasoning_steps": 1}, "seed": 0,
                "metric": "ndcg@20", **change}
        assert make_trial(**args).key != t1.key
    assert make_trial(dataclasses.replace(ref, content_hash="h2"), "sasrec", "erl", {"reasoning_steps": 1}, 0,
                      "ndcg@20").key != t1.key


def test_trial_spec_round_trip_checks_its_key():
    ref = placeholder_datasets(load_study(ROOT / "studies/quickstart.yaml"))[0]
    trial = make_trial(ref, "sasrec", "prl", {"reasoning_steps": 2, "tau": 1}, 0, "ndcg@20")
    assert trial.method["tau"] == 1.0 and isinstance(trial.method["tau"], float)  # 1 and 1.0 give one key
    assert TrialSpec.from_dict(trial.to_dict()) == trial
    with pytest.raises(ValueError, match="key does not match"):
        TrialSpec.from_dict({**trial.to_dict(), "seed": 0, "train": {**trial.train, "seed": 9}})
    ident = key_view(trial.configs())
    assert trial.key == trial_key(trial.dataset_spec, trial.dataset_hash, ident["model"], ident["method"], ident["train"])
    # stored settings carry every setting the trial reads; the key leaves out those at their legacy value
    assert trial.method["rcl_similarity"] == "dot" and "rcl_similarity" not in ident["method"]
    assert canonical_json({"b": (1, 2.5), "a": None}) == '{"a":null,"b":[1,2.5]}'


def test_optuna_groups_spaces_and_resolution(study_file, tiny_study):
    raw = tiny_study(search={"algorithm": "optuna", "num_samples": 4}, seeds=[0, 1],
                     methods=[{"name": "erl", "reasoning_steps": {"values": [1, 2]},
                               "kl_lambda": {"low": 0.001, "high": 0.1, "log": True}}],
                     params={**tiny_study()["params"], "num_layers": {"low": 1, "high": 3}})
    study = parse_study(raw, "s.yaml")
    groups = search_groups(study)
    assert len(groups) == 2 and {g.seed for g in groups} == {0, 1}
    g = groups[0]
    assert isinstance(g.space["kl_lambda"], Range) and g.space["kl_lambda"].log
    assert isinstance(g.space["reasoning_steps"], Choice) and g.space["num_layers"].integer
    config = g.to_config("ndcg@20")
    trial = resolve_point(config, {"kl_lambda": 0.02, "reasoning_steps": 2, "num_layers": 2.7})
    assert trial.method["kl_lambda"] == 0.02 and trial.model["num_layers"] == 3 and trial.seed == 0
    assert g.contains(trial.params()) == {"kl_lambda": 0.02, "reasoning_steps": 2, "num_layers": 3}
    assert g.contains({**trial.params(), "hidden_size": 32}) is None  # a pinned value differs
    assert g.max_epochs() == 2
