"""Truncated or corrupt raw files (gzip, Parquet, JSON lines, plain text cut mid-line) give `file: problem`
errors, exit 2 from the CLI, and leave nothing in the cache: no processed folder, no manifest.

Covered readers: the generic table reader (interactions and items files), the Amazon 2023 benchmark CSVs,
raw reviews JSONL and item metadata JSONL, and the Yelp review and business JSON files.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.cli import main
from harness.datasets import resolve_datasets
from harness.errors import StudyError
from harness.study import load_study
from rearec.data import DataError, load_dataset

TRUNCATED = r"truncated gzip file: the compressed data ends early \(an interrupted download\? fetch it again\)"
VALID_FROM, TEST_FROM = 1628643414042, 1658002729837
LOG = "user_id,item_id,timestamp\n" + "".join(f"u{k % 30},i{(k * 7) % 20},{1000 + k}\n" for k in range(3000))
ITEMS = "item_id,title\n" + "".join(f"i{k},Title {k}\n" for k in range(20))


def truncated(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)[: len(gzip.compress(data, mtime=0)) // 2]


def flipped(data: bytes) -> bytes:
    """gzip whose deflate stream has damaged bytes in the middle (fails its CRC or its decoding)."""
    packed = bytearray(gzip.compress(data, mtime=0))
    for k in range(len(packed) // 2, len(packed) // 2 + 4):
        packed[k] ^= 0xFF
    return bytes(packed)


def assert_nothing_cached(cache: Path) -> None:
    processed = cache / "processed"
    assert not processed.exists() or list(processed.iterdir()) == []
    assert list(cache.rglob("manifest.json")) == [] if cache.exists() else True


def fails(spec, cache: Path, pattern: str) -> DataError:
    with pytest.raises(DataError, match=pattern) as info:
        load_dataset(spec, cache)
    assert_nothing_cached(cache)
    return info.value


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------------- generic tables
def test_generic_gzip_truncated_corrupt_and_cut_header(tmp_path):
    cache = tmp_path / "cache"
    f = write(tmp_path / "log.csv.gz", truncated(LOG.encode()))
    err = fails({"interactions": str(f)}, cache, rf"^{f}: {TRUNCATED}$")
    assert (err.file, err.where) == (str(f), "")
    f = write(tmp_path / "head.csv.gz", gzip.compress(LOG.encode(), mtime=0)[:12])  # not even the header
    fails({"interactions": str(f)}, cache, rf"^{f}: {TRUNCATED}$")
    f = write(tmp_path / "flip.csv.gz", flipped(LOG.encode()))
    fails({"interactions": str(f)}, cache, rf"^{f}: corrupt gzip file \(")


def test_generic_plain_text_cut_mid_line(tmp_path):
    f = write(tmp_path / "log.csv", LOG.encode()[:-9])  # the last line loses its timestamp and newline
    fails({"interactions": str(f)}, tmp_path / "cache",
          rf"^{f}: line 3001: 2 field\(s\), the header has 3: the last line is incomplete \(is the file truncated\?\)$")


def test_generic_parquet_truncated_and_corrupt(tmp_path):
    frame = pd.DataFrame({"user_id": [f"u{k % 30}" for k in range(3000)], "item_id": [f"i{k % 20}" for k in range(3000)],
                          "timestamp": range(3000)})
    frame.to_parquet(tmp_path / "good.parquet")
    raw = (tmp_path / "good.parquet").read_bytes()
    f = write(tmp_path / "cut.parquet", raw[: len(raw) // 2])
    fails({"interactions": str(f)}, tmp_path / "cache", rf"^{f}: truncated or not a Parquet file \(it does not end "
          r"with the Parquet footer marker PAR1\)$")
    damaged = bytearray(raw)
    for k in range(8, 400):  # the first data pages; the footer stays intact
        damaged[k] ^= 0x5A
    f = write(tmp_path / "flip.parquet", bytes(damaged))
    fails({"interactions": str(f)}, tmp_path / "cache", rf"^{f}: corrupt Parquet file \(")


def test_generic_items_file_truncated(tmp_path):
    inter = write(tmp_path / "log.csv", LOG.encode())
    items = write(tmp_path / "items.csv.gz", truncated(ITEMS.encode() * 20))
    fails({"interactions": str(inter), "items": str(items)}, tmp_path / "cache", rf"^{items}: {TRUNCATED}$")


# ------------------------------------------------------------------------------------- Amazon 2023
def amazon_reviews() -> bytes:
    rows = [{"rating": 5.0, "title": "t", "text": "x" * 40, "images": [], "asin": f"A{k % 30}",
             "parent_asin": f"A{k % 30}", "user_id": f"U{k % 50}", "timestamp": VALID_FROM - 10**9 + k * 10**6,
             "helpful_vote": 0, "verified_purchase": True} for k in range(3000)]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def amazon_meta() -> bytes:
    return "".join(json.dumps({"parent_asin": f"A{k}", "title": f"t{k}", "description": ["d" * 30], "price": "None"})
                   + "\n" for k in range(30)).encode() * 3


def test_amazon_reviews_jsonl(tmp_path):
    spec = lambda raw: {"name": "amazon2023-software", "raw_dir": str(raw)}  # noqa: E731
    raw = tmp_path / "a"
    write(raw / "meta_Software.jsonl.gz", gzip.compress(amazon_meta(), mtime=0))
    f = write(raw / "Software.jsonl.gz", truncated(amazon_reviews()))
    fails(spec(raw), tmp_path / "cache", rf"^{f}: {TRUNCATED}$")
    write(f, flipped(amazon_reviews()))
    fails(spec(raw), tmp_path / "cache", rf"^{f}: corrupt gzip file \(")
    f.unlink()
    plain = write(raw / "Software.jsonl", amazon_reviews()[:-25])
    fails(spec(raw), tmp_path / "cache", rf"^{plain}: line 3000: invalid JSON \(.*\); the last line is incomplete "
          r"\(is the file truncated\?\)$")


def test_amazon_item_metadata_truncated_and_corrupt(tmp_path):
    raw = tmp_path / "a"
    write(raw / "Software.jsonl", amazon_reviews())
    spec = {"name": "amazon2023-software", "raw_dir": str(raw)}
    meta = write(raw / "meta_Software.jsonl.gz", truncated(amazon_meta()))
    fails(spec, tmp_path / "cache", rf"^{meta}: {TRUNCATED}$")
    write(meta, flipped(amazon_meta()))
    fails(spec, tmp_path / "cache", rf"^{meta}: corrupt gzip file \(")


def test_amazon_benchmark_csv_gz_truncated(tmp_path):
    raw = tmp_path / "a"
    header = "user_id,parent_asin,rating,timestamp,history\n"
    rows = header + "".join(f"U{k % 9},A{k % 7},5.0,{VALID_FROM - 10**9 + k},\n" for k in range(2000))
    write(raw / "Video_Games.train.csv.gz", gzip.compress(rows.encode(), mtime=0))
    write(raw / "Video_Games.valid.csv.gz", gzip.compress((header + f"U1,A1,5.0,{VALID_FROM},\n").encode(), mtime=0))
    test = write(raw / "Video_Games.test.csv.gz", truncated((header + f"U1,A2,5.0,{TEST_FROM},\n" * 300).encode()))
    write(raw / "meta_Video_Games.jsonl", amazon_meta())
    fails({"name": "amazon2023-video-games", "raw_dir": str(raw)}, tmp_path / "cache", rf"^{test}: {TRUNCATED}$")


# ------------------------------------------------------------------------------------- Yelp
def yelp_reviews() -> bytes:
    return "".join(json.dumps({"review_id": f"r{k}", "user_id": f"u{k % 30}", "business_id": f"b{k % 25}",
                               "stars": 5.0, "text": "t", "date": f"2019-01-01 {k % 24:02d}:00:00"}) + "\n"
                   for k in range(3000)).encode()


def test_yelp_review_and_business_files(tmp_path):
    raw = tmp_path / "y"
    spec = {"name": "yelp", "raw_dir": str(raw)}
    plain = write(raw / "yelp_academic_dataset_review.json", yelp_reviews()[:-30])  # cut mid-object
    fails(spec, tmp_path / "cache", rf"^{plain}: line 3000: invalid JSON \(.*\); the last line is incomplete")
    plain.unlink()
    f = write(raw / "yelp_academic_dataset_review.json.gz", truncated(yelp_reviews()))
    fails(spec, tmp_path / "cache", rf"^{f}: {TRUNCATED}$")
    write(f, gzip.compress(yelp_reviews(), mtime=0))
    business = "".join(json.dumps({"business_id": f"b{k}", "name": "n", "city": "c", "state": "s",
                                   "categories": "x" * 50}) + "\n" for k in range(25)).encode() * 4
    b = write(raw / "yelp_academic_dataset_business.json.gz", truncated(business))
    fails(spec, tmp_path / "cache", rf"^{b}: {TRUNCATED}$")


# ------------------------------------------------------------------------------------- CLI and studies
@pytest.mark.parametrize("action", ["stats", "prepare"])
def test_cli_exit_2_with_file_and_problem(tmp_path, capsys, action):
    f = write(tmp_path / "log.tsv.gz", truncated(LOG.replace(",", "\t").encode()))
    cache = tmp_path / "cache"
    assert main(["data", action, str(f), "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"harness: error: data: {f}: " + TRUNCATED.replace("\\", "")
    assert "Traceback" not in err
    assert_nothing_cached(cache)


def test_study_with_a_truncated_file_is_a_study_error(tmp_path):
    f = write(tmp_path / "log.csv.gz", truncated(LOG.encode()))
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "datasets": [{"interactions": str(f)}], "backbones": ["sasrec"],
                                    "methods": ["base"], "seeds": [0], "selection": {"metric": "valid/ndcg@20"}}))
    with pytest.raises(StudyError, match=rf"s\.yaml: datasets\[0\]: log: {f}: truncated gzip file"):
        resolve_datasets(load_study(path), tmp_path / "cache", log=lambda *_: None)
    assert_nothing_cached(tmp_path / "cache")
