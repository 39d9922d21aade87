"""`--set key.path=value` overrides of a study file, applied to the raw mapping before validation."""

from __future__ import annotations

import copy
import re
from typing import Any

from .errors import StudyError
from .yamlio import parse_value

_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _path_tokens(key: str) -> list[str | int]:
    tokens: list[str | int] = []
    for part in key.split("."):
        matched = _TOKEN.findall(part)
        if not part or "".join(n or f"[{i}]" for n, i in matched) != part:
            raise StudyError("--set", key, "malformed key path; use e.g. params.max_epochs or methods[1].tau")
        for name, index in matched:
            tokens.append(int(index) if index else int(name) if name.isdigit() else name)
    return tokens


def apply_overrides(raw: Any, overrides: list[str]) -> Any:
    """Apply `key.path=value` overrides (values typed as YAML) to the raw study mapping, in order."""
    if not overrides:
        return raw
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise StudyError("--set", item, "expected KEY=VALUE, e.g. --set params.max_epochs=2")
        key = key.strip()
        tokens = _path_tokens(key)
        value = parse_value(text, key)
        node = raw
        if not isinstance(node, dict):
            raise StudyError("--set", key, "the study file is not a mapping")
        for depth, token in enumerate(tokens):
            last = depth == len(tokens) - 1
            here = key if last else ".".join(map(str, tokens[: depth + 1]))
            if isinstance(token, int):
                if not isinstance(node, list):
                    raise StudyError("--set", key, f"{here}: not a list, cannot index it")
                if not -len(node) <= token < len(node):
                    raise StudyError("--set", key, f"index {token} out of range ({len(node)} entries)")
                if last:
                    node[token] = value
                else:
                    if isinstance(node[token], str):  # `methods: [erl]` -> allow methods[0].tau
                        node[token] = {"name": node[token]}
                    node = node[token]
            else:
                if not isinstance(node, dict):
                    raise StudyError("--set", key, f"{here}: not a mapping, cannot set a key in it")
                if last:
                    node[token] = value
                else:
                    if node.get(token) is None:
                        node[token] = {}
                    node = node[token]
    return raw
