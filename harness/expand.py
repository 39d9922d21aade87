"""Study expansion: grids, one-at-a-time sensitivity blocks, seeds and Optuna search groups -> trials.

Pure functions of a parsed Study and its resolved datasets. A method entry's trials are
datasets x backbones x (grid product) x (sensitivity variants) x seeds; identical trials (same key)
appear once. Every value is checked by building the rearec configs, and an error points at the
study key the offending value came from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from rearec.config import MethodConfig, ModelConfig, TrainConfig
from rearec.errors import ConfigError
from rearec.identity import Trial

from .errors import StudyError
from .keys import TrialSpec, canonical_json
from .study import PARAMS, Choice, MethodEntry, Range, Study

UNRESOLVED = "unresolved"  # content hash placeholder used while validating without dataset I/O


@dataclass(frozen=True)
class DatasetRef:
    """A study's dataset after resolution: its name, loadable spec and processed-content hash."""

    index: int
    name: str
    spec: dict
    content_hash: str = UNRESOLVED


def placeholder_datasets(study: Study) -> list[DatasetRef]:
    refs = []
    for i, entry in enumerate(study.datasets):
        name = entry if isinstance(entry, str) else str(entry.get("name", f"dataset{i}"))
        refs.append(DatasetRef(i, name, {"name": entry} if isinstance(entry, str) else dict(entry)))
    return refs


def _configs(point: Mapping[str, Any], backbone: str, method: str, seed: int, metric: str) -> dict[str, dict]:
    sections: dict[str, dict] = {"model": {"backbone": backbone}, "method": {"name": method},
                                 "train": {"seed": seed, "selection_metric": metric}}
    for name, value in point.items():
        sections[PARAMS[name]][name] = value
    return sections


_CLASSES = (("model", ModelConfig), ("method", MethodConfig), ("train", TrainConfig))


def make_trial(dataset: DatasetRef, backbone: str, method: str, point: Mapping[str, Any], seed: int,
               metric: str) -> TrialSpec:
    """Resolve one trial's configs (validated by rearec; ConfigError names the field) and its key."""
    sections = _configs(point, backbone, method, seed, metric)
    configs = {}
    for section, cls in _CLASSES:
        try:
            configs[section] = cls.from_dict(sections[section])
        except ConfigError as exc:
            field_name = exc.path.split(".")[0]
            raise ConfigError("name" if section == "method" and field_name == "method" else field_name,
                              exc.problem) from None
    return TrialSpec.build(dataset.name, dataset.spec, dataset.content_hash, Trial(**configs))


def build_trial(study: Study, dataset: DatasetRef, backbone: str, entry: MethodEntry, point: Mapping[str, Any],
                seed: int, sources: Mapping[str, str]) -> TrialSpec:
    """make_trial, with errors pointing at the study key the offending value came from."""
    try:
        return make_trial(dataset, backbone, entry.name, point, seed, study.selection.name)
    except ConfigError as exc:
        name = exc.path
        where = sources.get(name) or ("backbones" if name == "backbone" else entry.path)
        named = where.rsplit(".", 1)[-1].split("[")[0] == name
        raise StudyError(study.file, where, exc.problem if named or not name else f"{name}: {exc.problem}") from None


def resolve_point(group: Mapping[str, Any], sampled: Mapping[str, Any]) -> TrialSpec:
    """An Optuna trial's TrialSpec from its group (SearchGroup.to_config()) and the sampled values."""
    values = {k: (int(round(v)) if k in group["integer"] else v) for k, v in sampled.items()}
    dataset = DatasetRef(**group["dataset"])
    return make_trial(dataset, group["backbone"], group["method"], {**group["pinned"], **values}, group["seed"],
                      group["metric"])


def merged_params(study: Study, entry: MethodEntry) -> tuple[dict, dict, dict]:
    """(params, sensitivity, sources) of a method entry: the entry's own settings override `params`."""
    params, sensitivity, sources = dict(study.params), dict(study.sensitivity), dict(study.sources)
    if entry.name == "base":  # base has no reasoning steps whatever the study-wide K is
        params.pop("reasoning_steps", None)
        sensitivity.pop("reasoning_steps", None)
    params.update(entry.params)
    sensitivity.update(entry.sensitivity)
    sources.update(entry.sources)
    return params, sensitivity, sources


def _variants(sensitivity: Mapping[str, Choice]) -> list[tuple[dict, dict]]:
    """One-at-a-time: each sensitivity value replaces its parameter while the others stay pinned."""
    if not sensitivity:
        return [({}, {})]
    return [({name: v}, {name: f"{choice.source}[{i}]"})
            for name, choice in sensitivity.items() for i, v in enumerate(choice.values)]


def _grid_points(params: Mapping[str, Any], sources: Mapping[str, str]) -> Iterator[tuple[dict, dict]]:
    pinned = {k: v for k, v in params.items() if not isinstance(v, (Choice, Range))}
    axes = [(k, v) for k, v in params.items() if isinstance(v, Choice)]
    for combo in itertools.product(*(range(len(c.values)) for _, c in axes)):
        point, where = dict(pinned), dict(sources)
        for (name, choice), i in zip(axes, combo, strict=True):
            point[name], where[name] = choice.values[i], f"{choice.source}[{i}]"
        yield point, where


def expand(study: Study, datasets: list[DatasetRef] | None = None) -> list[TrialSpec]:
    """Every trial of a grid study, in declaration order, without duplicates."""
    datasets = datasets if datasets is not None else placeholder_datasets(study)
    trials: dict[str, TrialSpec] = {}
    for dataset, backbone, entry in itertools.product(datasets, study.backbones, study.methods):
        params, sensitivity, sources = merged_params(study, entry)
        for point, where in _grid_points(params, sources):
            for variant, variant_where in _variants(sensitivity):
                for seed in study.seeds:
                    trial = build_trial(study, dataset, backbone, entry, {**point, **variant}, seed,
                                        {**where, **variant_where})
                    trials.setdefault(trial.key, trial)
    return list(trials.values())


@dataclass(frozen=True)
class SearchGroup:
    """One Optuna TPE search: a dataset x backbone x method entry x seed with its own budget."""

    dataset: DatasetRef
    backbone: str
    entry: MethodEntry
    seed: int
    pinned: dict
    space: dict  # name -> Choice | Range
    sources: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        ident = [self.dataset.spec, self.dataset.content_hash, self.backbone, self.entry.name, self.seed,
                 self.pinned, {k: repr(v.values if isinstance(v, Choice) else (v.low, v.high, v.log))
                               for k, v in self.space.items()}]
        return hashlib.sha256(canonical_json(ident).encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        return f"{self.dataset.name}/{self.backbone}/{self.entry.name} seed={self.seed}"

    def to_config(self, metric: str) -> dict[str, Any]:
        """Plain JSON that travels in the Ray trial config (resolve_point turns it back into trials)."""
        return {"id": self.id, "label": self.label, "dataset": dataclasses.asdict(self.dataset),
                "backbone": self.backbone, "method": self.entry.name, "seed": self.seed, "metric": metric,
                "pinned": self.pinned,
                "integer": [k for k, v in self.space.items() if isinstance(v, Range) and v.integer]}

    def max_epochs(self) -> int:
        dim = self.space.get("max_epochs")
        if isinstance(dim, Choice):
            return int(max(dim.values))
        if isinstance(dim, Range):
            return int(dim.high)
        return int(self.pinned.get("max_epochs", TrainConfig().max_epochs))

    def contains(self, params: Mapping[str, Any]) -> dict | None:
        """The sampled values of a stored trial's flat params if it belongs to this group, else None."""
        for name, value in self.pinned.items():
            if params.get(name) != value:
                return None
        point = {}
        for name, dim in self.space.items():
            value = params.get(name)
            if isinstance(dim, Choice) and value not in dim.values:
                return None
            if isinstance(dim, Range) and not (isinstance(value, (int, float)) and dim.low <= value <= dim.high):
                return None
            point[name] = value
        return point


def search_groups(study: Study, datasets: list[DatasetRef] | None = None) -> list[SearchGroup]:
    """Optuna studies: the groups, each validated at every choice and both ends of every range."""
    datasets = datasets if datasets is not None else placeholder_datasets(study)
    groups = []
    for dataset, backbone, entry in itertools.product(datasets, study.backbones, study.methods):
        params, _, sources = merged_params(study, entry)
        pinned = {k: v for k, v in params.items() if not isinstance(v, (Choice, Range))}
        space = {k: v for k, v in params.items() if isinstance(v, (Choice, Range))}
        for seed in study.seeds:
            group = SearchGroup(dataset, backbone, entry, seed, pinned, space, sources)
            first = {k: (d.values[0] if isinstance(d, Choice) else d.low) for k, d in space.items()}
            for name, dim in space.items():  # every choice and both ends of every range, one at a time
                for i, value in enumerate(dim.values if isinstance(dim, Choice) else (dim.low, dim.high)):
                    where = f"{dim.source}[{i}]" if isinstance(dim, Choice) else dim.source
                    build_trial(study, dataset, backbone, entry, {**pinned, **first, name: value}, seed,
                                {**sources, name: where})
            build_trial(study, dataset, backbone, entry, {**pinned, **first}, seed, sources)
            groups.append(group)
    return groups


def validate(study: Study) -> int:
    """Check every trial's configs without touching datasets; returns the planned trial count."""
    if study.search.algorithm == "grid":
        return len(expand(study))
    return len(search_groups(study)) * study.search.num_samples
