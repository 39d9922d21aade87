"""load_dataset: resolve a spec, prepare the Parquet cache if it is missing or damaged, load SplitData."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import cache
from .preprocess import process, to_rows, to_sequences
from .sources import read_source, source_files
from .spec import DatasetSpec
from .types import SplitData

log = logging.getLogger(__name__)

ITEM_INDEX_RULE = "items 1..n by first timestamp, ties by raw id; 0 = padding"
USER_INDEX_RULE = "users 0..U-1 with at least one row, by first timestamp, ties by raw id; rows by (user, time)"


def resolve_spec(spec: str | Mapping[str, Any] | DatasetSpec) -> DatasetSpec:
    return spec if isinstance(spec, DatasetSpec) else DatasetSpec.from_dict(spec)


def locate(spec: DatasetSpec, cache_dir: Path) -> tuple[Path, str, dict[str, Path], dict[str, dict[str, Any]]]:
    """(cache folder, cache key, raw files, their fingerprints) — hashes the raw files, reads nothing else."""
    files = source_files(spec, cache_dir)
    raw = {role: cache.fingerprint(path, cache_dir) for role, path in files.items()}
    key = cache.cache_key(spec.key_dict(), raw)
    return cache_dir / "processed" / f"{spec.name}-{key[:16]}", key, files, raw


def prepare(spec: str | Mapping[str, Any] | DatasetSpec, cache_dir: str | Path = "data", *,
            rebuild: bool = False) -> Path:
    """Make sure the processed cache exists and is intact; return its folder. Reuses a good cache."""
    spec = resolve_spec(spec)
    cache_dir = Path(cache_dir)
    folder, key, files, raw_files = locate(spec, cache_dir)
    if not rebuild:
        try:
            cache.read_manifest(folder)
            return folder
        except cache.CacheDamaged as exc:
            if folder.exists():
                log.warning("rebuilding damaged dataset cache: %s", exc)
    started = time.perf_counter()
    raw = read_source(spec, files)
    processed = process(spec, raw)
    notes = {**raw.notes, **processed.notes}
    params = {"dataset": spec.to_dict(), "raw_files": raw_files, "cache_key": key, "notes": notes,
              "item_index": ITEM_INDEX_RULE, "user_index": USER_INDEX_RULE}
    item_text = None
    if raw.items is not None:
        # Attribute rows in item-index order (row 0 = padding, no attributes).
        import pandas as pd

        where = pd.Index(raw.items.ids).get_indexer(processed.item_ids[1:])
        item_text = {name: [None, *values[where].tolist()] for name, values in raw.items.attrs.items()}
    manifest = {"name": spec.name, "n_users": processed.n_users, "n_items": len(processed.item_ids) - 1,
                "content_hash": cache.content_hash(processed), "params": params}
    cache.write(folder, processed, item_text, manifest)
    log.info("prepared %s in %.1f s -> %s", spec.name, time.perf_counter() - started, folder)
    return folder


def load_dataset(spec: str | Mapping[str, Any] | DatasetSpec, cache_dir: str | Path = "data", *,
                 rebuild: bool = False) -> SplitData:
    """The processed train / valid / test data for ``spec``, prepared into ``cache_dir`` if needed."""
    spec = resolve_spec(spec)
    folder = prepare(spec, cache_dir, rebuild=rebuild)
    try:
        processed, attrs, manifest = cache.read(folder, verify=False)  # prepare() just verified or wrote it
    except cache.CacheDamaged as exc:  # damaged between the check and the read: rebuild once
        log.warning("rebuilding damaged dataset cache: %s", exc)
        folder = prepare(spec, cache_dir, rebuild=True)
        processed, attrs, manifest = cache.read(folder)
    item_text = None
    if attrs:
        # {raw item id: {attribute: value}} in the spec's attribute order, missing values left out.
        names = list(attrs)
        columns = [attrs[n] for n in names]
        item_text = {}
        for k in range(1, len(processed.item_ids)):
            item_text[processed.item_ids[k]] = {n: col[k] for n, col in zip(names, columns, strict=True) if col[k] is not None}
    return SplitData(
        name=spec.name,
        n_users=int(manifest["n_users"]),
        n_items=int(manifest["n_items"]),
        train=to_rows(processed.rows["train"], spec.max_len),
        valid=to_rows(processed.rows["valid"], spec.max_len),
        test=to_rows(processed.rows["test"], spec.max_len),
        train_sequences=to_sequences(processed),
        item_ids=processed.item_ids,
        params=manifest["params"],
        content_hash=manifest["content_hash"],
        item_text=item_text,
    )
