"""Plain functions behind ``harness data prepare|stats|list|download`` (the CLI itself lives in harness/).

Each takes dataset arguments as strings — a built-in name, a path to an interactions file or a dataset
folder, or a JSON mapping — or already-parsed mappings / specs, and returns what the command prints.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, did_you_mean
from .download import amazon_category, download_amazon
from .load import load_dataset, prepare
from .sources import YELP_BUSINESS, YELP_REVIEWS
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
    """The built-in dataset names, the raw files each expects in its raw folder, and how to get them."""
    how = {"synthetic": "nothing to get", "yelp": "by hand (`harness data download yelp` says how)",
           "amazon2023": "`harness data download <name>`"}
    lines = ["| name | source | raw files (in data/raw/<name>/ or --raw-dir) | get them |", "|---|---|---|---|"]
    for name, preset in PRESETS.items():
        if preset["source"] == "amazon2023":
            cat = preset["category"]
            files = f"{cat}.{{train,valid,test}}.csv or {cat}.jsonl, and meta_{cat}.jsonl"
        else:
            files = RAW_FILES[preset["source"]]
        lines.append(f"| {name} | {preset['source']} | {files} | {how[preset['source']]} |")
    return "\n".join(lines)


def _prepare_hint(name: str, cache_dir: str | Path, raw_dir: str | Path | None) -> str:
    hint = f"harness data prepare {name}"
    if Path(cache_dir) != Path("data"):
        hint += f" --cache-dir {cache_dir}"
    return hint + (f" --raw-dir {raw_dir}" if raw_dir is not None else "")


def yelp_instructions(raw_dir: Path, next_step: str = "harness data prepare yelp") -> str:
    """What to fetch by hand for the Yelp preset and where to put it (each user must accept Yelp's terms)."""
    return "\n".join([
        "yelp: the Yelp Open Dataset is downloaded by hand (its terms require accepting Yelp's Dataset User Agreement):",
        "  1. open https://business.yelp.com/data/resources/open-dataset/ , accept the agreement and download the",
        "     JSON dataset (an archive of several GB; extract it, and the .tar inside it if there is one)",
        f"  2. put {YELP_REVIEWS} (required) and {YELP_BUSINESS} (item text) into",
        f"     {raw_dir.absolute()}/   (.gz copies of them are accepted too)",
        f"  3. {next_step}",
    ])


def download_command(names: Sequence[str], cache_dir: str | Path = "data", *, raw_dir: str | Path | None = None,
                     base_url: str | None = None, force: bool = False, echo: Callable[[str], None] = print,
                     **fetch_options) -> bool:
    """Fetch each built-in dataset's official files into its raw folder (<cache_dir>/raw/<name> or raw_dir).

    Returns False when a dataset that must be fetched by hand (Yelp) is not in place yet; raises
    ConfigError for a name that is not a built-in and DownloadError when a file cannot be fetched."""
    for name in names:
        if name not in PRESETS:
            raise ConfigError("dataset", f"{name!r} is not a built-in dataset{did_you_mean(name, PRESETS)}; "
                              f"downloadable: {', '.join(n for n in PRESETS if n != 'synthetic')}")
    complete = True
    for name in names:
        folder = Path(raw_dir) if raw_dir is not None else Path(cache_dir) / "raw" / name
        if PRESETS[name]["source"] == "synthetic":
            echo(f"{name}: nothing to download (generated on the fly)")
        elif amazon_category(name) is not None:
            download_amazon(name, folder, base_url, force=force, echo=echo, **fetch_options)
            echo(f"{name}: ready in {folder} -> {_prepare_hint(name, cache_dir, raw_dir)}")
        elif (folder / YELP_REVIEWS).is_file() or (folder / f"{YELP_REVIEWS}.gz").is_file():
            echo(f"{name}: {YELP_REVIEWS} is in place in {folder}")
        else:
            echo(yelp_instructions(folder, _prepare_hint(name, cache_dir, raw_dir)))
            complete = False
    return complete

