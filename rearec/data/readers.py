"""Reading raw tables (CSV / TSV / RecBole atomic / Parquet, optionally gzip) into validated columns.

Every check names the file, the column and the 1-based line of the first offending row, so a user can
open the file at that line. The readers return plain numpy arrays; ids are kept as strings.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import did_you_mean
from .errors import DataError

# Common column names, most specific first; explicit names in DatasetSpec.columns win.
CANDIDATES = {
    "user": ("user_id", "userid", "user", "uid", "reviewer_id", "reviewerid", "customer_id"),
    "item": ("item_id", "itemid", "item", "iid", "parent_asin", "asin", "business_id", "product_id", "movie_id"),
    "timestamp": ("timestamp", "unix_timestamp", "time", "ts", "datetime", "date"),
    "rating": ("rating", "stars", "score"),
}
_RECBOLE = re.compile(r"^(.+):(token|token_seq|float|float_seq)$")


@dataclass
class Table:
    """A raw table as strings / numbers, with how its row positions map to lines of the file."""

    file: Path
    frame: pd.DataFrame
    first_line: int  # file line of row 0 (2 for a text file with a header)
    unit: str = "line"  # "line" for text files, "row" for Parquet

    def where(self, column: str | None, row: int | None = None) -> str:
        parts = []
        if column is not None:
            parts.append(f"column {column!r}")
        if row is not None:
            parts.append(f"{self.unit} {row + self.first_line}")
        return ", ".join(parts)


def check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(path, "", "file not found")
    if not path.is_file():
        raise DataError(path, "", "not a file")
    if path.stat().st_size == 0:
        raise DataError(path, "", "empty file")


# What a reader raises on a damaged file: pandas / pyarrow parse errors are ValueErrors, a truncated gzip
# stream is an EOFError, a bad CRC a gzip.BadGzipFile (OSError), damaged deflate data a zlib.error.
READ_ERRORS = (ValueError, OSError, EOFError, zlib.error)


def is_gzip(path: Path) -> bool:
    """By content (the gzip magic bytes), not by name: a file named .gz that is plain text reads as text."""
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def gzip_problem(path: Path) -> str | None:
    """What is wrong with a gzip file's compressed stream (None: not gzip, or intact to its CRC trailer).

    Decompresses the whole file, so it is only called once reading has already failed."""
    if not is_gzip(path):
        return None
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 20):
                pass
    except EOFError:
        return "truncated gzip file: the compressed data ends early (an interrupted download? fetch it again)"
    except (OSError, zlib.error) as exc:
        return f"corrupt gzip file ({exc})"
    return None


def unreadable(path: Path, kind: str, exc: BaseException) -> DataError:
    """The DataError for a file a reader could not parse: the compression's fault if it is damaged."""
    return DataError(path, "", gzip_problem(path) or f"cannot parse as {kind} ({exc})")


def open_text(path: Path):
    """The file as text (UTF-8, undecodable bytes replaced), decompressed if it is gzip."""
    if is_gzip(path):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _first_line(path: Path) -> str:
    try:
        with open_text(path) as fh:
            return fh.readline().rstrip("\r\n")
    except (EOFError, OSError, zlib.error) as exc:
        raise unreadable(path, "text", exc) from None


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - 4))
            tail = fh.read()
        if tail != b"PAR1":  # every complete Parquet file ends with its footer and this marker
            raise DataError(path, "", "truncated or not a Parquet file (it does not end with the Parquet "
                            "footer marker PAR1)") from None
        raise DataError(path, "", f"corrupt Parquet file ({exc})") from None


def read_table(path: str | Path) -> Table:
    """Read a whole table as strings (Parquet keeps its types); RecBole ``name:type`` headers are stripped."""
    path = Path(path)
    check_file(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        table = Table(path, _read_parquet(path), first_line=1, unit="row")
    else:
        header = _first_line(path)
        if not header.strip():
            raise DataError(path, "line 1", "empty header line")
        # Tab if the header has one (RecBole, the shared TSVs), else comma.
        sep = "\t" if "\t" in header else ","
        kind = "TSV" if sep == "\t" else "CSV"
        try:
            frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, compression="gzip"
                                if is_gzip(path) else None, engine="c", quotechar='"')
        except READ_ERRORS as exc:
            raise unreadable(path, kind, exc) from None
        table = Table(path, frame, first_line=2)
        _reject_cut_last_line(table, sep, len(header.split(sep)))
    names = [str(c) for c in table.frame.columns]
    matches = [_RECBOLE.match(n) for n in names]
    if names and all(matches):
        table.frame.columns = [m.group(1) for m in matches]
    if len(table.frame) == 0:
        raise DataError(path, "", "no rows (only a header)" if names else "no rows")
    return table


def resolve_column(table: Table, role: str, explicit: str | None, required: bool = True,
                   key: str | None = None) -> str | None:
    """The column playing ``role``; explicit names must exist, otherwise the first common name found."""
    names = [str(c) for c in table.frame.columns]
    key = key or f"columns.{role}"
    if explicit is not None:
        if explicit not in names:
            raise DataError(table.file, f"column {explicit!r}", f"missing ({key} names it){did_you_mean(explicit, names)}; "
                            f"found columns: {', '.join(names)}")
        return explicit
    lower = {n.lower(): n for n in names}
    for candidate in CANDIDATES[role]:
        if candidate in lower:
            return lower[candidate]
    if required:
        raise DataError(table.file, "", f"no {role} column (looked for {', '.join(CANDIDATES[role])}); found columns: "
                        f"{', '.join(names)}; name it with {key}")
    return None


def require_columns(table: Table, names: Sequence[str]) -> None:
    present = [str(c) for c in table.frame.columns]
    for name in names:
        if name not in present:
            raise DataError(table.file, f"column {name!r}", f"missing{did_you_mean(name, present)}; found columns: "
                            f"{', '.join(present)}")


def _reject_cut_last_line(table: Table, sep: str, n_fields: int) -> None:
    """A plain text file cut mid-line (an interrupted copy) ends without a newline in a line with fewer
    fields than the header; pandas would pad it with empty strings, so look at the raw last line."""
    if not len(table.frame) or is_gzip(table.file):
        return
    with open(table.file, "rb") as fh:
        fh.seek(max(0, table.file.stat().st_size - (1 << 16)))
        tail = fh.read()
    if tail.endswith((b"\n", b"\r")):
        return
    fields = len(tail.rsplit(b"\n", 1)[-1].split(sep.encode()))  # quoted separators only add fields
    if fields < n_fields:
        raise DataError(table.file, table.where(None, len(table.frame) - 1), f"{fields} field(s), the header has "
                        f"{n_fields}: the last line is incomplete (is the file truncated?)")


def ids(table: Table, column: str) -> np.ndarray:
    """(N,) object array of non-empty string ids (numbers in Parquet become their decimal strings)."""
    values = table.frame[column]
    strings = values.astype(str)
    bad = values.isna().to_numpy() | (strings.str.len() == 0).to_numpy()
    if bad.any():
        raise DataError(table.file, table.where(column, int(np.argmax(bad))), "empty id")
    return strings.to_numpy(dtype=object)


def timestamps(table: Table, column: str, unit: str = "s") -> np.ndarray:
    """(N,) int64 timestamps: numbers are kept in the file's units; date strings become ``unit`` since epoch."""
    raw = table.frame[column]
    if pd.api.types.is_datetime64_any_dtype(raw):
        return _datetime_to_int(table, column, raw, unit)
    is_text = not pd.api.types.is_numeric_dtype(raw)
    if is_text and pd.to_numeric(raw.iloc[:1000], errors="coerce").isna().mean() > 0.5:
        # A date column ("2018-09-04 08:16:19"), read as UTC: the fast ISO-8601 parser first, then any
        # other format for what it could not read.
        parsed = pd.to_datetime(raw, errors="coerce", utc=True, format="ISO8601")
        if parsed.isna().any():
            retry = parsed.isna()
            parsed[retry] = pd.to_datetime(raw[retry], errors="coerce", utc=True, format="mixed")
        return _datetime_to_int(table, column, parsed, unit)
    numeric = pd.to_numeric(raw, errors="coerce") if is_text else raw.astype("float64")
    values = numeric.to_numpy(dtype="float64", na_value=np.nan)
    _reject_first(table, column, ~np.isfinite(values), "unparsable timestamp")
    _reject_first(table, column, values < 0, "negative timestamp")
    return np.floor(values).astype(np.int64)  # fractional seconds are dropped; ties keep file order


def _reject_first(table: Table, column: str, bad: np.ndarray, problem: str) -> None:
    """Raise DataError naming the first row where ``bad`` holds, with its raw value."""
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(table.file, table.where(column, row), f"{problem} {table.frame[column].iloc[row]!r}")


def _datetime_to_int(table: Table, column: str, parsed: pd.Series, unit: str) -> np.ndarray:
    _reject_first(table, column, parsed.isna().to_numpy(), "unparsable timestamp")
    if parsed.dt.tz is None:
        parsed = parsed.dt.tz_localize("UTC")
    # Timedelta arithmetic is independent of the datetime resolution (pandas 3 may use us, not ns).
    step = pd.Timedelta(milliseconds=1) if unit == "ms" else pd.Timedelta(seconds=1)
    values = ((parsed - pd.Timestamp(0, tz="UTC")) // step).to_numpy(dtype=np.int64)
    _reject_first(table, column, values < 0, "negative timestamp (before 1970)")
    return values


def ratings(table: Table, column: str) -> np.ndarray:
    """(N,) float64 ratings; NaN, unparsable or negative values are errors."""
    raw = table.frame[column]
    numeric = raw.astype("float64") if pd.api.types.is_numeric_dtype(raw) else pd.to_numeric(raw, errors="coerce")
    values = numeric.to_numpy(dtype="float64", na_value=np.nan)
    _reject_first(table, column, ~np.isfinite(values), "missing or unparsable rating")
    _reject_first(table, column, values < 0, "negative rating")
    return values


def text_values(series: pd.Series) -> np.ndarray:
    """(N,) object array of attribute strings, None where missing (empty string, null, NaN)."""
    values = series.astype(object).where(series.notna(), None).to_numpy(dtype=object)
    out = np.empty(len(values), dtype=object)
    for k, v in enumerate(values):  # per item, not per interaction: items tables are small
        if v is None or (isinstance(v, float) and v != v):
            out[k] = None
        elif isinstance(v, (list, tuple, np.ndarray)):
            joined = " ".join(str(x) for x in v if x is not None and str(x).strip())
            out[k] = joined or None
        else:
            s = str(v)
            out[k] = s if s.strip() else None
    return out
