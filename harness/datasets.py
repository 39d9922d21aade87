"""A study's datasets: spec validation (no I/O) and resolution to a prepared cache and content hash."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rearec.data import DataError, DatasetSpec, prepare
from rearec.data.cache import read_manifest
from rearec.errors import ConfigError

from .errors import StudyError
from .expand import UNRESOLVED, DatasetRef
from .study import Study


def parse_datasets(study: Study) -> list[DatasetRef]:
    """Validate every dataset entry (unknown keys, bad values) without reading data. A dataset folder is
    resolved to its files here (a directory listing); paths become absolute, as Ray workers run elsewhere."""
    refs = []
    for i, entry in enumerate(study.datasets):
        try:
            spec = DatasetSpec.from_dict(entry, path=f"datasets[{i}]").absolute()
        except ConfigError as exc:
            raise StudyError(study.file, exc.path or f"datasets[{i}]", exc.problem) from None
        refs.append(DatasetRef(i, spec.name, spec.to_dict(), UNRESOLVED))
    return refs


def resolve_datasets(study: Study, cache_dir: str | Path, log=print) -> list[DatasetRef]:
    """Prepare (or reuse) each dataset's processed cache and read its content hash."""
    refs = []
    cache_dir = Path(cache_dir).absolute()
    for ref in parse_datasets(study):
        try:
            folder = prepare(ref.spec, cache_dir)
            manifest = read_manifest(folder, verify=False)
        except (DataError, ConfigError, OSError) as exc:
            raise StudyError(study.file, f"datasets[{ref.index}]", f"{ref.name}: {exc}") from None
        refs.append(dataclasses.replace(ref, content_hash=manifest["content_hash"]))
        log(f"dataset {ref.name}: {manifest['n_users']:,} users, {manifest['n_items']:,} items "
            f"[{manifest['content_hash'][:12]}]")
    return refs
