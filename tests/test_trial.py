"""The trial function without Ray: files in the trial directory, TensorBoard events read back, reports."""

from __future__ import annotations

import dataclasses
import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from harness.artifacts import read_output, trial_dir
from harness.datasets import resolve_datasets
from harness.expand import expand
from harness.study import load_study
from harness.trial import execute


@pytest.fixture(scope="module")
def erl_trial(tmp_path_factory, data_cache, tiny_study):
    path = tmp_path_factory.mktemp("study") / "s.yaml"
    path.write_text(json.dumps(tiny_study(methods=[{"name": "erl", "reasoning_steps": 2}])))
    study = load_study(path)
    (trial,) = expand(study, resolve_datasets(study, data_cache, log=lambda _: None))
    return trial


def test_execute_writes_results_and_tensorboard_events(tmp_path, data_cache, erl_trial):
    reports = []
    out = trial_dir(tmp_path / "runs", "tiny", erl_trial.key)
    (out / "stale").mkdir(parents=True)  # left by an interrupted attempt: removed
    output = execute(erl_trial, out, cache_dir=str(data_cache), threads=1, report=reports.append)
    assert out.name == erl_trial.key[:12] and not (out / "stale").exists()
    # per-epoch reports carry the validation metrics and the running best Ray Tune selects on
    assert [r["epoch"] for r in reports] == [1, 2]
    assert reports[-1]["best_valid/ndcg@20"] == max(r["valid/ndcg@20"] for r in reports)
    assert not any(k.startswith("test") for r in reports for k in r)  # the searcher never sees test
    # result files: metrics of steps 0..2 and the method output, for 'all' and 8 subgroups, both splits
    metrics = output.metrics
    assert set(metrics.split) == {"valid", "test"} and len(metrics) == 2 * 4 * 9 * 4
    assert metrics.step.isna().sum() == 2 * 9 * 4
    assert set(metrics.user_group) == {"all", *(f"user:UG{i}" for i in range(4)), *(f"item:IG{i}" for i in range(4))}
    assert len(output.epochs) == 2 and output.result["best_epoch"] in (1, 2)
    n_test = int((output.ranks.split == "test").sum()) // 4
    assert n_test > 0 and output.ranks.groupby(["split", "step"], dropna=False).size().nunique() == 2
    assert len(output.similarity) == 2 * 3 * 3
    # Table 4 timings of the trained model: test-set inference with and without the KV cache
    latency = {row["cached"]: row for row in output.result["latency"]}
    assert set(latency) == {True, False} and all(r["seconds"] > 0 and r["rows"] == n_test for r in latency.values())
    # what the driver reads back equals what the trial returned
    again = read_output(out, erl_trial.key)
    assert again is not None and again.result == json.loads((out / "result.json").read_text())
    assert read_output(out, "someone-else") is None
    # TensorBoard: train loss, validation metrics per epoch, per-step metrics, test at the best epoch
    events = EventAccumulator(str(out))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "valid/ndcg@20", "valid/recall@10", "test/ndcg@20"} <= tags
    assert {f"valid_by_step/ndcg@20/step_{k}" for k in range(3)} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    assert [round(e.value, 5) for e in events.Scalars("valid/ndcg@20")] == [round(r["valid/ndcg@20"], 5)
                                                                            for r in reports]


def test_execute_refuses_data_that_changed_since_planning(tmp_path, data_cache, erl_trial):
    from harness.keys import trial_key

    changed = dataclasses.replace(erl_trial, dataset_hash="0" * 64)
    changed = dataclasses.replace(changed, key=trial_key(changed.dataset_spec, changed.dataset_hash, changed.model,
                                                         changed.method, changed.train))
    with pytest.raises(RuntimeError, match="differs from the planned"):
        execute(changed, tmp_path / "t", cache_dir=str(data_cache))
    assert not (tmp_path / "t" / "result.json").exists()


@pytest.mark.text_extra
def test_text_backbones_get_encoded_item_text(tmp_path):
    """UniSRec / MoRec trials encode the items' text with the offline encoder; ID backbones get none."""
    from harness.trial import item_features
    from rearec.config import ModelConfig
    from rearec.data import load_dataset

    rows = ["user_id\titem_id\ttimestamp"] + [f"u{u}\ti{(u + t) % 7}\t{100 * t + u}" for u in range(12) for t in range(6)]
    (tmp_path / "inter.tsv").write_text("\n".join(rows) + "\n")
    (tmp_path / "items.tsv").write_text("item_id\ttitle\n" + "".join(f"i{i}\tGame number {i} &amp; more\n" for i in range(7)))
    data = load_dataset({"interactions": str(tmp_path / "inter.tsv"), "items": str(tmp_path / "items.tsv"),
                         "kcore": 1, "min_history_eval": 1, "split": {"method": "leave_one_out"}},
                        cache_dir=str(tmp_path / "cache"))
    assert item_features(ModelConfig(), data, str(tmp_path / "cache")) is None
    features = item_features(ModelConfig(backbone="unisrec", pca_dim=4), data, str(tmp_path / "cache"))
    assert features.shape == (data.n_items + 1, 4) and not features[0].any() and features[1:].any()
