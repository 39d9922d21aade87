"""Datasets as people keep them: a folder of interactions.* [+ items.*] or one RecBole *.inter [+ .item].

The folder is only a way to find files: it never enters the cache key or a trial key, so a folder and the
same files named by path are the same dataset. Stats print the raw counts beside the processed ones.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.datasets import parse_datasets, resolve_datasets
from harness.errors import StudyError
from harness.expand import expand
from harness.study import load_study
from rearec.data import DatasetSpec, dataset_stats, load_dataset
from rearec.errors import ConfigError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
LOG = "user_id,item_id,timestamp\n" + "".join(f"u{k % 30},i{(k * 7) % 20},{1000 + k}\n" for k in range(600))
ITEMS = "item_id,title\n" + "".join(f"i{k},Title {k}\n" for k in range(20))


def folder(root: Path, name: str, files: dict[str, str | bytes]) -> Path:
    path = root / name
    path.mkdir(parents=True)
    for file, content in files.items():
        (path / file).write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def test_a_folder_resolves_to_its_files(tmp_path):
    d = folder(tmp_path, "shop", {"interactions.csv.gz": gzip.compress(LOG.encode()), "items.csv": ITEMS,
                                   "README.md": "notes", ".hidden.csv": "x"})
    spec = DatasetSpec.from_dict(str(d))
    assert (spec.name, spec.interactions, spec.items) == ("shop", str(d / "interactions.csv.gz"), str(d / "items.csv"))
    # As a mapping with overrides; an explicit items (or items: null) wins over the folder's.
    spec = DatasetSpec.from_dict({"interactions": str(d), "kcore": 2, "items": None})
    assert (spec.interactions, spec.items, spec.kcore) == (str(d / "interactions.csv.gz"), None, 2)
    # A folder with only interactions.* has no items file.
    only = folder(tmp_path, "bare", {"INTERACTIONS.TSV": LOG.replace(",", "\t")})
    assert DatasetSpec.from_dict(str(only)).items is None


def test_shared_folders_recbole_and_tsv_gz():
    ml = DatasetSpec.from_dict(str(SHARED / "ml-100k"))  # ml-100k.inter, ml-100k.item, ml-100k.user
    assert (ml.name, Path(ml.interactions).name, Path(ml.items).name) == ("ml-100k", "ml-100k.inter", "ml-100k.item")
    vg = DatasetSpec.from_dict(str(SHARED / "amazon2018-videogames") + "/")  # trailing slash is fine
    assert (vg.name, Path(vg.interactions).name, Path(vg.items).name) == (
        "amazon2018-videogames", "interactions.tsv.gz", "items.tsv.gz")


@pytest.mark.parametrize("files, pattern", [
    ({}, r"folder holds no interactions file .*; the folder is empty"),
    ({"notes.md": "x", "reviews.json": "{}"}, r"folder holds no interactions file \(expected interactions\.csv, "
     r".*exactly one RecBole <name>\.inter\); found: notes\.md, reviews\.json"),
    ({"interactions.csv": LOG, "interactions.tsv.gz": b"x"}, r"folder is ambiguous: several interactions\.\* files "
     r"\(interactions\.csv, interactions\.tsv\.gz\)"),
    ({"a.inter": LOG, "b.inter": LOG}, r"folder is ambiguous: several RecBole \*\.inter files \(a\.inter, b\.inter\)"),
    ({"interactions.csv": LOG, "items.csv": ITEMS, "items.parquet": b"x"}, r"folder is ambiguous: several items files \(items\.csv, "
     r"items\.parquet\)"),
])
def test_empty_and_ambiguous_folders_name_the_folder_and_what_was_found(tmp_path, files, pattern):
    d = folder(tmp_path, "d", files)
    with pytest.raises(ConfigError, match=rf"^datasets\[0\]: {d}: {pattern}"):
        DatasetSpec.from_dict(str(d), "datasets[0]")
    with pytest.raises(ConfigError, match=rf"^datasets\[0\]\.interactions: {d}: "):
        DatasetSpec.from_dict({"interactions": str(d)}, "datasets[0]")


def study(tmp_path: Path, name: str, dataset) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "datasets": [dataset], "backbones": ["sasrec"],
        "methods": ["base", {"name": "erl", "reasoning_steps": 1}],
        "params": {"hidden_size": 16, "num_heads": 1, "ffn_size": 32, "max_epochs": 1},
        "seeds": [0, 1], "selection": {"metric": "valid/ndcg@20"}, "resources": {"cpu": 1},
    }, sort_keys=False))
    return path


def test_folder_and_files_by_path_give_the_same_trial_keys(tmp_path):
    d = folder(tmp_path, "shop", {"interactions.csv": LOG, "items.csv": ITEMS})
    moved = shutil.copytree(d, tmp_path / "elsewhere" / "shop")  # same files, another location
    split = {"method": "leave_one_out"}
    entries = {
        "folder": {"interactions": str(d), "split": split},
        "files": {"interactions": str(d / "interactions.csv"), "items": str(d / "items.csv"), "split": split},
        "moved": {"interactions": str(moved), "split": split},
    }
    cache = tmp_path / "cache"
    keys = {}
    for label, entry in entries.items():
        s = load_study(study(tmp_path, label, entry))
        refs = resolve_datasets(s, cache, log=lambda *_: None)
        assert refs[0].spec["interactions"].endswith("interactions.csv") and refs[0].name == "shop"
        keys[label] = [t.key for t in expand(s, refs)]
    assert len(keys["folder"]) == 4 and len(set(keys["folder"])) == 4
    assert keys["folder"] == keys["files"] == keys["moved"]
    # The cache key leaves locations out too: all three share one processed folder.
    assert len(list((cache / "processed").iterdir())) == 1


def test_a_bad_folder_in_a_study_is_a_study_error(tmp_path):
    d = folder(tmp_path, "empty", {})
    with pytest.raises(StudyError, match=rf"s\.yaml: datasets\[0\]: {d}: folder holds no interactions file"):
        parse_datasets(load_study(study(tmp_path, "s", str(d))))


def test_stats_on_a_folder_print_raw_counts_beside_processed(tmp_path, capsys):
    code = main(["data", "stats", str(SHARED / "ml-100k"), "--cache-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "| Dataset | ml-100k |"
    # README of the shared data: 943 users, 1,682 items, 100,000 ratings before any filter.
    users = lines.index("| #Users (raw, before filters) | 943 |")
    assert lines[users - 1].startswith("| #Users | ")
    assert "| #Items (raw, before filters) | 1,682 |" in lines
    assert "| #Interactions (raw, before filters) | 100,000 |" in lines
    data = load_dataset(str(SHARED / "ml-100k"), tmp_path)  # the same cache: nothing is prepared again
    stats = dataset_stats(data)
    assert (stats["raw_users"], stats["raw_items"], stats["raw_interactions"]) == (943, 1682, 100_000)
    assert stats["users"] <= 943 and stats["interactions"] <= 100_000
    assert main(["data", "stats", str(SHARED / "ml-100k"), "--cache-dir", str(tmp_path), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["raw_items"] == 1682


def test_stats_on_an_empty_folder_exit_2(tmp_path, capsys):
    d = folder(tmp_path, "nothing", {"x.txt": "hello"})
    assert main(["data", "stats", str(d), "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert f"harness: error: data: dataset: {d}: folder holds no interactions file" in err and "found: x.txt" in err
    assert not (tmp_path / "c").exists()
