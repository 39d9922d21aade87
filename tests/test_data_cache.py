"""The Parquet cache: reuse, keys, atomic writes, damage detection, and equality with a fresh build."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import rearec.data.cache as cache_mod
import rearec.data.load as load_mod
from rearec.data import load_dataset, prepare

SPEC = {"name": "synthetic", "synthetic": {"n_users": 300, "n_items": 120, "n_topics": 6}}


def folders(cache: Path) -> list[Path]:
    return sorted((cache / "processed").iterdir())


def no_processing(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(load_mod, "process", boom)


def same(a, b) -> None:
    assert a.content_hash == b.content_hash and a.n_items == b.n_items and a.n_users == b.n_users
    for name in ("train", "valid", "test"):
        x, y = getattr(a, name), getattr(b, name)
        for field in ("user", "history", "target", "timestamp", "history_len"):
            assert np.array_equal(getattr(x, field), getattr(y, field)), (name, field)
    for field in ("user", "offsets", "items", "is_target"):
        assert np.array_equal(getattr(a.train_sequences, field), getattr(b.train_sequences, field))
    assert a.item_ids.tolist() == b.item_ids.tolist() and a.item_text == b.item_text


def test_prepare_twice_reuses_the_cache(tmp_path, monkeypatch):
    first = load_dataset(SPEC, tmp_path)
    (folder,) = folders(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["items.parquet", "manifest.json", "sequences.parquet",
                                                        "test.parquet", "train.parquet", "valid.parquet"]
    no_processing(monkeypatch)
    second = load_dataset(SPEC, tmp_path)
    same(first, second)
    assert folders(tmp_path) == [folder]


def test_params_and_content_hash(tmp_path):
    data = load_dataset(SPEC, tmp_path)
    params = data.params
    json.dumps(params)  # JSON-able
    assert params["dataset"]["synthetic"]["n_users"] == 300 and params["dataset"]["kcore"] == 5
    assert params["dataset"]["split"] == {"method": "quantile", "valid_quantile": 0.8, "test_quantile": 0.9}
    assert len(data.content_hash) == 64
    # The hash is of the processed splits: recomputing from the loaded arrays gives the same value.
    processed, _, _ = cache_mod.read(folders(tmp_path)[0])
    assert cache_mod.content_hash(processed) == data.content_hash
    other = load_dataset({**SPEC, "max_len": 20}, tmp_path)
    assert other.content_hash != data.content_hash and len(folders(tmp_path)) == 2
    assert other.train.history.shape[1] == 20


def test_changed_raw_file_gets_a_new_cache(tmp_path):
    log = tmp_path / "log.csv"
    body = "".join(f"u{k % 5},i{k % 7},{k}\n" for k in range(80))
    log.write_text("user,item,timestamp\n" + body)
    a = load_dataset({"interactions": str(log)}, tmp_path / "c")
    log.write_text("user,item,timestamp\n" + body + "u1,i2,79\n")
    b = load_dataset({"interactions": str(log)}, tmp_path / "c")
    assert a.params["cache_key"] != b.params["cache_key"] and len(folders(tmp_path / "c")) == 2
    assert (a.params["notes"]["raw_interactions"], b.params["notes"]["raw_interactions"]) == (80, 81)
    assert b.params["raw_files"]["interactions"]["bytes"] == log.stat().st_size


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest", "delete"])
def test_damaged_cache_is_detected_and_rebuilt(tmp_path, damage):
    good = load_dataset(SPEC, tmp_path)
    (folder,) = folders(tmp_path)
    target = folder / "train.parquet"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:100])
    elif damage == "flip":
        raw = bytearray(target.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        target.write_bytes(bytes(raw))
    elif damage == "manifest":
        (folder / "manifest.json").write_text("{not json")
    else:
        (folder / "sequences.parquet").unlink()
    rebuilt = load_dataset(SPEC, tmp_path)
    same(good, rebuilt)
    assert folders(tmp_path) == [folder]
    cache_mod.read_manifest(folder)  # verifies every checksum


def test_interrupted_write_leaves_no_complete_looking_cache(tmp_path, monkeypatch):
    real = cache_mod.pq.write_table
    calls = []

    def crash(table, path, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed mid-write")
        return real(table, path, **kwargs)

    monkeypatch.setattr(cache_mod.pq, "write_table", crash)
    with pytest.raises(KeyboardInterrupt):
        load_dataset(SPEC, tmp_path)
    assert list((tmp_path / "processed").iterdir()) == []  # temporary folder removed, nothing renamed
    monkeypatch.setattr(cache_mod.pq, "write_table", real)
    # A stale temporary folder from a killed process is ignored.
    (tmp_path / "processed" / ".synthetic-x.tmp-1-abc").mkdir()
    data = load_dataset(SPEC, tmp_path)
    assert len(data.train) > 0


def test_a_concurrent_writers_complete_folder_is_kept(tmp_path, monkeypatch):
    first = load_dataset(SPEC, tmp_path)
    (folder,) = folders(tmp_path)
    before = (folder / "manifest.json").stat().st_mtime_ns
    # Another process finished while we were preparing: our write must keep its folder, not trash it.
    monkeypatch.setattr(cache_mod, "read_manifest", _fail_first(cache_mod.read_manifest))
    again = load_dataset(SPEC, tmp_path)
    same(first, again)
    assert (folder / "manifest.json").stat().st_mtime_ns == before
    assert [p.name for p in (tmp_path / "processed").iterdir()] == [folder.name]


def _fail_first(real):
    calls = []

    def patched(folder, verify=True):
        calls.append(folder)
        if len(calls) == 1:  # prepare()'s first look: pretend the cache is not there yet
            raise cache_mod.CacheDamaged("not yet")
        return real(folder, verify)

    return patched


def test_loaded_equals_rebuilt_and_prepare_returns_the_folder(tmp_path):
    first = load_dataset(SPEC, tmp_path)
    folder = prepare(SPEC, tmp_path)
    assert folder == folders(tmp_path)[0] and (folder / "manifest.json").is_file()
    rebuilt = load_dataset(SPEC, tmp_path, rebuild=True)
    same(first, rebuilt)


def test_raw_file_hashes_are_remembered(tmp_path, monkeypatch):
    log = tmp_path / "log.csv"
    log.write_text("user,item,timestamp\n" + "".join(f"u{k % 5},i{k % 7},{k}\n" for k in range(80)))
    load_dataset({"interactions": str(log)}, tmp_path / "c")
    monkeypatch.setattr(cache_mod, "sha256_file", lambda path, chunk=0: (_ for _ in ()).throw(AssertionError(path)))
    monkeypatch.setattr(load_mod, "process", lambda *a: (_ for _ in ()).throw(AssertionError("reprocessed")))
    monkeypatch.setattr(cache_mod, "read_manifest", lambda folder, verify=True: json.loads(
        (folder / "manifest.json").read_text()))
    assert len(load_dataset({"interactions": str(log)}, tmp_path / "c").train) > 0
