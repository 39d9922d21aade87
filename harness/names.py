"""Readable trial names for TensorBoard and MLflow: dataset, backbone, method, K, varied settings, seed, key.

A study's trials differ in a few settings (tau, kl_lambda, lr, ...); a name shows exactly those, so
curves can be told apart without opening each trial. "Varied" is relative to the set of trials shown:
a method setting (kl_lambda, tau, ...) counts when it differs among the trials of the *same method*
(base trials carry ERL's default kl_lambda, which means nothing for them); any other setting counts
when it differs among all trials that have it (a BERT4Rec-only option is absent from SASRec trials).
Names are built from the flat settings a trial stores (`TrialSpec.params()`, the `params` column).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rearec.config import MethodConfig

# Settings every name shows in its own place, or that are no setting at all.
_SHOWN = {"dataset", "backbone", "method", "reasoning_steps", "seed"}
_NOT_SETTINGS = {"dataset_spec", "dataset_hash", "protocol", "key"}
METHOD_SETTINGS = frozenset(f.name for f in dataclasses.fields(MethodConfig))
MAX_NAME = 200  # bytes; directory names may hold 255


def _value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def _candidates(params: Mapping[str, Any]) -> Iterable[str]:
    return (k for k in params if k not in _SHOWN and k not in _NOT_SETTINGS)


def varied_settings(trials: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """method name -> the settings that differ among ``trials`` (flat params dicts), in config order."""
    by_method: dict[str, list[Mapping[str, Any]]] = {}
    for params in trials:
        by_method.setdefault(str(params.get("method")), []).append(params)
    order: list[str] = []
    for params in trials:
        order.extend(k for k in _candidates(params) if k not in order)

    def differs(name: str, group: Sequence[Mapping[str, Any]]) -> bool:
        return len({_value(p[name]) for p in group if name in p}) > 1

    common = [k for k in order if k not in METHOD_SETTINGS and differs(k, trials)]
    return {method: [*common, *(k for k in order if k in METHOD_SETTINGS and differs(k, group))]
            for method, group in by_method.items()}


def run_name(params: Mapping[str, Any], key: str, varied: Sequence[str] = ()) -> str:
    """e.g. ``synthetic sasrec erl K=2 kl_lambda=0.05 seed=0 5b52f9c3ed78`` (safe as a directory name)."""
    steps = params.get("reasoning_steps") or 0
    head = [str(params.get("dataset")), str(params.get("backbone")), str(params.get("method"))]
    head += [f"K={steps}"] if steps else []
    settings = [f"{name}={_value(params[name])}" for name in varied if name in params]
    tail = [f"seed={params.get('seed')}", key[:12]]
    name = " ".join([*head, *settings, *tail])
    while len(name.encode()) > MAX_NAME and settings:  # long settings (a list value) give way to the key
        settings.pop()
        name = " ".join([*head, *settings, "...", *tail])
    return re.sub(r"[/\\\x00-\x1f,:]", "_", name)  # no path separators; ',' and ':' mean something to TB


def study_names(trials: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """trial key -> readable name, for the trials of one study (key -> flat params)."""
    varied = varied_settings(list(trials.values()))
    return {key: run_name(params, key, varied[str(params.get("method"))]) for key, params in trials.items()}
