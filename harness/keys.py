"""Trial identity: a sha256 of the canonical JSON of everything that determines a trial's result.

The key covers the dataset (its resolved preprocessing and split parameters plus the content hash of
the processed splits), the model, method and training settings (the seed is `train.seed`) and the
evaluation protocol. It never covers the study name, the device or where files live, so the same
trial declared by two studies runs once and belongs to both. Which settings enter it follows
rearec/identity.py: a setting added later stays out while it reproduces the old behaviour, so keys
last as the configuration grows (tests/test_trial_keys.py pins them).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rearec.config import METRICS, MethodConfig, ModelConfig, TrainConfig
from rearec.identity import Trial, key_view, resolved

# The evaluation protocol every trial is measured under (stored with results; bump `version` when the
# meaning of a metric changes so old results are not reused).
PROTOCOL: dict[str, Any] = {
    "version": 1,
    "ranking": "full",  # every item is a candidate
    "metrics": list(METRICS),
    "user_groups": "UG0..UG3: quartiles of untruncated history length",
    "item_groups": "IG0..IG3: target popularity groups of equal sample counts",
    "selection": "best epoch on validation; test only evaluated at that epoch",
}

# Dataset spec fields that say where files are, not what they contain: the content hash covers them
# (the same fields rearec.data.DatasetSpec.key_dict() leaves out).
LOCATION_FIELDS = ("interactions", "items", "raw_dir")


def _normalise(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"non-finite number {value!r} cannot be part of a trial key")
        return value
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return _normalise(value.item())
    return str(value)


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, tuples as lists, numpy scalars as Python numbers."""
    return json.dumps(_normalise(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def dataset_identity(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The dataset spec without file locations (moving a file keeps its trials' keys)."""
    return {k: v for k, v in spec.items() if k not in LOCATION_FIELDS}


def trial_key(dataset_spec: Mapping[str, Any], dataset_hash: str, model: Mapping[str, Any],
              method: Mapping[str, Any], train: Mapping[str, Any],
              protocol: Mapping[str, Any] = PROTOCOL) -> str:
    identity = {
        "dataset": dataset_identity(dataset_spec),
        "dataset_hash": dataset_hash,
        "model": dict(model),
        "method": dict(method),
        "train": dict(train),
        "protocol": dict(protocol),
    }
    return hashlib.sha256(canonical_json(identity).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TrialSpec:
    """A fully resolved trial: what the trial function needs to run it and the driver to store it."""

    key: str
    dataset: str  # the dataset's name (for tables)
    dataset_spec: dict  # resolved spec, as rearec.data.DatasetSpec.from_dict takes it (absolute paths)
    dataset_hash: str
    model: dict
    method: dict
    train: dict

    @property
    def seed(self) -> int:
        return int(self.train["seed"])

    @property
    def short(self) -> str:
        return self.key[:12]

    def label(self) -> str:
        m = self.method
        steps = f" K={m['reasoning_steps']}" if m.get("reasoning_steps") else ""
        return f"{self.dataset}/{self.model.get('backbone')}/{m['name']}{steps} seed={self.seed} [{self.short}]"

    def params(self) -> dict[str, Any]:
        """Every resolved setting, flat (the `params` JSON column)."""
        flat = {**self.model, **self.method, **self.train}
        flat.pop("name")
        return {**flat, "method": self.method["name"], "dataset": self.dataset, "dataset_spec": self.dataset_spec,
                "dataset_hash": self.dataset_hash, "protocol": PROTOCOL}

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "dataset": self.dataset, "dataset_spec": self.dataset_spec,
                "dataset_hash": self.dataset_hash, "model": self.model, "method": self.method, "train": self.train}

    @classmethod
    def build(cls, dataset: str, dataset_spec: dict, dataset_hash: str, configs: Trial) -> TrialSpec:
        """The spec of validated configs: stores what the trial reads, keys what identifies it."""
        ident = key_view(configs)
        key = trial_key(dataset_spec, dataset_hash, ident["model"], ident["method"], ident["train"])
        settings = resolved(configs)
        return cls(key, dataset, dataset_spec, dataset_hash, settings["model"], settings["method"], settings["train"])

    def configs(self) -> Trial:
        """The rearec configs this trial runs with."""
        return Trial(ModelConfig.from_dict(self.model), MethodConfig.from_dict(self.method),
                     TrainConfig.from_dict(self.train))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialSpec:
        spec = cls(**{k: data[k] for k in ("key", "dataset", "dataset_spec", "dataset_hash", "model", "method",
                                           "train")})
        expected = cls.build(spec.dataset, spec.dataset_spec, spec.dataset_hash, spec.configs()).key
        if expected != spec.key:
            raise ValueError(f"trial {spec.key[:12]}: key does not match its configuration (expected {expected[:12]})")
        return spec
