"""The built-in loaders on small files in the exact official formats, checked against a slow reference."""

from __future__ import annotations

import numpy as np
import pytest

from rearec.data import DataError, load_dataset
from rearec.data.text import item_texts

CAT = "Video_Games"


@pytest.fixture(scope="module")
def amazon(tmp_path_factory, data_files):
    """A raw review log spanning both official cuts, the meta file, and the benchmark CSVs derived from it."""
    folder = tmp_path_factory.mktemp("amazon")
    day = data_files.DAY_MS
    records = data_files.random_log(1, n_users=40, n_items=60, n=1200, t_lo=data_files.VALID_FROM - 500 * day,
                                    t_hi=data_files.TEST_FROM + 300 * day, tick=3 * day)
    asins = sorted({r["parent_asin"] for r in records})
    untitled = {asins[-3], asins[-8]}  # meta rows whose title is null (rarer items)
    data_files.write_amazon_reviews(folder / f"{CAT}.jsonl", records)
    data_files.write_amazon_meta(folder / f"meta_{CAT}.jsonl",
                                 {a: (None if a in untitled else f"Game {a} &amp; more") for a in asins})
    data_files.write_amazon_benchmark(folder, CAT, records)
    return folder, records, set(asins) - untitled


def _amazon_reference(data_files, records, titled, min_train=1, min_eval=5):
    return data_files.reference_rows(records, rating_above=3.0, rating_filter="targets", dedup=True, kcore=5,
                                     min_train=min_train, min_eval=min_eval,
                                     cuts=(data_files.VALID_FROM, data_files.TEST_FROM), cut_rule="from",
                                     titled=titled)


def test_amazon_benchmark_files_follow_the_notebooks(amazon, tmp_path, data_files):
    folder, records, titled = amazon
    data = load_dataset({"name": "amazon2023-video-games", "raw_dir": str(folder)}, tmp_path)
    expected = _amazon_reference(data_files, records, titled)
    assert all(len(expected[s]) > 10 for s in expected)  # the fixture exercises every split
    assert data_files.rows_as_tuples(data) == expected
    assert data.params["notes"]["amazon_files"] == "benchmark"
    assert data.params["dataset"]["split"] == {"method": "absolute", "valid_from": data_files.VALID_FROM, "test_from": data_files.TEST_FROM}
    # Ratings <= 3 stay in histories (only targets are filtered), so some history item was never a target.
    targets = set(data.train.target) | set(data.valid.target) | set(data.test.target)
    seq_items = set(data.train_sequences.items)
    assert seq_items - targets or len(seq_items) == len(targets)


def test_amazon_raw_reviews_give_the_same_rows_as_the_benchmark_files(amazon, tmp_path, data_files):
    folder, records, titled = amazon
    spec = {"name": "amazon2023-video-games", "raw_dir": str(folder), "amazon_files": "reviews"}
    data = load_dataset(spec, tmp_path)
    assert data.params["notes"]["amazon_files"] == "reviews"
    assert data_files.rows_as_tuples(data) == _amazon_reference(data_files, records, titled)
    bench = load_dataset({"name": "amazon2023-video-games", "raw_dir": str(folder)}, tmp_path)
    assert bench.content_hash == data.content_hash  # identical processed splits from both routes
    assert data.params["raw_files"].keys() == {"reviews", "meta"}
    assert bench.params["raw_files"].keys() == {"train", "valid", "test", "meta"}


def test_amazon_software_preset_needs_ten_train_history_items(amazon, tmp_path, data_files):
    folder, records, titled = amazon
    raw = tmp_path / "raw"
    raw.mkdir()
    for path in folder.iterdir():  # the same files under the Software category's names
        (raw / path.name.replace(CAT, "Software")).write_bytes(path.read_bytes())
    data = load_dataset({"name": "amazon2023-software", "raw_dir": str(raw)}, tmp_path / "cache")
    assert data_files.rows_as_tuples(data) == _amazon_reference(data_files, records, titled, min_train=10, min_eval=5)
    assert data.train.history_len.min() >= 10


def test_amazon_meta_text_is_rendered_with_html_unescaped(amazon, tmp_path):
    folder, _, _ = amazon
    data = load_dataset({"name": "amazon2023-video-games", "raw_dir": str(folder)}, tmp_path)
    raw_id = data.item_ids[1]
    attrs = data.item_text[raw_id]
    assert attrs["title"] == f"Game {raw_id} &amp; more"
    assert attrs["description"] == f"About {raw_id} second line"
    text = item_texts(data)[0]
    assert text.startswith(f"The item information is as follows:\ntitle: Game {raw_id} & more\n"
                           f"description: About {raw_id} second line")
    prices = [a.get("price") for a in data.item_text.values()]
    assert "19.99" in prices and "None" not in prices  # the string "None" means no price


def test_yelp_review_and_business_files(tmp_path, data_files):
    raw = tmp_path / "yelp"
    raw.mkdir()
    records = data_files.random_log(2, n_users=45, n_items=30, n=2600, t_lo=1_500_000_000, t_hi=1_600_000_000, tick=86_400)
    names = {b: f"Cafe {b} &amp; Bar" for b in sorted({r["parent_asin"] for r in records})}
    data_files.write_yelp(raw, records, names)
    data = load_dataset({"name": "yelp", "raw_dir": str(raw)}, tmp_path / "cache")
    expected = data_files.reference_rows(records, rating_above=3.0, rating_filter="interactions", dedup=False, kcore=20,
                              min_train=5, min_eval=5, cuts=(0.8, 0.9), cut_rule="after", titled=None)
    assert all(len(expected[s]) > 10 for s in expected)
    assert data_files.rows_as_tuples(data) == expected
    text = item_texts(data)[0]
    assert text == (f"The item information is as follows:\nname: Cafe {data.item_ids[1]} & Bar\ncity: Tucson\n"
                    "state: AZ\ncategories: Restaurants, Cafes")
    split = data.params["notes"]["split"]
    assert split["valid_after"] == pytest.approx(split["min"] + 0.8 * (split["max"] - split["min"]))


def test_yelp_dates_are_utc_seconds(tmp_path, data_files):
    raw = tmp_path / "yelp"
    raw.mkdir()
    records = data_files.random_log(3, n_users=25, n_items=22, n=1500, t_lo=1_500_000_000, t_hi=1_600_000_000, tick=1)
    data_files.write_yelp(raw, records, {r["parent_asin"]: "x" for r in records})
    data = load_dataset({"name": "yelp", "raw_dir": str(raw), "kcore": 2, "min_history_eval": 1}, tmp_path / "c")
    stamps = {r["timestamp"] for r in records}
    assert set(data.train.timestamp.tolist()) <= stamps
    assert np.all(np.diff(data.train.timestamp[data.train.user == data.train.user[0]]) >= 0)


def test_missing_official_files_name_the_expected_file(tmp_path):
    with pytest.raises(DataError, match=r"Video_Games\.jsonl: file not found"):
        load_dataset({"name": "amazon2023-video-games", "raw_dir": str(tmp_path)}, tmp_path)
    (tmp_path / f"{CAT}.jsonl").write_text('{"user_id": "a"}\n')
    with pytest.raises(DataError, match=r"meta_Video_Games\.jsonl: file not found"):
        load_dataset({"name": "amazon2023-video-games", "raw_dir": str(tmp_path)}, tmp_path)
    with pytest.raises(DataError, match="yelp_academic_dataset_review.json: file not found"):
        load_dataset({"name": "yelp", "raw_dir": str(tmp_path)}, tmp_path)
    with pytest.raises(DataError, match="raw folder not found"):
        load_dataset("yelp", tmp_path / "nowhere")
