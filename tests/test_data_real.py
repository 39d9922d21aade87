"""The two shared real datasets load through the generic source, with no conversion step, and give the
numbers their README states. Also the synthetic default, the statistics and the CLI-support functions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rearec.data import DatasetSpec, dataset_stats, format_stats, load_dataset
from rearec.data.cli_support import list_command, parse_dataset_arg, prepare_command, stats_command
from rearec.data.stats import gini
from rearec.data.text import item_texts

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
ML = SHARED / "ml-100k"
VG = SHARED / "amazon2018-videogames"


def test_ml100k_recbole_files_with_rating_filter(tmp_path):
    spec = {"interactions": str(ML / "ml-100k.inter"), "items": str(ML / "ml-100k.item"), "rating_above": 3,
            "split": {"method": "leave_one_out"}}
    data = load_dataset(spec, tmp_path)
    notes = data.params["notes"]
    assert data.name == "ml-100k"
    assert notes["columns"] == {"user": "user_id", "item": "item_id", "timestamp": "timestamp", "rating": "rating"}
    # README: keeping rating > 3 leaves 942 users and 55,375 interactions.
    assert (notes["raw_interactions"], notes["after_rating_filter"]) == (100_000, 55_375)
    assert data.n_users == 942 and notes["valid_candidates"] == notes["test_candidates"] == 942
    assert notes["train_candidates"] + 2 * 942 == 55_375
    assert data.n_items <= 1_447
    assert data.item_text["1"] == {"movie_title": "Toy Story", "release_year": "1995",
                                   "class": "Animation Children's Comedy"}
    assert data.train.timestamp.min() >= 874_724_710  # seconds, as in the file


def test_amazon2018_videogames_gzip_tsv(tmp_path):
    spec = {"interactions": str(VG / "interactions.tsv.gz"), "items": str(VG / "items.tsv.gz"),
            "split": {"method": "leave_one_out"}}
    data = load_dataset(spec, tmp_path)
    assert data.name == "amazon2018-videogames"
    # README: 50,597 users, 16,874 items, 453,637 interactions; every user has >= 5, so each gets a test row
    # candidate and at least one training row.
    assert data.params["notes"]["raw_interactions"] == 453_637
    assert data.n_users == 50_597 and data.params["notes"]["test_candidates"] == 50_597
    assert len(data.train_sequences) == 50_597
    assert data.n_items <= 16_874
    # Titles: read with keep_default_na semantics off, HTML entities unescaped when rendered.
    texts = item_texts(data)
    raw_with_entity = [k for k, v in enumerate(data.item_ids[1:]) if "&amp;" in data.item_text[v]["title"]]
    assert len(raw_with_entity) > 100
    k = raw_with_entity[0]
    assert "&amp;" not in texts[k] and " & " in texts[k]
    assert all(t.startswith("The item information is as follows:\ntitle: ") for t in texts[:100])


def test_synthetic_default_is_deterministic_long_tailed_and_time_split(tmp_path):
    a = load_dataset("synthetic", tmp_path / "a")
    b = load_dataset("synthetic", tmp_path / "b")
    assert a.content_hash == b.content_hash
    stats = dataset_stats(a)
    assert 10_000 <= stats["interactions"] <= 40_000 and 300 <= a.n_items <= 1_000
    assert stats["valid_rows"] > 1_000 and stats["test_rows"] > 1_000
    assert stats["top20_item_share"] > 0.6 and stats["item_gini"] > 0.5  # a long tail
    # Item-to-item regularity: an item's most frequent successor predicts the next item far better than
    # the most popular item does (about 0.38 vs 0.02 with the default seed).
    seq = a.train_sequences
    same_user = np.ones(len(seq.items) - 1, dtype=bool)
    same_user[seq.offsets[1:-1] - 1] = False
    prev, nxt = seq.items[:-1][same_user], seq.items[1:][same_user]
    n = a.n_items + 1
    best_successor = np.bincount(prev * n + nxt, minlength=n * n).reshape(n, n).argmax(axis=1)
    successor_hit = (best_successor[prev] == nxt).mean()
    popular_hit = (nxt == a.item_popularity().argmax()).mean()
    assert successor_hit > 0.3 and successor_hit > 8 * popular_hit
    assert a.item_text[a.item_ids[1]]["title"].endswith(f"no. {int(a.item_ids[1][1:])}")
    assert a.params["dataset"]["source"] == "synthetic"


def test_stats_follow_table1_definitions(tmp_path):
    data = load_dataset({"name": "synthetic", "synthetic": {"n_users": 200, "n_items": 80, "n_topics": 4}}, tmp_path)
    s = dataset_stats(data)
    inter = len(data.train) + len(data.valid) + len(data.test)
    assert s["interactions"] == inter
    assert s["avg_inter_per_user"] == pytest.approx(inter / data.n_users)
    assert s["avg_inter_per_item"] == pytest.approx(inter / data.n_items)
    assert s["sparsity"] == pytest.approx(1 - inter / (data.n_users * data.n_items))
    table = format_stats([s, s])
    assert table.splitlines()[0] == "| Dataset | synthetic | synthetic |"
    assert f"| #Interactions | {inter:,} | {inter:,} |" in table
    assert gini(np.array([1, 1, 1, 1])) == 0.0 and gini(np.array([0, 0, 0, 4])) == pytest.approx(0.75)


def test_cli_support_functions(tmp_path):
    lines = []
    folders = prepare_command(["synthetic", str(ML / "ml-100k.inter")], tmp_path, echo=lines.append)
    assert len(folders) == 2 and all((f / "manifest.json").is_file() for f in folders)
    assert lines[0].startswith("synthetic: ") and "items, content " in lines[0]
    out = stats_command(['{"interactions": "%s", "rating_above": 3}' % (ML / "ml-100k.inter")], tmp_path, fmt="json")
    assert json.loads(out)[0]["dataset"] == "ml-100k"
    assert "amazon2023-cds-and-vinyl" in list_command()
    spec = parse_dataset_arg("amazon2023-software", raw_dir="/raw/sw")
    assert isinstance(spec, DatasetSpec) and spec.raw_dir == "/raw/sw" and spec.min_history_train == 10
    assert parse_dataset_arg(str(VG / "interactions.tsv.gz")).name == "amazon2018-videogames"


def test_presets_resolve_to_the_notebook_parameters():
    vg = DatasetSpec.from_dict("amazon2023-video-games").to_dict()
    assert {k: vg[k] for k in ("rating_above", "rating_filter", "dedup", "kcore", "min_history_train",
                               "min_history_eval", "train_requires_attribute", "timestamp_unit")} == {
        "rating_above": 3.0, "rating_filter": "targets", "dedup": True, "kcore": 5, "min_history_train": 1,
        "min_history_eval": 5, "train_requires_attribute": "title", "timestamp_unit": "ms"}
    assert vg["split"] == {"method": "absolute", "valid_from": 1628643414042, "test_from": 1658002729837}
    cds = DatasetSpec.from_dict("amazon2023-cds-and-vinyl")
    assert (cds.category, cds.min_history_train, cds.min_history_eval) == ("CDs_and_Vinyl", 10, 10)
    yelp = DatasetSpec.from_dict("yelp")
    assert (yelp.kcore, yelp.rating_filter, yelp.min_history_train, yelp.split.valid_quantile) == (
        20, "interactions", 5, 0.8)
    json.dumps(vg)
    assert DatasetSpec.from_dict({"name": "yelp", "kcore": 10}).kcore == 10
    assert "raw_dir" not in DatasetSpec.from_dict("yelp").key_dict()
    moved = DatasetSpec.from_dict({"interactions": "a/b.csv", "items": "../c.csv"}).absolute("/base/dir")
    assert (moved.interactions, moved.items, moved.name) == ("/base/dir/a/b.csv", "/base/c.csv", "b")
    assert DatasetSpec.from_dict({"name": "yelp", "raw_dir": "raw"}).absolute("/x").raw_dir == "/x/raw"
