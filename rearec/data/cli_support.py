"""Plain functions behind ``harness data prepare|stats|list`` (the CLI itself lives in harness/).

Each takes dataset arguments as strings — a built-in name, a path to an interactions file, or a JSON
mapping — or already-parsed mappings / specs, and returns what the command prints.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .load import load_dataset, prepare
from .spec import PRESETS, DatasetSpec
from .stats import dataset_stats, format_stats

DatasetArg = str | Mapping[str, Any] | DatasetSpec

RAW_FILES = {
    "synthetic": "nothing: generated on the fly",
    "yelp": "yelp_academic_dataset_review.json [+ yelp_academic_dataset_business.json]",
}


def parse_dataset_arg(arg: DatasetArg, raw_dir: str | Path | None = None) -> DatasetSpec:
    """A spec from a CLI argument; ``raw_dir`` (the CLI's --raw-dir) applies to built-in Yelp / Amazon names."""
    if isinstance(arg, str) and arg.lstrip().startswith("{"):
        try:
            arg = json.loads(arg)
        except json.JSONDecodeError as exc:
            raise ConfigError("dataset", f"not valid JSON ({exc.msg}): {arg!r}") from None
    if raw_dir is not None:
        mapping = {"name": arg} if isinstance(arg, str) else dict(arg) if isinstance(arg, Mapping) else None
        if mapping is not None and PRESETS.get(str(mapping.get("name")), {}).get("source") in ("yelp", "amazon2023"):
            mapping.setdefault("raw_dir", str(raw_dir))
            arg = mapping
    return DatasetSpec.from_dict(arg, "dataset")


def prepare_command(datasets: Sequence[DatasetArg], cache_dir: str | Path = "data", *,
                    raw_dir: str | Path | None = None, rebuild: bool = False,
                    echo: Callable[[str], None] = print) -> list[Path]:
    """Prepare (or verify) each dataset's cache; echo one line per dataset; return the cache folders."""
    folders = []
    for arg in datasets:
        spec = parse_dataset_arg(arg, raw_dir)
        started = time.perf_counter()
        folder = prepare(spec, cache_dir, rebuild=rebuild)
        manifest = json.loads((folder / "manifest.json").read_text())
        echo(f"{spec.name}: {manifest['n_users']:,} users, {manifest['n_items']:,} items, content "
             f"{manifest['content_hash'][:12]} -> {folder} ({time.perf_counter() - started:.1f} s)")
        folders.append(folder)
    return folders


def stats_command(datasets: Sequence[DatasetArg], cache_dir: str | Path = "data", *,
                  raw_dir: str | Path | None = None, fmt: str = "markdown") -> str:
    """Table 1 statistics of each dataset (prepared first if needed) as markdown or JSON."""
    stats = [dataset_stats(load_dataset(parse_dataset_arg(arg, raw_dir), cache_dir)) for arg in datasets]
    if fmt == "json":
        return json.dumps(stats, indent=2)
    if fmt != "markdown":
        raise ConfigError("format", f"expected 'markdown' or 'json', got {fmt!r}")
    return format_stats(stats)


def list_command() -> str:
    """The built-in dataset names and the raw files each expects in its raw folder."""
    lines = ["| name | source | raw files (in data/raw/<name>/ or --raw-dir) |", "|---|---|---|"]
    for name, preset in PRESETS.items():
        if preset["source"] == "amazon2023":
            cat = preset["category"]
            files = f"{cat}.{{train,valid,test}}.csv or {cat}.jsonl, and meta_{cat}.jsonl"
        else:
            files = RAW_FILES[preset["source"]]
        lines.append(f"| {name} | {preset['source']} | {files} |")
    return "\n".join(lines)
