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
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from rearec.config import MethodConfig, ModelConfig, TrainConfig
from rearec.errors import ConfigError
from rearec.identity import Trial

from .errors import StudyError
from .keys import Identity, TrialSpec, canonical_json, config_identity, dataset_head
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


_CLASSES = {"model": ModelConfig, "method": MethodConfig, "train": TrainConfig}
# Validated config sections by content: a study's trials share most of their sections (a grid point varies a
# few settings), so each distinct section is validated once. Keys carry the value types (True == 1 in Python).
_SECTION_CACHE: dict[tuple, Any] = {}
_SECTION_CACHE_LIMIT = 50_000


def _config(section: str, data: dict[str, Any]) -> Any:
    try:
        # repr for floats: -0.0 == 0.0 in Python, but the two are different JSON (and so different keys)
        cache_key: tuple | None = (section, *((k, type(v), repr(v) if type(v) is float else v)
                                              for k, v in data.items()))
        cached = _SECTION_CACHE.get(cache_key)
    except TypeError:  # an unhashable value: validate it every time
        cache_key = cached = None
    if cached is not None:
        return cached
    try:
        config = _CLASSES[section].from_dict(data)
    except ConfigError as exc:
        field_name = exc.path.split(".")[0]
        raise ConfigError("name" if section == "method" and field_name == "method" else field_name,
                          exc.problem) from None
    if cache_key is not None:
        if len(_SECTION_CACHE) >= _SECTION_CACHE_LIMIT:
            _SECTION_CACHE.clear()
        _SECTION_CACHE[cache_key] = config
    return config


def trial_identity(backbone: str, method: str, point: Mapping[str, Any], seed: int, metric: str) -> Identity:
    """One trial's validated configs (ConfigError names the field) as stored settings and key body."""
    sections: dict[str, dict] = {"model": {"backbone": backbone}, "method": {"name": method},
                                 "train": {"seed": seed, "selection_metric": metric}}
    for name, value in point.items():
        sections[PARAMS[name]][name] = value
    configs = Trial(*(_config(name, sections[name]) for name in ("model", "method", "train")))
    return config_identity(configs)


def make_trial(dataset: DatasetRef, backbone: str, method: str, point: Mapping[str, Any], seed: int,
               metric: str) -> TrialSpec:
    """Resolve one trial's configs (validated by rearec; ConfigError names the field) and its key."""
    identity = trial_identity(backbone, method, point, seed, metric)
    return TrialSpec.of(dataset.name, dataset.spec, dataset.content_hash, identity)


def _located(study: Study, entry: MethodEntry, exc: ConfigError, sources: Mapping[str, str]) -> StudyError:
    """A config error pointing at the study key the offending value came from."""
    name = exc.path
    where = sources.get(name) or ("backbones" if name == "backbone" else entry.path)
    named = where.rsplit(".", 1)[-1].split("[")[0] == name
    return StudyError(study.file, where, exc.problem if named or not name else f"{name}: {exc.problem}")


def build_trial(study: Study, dataset: DatasetRef, backbone: str, entry: MethodEntry, point: Mapping[str, Any],
                seed: int, sources: Mapping[str, str]) -> TrialSpec:
    """make_trial, with errors pointing at the study key the offending value came from."""
    try:
        return make_trial(dataset, backbone, entry.name, point, seed, study.selection.name)
    except ConfigError as exc:
        raise _located(study, entry, exc, sources) from None


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


def _grid_points(params: Mapping[str, Any]) -> Iterator[tuple[dict, tuple[int, ...]]]:
    """(point, index of each axis value) for every combination of the grid axes, in declaration order."""
    pinned = {k: v for k, v in params.items() if not isinstance(v, (Choice, Range))}
    axes = [(k, v) for k, v in params.items() if isinstance(v, Choice)]
    for combo in itertools.product(*(range(len(c.values)) for _, c in axes)):
        point = dict(pinned)
        for (name, choice), i in zip(axes, combo, strict=True):
            point[name] = choice.values[i]
        yield point, combo


def _templates(study: Study) -> list[Identity]:
    """The distinct trial identities of a grid study, independent of the datasets' content (so planning
    before and after the datasets are resolved expands the study once), in declaration order."""
    cached = _TEMPLATES.get(id(study))
    if cached is not None and cached[0] is study:
        return cached[1]
    seen: dict[str, Identity] = {}
    metric = study.selection.name
    for backbone, entry in itertools.product(study.backbones, study.methods):
        params, sensitivity, sources = merged_params(study, entry)
        axes = [(k, v) for k, v in params.items() if isinstance(v, Choice)]
        for point, combo in _grid_points(params):
            for variant, variant_where in _variants(sensitivity):
                trial_point = {**point, **variant}
                for seed in study.seeds:
                    try:
                        identity = trial_identity(backbone, entry.name, trial_point, seed, metric)
                    except ConfigError as exc:  # only now work out where each value came from
                        where = {**sources, **{name: f"{choice.source}[{i}]"
                                               for (name, choice), i in zip(axes, combo, strict=True)},
                                 **variant_where}
                        raise _located(study, entry, exc, where) from None
                    seen.setdefault(identity.body, identity)
    templates = list(seen.values())
    if len(_TEMPLATES) >= 4:
        _TEMPLATES.clear()
    _TEMPLATES[id(study)] = (study, templates)
    return templates


_TEMPLATES: dict[int, tuple[Study, list[Identity]]] = {}  # id(study) -> (study, its identities): a few studies


def expand(study: Study, datasets: list[DatasetRef] | None = None) -> list[TrialSpec]:
    """Every trial of a grid study, in declaration order, without duplicates."""
    datasets = datasets if datasets is not None else placeholder_datasets(study)
    templates = _templates(study)
    trials: dict[str, TrialSpec] = {}
    for dataset in datasets:
        head = dataset_head(dataset.spec, dataset.content_hash)
        for identity in templates:
            trial = TrialSpec.of(dataset.name, dataset.spec, dataset.content_hash, identity, head)
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

    @property
    def cardinality(self) -> int | None:
        """How many distinct configurations the space holds (None: a continuous range, unbounded)."""
        total = 1
        for dim in self.space.values():
            if isinstance(dim, Choice):
                total *= len(set(dim.values))  # [1, 1.0] is one value, as in a trial key
            elif dim.integer:
                total *= int(dim.high) - int(dim.low) + 1
            else:
                return None
        return total

    def budget(self, num_samples: int) -> int:
        """Trials this search runs in all: num_samples, or fewer when the space has fewer configurations
        (a configuration is never evaluated twice)."""
        cardinality = self.cardinality
        return num_samples if cardinality is None else min(num_samples, cardinality)

    def max_epochs(self) -> int:
        dim = self.space.get("max_epochs")
        if isinstance(dim, Choice):
            return int(max(dim.values))
        if isinstance(dim, Range):
            return int(dim.high)
        return int(self.pinned.get("max_epochs", TrainConfig().max_epochs))

    def contains(self, params: Mapping[str, Any]) -> dict | None:
        """The sampled values of a stored trial's flat params if it belongs to this group, else None."""
        if (params.get("backbone"), params.get("method"), params.get("seed")) != (self.backbone, self.entry.name,
                                                                                  self.seed):
            return None
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


DEFAULT_MAX_TRIALS = 100_000  # `harness plan` / `run` refuse larger studies unless --max-trials raises it


@dataclass(frozen=True)
class StudySize:
    """A study's trial count from its axes alone (nothing expanded), and how it was computed.

    Grid: datasets x backbones x seeds x the sum over method entries of (grid product x sensitivity
    values); an upper bound, since identical trials (a one-at-a-time value equal to its pinned value, a
    repeated list value) are merged only when expanded. Optuna: datasets x backbones x seeds x the sum
    over entries of the search budget (num_samples, or the size of a smaller discrete space), exact."""

    total: int
    exact: bool
    text: str  # e.g. "datasets 2 x backbones 1 x seeds 3 x (methods[0] base 1 + methods[1] erl: kl_lambda 5 = 5)"


def _product_text(parts: list[tuple[str, int]], sep: str = " x ") -> str:
    return sep.join(f"{name} {n:,}" for name, n in parts)


def _at_baseline(params: Mapping[str, Any], sensitivity: Mapping[str, Choice]) -> int:
    """How many one-at-a-time values equal their parameter's pinned value (or default): those variants are
    all the same trial, the pinned point."""
    merged = 0
    for name, choice in sensitivity.items():
        if name in params:
            baseline = params[name]
        else:
            field_ = next(f for f in dataclasses.fields(_CLASSES[PARAMS[name]]) if f.name == name)
            baseline = field_.default
        merged += baseline in set(choice.values)
    return merged


def study_size(study: Study) -> StudySize:
    shared = [("datasets", len(study.datasets)), ("backbones", len(study.backbones)), ("seeds", len(study.seeds))]
    entries, total_per_cell = [], 0
    for entry in study.methods:
        params, sensitivity, _ = merged_params(study, entry)
        label = f"{entry.path} {entry.name}"
        if study.search.algorithm == "grid":
            axes = [(name, len(set(v.values))) for name, v in params.items() if isinstance(v, Choice)]
            count = math.prod(n for _, n in axes)
            text = _product_text(axes)
            if sensitivity:
                variants = [(name, len(set(choice.values))) for name, choice in sensitivity.items()]
                merged = _at_baseline(params, sensitivity)
                count *= sum(n for _, n in variants) - max(0, merged - 1)
                one_at_a_time = (f"one-at-a-time ({_product_text(variants, ' + ')}"
                                 + (f", the pinned point once instead of {merged} times" if merged > 1 else "") + ")")
                text = f"{text} x {one_at_a_time}" if text else one_at_a_time
        else:
            space = {k: v for k, v in params.items() if isinstance(v, (Choice, Range))}
            group = SearchGroup(DatasetRef(0, "", {}), "", entry, 0, {}, space)
            count = group.budget(study.search.num_samples)
            text = f"num_samples {study.search.num_samples:,}" + (
                f", capped at the {group.cardinality:,} configurations of its space"
                if count < study.search.num_samples else "")
        entries.append(f"{label}: {text} = {count:,}" if text else f"{label} {count:,}")
        total_per_cell += count
    total = math.prod(n for _, n in shared) * total_per_cell
    text = f"{_product_text(shared)} x ({' + '.join(entries)})"
    return StudySize(total, study.search.algorithm != "grid", text)


def check_size(study: Study, max_trials: int = DEFAULT_MAX_TRIALS) -> StudySize:
    """Refuse a study above ``max_trials`` before expanding anything (planning is per trial)."""
    size = study_size(study)
    if size.total > max_trials:
        raise StudyError(study.file, "", f"{'at most ' if not size.exact else ''}{size.total:,} trials = {size.text}; "
                         f"that is above the limit of {max_trials:,} trials per study: shrink an axis, or pass "
                         f"--max-trials {size.total} if you mean it (each trial is planned, stored and scheduled)")
    return size


def validate(study: Study, max_trials: int = DEFAULT_MAX_TRIALS) -> int:
    """Check the study's size, then every trial's configs, without touching datasets; returns the trial count."""
    check_size(study, max_trials)
    if study.search.algorithm == "grid":
        return len(expand(study))
    groups = search_groups(study)
    return sum(group.budget(study.search.num_samples) for group in groups)
