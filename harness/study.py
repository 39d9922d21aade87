"""Study files: the schema, strict parsing with "did you mean", and `--set key=value` overrides.

A study names datasets, backbones and methods, fixed settings (`params`), grids (lists), search spaces
(`{values: [...]}` or `{low, high, log}` with values, not exponents), one-at-a-time sensitivity blocks,
seeds, resources per trial, concurrency, the selection metric (validation only) and the search
algorithm. `studies/README.md` documents the schema; `harness.expand` turns a Study into trials.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rearec.config import BACKBONES, METHODS, METRICS, MethodConfig, ModelConfig, TrainConfig
from rearec.errors import ConfigError, did_you_mean, from_dict, reject_unknown

from .errors import StudyError
from .overrides import apply_overrides
from .yamlio import load_yaml_file

# Flat parameter names -> the rearec config section they belong to.
SECTIONS: dict[str, type] = {"model": ModelConfig, "method": MethodConfig, "train": TrainConfig}
PARAMS: dict[str, str] = {}
for _section, _cls in SECTIONS.items():
    for _f in dataclasses.fields(_cls):
        if _f.name in PARAMS:  # pragma: no cover - guarded by a test too
            raise RuntimeError(f"parameter {_f.name!r} is in two config sections")
        PARAMS[_f.name] = _section
# Set by other study keys, not by `params`.
RESERVED = {"backbone": "backbones", "name": "methods[i].name", "seed": "seeds",
            "selection_metric": "selection.metric"}
TOP_KEYS = ("name", "description", "datasets", "backbones", "methods", "params", "sensitivity", "seeds",
            "selection", "search", "asha", "resources", "concurrency")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
Scalar = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Choice:
    """A grid axis (`[a, b]` or `{values: [a, b]}`); a categorical dimension under Optuna."""

    values: tuple
    source: str


@dataclass(frozen=True)
class Range:
    """`{low, high, log}`: a continuous (or integer, for integer parameters) Optuna dimension."""

    low: float
    high: float
    log: bool
    integer: bool
    source: str


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0

    def __post_init__(self) -> None:
        if not self.cpu > 0:
            raise ConfigError("cpu", f"must be > 0, got {self.cpu!r}")
        if not self.gpu >= 0:
            raise ConfigError("gpu", f"must be >= 0, got {self.gpu!r}")
        if self.gpu > 1 and self.gpu != int(self.gpu):
            raise ConfigError("gpu", f"a share above 1 must be a whole number of GPUs, got {self.gpu!r}")


@dataclass(frozen=True)
class Selection:
    metric: str = "ndcg@20"
    mode: Literal["max"] = "max"  # every metric is higher-is-better, and fit keeps the maximum

    def __post_init__(self) -> None:
        split, _, name = self.metric.rpartition("/")
        if split == "test":
            raise ConfigError("metric", f"{self.metric!r} is a test metric; selection uses validation metrics "
                              f"only: {', '.join('valid/' + m for m in METRICS)}")
        if split not in ("", "valid") or name not in METRICS:
            raise ConfigError("metric", f"unknown metric {self.metric!r}{did_you_mean(name, METRICS)}; "
                              f"choose one of {', '.join('valid/' + m for m in METRICS)}")

    @property
    def name(self) -> str:
        return self.metric.rpartition("/")[2]


@dataclass(frozen=True)
class Search:
    algorithm: Literal["grid", "optuna"] = "grid"
    num_samples: int = 20  # Optuna trial budget per (dataset, backbone, method entry, seed)
    seed: int = 0  # the TPE sampler's seed

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ConfigError("num_samples", f"must be >= 1, got {self.num_samples!r}")


@dataclass(frozen=True)
class Asha:
    grace_period: int = 1  # epochs before the first pruning decision
    reduction_factor: float = 2.0

    def __post_init__(self) -> None:
        if self.grace_period < 1:
            raise ConfigError("grace_period", f"must be >= 1, got {self.grace_period!r}")
        if not self.reduction_factor > 1:
            raise ConfigError("reduction_factor", f"must be > 1, got {self.reduction_factor!r}")


@dataclass(frozen=True)
class MethodEntry:
    name: str
    params: Mapping[str, Any]  # name -> scalar | Choice | Range
    sensitivity: Mapping[str, Choice]
    path: str  # e.g. "methods[2]"
    sources: Mapping[str, str]  # param name -> key path of its value


@dataclass(frozen=True)
class Study:
    name: str
    file: str
    datasets: tuple  # str names or mappings, as rearec.data.DatasetSpec.from_dict takes them
    backbones: tuple[str, ...]
    methods: tuple[MethodEntry, ...]
    params: Mapping[str, Any]
    sensitivity: Mapping[str, Choice]
    seeds: tuple[int, ...]
    selection: Selection = Selection()
    search: Search = Search()
    asha: Asha | None = None
    resources: Resources = Resources()
    concurrency: int | None = None
    description: str = ""
    sources: Mapping[str, str] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)  # the mapping after --set

    @property
    def metric(self) -> str:
        """The reported metric name Ray Tune selects on (running best on validation)."""
        return f"best_valid/{self.selection.name}"

    def error(self, path: str, problem: str) -> StudyError:
        return StudyError(self.file, path, problem)


# ---------------------------------------------------------------------------------------- parsing
def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "true/false",
            type(None): "null"}.get(type(value), type(value).__name__)


def _field_type(name: str) -> Any:
    """The declared type of a parameter, with Optional removed (`float | None` -> float)."""
    tp = typing.get_type_hints(SECTIONS[PARAMS[name]])[name]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1 else tp


def _param_name(name: Any, path: str, extra: tuple = ()) -> str:
    if name in RESERVED and name not in extra:
        raise ConfigError(path, f"{name!r} is not set here; use {RESERVED[name]}")
    if name not in PARAMS:
        raise ConfigError(path, f"unknown key{did_you_mean(str(name), [*PARAMS, *extra])}; parameters are the "
                          "fields of rearec ModelConfig, MethodConfig and TrainConfig")
    return name


def _choice(values: Any, path: str) -> Choice:
    if not isinstance(values, list) or not values:
        raise ConfigError(path, f"expected a non-empty list of values, got {_kind(values)}")
    for i, v in enumerate(values):
        if not isinstance(v, Scalar):
            raise ConfigError(f"{path}[{i}]", f"expected a single value, got {_kind(v)}")
    return Choice(tuple(values), path)


def _range(name: str, spec: Mapping, path: str) -> Range:
    reject_unknown(spec, ("low", "high", "log"), path)
    for key in ("low", "high"):
        if key not in spec:
            raise ConfigError(f"{path}.{key}", "missing; a search range needs low and high (values, not exponents)")
        v = spec[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{path}.{key}", f"expected a number, got {v!r}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{path}.log", f"expected true/false, got {log!r}")
    low, high = spec["low"], spec["high"]
    if not low < high:
        raise ConfigError(path, f"low ({low!r}) must be below high ({high!r})")
    if log and low <= 0:
        raise ConfigError(f"{path}.low", f"a log range needs low > 0 (values, not exponents), got {low!r}")
    tp = _field_type(name)
    if tp not in (int, float):
        raise ConfigError(path, f"{name!r} is not numeric; use a list or {{values: [...]}}")
    if tp is int and (low != int(low) or high != int(high)):
        raise ConfigError(path, f"{name!r} is an integer parameter; low and high must be integers")
    cast = int if tp is int else float
    return Range(cast(low), cast(high), log, tp is int, path)


def _param_value(name: str, value: Any, path: str) -> Any:
    if isinstance(value, list):
        return _choice(value, path)
    if isinstance(value, dict):
        if "values" in value:
            reject_unknown(value, ("values",), path)
            return _choice(value["values"], f"{path}.values")
        if "low" in value or "high" in value:
            return _range(name, value, path)
        raise ConfigError(path, "a mapping here must be {values: [...]} or {low, high, log}"
                          + (did_you_mean(str(next(iter(value))), ("values", "low", "high", "log")) if value else ""))
    return value


def _params(mapping: Any, path: str, skip: tuple = ()) -> tuple[dict, dict]:
    """Parameters of `params:` or of a method entry (``skip`` = the entry's own keys)."""
    if mapping is None:
        return {}, {}
    if not isinstance(mapping, dict):
        raise ConfigError(path, f"expected a mapping of parameter: value, got {_kind(mapping)}")
    out, sources = {}, {}
    for name, value in mapping.items():
        if name in skip:
            continue
        where = f"{path}.{name}" if path else str(name)
        out[_param_name(name, where, skip)] = _param_value(name, value, where)
        sources[name] = where
    return out, sources


def _sensitivity(mapping: Any, path: str) -> dict[str, Choice]:
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise ConfigError(path, f"expected a mapping of parameter: [values], got {_kind(mapping)}")
    return {_param_name(k, f"{path}.{k}"): _choice(v, f"{path}.{k}") for k, v in mapping.items()}


def _method(entry: Any, path: str) -> MethodEntry:
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict):
        raise ConfigError(path, f"expected a method name or a mapping with 'name', got {_kind(entry)}")
    name = entry.get("name")
    if name is None:
        raise ConfigError(f"{path}.name", f"missing; choose one of {', '.join(METHODS)}")
    if name not in METHODS:
        raise ConfigError(f"{path}.name", f"unknown method {name!r}{did_you_mean(str(name), METHODS)}; "
                          f"choose one of {', '.join(METHODS)}")
    params, sources = _params(entry, path, skip=("name", "sensitivity"))
    sensitivity = _sensitivity(entry.get("sensitivity"), f"{path}.sensitivity")
    return MethodEntry(name, params, sensitivity, path, sources)


def _list(raw: Mapping, key: str, default: list | None = None) -> list:
    value = raw.get(key, default)
    if value is None:
        raise ConfigError(key, "missing; it is required")
    if not isinstance(value, list):
        value = [value]  # a single dataset / backbone / method / seed is fine
    if not value:
        raise ConfigError(key, "must not be empty")
    return value


def _section(cls: type, raw: Mapping, key: str) -> Any:
    value = raw.get(key)
    if value is True and cls is Asha:
        return Asha()
    if value is None or value is False:
        return None if cls is Asha else cls()
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected a mapping, got {_kind(value)}")
    return from_dict(cls, value, key)


def parse_study(raw: Any, file: str) -> Study:
    """Validate the schema of a study mapping (values are checked again when trials are built)."""
    if not isinstance(raw, dict):
        raise StudyError(file, "", f"a study file must be a mapping of keys, got {_kind(raw)}")
    try:
        reject_unknown(raw, TOP_KEYS)
        name = raw.get("name", Path(file).stem)
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ConfigError("name", f"must be letters, digits, '_', '.', '-' (used as a directory), got {name!r}")
        description = raw.get("description", "")
        if not isinstance(description, str):
            raise ConfigError("description", f"expected a string, got {_kind(description)}")
        datasets = _list(raw, "datasets")
        for i, d in enumerate(datasets):
            if not isinstance(d, (str, dict)):
                raise ConfigError(f"datasets[{i}]", f"expected a dataset name or a mapping, got {_kind(d)}")
        backbones = _list(raw, "backbones", ["sasrec"])
        for i, b in enumerate(backbones):
            if not isinstance(b, str):
                raise ConfigError(f"backbones[{i}]", f"expected a backbone name, got {_kind(b)}")
            if b not in BACKBONES:
                raise ConfigError(f"backbones[{i}]", f"unknown backbone {b!r}{did_you_mean(b, BACKBONES)}; "
                                  f"choose one of {', '.join(BACKBONES)}")
        methods = tuple(_method(m, f"methods[{i}]") for i, m in enumerate(_list(raw, "methods")))
        params, sources = _params(raw.get("params"), "params")
        sensitivity = _sensitivity(raw.get("sensitivity"), "sensitivity")
        seeds = _list(raw, "seeds", [0])
        for i, s in enumerate(seeds):
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                raise ConfigError(f"seeds[{i}]", f"expected a non-negative integer, got {s!r}")
        if len(set(seeds)) != len(seeds):
            raise ConfigError("seeds", f"repeated seeds in {seeds}")
        concurrency = raw.get("concurrency")
        if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int)
                                        or concurrency < 1):
            raise ConfigError("concurrency", f"expected an integer >= 1 (or null for as many as fit), got {concurrency!r}")
        study = Study(
            name=name, file=file, datasets=tuple(datasets), backbones=tuple(backbones), methods=methods,
            params=params, sensitivity=sensitivity, seeds=tuple(seeds),
            selection=_section(Selection, raw, "selection"), search=_section(Search, raw, "search"),
            asha=_section(Asha, raw, "asha"), resources=_section(Resources, raw, "resources"),
            concurrency=concurrency, description=description, sources=sources, raw=raw,
        )
    except ConfigError as exc:
        raise StudyError.from_config_error(file, exc) from None
    _check_search(study)
    return study


def _check_search(study: Study) -> None:
    """Ranges need Optuna; sensitivity blocks need the grid; a parameter is varied in one way only."""
    blocks = [("", study.params, study.sensitivity, study.sources)]
    blocks += [(m.path, m.params, m.sensitivity, m.sources) for m in study.methods]
    for _, params, sensitivity, sources in blocks:
        for name, value in params.items():
            if isinstance(value, Range) and study.search.algorithm != "optuna":
                raise study.error(value.source, "a {low, high} range needs search.algorithm: optuna "
                                  "(use a list for a grid)")
            if name in sensitivity or name in study.sensitivity:
                if isinstance(value, (Choice, Range)):
                    raise study.error(sources[name], f"{name!r} is varied both here and in a sensitivity block")
        if sensitivity and study.search.algorithm != "grid":
            raise study.error(next(iter(sensitivity.values())).source,
                              "sensitivity blocks need search.algorithm: grid")
    if study.sensitivity and study.search.algorithm != "grid":
        raise study.error("sensitivity", "sensitivity blocks need search.algorithm: grid")


def load_study(path: str | Path, overrides: list[str] | None = None) -> Study:
    """Read, override and validate a study file (schema and every trial's configs; no dataset I/O)."""
    raw = load_yaml_file(path)
    raw = apply_overrides(raw, list(overrides or []))
    return parse_study(raw, str(path))
