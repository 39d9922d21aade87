"""A study's datasets: spec validation (no data read) and resolution to a prepared cache and content hash."""

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


@dataclasses.dataclass(frozen=True)
class MissingDataset:
    """A built-in dataset whose official files are not in its raw folder yet (so it cannot be prepared)."""

    ref: DatasetRef
    problem: str  # what is missing, e.g. '<raw>/yelp_academic_dataset_review.json: file not found ...'
    how: str  # how to get it prepared


def missing_raw(ref: DatasetRef, cache_dir: Path) -> MissingDataset | None:
    """The built-in dataset (Yelp, Amazon 2023) of ``ref`` if its raw files are not there yet, else None.
    Only built-ins: a file path the study names that does not exist is a mistake in the study."""
    from rearec.data.sources import source_files

    spec = DatasetSpec.from_dict(ref.spec)
    if spec.source not in ("yelp", "amazon2023"):
        return None
    try:
        source_files(spec, cache_dir)
        return None
    except DataError as exc:
        raw = Path(spec.raw_dir) if spec.raw_dir else cache_dir / "raw" / spec.name
        options = ("" if cache_dir == Path("data").absolute() else f" --cache-dir {cache_dir}") + (
            f" --raw-dir {raw}" if spec.raw_dir else "")
        how = (f"get its official files into {raw}/ (`harness data download {spec.name}`; `harness data list` "
               f"names the files), then `harness data prepare {spec.name}{options}` (or let `harness run` prepare it)")
        return MissingDataset(ref, str(exc), how)


def _resolve(study: Study, ref: DatasetRef, cache_dir: Path, log) -> DatasetRef:
    try:
        folder = prepare(ref.spec, cache_dir)
        manifest = read_manifest(folder, verify=False)
    except (DataError, ConfigError, OSError) as exc:
        missing = missing_raw(ref, cache_dir) if isinstance(exc, DataError) else None
        raise StudyError(study.file, f"datasets[{ref.index}]", f"{ref.name}: {exc}"
                         + (f"; {missing.how}" if missing else "")) from None
    log(f"dataset {ref.name}: {manifest['n_users']:,} users, {manifest['n_items']:,} items "
        f"[{manifest['content_hash'][:12]}]")
    return dataclasses.replace(ref, content_hash=manifest["content_hash"])


def resolve_datasets(study: Study, cache_dir: str | Path, log=print) -> list[DatasetRef]:
    """Prepare (or reuse) each dataset's processed cache and read its content hash."""
    cache_dir = Path(cache_dir).absolute()
    return [_resolve(study, ref, cache_dir, log) for ref in parse_datasets(study)]


def resolve_available(study: Study, cache_dir: str | Path, log=print) -> tuple[list[DatasetRef], list[MissingDataset]]:
    """resolve_datasets for `harness plan`: a built-in dataset whose raw files are not there yet keeps a
    placeholder content hash and is reported instead of failing the plan; any other problem (a file path in
    the study that does not exist, a malformed file) is still a StudyError."""
    cache_dir = Path(cache_dir).absolute()
    refs, missing = [], []
    for ref in parse_datasets(study):
        gap = missing_raw(ref, cache_dir)
        if gap is not None:
            missing.append(gap)
            refs.append(ref)
        else:
            refs.append(_resolve(study, ref, cache_dir, log))
    return refs, missing
