"""The Parquet cache of processed datasets: keys, atomic writes, a checksummed manifest, fast reads.

Layout: ``<cache_dir>/processed/<name>-<key[:16]>/`` holds ``{train,valid,test}.parquet`` (user, target,
timestamp, history_len, history as list<int32> oldest -> newest, untruncated length kept separately),
``sequences.parquet`` (user, item, is_target per element), ``items.parquet`` (index, item_id, attributes),
and ``manifest.json`` written last with every file's size and sha256. A folder is built under a hidden
temporary name and renamed into place, so a folder with that name is complete or was damaged later;
damage is caught by the checksums and the folder is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .preprocess import SPLITS, Processed

FORMAT_VERSION = 1  # bump when the preprocessing, the synthetic generator or the file layout changes
MANIFEST = "manifest.json"
_HASHES = ".raw-hashes.json"


class CacheDamaged(Exception):
    """A cache folder is incomplete or its files do not match the manifest."""


# ------------------------------------------------------------------------------------ hashing
def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(path: Path, cache_dir: Path) -> dict[str, Any]:
    """{file, bytes, sha256} of a raw file; hashes are remembered by (path, size, mtime) in the cache dir,
    so a multi-GB Yelp file is hashed once."""
    path = Path(path)
    stat = path.stat()
    memo_path = cache_dir / _HASHES
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    key = str(path.resolve())
    entry = memo.get(key)
    if not (entry and entry.get("bytes") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns):
        entry = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256_file(path)}
        memo[key] = entry
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            _atomic_write_text(memo_path, json.dumps(memo, indent=1, sort_keys=True))
        except OSError:
            pass  # the memo is an optimisation only
    return {"file": path.name, "bytes": entry["bytes"], "sha256": entry["sha256"]}


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def cache_key(spec_key: dict[str, Any], raw_files: dict[str, dict[str, Any]]) -> str:
    payload = {"format": FORMAT_VERSION, "spec": spec_key,
               "raw": {role: [f["bytes"], f["sha256"]] for role, f in sorted(raw_files.items())}}
    return hashlib.sha256(json.dumps(jsonable(payload), sort_keys=True).encode()).hexdigest()


def content_hash(p: Processed) -> str:
    """sha256 over the processed splits, sequences and item ids (independent of the Parquet encoding)."""
    digest = hashlib.sha256()
    for name in SPLITS:
        for column in ("user", "target", "timestamp", "history_len", "hist_offsets", "hist_items"):
            digest.update(np.ascontiguousarray(p.rows[name][column], dtype="<i8").tobytes())
    for arr in (p.seq_user, p.seq_offsets, p.seq_items):
        digest.update(np.ascontiguousarray(arr, dtype="<i8").tobytes())
    digest.update(np.ascontiguousarray(p.seq_is_target, dtype=np.uint8).tobytes())
    digest.update("\x00".join(map(str, p.item_ids)).encode())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------ write
def _rows_table(part: dict[str, np.ndarray]) -> pa.Table:
    history = pa.ListArray.from_arrays(pa.array(part["hist_offsets"].astype(np.int32)),
                                       pa.array(part["hist_items"].astype(np.int32)))
    return pa.table({"user": part["user"].astype(np.int64), "target": part["target"].astype(np.int64),
                     "timestamp": part["timestamp"].astype(np.int64),
                     "history_len": part["history_len"].astype(np.int64), "history": history})


def _items_table(p: Processed, item_text: dict[str, np.ndarray] | None) -> pa.Table:
    columns: dict[str, Any] = {"index": np.arange(len(p.item_ids), dtype=np.int64),
                               "item_id": pa.array(p.item_ids.astype(str).tolist(), type=pa.string())}
    for name, values in (item_text or {}).items():
        if name in columns:
            name = f"attr_{name}"
        columns[name] = pa.array(list(values), type=pa.string())
    return pa.table(columns)


def write(folder: Path, p: Processed, item_text: dict[str, np.ndarray] | None, manifest: dict[str, Any]) -> None:
    """Write a complete cache folder atomically; an existing complete folder (a concurrent writer) wins."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        tables = {name: _rows_table(p.rows[name]) for name in SPLITS}
        lengths = np.diff(p.seq_offsets)
        tables["sequences"] = pa.table({"user": np.repeat(p.seq_user, lengths).astype(np.int64),
                                        "item": p.seq_items.astype(np.int64), "is_target": p.seq_is_target})
        tables["items"] = _items_table(p, item_text)
        files = {}
        for name, table in tables.items():
            path = tmp / f"{name}.parquet"
            pq.write_table(table, path, compression="zstd")
            files[path.name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
        manifest = {**manifest, "format_version": FORMAT_VERSION, "files": files}
        (tmp / MANIFEST).write_text(json.dumps(jsonable(manifest), indent=1, sort_keys=True))
        if folder.exists():
            try:
                read_manifest(folder)
                return  # a concurrent writer (another trial) finished the same folder first: keep theirs
            except CacheDamaged:
                pass
            # A damaged folder: move it aside first (rename is atomic), then delete it.
            trash = folder.parent / f".{folder.name}.trash-{uuid.uuid4().hex[:8]}"
            os.rename(folder, trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / MANIFEST).exists():  # not a concurrent writer's complete folder
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------ read
def read_manifest(folder: Path, verify: bool = True) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise CacheDamaged(f"{path}: missing") from None
    except (OSError, ValueError) as exc:
        raise CacheDamaged(f"{path}: unreadable ({exc})") from None
    if manifest.get("format_version") != FORMAT_VERSION or not isinstance(manifest.get("files"), dict):
        raise CacheDamaged(f"{path}: unexpected format")
    if verify:
        for name, meta in manifest["files"].items():
            file = folder / name
            if not file.is_file() or file.stat().st_size != meta["bytes"]:
                raise CacheDamaged(f"{file}: missing or wrong size")
            if sha256_file(file) != meta["sha256"]:
                raise CacheDamaged(f"{file}: checksum mismatch")
    return manifest


def _int(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy().astype(np.int64, copy=False)


def read(folder: Path, verify: bool = True) -> tuple[Processed, dict[str, np.ndarray], dict[str, Any]]:
    """(processed arrays, item attributes, manifest); raises CacheDamaged on any inconsistency."""
    manifest = read_manifest(folder, verify=verify)
    try:
        rows = {}
        for name in SPLITS:
            table = pq.read_table(folder / f"{name}.parquet")
            history = table.column("history").combine_chunks()
            offsets = history.offsets.to_numpy().astype(np.int64)
            rows[name] = {"user": _int(table, "user"), "target": _int(table, "target"),
                          "timestamp": _int(table, "timestamp"), "history_len": _int(table, "history_len"),
                          "hist_offsets": offsets - offsets[0],
                          "hist_items": history.flatten().to_numpy().astype(np.int64)}
        seq = pq.read_table(folder / "sequences.parquet")
        seq_user_flat = _int(seq, "user")
        starts = np.flatnonzero(np.r_[True, seq_user_flat[1:] != seq_user_flat[:-1]]) if len(seq_user_flat) else \
            np.zeros(0, dtype=np.int64)
        items = pq.read_table(folder / "items.parquet")
        attrs = {c: np.array(items.column(c).to_pylist(), dtype=object)
                 for c in items.column_names if c not in ("index", "item_id")}
        processed = Processed(
            rows=rows,
            seq_user=seq_user_flat[starts],
            seq_offsets=np.append(starts, len(seq_user_flat)).astype(np.int64),
            seq_items=_int(seq, "item"),
            seq_is_target=seq.column("is_target").to_numpy().astype(bool),
            item_ids=np.array(items.column("item_id").to_pylist(), dtype=object),
            n_users=int(manifest["n_users"]),
            notes=manifest.get("params", {}).get("notes", {}),
        )
    except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
        raise CacheDamaged(f"{folder}: unreadable ({exc})") from None
    return processed, attrs, manifest
