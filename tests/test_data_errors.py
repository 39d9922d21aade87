"""Bad input: each case names the file, the column or line, and the problem; nothing lands in the cache."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from rearec.data import DataError, DatasetSpec, load_dataset
from rearec.errors import ConfigError

GOOD = "user_id,item_id,timestamp,rating\n" + "".join(
    f"u{k % 4},i{k % 5},{100 + k},{1 + k % 5}\n" for k in range(60))


def assert_cache_clean(cache: Path) -> None:
    processed = cache / "processed"
    leftovers = list(processed.iterdir()) if processed.exists() else []
    assert leftovers == [], leftovers


def fails(tmp_path: Path, spec, pattern: str) -> DataError:
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=pattern) as info:
        load_dataset(spec, cache)
    assert_cache_clean(cache)
    return info.value


def write(tmp_path: Path, text: str, name: str = "log.csv") -> str:
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


def test_good_file_loads(tmp_path):
    assert len(load_dataset({"interactions": write(tmp_path, GOOD)}, tmp_path / "cache").train) > 0


def test_misnamed_column_lists_what_was_found(tmp_path):
    path = write(tmp_path, GOOD.replace("user_id", "usr"))
    err = fails(tmp_path, {"interactions": path}, r"log\.csv: no user column \(looked for user_id, .*\); found "
                r"columns: usr, item_id, timestamp, rating; name it with columns\.user")
    assert err.file == path
    fails(tmp_path, {"interactions": path, "columns": {"user": "usr_id"}},
          r"log\.csv: column 'usr_id': missing \(columns\.user names it\) \(did you mean 'usr'\?\)")


def test_explicit_column_names_are_used(tmp_path):
    path = write(tmp_path, GOOD.replace("user_id", "customer").replace("item_id", "sku"))
    data = load_dataset({"interactions": path, "columns": {"user": "customer", "item": "sku"}}, tmp_path / "c")
    assert data.params["notes"]["columns"]["user"] == "customer"


def test_empty_and_header_only_files(tmp_path):
    fails(tmp_path, {"interactions": write(tmp_path, "")}, r"log\.csv: empty file")
    fails(tmp_path, {"interactions": write(tmp_path, "user_id,item_id,timestamp\n")}, r"log\.csv: no rows \(only a header\)")
    fails(tmp_path, {"interactions": str(tmp_path / "nope.csv")}, r"nope\.csv: file not found")


def test_unparsable_and_negative_timestamps_name_the_line(tmp_path):
    lines = GOOD.splitlines()
    bad = "\n".join(lines[:5] + ["u1,i1,yesterday,4"] + lines[5:]) + "\n"
    fails(tmp_path, {"interactions": write(tmp_path, bad)},
          r"log\.csv: column 'timestamp', line 6: unparsable timestamp 'yesterday'")
    neg = "\n".join(lines[:3] + ["u1,i1,-5,4"] + lines[3:]) + "\n"
    fails(tmp_path, {"interactions": write(tmp_path, neg)}, r"log\.csv: column 'timestamp', line 4: negative timestamp '-5'")
    empty = "\n".join(lines[:8] + ["u1,i1,,4"] + lines[8:]) + "\n"
    fails(tmp_path, {"interactions": write(tmp_path, empty)}, r"column 'timestamp', line 9: unparsable timestamp ''")


def test_nan_and_negative_ratings_name_the_line(tmp_path):
    lines = GOOD.splitlines()
    for value, problem in (("", "missing or unparsable rating ''"), ("NaN", "missing or unparsable rating 'NaN'"),
                           ("-1", "negative rating '-1'")):
        text = "\n".join(lines[:2] + [f"u1,i1,150,{value}"] + lines[2:]) + "\n"
        fails(tmp_path, {"interactions": write(tmp_path, text), "rating_above": 3},
              rf"log\.csv: column 'rating', line 3: {problem}")


def test_empty_ids_name_the_line(tmp_path):
    lines = GOOD.splitlines()
    text = "\n".join(lines[:4] + [",i1,150,4"] + lines[4:]) + "\n"
    fails(tmp_path, {"interactions": write(tmp_path, text)}, r"log\.csv: column 'user_id', line 5: empty id")


def test_items_file_missing_items(tmp_path):
    items = write(tmp_path, "item_id,title\ni0,A\ni1,B\ni2,C\n", "items.csv")
    fails(tmp_path, {"interactions": write(tmp_path, GOOD), "items": items},
          r"items\.csv: column 'item_id': 2 item\(s\) of the interactions have no row in the items file, "
          r"e\.g\. 'i3', 'i4'")
    fails(tmp_path, {"interactions": write(tmp_path, GOOD), "items": items, "text_fields": ["name"]},
          r"items\.csv: column 'name': missing; found columns: item_id, title")


def test_kcore_that_empties_the_dataset(tmp_path):
    fails(tmp_path, {"interactions": write(tmp_path, GOOD), "kcore": 50},
          r"log\.csv: no interactions left after 50-core \(rating_above=None, kcore=50\); the dataset is empty")
    fails(tmp_path, {"interactions": write(tmp_path, GOOD), "rating_above": 5},
          r"no interactions left after filtering")


def test_a_split_left_empty_is_an_error(tmp_path):
    fails(tmp_path, {"interactions": write(tmp_path, GOOD), "min_history_eval": 40},
          r"log\.csv: no valid rows remain after filtering \(\d+ interactions fall in the valid period")


def test_bad_json_lines_name_the_line(tmp_path, data_files):
    raw = tmp_path / "raw"
    raw.mkdir()
    good = {"rating": 5.0, "title": "t", "text": "x", "images": [], "asin": "A", "parent_asin": "A",
            "user_id": "U", "timestamp": data_files.VALID_FROM - 1, "helpful_vote": 0, "verified_purchase": True}
    (raw / "meta_Software.jsonl").write_text(json.dumps({"parent_asin": "A", "title": "t"}) + "\n")
    spec = {"name": "amazon2023-software", "raw_dir": str(raw)}
    (raw / "Software.jsonl").write_text(json.dumps(good) + "\n" + json.dumps({**good, "timestamp": "soon"}) + "\n")
    fails(tmp_path, spec, r"Software\.jsonl: column 'timestamp', line 2: expected int64, got 'soon'")
    (raw / "Software.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n{oops\n")
    fails(tmp_path, spec, r"Software\.jsonl: line 3: invalid JSON")
    (raw / "Software.jsonl").write_text(json.dumps(good) + "\n" + json.dumps({**good, "rating": -2.0}) + "\n")
    fails(tmp_path, spec, r"Software\.jsonl: column 'rating', line 2: negative rating")
    (raw / "Software.jsonl").write_text(json.dumps({k: v for k, v in good.items() if k != "user_id"}) + "\n")
    fails(tmp_path, spec, r"Software\.jsonl: column 'user_id', line 1: empty id")


def test_amazon_benchmark_csv_problems(tmp_path, data_files):
    raw = tmp_path / "raw"
    raw.mkdir()
    header = "user_id,parent_asin,rating,timestamp,history\n"
    (raw / "Video_Games.train.csv").write_text(header + f"U,A,5.0,{data_files.VALID_FROM - 9},\n")
    (raw / "Video_Games.valid.csv").write_text(header.replace("parent_asin", "asin") + f"U,B,5.0,{data_files.VALID_FROM},A\n")
    (raw / "Video_Games.test.csv").write_text(header + f"U,C,5.0,{data_files.TEST_FROM},A B\n")
    (raw / "meta_Video_Games.jsonl").write_text("")
    spec = {"name": "amazon2023-video-games", "raw_dir": str(raw)}
    fails(tmp_path, spec, r"meta_Video_Games\.jsonl: empty file")
    with gzip.open(raw / "meta_Video_Games.jsonl.gz", "wt") as fh:
        fh.write(json.dumps({"parent_asin": "A", "title": "t"}) + "\n")
    (raw / "meta_Video_Games.jsonl").unlink()
    fails(tmp_path, spec, r"Video_Games\.valid\.csv: column 'parent_asin': missing; found columns: user_id, asin, rating")


def test_yelp_bad_date_names_the_line(tmp_path):
    raw = tmp_path / "yelp"
    raw.mkdir()
    rows = [{"review_id": f"r{k}", "user_id": "u", "business_id": "b", "stars": 5.0, "useful": 0, "funny": 0,
             "cool": 0, "text": "t", "date": f"2019-01-0{k + 1} 10:00:00"} for k in range(3)]
    rows[1]["date"] = "2019-13-45 99:00:00"
    (raw / "yelp_academic_dataset_review.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fails(tmp_path, {"name": "yelp", "raw_dir": str(raw)},
          r"yelp_academic_dataset_review\.json: column 'date', line 2: unparsable timestamp '2019-13-45 99:00:00'")


def test_spec_errors_are_config_errors_with_key_paths():
    with pytest.raises(ConfigError, match=r"^kcre: unknown key \(did you mean 'kcore'\?\)"):
        DatasetSpec.from_dict({"name": "yelp", "kcre": 5})
    with pytest.raises(ConfigError, match=r"^datasets\.0\.split\.method: 'random' is not one of"):
        DatasetSpec.from_dict({"name": "yelp", "split": {"method": "random"}}, "datasets.0")
    with pytest.raises(ConfigError, match=r"^split\.valid_from: required when method is 'absolute'"):
        DatasetSpec.from_dict({"interactions": "x.csv", "split": {"method": "absolute", "test_from": 5}})
    with pytest.raises(ConfigError, match=r"^split\.test_from: must be after valid_from"):
        DatasetSpec.from_dict({"interactions": "x.csv", "split": {"method": "absolute", "valid_from": 9,
                                                                   "test_from": 5}})
    with pytest.raises(ConfigError, match=r"unknown dataset 'amazon2023-video-game' \(did you mean "
                                          r"'amazon2023-video-games'\?\)"):
        DatasetSpec.from_dict("amazon2023-video-game")
    with pytest.raises(ConfigError, match=r"^columns\.usr: unknown key \(did you mean 'user'\?\)"):
        DatasetSpec.from_dict({"interactions": "x.csv", "columns": {"usr": "a"}})
    with pytest.raises(ConfigError, match=r"^kcore: expected an integer, got '5'"):
        DatasetSpec.from_dict({"interactions": "x.csv", "kcore": "5"})
    with pytest.raises(ConfigError, match=r"^raw_dir: only built-in sources"):
        DatasetSpec.from_dict({"interactions": "x.csv", "raw_dir": "d"})
    with pytest.raises(ConfigError, match=r"^min_history_eval: must be >= 1, got 0"):
        DatasetSpec.from_dict({"name": "yelp", "min_history_eval": 0})
    with pytest.raises(ConfigError, match=r"^text_fields: expected a list of attribute names"):
        DatasetSpec.from_dict({"interactions": "x.csv", "text_fields": "title"})
    with pytest.raises(ConfigError, match=r"^d: expected a dataset name or a mapping, got int"):
        DatasetSpec.from_dict(5, "d")
