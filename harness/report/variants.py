"""Which variant a report row is: the settings that set a configuration apart from the defaults, and the
configuration identity the views group seeds by.

A paper variant (base, naive, rpe, erl, prl, erl w/o KL, prl w/o RCL) trained with a non-default formulation,
KL sign, RCL similarity or negatives, item scoring, BERT4Rec objective or output head, UniSRec text mode or
training mode is a different method, so the
views name it ``"<variant> [name=value, ...]"`` (e.g. ``erl [formulation=released]``): every table, figure
and claim shows the setting, and the validation choice never merges two such variants. ``SETTINGS`` is the
one list of those settings; the SQL the views use and the Python the report's expected cells use are both
generated from it, so they cannot disagree (tests/test_variants.py checks them on every study file).

Stored settings (`trials.params`) hold only what a trial reads (rearec.identity.resolved), and a trial
stored before a setting existed lacks it: a missing setting reads as its legacy value (the behaviour the
trial had), else its default. A planned trial that does not name a setting gets the default.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rearec import identity
from rearec.config import DEFAULT_SCORING, MethodConfig, ModelConfig, TrainConfig

_FIELDS = {f.name: f for cls in (ModelConfig, MethodConfig, TrainConfig) for f in dataclasses.fields(cls)}


@dataclass(frozen=True)
class Setting:
    name: str
    scope: str  # 'method': part of what the method is; 'model': shared with the reference it is compared to
    applies: Callable[[Callable[[str], Any]], bool]  # over a getter of resolved values (method, backbone, ...)
    applies_sql: str  # the same predicate over the view's columns (method, backbone, s_<name>)


def _default(name: str, backbone: str) -> Any:
    if name == "item_scoring":  # None in the config means the backbone's own scoring
        return DEFAULT_SCORING.get(backbone, "dot")
    return _FIELDS[name].default


def _legacy(name: str) -> Any:
    """The value a trial stored before the setting existed had (the field's default when none is declared)."""
    return _FIELDS[name].metadata.get(identity._LEGACY, _FIELDS[name].default)  # rearec/identity.py rule 2


SETTINGS: tuple[Setting, ...] = (
    Setting("formulation", "method", lambda g: True, "TRUE"),
    Setting("kl_sign", "method", lambda g: g("method") == "erl" and float(g("kl_lambda") or 0) > 0,
            "method = 'erl' AND coalesce(kl_lambda, 0) > 0"),
    Setting("rcl_similarity", "method", lambda g: g("method") == "prl" and g("rcl") is not False,
            "method = 'prl' AND s_rcl <> 'false'"),
    Setting("rcl_negatives", "method",
            lambda g: g("method") == "prl" and g("rcl") is not False and g("training") == "packed",
            "method = 'prl' AND s_rcl <> 'false' AND s_training = 'packed'"),
    Setting("item_scoring", "model", lambda g: True, "TRUE"),
    Setting("bert4rec_objective", "model", lambda g: g("backbone") == "bert4rec", "backbone = 'bert4rec'"),
    Setting("clean_ratio", "model", lambda g: g("backbone") == "bert4rec" and g("bert4rec_objective") == "cloze",
            "backbone = 'bert4rec' AND s_bert4rec_objective = 'cloze'"),
    Setting("bert4rec_head", "model", lambda g: g("backbone") == "bert4rec", "backbone = 'bert4rec'"),
    Setting("text_mode", "model", lambda g: g("backbone") == "unisrec", "backbone = 'unisrec'"),
    Setting("training", "model", lambda g: True, "TRUE"),
)
_READ = sorted({s.name for s in SETTINGS} | {"rcl"})  # every setting a predicate or label reads
READ = (*_READ, "kl_lambda")  # ... and the method parameters they look at (cache keys of callers)


def _text(value: Any) -> str:
    """A value as the label and the JSON text extraction (->>) show it."""
    return value if isinstance(value, str) else json.dumps(value)


def labels(params: Mapping[str, Any], stored: bool = True) -> tuple[str, str]:
    """(method_setting, model_setting) of flat settings ``params`` (method, backbone, kl_lambda, ...):
    'name=value' of each applicable setting that differs from its default, ', '-joined in SETTINGS order.
    ``stored``: ``params`` is a stored row (a missing setting is its legacy value) rather than a plan."""
    backbone = params.get("backbone", "sasrec")

    def get(name: str) -> Any:
        if name in params:
            return params[name]
        if name in _FIELDS:
            return _legacy(name) if stored else _default(name, backbone)
        return None

    parts = {"method": [], "model": []}
    for s in SETTINGS:
        value = get(s.name)
        if s.name == "item_scoring" and value is None:
            value = _default(s.name, backbone)
        if s.applies(get) and value != _default(s.name, backbone):
            parts[s.scope].append(f"{s.name}={_text(value)}")
    return ", ".join(parts["method"]), ", ".join(parts["model"])


def full_variant(variant: str, method_setting: str, model_setting: str) -> str:
    """The report's name of a variant with its settings, e.g. 'erl [formulation=released, training=packed]'."""
    settings = ", ".join(s for s in (method_setting, model_setting) if s)
    return f"{variant} [{settings}]" if settings else variant


def split_variant(name: str) -> tuple[str, str]:
    """'erl [formulation=released]' -> ('erl', 'formulation=released'); a plain variant -> (name, '')."""
    base, _, rest = str(name).partition(" [")
    return base, rest[:-1] if rest.endswith("]") else rest


# ------------------------------------------------------------------------------------------ SQL
def _sql_literal(value: Any) -> str:
    return "'" + _text(value).replace("'", "''") + "'"


_LEGACY_FIELDS = sorted(n for n, f in _FIELDS.items() if identity._LEGACY in f.metadata)
_PATHS = sorted(set(_READ) | set(_LEGACY_FIELDS))  # every setting the SQL below reads, extracted once


def extract_sql(params: str = "params") -> str:
    """A SELECT-list item _v: the text values of every setting the labels and config ids read, from one
    parse of the JSON ``params`` (a missing or null setting is NULL)."""
    return f"json_extract_string({params}, [{', '.join(_sql_literal('$.' + n) for n in _PATHS)}]) AS _v"


def _value(name: str, values: str = "_v") -> str:
    return f"{values}[{_PATHS.index(name) + 1}]"


def settings_sql(values: str = "_v") -> str:
    """SELECT-list items s_<name> (each setting's resolved value as text; missing = legacy) over extract_sql's
    ``values`` list."""
    return ", ".join(f"coalesce({_value(n, values)}, {_sql_literal(_legacy(n))}) AS s_{n}" for n in _READ)


def _default_sql(s: Setting) -> str:
    if s.name != "item_scoring":
        return _sql_literal(_default(s.name, ""))
    cases = " ".join(f"WHEN {_sql_literal(b)} THEN {_sql_literal(v)}" for b, v in sorted(DEFAULT_SCORING.items()))
    return f"CASE backbone {cases} ELSE 'dot' END" if cases else "'dot'"


def label_sql(scope: str) -> str:
    """SQL expression of the method_setting / model_setting label over columns method, backbone, kl_lambda
    and s_<name> (settings_sql); '' when every applicable setting is at its default."""
    parts = [f"CASE WHEN ({s.applies_sql}) AND s_{s.name} <> {_default_sql(s)} THEN '{s.name}=' || s_{s.name} END"
             for s in SETTINGS if s.scope == scope]
    return f"concat_ws(', ', {', '.join(parts)})"


def config_params_sql(params: str = "t.params", values: str = "t._v") -> str:
    """``params`` reduced to what identifies a configuration: no seed, no file locations, no speed-only
    setting (rearec/identity.py rule 4) and no setting at its legacy value (rule 2), so the seeds of one
    configuration stored before and after a setting was added still group together. ``values``: the
    extract_sql list of the same row. One merge patch: the fixed removals and, per row, the legacy ones."""
    drop = {"seed": None, "dataset_spec": {"interactions": None, "items": None, "raw_dir": None}}
    drop.update({name: None for name, f in _FIELDS.items() if not f.metadata.get(identity._KEYED, True)})
    fixed = json.dumps(drop)[1:-1].replace("'", "''")
    legacy = [f"CASE WHEN {_legacy_match(name, _FIELDS[name].metadata[identity._LEGACY], values)} "
              f"THEN '\"{name}\":null' END" for name in _LEGACY_FIELDS]
    return f"json_merge_patch({params}, '{{' || concat_ws(',', '{fixed}', {', '.join(legacy) or 'NULL'}) || '}}')"


def _legacy_match(name: str, value: Any, values: str) -> str:
    if value is None:  # a null and a missing setting are both the legacy value
        return f"{_value(name, values)} IS NULL"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"TRY_CAST({_value(name, values)} AS DOUBLE) = {float(value)!r}"
    return f"{_value(name, values)} = {_sql_literal(value)}"
