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
from typing import Any, NamedTuple

from rearec.config import METRICS, MethodConfig, ModelConfig, TrainConfig
from rearec.identity import Trial, predicates, section_views

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


_PLAIN = (str, int, bool, type(None))


def _normalise(value: Any) -> Any:
    if type(value) in _PLAIN:  # the common case first (exact types; subclasses and numpy go below)
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"non-finite number {value!r} cannot be part of a trial key")
        return value
    if isinstance(value, dict | Mapping):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, (str, int, bool)):
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


# The same key, assembled from parts: canonical JSON sorts the top-level keys as dataset, dataset_hash,
# method, model, protocol, train, so '{' + head + body + '}' is canonical_json(identity) byte for byte
# (tests/test_plan_scale.py checks it against trial_key). A study expansion computes a trial's body once
# and its dataset's head once, whatever the number of datasets and trials.
class Identity(NamedTuple):
    """What a trial's configs contribute to its spec: the stored settings and the key's JSON body."""

    settings: dict[str, dict[str, Any]]  # section -> every setting the trial reads (shared: read-only)
    body: str  # '"method":{...},"model":{...},"protocol":{...},"train":{...}'


_PROTOCOL_JSON = canonical_json(PROTOCOL)  # once: PROTOCOL is a constant


def _flat_json(section: dict[str, Any]) -> str:
    """canonical_json of a mapping of plain values, without rebuilding it (the case of every config)."""
    for value in section.values():
        kind = type(value)
        if kind is float:
            if not math.isfinite(value):
                raise ValueError(f"non-finite number {value!r} cannot be part of a trial key")
        elif kind not in _PLAIN:
            return canonical_json(section)
    return json.dumps(section, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# (id(config), its predicates' outcomes) -> (config, settings read, keyed JSON). A study's trials share their
# config objects (harness.expand validates each distinct section once), so most sections are looked up here;
# the config is kept to make the id safe. Bounded: workers build fresh configs per trial and only miss.
_SECTION_VIEWS: dict[tuple, tuple[Any, dict[str, Any], str]] = {}
_SECTION_VIEWS_LIMIT = 50_000


def _section(cfg: Any, configs: Trial) -> tuple[dict[str, Any], str]:
    tests = predicates(type(cfg))
    outcomes = tuple(bool(test(configs)) for test in tests)
    cache_key = (id(cfg), outcomes)
    hit = _SECTION_VIEWS.get(cache_key)
    if hit is None or hit[0] is not cfg:
        read, keyed = section_views(cfg, dict(zip(tests, outcomes, strict=True)))
        if len(_SECTION_VIEWS) >= _SECTION_VIEWS_LIMIT:
            _SECTION_VIEWS.clear()
        hit = _SECTION_VIEWS[cache_key] = (cfg, read, _flat_json(keyed))
    return hit[1], hit[2]


def config_identity(configs: Trial) -> Identity:
    """Stored settings and key body of validated configs: rearec.identity decides what enters the key
    (section_views, as key_view and resolved do; tests/test_plan_scale.py checks it against the rule)."""
    (model, model_json), (method, method_json), (train, train_json) = (_section(cfg, configs) for cfg in configs)
    body = f'"method":{method_json},"model":{model_json},"protocol":{_PROTOCOL_JSON},"train":{train_json}'
    return Identity({"model": model, "method": method, "train": train}, body)


def dataset_head(dataset_spec: Mapping[str, Any], dataset_hash: str) -> str:
    return f'"dataset":{canonical_json(dataset_identity(dataset_spec))},"dataset_hash":{canonical_json(dataset_hash)},'


def key_of(head: str, body: str) -> str:
    return hashlib.sha256(f"{{{head}{body}}}".encode()).hexdigest()


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
        return cls.of(dataset, dataset_spec, dataset_hash, config_identity(configs))

    @classmethod
    def of(cls, dataset: str, dataset_spec: dict, dataset_hash: str, identity: Identity,
           head: str | None = None) -> TrialSpec:
        """The spec from a computed identity (``head``: dataset_head of the same dataset, if known)."""
        key = key_of(head if head is not None else dataset_head(dataset_spec, dataset_hash), identity.body)
        s = identity.settings
        return cls(key, dataset, dataset_spec, dataset_hash, s["model"], s["method"], s["train"])

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
