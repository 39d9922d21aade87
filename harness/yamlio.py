"""YAML reading for study files and `--set` values: safe loading, `1e-3` as a float, duplicate keys rejected."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from .errors import StudyError


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-3` as a float (YAML 1.1 wants `1.0e-3`) and rejects duplicate keys."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml_problem(exc: yaml.YAMLError) -> tuple[str, str]:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    return where, f"YAML syntax error: {problem}"


def load_yaml_file(path: str | Path) -> Any:
    """Parse a YAML file; a missing file or a syntax error raises StudyError naming the file (and line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudyError(str(path), "", "no such file") from None
    except IsADirectoryError:
        raise StudyError(str(path), "", "is a directory, expected a YAML study file") from None
    except UnicodeDecodeError as exc:
        raise StudyError(str(path), "", f"not UTF-8 text ({exc.reason})") from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        where, problem = _yaml_problem(exc)
        raise StudyError(str(path), where, problem) from None


def parse_value(text: str, where: str) -> Any:
    """A `--set` value typed as YAML: `0.1` is a float, `[1, 2]` a list, `true` a bool, `abc` a string."""
    try:
        return yaml.load(text, Loader=_Loader) if text.strip() else ""  # noqa: S506
    except yaml.YAMLError as exc:
        _, problem = _yaml_problem(exc)
        raise StudyError("--set", where, problem) from None
