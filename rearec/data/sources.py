"""Raw sources -> validated interaction columns: generic tables, Amazon Reviews 2023, Yelp, synthetic.

Each source first names its files (``source_files``, so the cache can hash them before reading) and then
reads them (``read_source``). Interactions keep file order (several files are read in the order listed),
because equal timestamps are broken by file order downstream.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import readers
from .errors import DataError
from .spec import PRESETS, DatasetSpec

YELP_REVIEWS = "yelp_academic_dataset_review.json"
YELP_BUSINESS = "yelp_academic_dataset_business.json"


@dataclass
class ItemTable:
    """Item attributes from an items file: ``attrs[name][k]`` is item ``ids[k]``'s value (None = missing)."""

    file: str
    key_column: str
    ids: np.ndarray  # (M,) object raw ids, unique
    attrs: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (M,) object


@dataclass
class RawData:
    """Interactions in file order, plus what error messages need to name."""

    file: str  # the interactions file (or files, joined) for messages
    ts_column: str
    user: np.ndarray  # (N,) object raw user ids
    item: np.ndarray  # (N,) object raw item ids
    timestamp: np.ndarray  # (N,) int64 in the dataset's units
    rating: np.ndarray | None  # (N,) float64 or None when the source has no ratings
    items: ItemTable | None = None
    notes: dict = field(default_factory=dict)  # resolved choices recorded in SplitData.params


# ----------------------------------------------------------------------------------------- files
def _first_existing(folder: Path, names: list[str]) -> Path | None:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def source_files(spec: DatasetSpec, cache_dir: Path) -> dict[str, Path]:
    """role -> path of every raw file the spec reads (missing required files are DataErrors)."""
    if spec.source == "synthetic":
        return {}
    if spec.source == "table":
        files = {"interactions": Path(spec.interactions)}
        if spec.items:
            files["items"] = Path(spec.items)
        for path in files.values():
            readers.check_file(path)
        return files
    raw_dir = Path(spec.raw_dir) if spec.raw_dir else cache_dir / "raw" / spec.name
    if not raw_dir.is_dir():
        how = ""
        if spec.name in PRESETS:  # a built-in: the download command knows its files
            how = (f" (`harness data download {spec.name}` " + ("fetches them)" if spec.source == "amazon2023"
                                                               else "says what to fetch)"))
        raise DataError(raw_dir, "", f"raw folder not found for dataset {spec.name!r}; put the official files "
                        f"there{how} or set raw_dir (see data/README.md)")
    if spec.source == "yelp":
        reviews = _first_existing(raw_dir, [YELP_REVIEWS, YELP_REVIEWS + ".gz"])
        if reviews is None:
            raise DataError(raw_dir / YELP_REVIEWS, "", "file not found (Yelp Open Dataset review file)")
        files = {"reviews": reviews}
        business = _first_existing(raw_dir, [YELP_BUSINESS, YELP_BUSINESS + ".gz"])
        if business is not None:
            files["business"] = business
    else:
        cat = spec.category
        bench = [_first_existing(raw_dir, [f"{cat}.{s}.csv", f"{cat}.{s}.csv.gz"]) for s in ("train", "valid", "test")]
        reviews = _first_existing(raw_dir, [f"{cat}.jsonl", f"{cat}.jsonl.gz"])
        meta = _first_existing(raw_dir, [f"meta_{cat}.jsonl", f"meta_{cat}.jsonl.gz"])
        kind = spec.amazon_files
        if kind == "auto":
            kind = "benchmark" if any(bench) else "reviews"
        if kind == "benchmark":
            for split, path in zip(("train", "valid", "test"), bench, strict=True):
                if path is None:
                    raise DataError(raw_dir / f"{cat}.{split}.csv", "", "file not found (official benchmark file, "
                                    "benchmark/5core/timestamp_w_his)")
            files = {"train": bench[0], "valid": bench[1], "test": bench[2]}
        else:
            if reviews is None:
                raise DataError(raw_dir / f"{cat}.jsonl", "", f"file not found (raw reviews); expected {cat}.jsonl "
                                f"or {cat}.{{train,valid,test}}.csv in {raw_dir}")
            files = {"reviews": reviews}
        if meta is None:
            raise DataError(raw_dir / f"meta_{cat}.jsonl", "", "file not found (item metadata)")
        files["meta"] = meta
    for path in files.values():
        readers.check_file(path)
    return files


# ----------------------------------------------------------------------------------------- reading
def read_source(spec: DatasetSpec, files: dict[str, Path]) -> RawData:
    if spec.source == "synthetic":
        from .synthetic import generate

        return generate(spec.synthetic)
    if spec.source == "table":
        return _read_generic(spec, files)
    if spec.source == "yelp":
        return _read_yelp(spec, files)
    return _read_amazon(spec, files)


def _read_generic(spec: DatasetSpec, files: dict[str, Path]) -> RawData:
    table = readers.read_table(files["interactions"])
    cols = spec.columns
    user = readers.resolve_column(table, "user", cols.user)
    item = readers.resolve_column(table, "item", cols.item)
    ts = readers.resolve_column(table, "timestamp", cols.timestamp)
    rating = readers.resolve_column(table, "rating", cols.rating, required=spec.rating_above is not None)
    raw = RawData(
        file=str(files["interactions"]),
        ts_column=ts,
        user=readers.ids(table, user),
        item=readers.ids(table, item),
        timestamp=readers.timestamps(table, ts, spec.timestamp_unit),
        rating=readers.ratings(table, rating) if rating else None,
        notes={"columns": {"user": user, "item": item, "timestamp": ts, "rating": rating}},
    )
    if "items" in files:
        items = readers.read_table(files["items"])
        key = cols.item_key or (item if item in items.frame.columns else str(items.frame.columns[0]))
        readers.require_columns(items, [key])
        raw.items = _item_table(items, key, spec.text_fields)
    return raw


def _item_table(table: readers.Table, key: str, fields: tuple[str, ...] | None) -> ItemTable:
    frame = table.frame
    item_ids = readers.ids(table, key)
    if fields is None:
        fields = tuple(str(c) for c in frame.columns if str(c) != key)
    else:
        readers.require_columns(table, list(fields))
    # Duplicate ids: the first row wins (a stable, documented choice).
    _, first = np.unique(item_ids, return_index=True)
    first.sort()
    attrs = {name: readers.text_values(frame[name].iloc[first]) for name in fields}
    return ItemTable(file=str(table.file), key_column=key, ids=item_ids[first], attrs=attrs)


def _concat(parts: list[RawData], file: str) -> RawData:
    rating = None if any(p.rating is None for p in parts) else np.concatenate([p.rating for p in parts])
    return RawData(file=file, ts_column=parts[0].ts_column,
                   user=np.concatenate([p.user for p in parts]), item=np.concatenate([p.item for p in parts]),
                   timestamp=np.concatenate([p.timestamp for p in parts]), rating=rating)


def _read_amazon(spec: DatasetSpec, files: dict[str, Path]) -> RawData:
    cols = ["user_id", "parent_asin", "rating", "timestamp"]
    if "reviews" in files:
        frame = read_jsonl(files["reviews"], {"user_id": "string", "parent_asin": "string", "rating": "float64",
                                              "timestamp": "int64"})
        table = readers.Table(files["reviews"], frame, first_line=1)
        raw = _columns(table, cols, spec)
        raw.notes["amazon_files"] = "reviews"
    else:
        # The official benchmark files: train, valid and test together are the 5-core interactions; the
        # history column is re-derived from them (it is exactly the user's earlier items in these files).
        parts = []
        for split in ("train", "valid", "test"):
            table = readers.read_table(files[split])
            readers.require_columns(table, cols)
            parts.append(_columns(table, cols, spec))
        raw = _concat(parts, file=str(files["train"].parent / f"{spec.category}.{{train,valid,test}}.csv"))
        raw.notes["amazon_files"] = "benchmark"
    fields = spec.text_fields or ("title", "description", "price")
    meta = read_jsonl(files["meta"], None, columns=["parent_asin", *fields])
    meta_table = readers.Table(files["meta"], meta, first_line=1)
    if "price" in meta.columns:  # the official meta writes a missing price as the string "None"
        meta["price"] = meta["price"].where(meta["price"].astype(str) != "None", None)
    raw.items = _item_table(meta_table, "parent_asin", fields)
    return raw


def _columns(table: readers.Table, cols: list[str], spec: DatasetSpec) -> RawData:
    user, item, rating, ts = cols
    readers.require_columns(table, cols)
    return RawData(file=str(table.file), ts_column=ts, user=readers.ids(table, user), item=readers.ids(table, item),
                   timestamp=readers.timestamps(table, ts, spec.timestamp_unit), rating=readers.ratings(table, rating))


def _read_yelp(spec: DatasetSpec, files: dict[str, Path]) -> RawData:
    frame = read_jsonl(files["reviews"], {"user_id": "string", "business_id": "string", "stars": "float64",
                                          "date": "string"})
    table = readers.Table(files["reviews"], frame, first_line=1)
    readers.require_columns(table, ["user_id", "business_id", "stars", "date"])
    # The notebook parsed dates in the machine's local zone; we read them as UTC (splits use the range).
    raw = RawData(file=str(files["reviews"]), ts_column="date", user=readers.ids(table, "user_id"),
                  item=readers.ids(table, "business_id"), timestamp=readers.timestamps(table, "date", "s"),
                  rating=readers.ratings(table, "stars"))
    if "business" in files:
        fields = spec.text_fields or ("name", "city", "state", "categories")
        schema = {"business_id": "string", **{f: "string" for f in fields}}
        business = readers.Table(files["business"], read_jsonl(files["business"], schema), first_line=1)
        raw.items = _item_table(business, "business_id", fields)
    return raw


# ----------------------------------------------------------------------------------------- JSON lines
def read_jsonl(path: Path, schema: dict[str, str] | None, columns: list[str] | None = None) -> pd.DataFrame:
    """A JSON-lines file (gzip or plain, by content) as a frame. With ``schema`` (field -> Arrow type)
    pyarrow parses only those fields (fast, for the large review files); without it pandas reads each
    object (metadata with mixed types). Absent fields become null columns; a malformed line is reported
    with its line number, a damaged gzip stream as such."""
    import pyarrow as pa
    import pyarrow.json as pj

    readers.check_file(path)
    compressed = readers.is_gzip(path)
    try:
        if schema is not None:
            arrow = pa.schema([(name, getattr(pa, kind)()) for name, kind in schema.items()])
            options = pj.ParseOptions(explicit_schema=arrow, unexpected_field_behavior="ignore")
            with pa.input_stream(str(path), compression="gzip" if compressed else None) as stream:
                frame = pj.read_json(stream, parse_options=options).to_pandas()
        else:
            chunks = pd.read_json(path, lines=True, dtype=False, chunksize=200_000,
                                  compression="gzip" if compressed else None)
            frame = pd.concat([c.reindex(columns=columns) for c in chunks], ignore_index=True)
    except (*readers.READ_ERRORS, pa.ArrowException, TypeError) as exc:
        raise _diagnose_jsonl(path, schema or {}, str(exc)) from None
    if len(frame) == 0:
        raise DataError(path, "", "no rows")
    return frame


def _diagnose_jsonl(path: Path, schema: dict[str, str], fallback: str) -> DataError:
    """Why a JSON-lines file did not parse (error path only): a damaged gzip stream, else the first line
    that is not a JSON object or has a field of the wrong type."""
    problem = readers.gzip_problem(path)
    if problem is not None:
        return DataError(path, "", problem)
    kinds = {"string": (str,), "float64": (int, float), "int64": (int,)}
    with readers.open_text(path) as fh:
        lines = enumerate(fh, start=1)
        for number, line in lines:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                cut = not line.endswith("\n") and next(lines, None) is None
                return DataError(path, f"line {number}", f"invalid JSON ({exc.msg})" + (
                    "; the last line is incomplete (is the file truncated?)" if cut else ""))
            if not isinstance(obj, dict):
                return DataError(path, f"line {number}", "not a JSON object")
            for name, kind in schema.items():
                value = obj.get(name)
                ok = value is None or (isinstance(value, kinds[kind]) and not isinstance(value, bool))
                if not ok:
                    return DataError(path, f"column {name!r}, line {number}", f"expected {kind}, got {value!r}")
    return DataError(path, "", f"cannot parse JSON lines ({fallback})")
