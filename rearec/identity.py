"""Which settings enter a trial's identity: the rule that keeps trial keys stable as configs grow.

The harness keys a trial by a hash of its resolved settings (harness/keys.py), and resume trusts that
key: a completed trial is never run again. So the settings that enter the hash follow one rule:

1. Every field that existed when keys were first pinned (2026-12-02, tests/test_trial_keys.py) enters
   the key, as it always did.
2. A field added later is declared with ``setting(default, legacy=V)``: V is the value that reproduces
   the behaviour trials had before the field existed. A trial whose value equals V keeps its old key
   (the field stays out); any other value enters the key. A new *default* that differs from V (a
   backbone that now trains as its paper says) therefore moves the keys of the trials it changes, and
   only those.
3. A field read only by some trials is declared with ``applies=predicate``: where it does not apply
   (a BERT4Rec option on a SASRec trial) it stays out of the key and out of the stored settings.
4. A field that changes speed or memory but never a result (``key=False``) never enters the key.

Predicates see all three configs of a trial (``Trial``), so a PRL-only option of packed training can say
so. Everything here is plain dataclass metadata; rearec.config declares its fields with it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

_LEGACY, _APPLIES, _KEYED = "identity.legacy", "identity.applies", "identity.keyed"
_NO_LEGACY = object()


class Trial(NamedTuple):
    """The three configs of one trial (any object with the fields the predicates read)."""

    model: Any
    method: Any
    train: Any


def setting(default: Any, *, legacy: Any = _NO_LEGACY, applies: Callable[[Trial], bool] | None = None,
            key: bool = True) -> Any:
    """A dataclass field with its identity rule (see the module docstring)."""
    metadata: dict[str, Any] = {_KEYED: key}
    if legacy is not _NO_LEGACY:
        metadata[_LEGACY] = legacy
    if applies is not None:
        metadata[_APPLIES] = applies
    return dataclasses.field(default=default, metadata=metadata)


def applies(f: dataclasses.Field, trial: Trial) -> bool:
    predicate = f.metadata.get(_APPLIES)
    return predicate is None or bool(predicate(trial))


def in_key(f: dataclasses.Field, value: Any) -> bool:
    """Whether an applicable field with this value enters the trial key (rules 1, 2 and 4)."""
    if not f.metadata.get(_KEYED, True):
        return False
    return _LEGACY not in f.metadata or value != f.metadata[_LEGACY]


@functools.cache
def _rules(cls: type) -> tuple[tuple[str, Callable[[Trial], bool] | None, bool, Any], ...]:
    """(name, applies-predicate, keyed, legacy value) of each field of a config class, read once per class
    (planning a study walks every field of every trial's configs)."""
    return tuple((f.name, f.metadata.get(_APPLIES), f.metadata.get(_KEYED, True), f.metadata.get(_LEGACY, _NO_LEGACY))
                 for f in dataclasses.fields(cls))


@functools.cache
def predicates(cls: type) -> tuple[Callable[[Trial], bool], ...]:
    """The applies-predicates of a config class's fields, each once: a section's settings depend on the
    rest of the trial only through their outcomes (so callers may cache a section's views by them)."""
    found: list[Callable[[Trial], bool]] = []
    for _, predicate, _, _ in _rules(cls):
        if predicate is not None and predicate not in found:
            found.append(predicate)
    return tuple(found)


def section_views(cfg: Any, outcomes: dict[Callable[[Trial], bool], bool]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(settings read, settings keyed) of one config, given each of its predicates' outcome on the trial."""
    read: dict[str, Any] = {}
    keyed: dict[str, Any] = {}
    for name, predicate, in_the_key, legacy in _rules(type(cfg)):
        if predicate is not None and not outcomes[predicate]:
            continue
        value = getattr(cfg, name)
        read[name] = value
        if in_the_key and (legacy is _NO_LEGACY or value != legacy):
            keyed[name] = value
    return read, keyed


def views(trial: Trial) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(resolved(trial), key_view(trial)) in one pass over the fields: the same rules as applies and in_key."""
    settings: dict[str, dict[str, Any]] = {}
    keyed_view: dict[str, dict[str, Any]] = {}
    for section, cfg in trial._asdict().items():
        outcomes = {predicate: bool(predicate(trial)) for predicate in predicates(type(cfg))}
        settings[section], keyed_view[section] = section_views(cfg, outcomes)
    return settings, keyed_view


def resolved(trial: Trial) -> dict[str, dict[str, Any]]:
    """Every setting the trial reads, per section: what is stored and what rebuilds the configs."""
    return views(trial)[0]


def key_view(trial: Trial) -> dict[str, dict[str, Any]]:
    """The settings that enter the trial key, per section (``resolved`` minus rules 2 and 4)."""
    return views(trial)[1]
