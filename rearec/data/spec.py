"""What a dataset is: the frozen DatasetSpec (source, files, preprocessing, split) and the built-in presets.

A spec is built from a built-in name (``"yelp"``) or a mapping. Presets follow the authors' released
notebooks (docs/released-code.md, "Data preparation") rather than the paper's prose where the two differ:

- Yelp: stars > 3 on every interaction, iterative 20-core (users and items, no dedup), split at 80 % / 90 %
  of the time span (train <= t80 < valid <= t90 < test), histories >= 5 in every split.
- Amazon 2023: the official 5-core files (all ratings, user-item dedup keeping the earliest), official
  absolute cuts (valid from 1628643414042 ms, test from 1658002729837 ms), rating > 3 on *targets only*
  (histories keep every rating), train targets and their history items must have a title, train history
  >= 1 (Software and CDs >= 10), eval history >= 5 (CDs >= 10). The paper's "10 interactions for CDs" is
  this minimum history length in the notebooks, not a 10-core; set ``kcore: 10`` for a literal 10-core.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError, did_you_mean, from_dict
from .folders import resolve_folder

SOURCES = ("synthetic", "table", "amazon2023", "yelp")
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".inter", ".parquet", ".pq", ".gz")

# Official Amazon Reviews 2023 benchmark cuts (timestamp_split.py), milliseconds.
AMAZON_VALID_FROM_MS = 1628643414042
AMAZON_TEST_FROM_MS = 1658002729837


@dataclass(frozen=True)
class SplitSpec:
    """How interactions are assigned to train / valid / test (each interaction is one candidate row).

    absolute: timestamp >= valid_from -> valid, >= test_from -> test (the Amazon 2023 convention).
    quantile: t_v = min + valid_quantile * (max - min); train <= t_v < valid <= t_t < test (the Yelp notebook).
    leave_one_out: each user's last interaction -> test, second-last -> valid.
    Cuts may be numbers in the dataset's timestamp units or ISO dates (converted with timestamp_unit, UTC).
    """

    method: Literal["absolute", "quantile", "leave_one_out"] = "quantile"
    valid_from: int | float | str | None = None
    test_from: int | float | str | None = None
    valid_quantile: float = 0.8
    test_quantile: float = 0.9

    def __post_init__(self) -> None:
        if self.method == "absolute":
            for name in ("valid_from", "test_from"):
                if getattr(self, name) is None:
                    raise ConfigError(name, "required when method is 'absolute'")
            if isinstance(self.valid_from, (int, float)) and isinstance(self.test_from, (int, float)):
                if not self.valid_from < self.test_from:
                    raise ConfigError("test_from", f"must be after valid_from ({self.valid_from!r}), got {self.test_from!r}")
        elif self.method == "quantile":
            if not 0.0 < self.valid_quantile < self.test_quantile < 1.0:
                raise ConfigError("valid_quantile", "need 0 < valid_quantile < test_quantile < 1, got "
                                  f"{self.valid_quantile!r} and {self.test_quantile!r}")

    def to_dict(self) -> dict[str, Any]:
        # Only the fields the method uses, so an unused default never changes a trial key.
        if self.method == "absolute":
            return {"method": "absolute", "valid_from": self.valid_from, "test_from": self.test_from}
        if self.method == "quantile":
            return {"method": "quantile", "valid_quantile": self.valid_quantile, "test_quantile": self.test_quantile}
        return {"method": "leave_one_out"}


@dataclass(frozen=True)
class ColumnSpec:
    """Column names of a generic interactions file; None = auto-detect from common names."""

    user: str | None = None
    item: str | None = None
    timestamp: str | None = None
    rating: str | None = None
    item_key: str | None = None  # id column of the items file (default: the item column's name, else the first)


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of the embedded synthetic generator (rearec/data/synthetic.py)."""

    n_users: int = 900
    n_items: int = 600
    n_topics: int = 12
    mean_length: float = 24.0  # mean interactions per user before the time window cuts them
    zipf: float = 1.1  # item popularity exponent within a topic (long tail)
    transition_prob: float = 0.55  # chance the next item follows the previous item's successor list
    drift_prob: float = 0.12  # chance per step that the user's current topic drifts to a neighbour
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "n_topics"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)!r}")
        if self.n_items < 4 * self.n_topics:
            raise ConfigError("n_items", f"need at least 4 items per topic ({4 * self.n_topics}), got {self.n_items}")
        if self.mean_length < 2:
            raise ConfigError("mean_length", f"must be >= 2, got {self.mean_length!r}")
        for name in ("transition_prob", "drift_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(name, f"must be in [0, 1], got {getattr(self, name)!r}")
        if self.zipf <= 0:
            raise ConfigError("zipf", f"must be > 0, got {self.zipf!r}")


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: where its raw data is, how it is filtered, split and turned into rows."""

    name: str
    source: Literal["synthetic", "table", "amazon2023", "yelp"] = "table"
    interactions: str | None = None  # table: interactions file (CSV/TSV/RecBole/Parquet, optionally .gz); a
    # dataset folder given here (or as the whole entry) is resolved to its files by from_dict
    items: str | None = None  # table: optional items file with text attributes
    raw_dir: str | None = None  # amazon2023 / yelp: folder of the official files; None = <cache_dir>/raw/<name>
    category: str | None = None  # amazon2023: file stem, e.g. Video_Games
    amazon_files: Literal["auto", "benchmark", "reviews"] = "auto"  # auto: benchmark CSVs if present
    columns: ColumnSpec = field(default_factory=ColumnSpec)
    text_fields: tuple[str, ...] | None = None  # item attributes kept, in rendering order; None = all
    timestamp_unit: Literal["s", "ms"] = "s"  # unit for date strings in files and ISO split cuts
    rating_above: float | None = None  # keep ratings > this (None: no rating filter)
    rating_filter: Literal["interactions", "targets"] = "interactions"  # drop interactions, or only targets
    dedup: bool = False  # keep only a user's earliest interaction with an item
    kcore: int = 0  # iterative k-core on users and items (0 or 1: off)
    min_history_train: int = 1  # minimum (untruncated) history length of a training row
    min_history_eval: int = 1  # ... of a validation / test row
    train_requires_attribute: str | None = None  # train target and history items need this item attribute
    split: SplitSpec = field(default_factory=SplitSpec)
    max_len: int = 50  # history truncation (most recent items kept)
    synthetic: SyntheticSpec | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ConfigError("name", f"must be a non-empty name without '/', got {self.name!r}")
        if self.source == "table":
            if not self.interactions:
                raise ConfigError("interactions", "required: the path of an interactions file")
            if self.raw_dir is not None:
                raise ConfigError("raw_dir", "only built-in sources (amazon2023, yelp) read a raw_dir; use interactions")
        elif self.interactions is not None or self.items is not None:
            key = "interactions" if self.interactions is not None else "items"
            raise ConfigError(key, f"not used by source {self.source!r} (it reads raw_dir)")
        if self.source == "amazon2023" and not self.category:
            raise ConfigError("category", "required for source 'amazon2023' (e.g. Video_Games)")
        if self.source == "synthetic" and self.synthetic is None:
            raise ConfigError("synthetic", "required for source 'synthetic'")
        for name in ("min_history_train", "min_history_eval", "max_len"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)!r}")
        if self.kcore < 0:
            raise ConfigError("kcore", f"must be >= 0, got {self.kcore!r}")
        if self.rating_above is not None and self.rating_above != self.rating_above:
            raise ConfigError("rating_above", "must be a number, got NaN")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, value: Any, path: str = "") -> DatasetSpec:
        """From a built-in name, a path to an interactions file or a dataset folder, or a mapping."""
        if isinstance(value, DatasetSpec):
            return value
        where = path  # a folder named by a string entry is reported at the entry itself
        if isinstance(value, (str, os.PathLike)):
            value = _mapping_for_string(os.fspath(value), path)
        elif isinstance(value, Mapping):
            where = _join(path, "interactions")
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"expected a dataset name or a mapping, got {type(value).__name__}")
        data = dict(value)
        name = data.get("name")
        if isinstance(name, str) and name in PRESETS and "interactions" not in data:
            data = _merge(PRESETS[name], data)
        elif "interactions" in data:
            data.setdefault("source", "table")
            located = data["interactions"]
            if isinstance(located, (str, os.PathLike)) and os.path.isdir(located):
                # A dataset folder: the spec keeps the files it resolves to, never the folder (rearec/data/folders.py).
                data["interactions"], items = resolve_folder(located, where)
                if "items" not in data:  # an explicit items (or items: null) wins over the folder's items.*
                    data["items"] = items
            if "name" not in data and isinstance(data["interactions"], str):
                data["name"] = default_name(data["interactions"])
        elif "source" not in data:
            hint = did_you_mean(str(name), PRESETS) if isinstance(name, str) else ""
            raise ConfigError(_join(path, "name"), f"unknown dataset {name!r}{hint}; built-ins: "
                              f"{', '.join(PRESETS)}; or give interactions: <path>")
        return cls._build(data, path)

    @classmethod
    def _build(cls, data: dict[str, Any], path: str) -> DatasetSpec:
        nested = {"split": SplitSpec, "columns": ColumnSpec, "synthetic": SyntheticSpec}
        for key, sub in nested.items():
            if key in data and data[key] is not None and not isinstance(data[key], sub):
                if not isinstance(data[key], Mapping):
                    raise ConfigError(_join(path, key), f"expected a mapping, got {type(data[key]).__name__}")
                data[key] = from_dict(sub, data[key], _join(path, key))
        if data.get("text_fields") is not None:
            fields = data["text_fields"]
            if not isinstance(fields, (list, tuple)) or not all(isinstance(f, str) and f for f in fields):
                raise ConfigError(_join(path, "text_fields"), f"expected a list of attribute names, got {fields!r}")
            data["text_fields"] = tuple(fields)
        for key in ("interactions", "items", "raw_dir"):
            if isinstance(data.get(key), os.PathLike):
                data[key] = os.fspath(data[key])
        return from_dict(cls, data, path)

    def to_dict(self) -> dict[str, Any]:
        """Every resolved parameter as plain JSON values (goes into trial keys)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "split":
                value = value.to_dict()
            elif f.name == "columns":
                value = dataclasses.asdict(value)
            elif f.name == "synthetic":
                value = dataclasses.asdict(value) if value is not None else None
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def absolute(self, base: str | os.PathLike | None = None) -> DatasetSpec:
        """The same spec with file locations made absolute (relative to ``base``, default the current
        directory) — for shipping a spec to workers that run in another directory."""
        root = os.path.abspath(base if base is not None else os.getcwd())
        changes = {key: os.path.normpath(os.path.join(root, getattr(self, key)))
                   for key in ("interactions", "items", "raw_dir") if getattr(self, key) is not None}
        return dataclasses.replace(self, **changes)

    def key_dict(self) -> dict[str, Any]:
        """to_dict() without file locations: what the cache key hashes next to the raw files' hashes."""
        out = self.to_dict()
        for key in ("interactions", "items", "raw_dir"):
            out.pop(key)
        return out


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Preset + user keys; ``columns`` and ``synthetic`` merge key by key, ``split`` is replaced whole."""
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in base.items()}
    for key, value in override.items():
        if key in ("columns", "synthetic") and isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _mapping_for_string(value: str, path: str) -> dict[str, Any]:
    if value in PRESETS:
        return {"name": value}
    if os.sep in value or "/" in value or value.lower().endswith(TABLE_SUFFIXES) or os.path.isdir(value):
        return {"interactions": value}
    raise ConfigError(path, f"unknown dataset {value!r}{did_you_mean(value, PRESETS)}; built-ins: "
                      f"{', '.join(PRESETS)}; or a path to an interactions file or a dataset folder")


def default_name(interactions: str) -> str:
    """ml-100k/ml-100k.inter -> ml-100k; amazon2018-videogames/interactions.tsv.gz -> amazon2018-videogames."""
    base = os.path.basename(os.path.normpath(interactions))
    stem = base.split(".")[0] if not base.startswith(".") else base
    parent = os.path.basename(os.path.dirname(os.path.abspath(interactions)))
    if stem.lower() in ("interactions", "inter", "ratings", "reviews", "data", "train", "") and parent:
        return parent
    return stem or "dataset"


_AMAZON: dict[str, Any] = {
    "source": "amazon2023",
    "timestamp_unit": "ms",
    "rating_above": 3.0,
    "rating_filter": "targets",
    "dedup": True,
    "kcore": 5,
    "min_history_train": 1,
    "min_history_eval": 5,
    "train_requires_attribute": "title",
    "text_fields": ["title", "description", "price"],
    "split": {"method": "absolute", "valid_from": AMAZON_VALID_FROM_MS, "test_from": AMAZON_TEST_FROM_MS},
}

PRESETS: dict[str, dict[str, Any]] = {
    # Sized for the quickstart (3 trials, d=64, 8 epochs on 2 CPU cores): ~730 users, ~390 items, ~12.8k rows.
    "synthetic": {
        "source": "synthetic",
        "synthetic": {},
        "kcore": 5,
        "min_history_train": 1,
        "min_history_eval": 3,
        "text_fields": ["title", "category"],
        "split": {"method": "quantile", "valid_quantile": 0.8, "test_quantile": 0.9},
    },
    "yelp": {
        "source": "yelp",
        "rating_above": 3.0,
        "rating_filter": "interactions",
        "kcore": 20,
        "min_history_train": 5,
        "min_history_eval": 5,
        "text_fields": ["name", "city", "state", "categories"],
        "split": {"method": "quantile", "valid_quantile": 0.8, "test_quantile": 0.9},
    },
    "amazon2023-video-games": {**_AMAZON, "category": "Video_Games"},
    "amazon2023-software": {**_AMAZON, "category": "Software", "min_history_train": 10},
    "amazon2023-cds-and-vinyl": {**_AMAZON, "category": "CDs_and_Vinyl", "min_history_train": 10,
                                 "min_history_eval": 10},
    "amazon2023-baby-products": {**_AMAZON, "category": "Baby_Products"},
}
