"""The preprocessing rules on hand-made logs whose every row is worked out by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rearec.data import DataError, load_dataset

# u1: a b c(tie with b, after it in the file) d | e (valid) | a (test, e in history)
# u2: a b | x (valid, x never in train) | b (test, x in history)
# u3: c | d (valid) | e (test, e not in train)
# u4: a b | | c (test)
LOG = """user,item,timestamp,rating
u1,a,10,5
u3,c,5,5
u2,a,15,5
u1,b,20,4
u1,c,20,1
u2,b,30,5
u1,d,40,5
u4,a,45,5
u4,b,48,2
u2,x,55,5
u1,e,60,5
u3,d,65,5
u4,c,72,5
u2,b,75,5
u1,a,80,5
u3,e,90,5
"""
ABSOLUTE = {"method": "absolute", "valid_from": 50, "test_from": 70}


def write(tmp_path: Path, text: str, name: str = "log.csv") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_rows_histories_ids_and_drops_by_hand(tmp_path):
    data = load_dataset({"interactions": write(tmp_path, LOG), "split": ABSOLUTE, "max_len": 2}, tmp_path / "c")
    # Vocabulary {a, b, c, d} numbered by first timestamp: c@5, a@10, b@20, d@40; e and x are never trained on.
    assert data.item_ids.tolist() == ["", "c", "a", "b", "d"]
    assert data.n_items == 4 and data.n_users == 4  # users by first timestamp: u3, u1, u2, u4
    tr = data.train
    assert tr.user.tolist() == [1, 1, 1, 2, 3]
    assert tr.target.tolist() == [3, 1, 4, 3, 3]  # u1: b, c, d; u2: b; u4: b
    assert tr.timestamp.tolist() == [20, 20, 40, 30, 48]
    assert tr.history_len.tolist() == [1, 2, 3, 1, 1]  # untruncated
    assert tr.history.tolist() == [[0, 2], [2, 3], [3, 1], [0, 2], [0, 2]]  # left-padded, newest last
    assert tr.history.dtype == np.int64 and tr.max_len == 2
    # valid: only u3's d (u1's e and u2's x are not in the vocabulary)
    assert (data.valid.user.tolist(), data.valid.target.tolist(), data.valid.history.tolist()) == ([0], [4], [[0, 1]])
    # test: u4's c; u1's a and u2's b have an unseen item in their history, u3's e is unseen
    assert (data.test.user.tolist(), data.test.target.tolist(), data.test.history.tolist()) == ([3], [1], [[2, 3]])
    assert data.test.history_len.tolist() == [2]
    seq = data.train_sequences
    assert seq.user.tolist() == [1, 2, 3]  # u3 has no training row, so no sequence
    assert seq.offsets.tolist() == [0, 4, 6, 8]
    assert seq.items.tolist() == [2, 3, 1, 4, 2, 3, 2, 3]
    assert seq.is_target.tolist() == [False, True, True, True, False, True, False, True]
    assert data.item_popularity().tolist() == [0, 1, 3, 3, 1]


def test_rating_filter_on_interactions_or_only_on_targets(tmp_path, data_files):
    path = write(tmp_path, LOG + "u5,a,51,5\nu5,b,53,5\nu5,d,71,5\n")  # keeps valid/test non-empty
    common = {"interactions": path, "split": ABSOLUTE, "rating_above": 3}
    dropped = load_dataset({**common, "rating_filter": "interactions"}, tmp_path / "c")
    # u1's c (rating 1) and u4's b (rating 2) vanish: u1's d now has history [a, b]
    assert data_files.rows_as_tuples(dropped)["train"] == [("b", 20, 1, ("a",)), ("b", 30, 1, ("a",)),
                                                 ("d", 40, 2, ("a", "b"))]
    targets = load_dataset({**common, "rating_filter": "targets"}, tmp_path / "c")
    # Low ratings stay in histories but are never targets.
    assert data_files.rows_as_tuples(targets)["train"] == [("b", 20, 1, ("a",)), ("b", 30, 1, ("a",)),
                                                 ("d", 40, 3, ("a", "b", "c"))]
    assert data_files.rows_as_tuples(dropped)["test"] == [("d", 71, 2, ("a", "b"))]  # u4's c: c left the vocabulary
    assert data_files.rows_as_tuples(targets)["test"] == [("c", 72, 2, ("a", "b")), ("d", 71, 2, ("a", "b"))]
    assert targets.params["dataset"]["rating_filter"] == "targets"


def test_equal_timestamps_keep_file_order(tmp_path, data_files):
    swapped = LOG.replace("u1,b,20,4\nu1,c,20,1\n", "u1,c,20,1\nu1,b,20,4\n")
    a = data_files.rows_as_tuples(load_dataset({"interactions": write(tmp_path, LOG), "split": ABSOLUTE}, tmp_path / "c"))
    b = data_files.rows_as_tuples(load_dataset({"interactions": write(tmp_path, swapped, "swapped.csv"), "split": ABSOLUTE},
                                    tmp_path / "c"))
    assert ("c", 20, 2, ("a", "b")) in a["train"] and ("b", 20, 2, ("a", "c")) in b["train"]


def test_dedup_iterative_kcore_and_leave_one_out(tmp_path, data_files):
    events = [("u1", "a", 1), ("u1", "b", 2), ("u1", "a", 3), ("u1", "c", 4), ("u1", "d", 5),
              ("u2", "a", 1), ("u2", "b", 2), ("u2", "c", 3), ("u2", "d", 4),
              ("u3", "a", 1), ("u3", "c", 2), ("u3", "b", 3), ("u3", "d", 4),
              ("u4", "a", 1), ("u4", "z", 2),  # z has one user; without z, u4 has one item and goes too
              ("u5", "d", 1), ("u5", "a", 2), ("u5", "b", 3), ("u5", "c", 4)]
    log = "user,item,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in events)
    spec = {"interactions": write(tmp_path, log), "split": {"method": "leave_one_out"}, "dedup": True, "kcore": 2}
    data = load_dataset(spec, tmp_path / "c")
    notes = data.params["notes"]
    assert (notes["raw_interactions"], notes["after_dedup"], notes["after_kcore"]) == (19, 18, 16)
    assert data_files.rows_as_tuples(data) == {
        "train": [("a", 2, 1, ("d",)), ("b", 2, 1, ("a",)), ("b", 2, 1, ("a",)), ("c", 2, 1, ("a",))],
        "valid": [("b", 3, 2, ("a", "c")), ("b", 3, 2, ("d", "a")), ("c", 3, 2, ("a", "b")),
                  ("c", 4, 2, ("a", "b"))],
        "test": [("c", 4, 3, ("d", "a", "b")), ("d", 4, 3, ("a", "b", "c")), ("d", 4, 3, ("a", "c", "b")),
                 ("d", 5, 3, ("a", "b", "c"))],
    }
    assert data.n_users == 4 and data.params["dataset"]["split"] == {"method": "leave_one_out"}


def test_quantile_split_matches_the_reference(tmp_path, data_files):
    records = data_files.random_log(5, n_users=30, n_items=25, n=700, t_lo=0, t_hi=10_000, tick=7)
    lines = "user_id,item_id,timestamp,rating\n" + "".join(
        f"{r['user_id']},{r['parent_asin']},{r['timestamp']},{r['rating']}\n" for r in records)
    spec = {"interactions": write(tmp_path, lines), "kcore": 3, "min_history_train": 2, "min_history_eval": 3,
            "max_len": 4, "split": {"method": "quantile", "valid_quantile": 0.7, "test_quantile": 0.85}}
    data = load_dataset(spec, tmp_path / "c")
    expected = data_files.reference_rows(records, rating_above=None, rating_filter="interactions", dedup=False, kcore=3,
                              min_train=2, min_eval=3, cuts=(0.7, 0.85), cut_rule="after", titled=None, max_len=4)
    assert data_files.rows_as_tuples(data) == expected
    assert all(len(v) > 20 for v in expected.values())


def test_sequences_reproduce_every_train_row(tmp_path):
    data = load_dataset("synthetic", tmp_path)
    seq, tr = data.train_sequences, data.train
    hist, target, user = [], [], []
    for k, u in enumerate(seq.user):
        items = seq.items[seq.offsets[k]:seq.offsets[k + 1]]
        for p in np.flatnonzero(seq.is_target[seq.offsets[k]:seq.offsets[k + 1]]):
            h = items[max(0, p - tr.max_len):p]
            hist.append(np.concatenate([np.zeros(tr.max_len - len(h), dtype=np.int64), h]))
            target.append(items[p])
            user.append(u)
    assert np.array_equal(np.array(user), tr.user)
    assert np.array_equal(np.array(target), tr.target)
    assert np.array_equal(np.stack(hist), tr.history)
    assert not seq.is_target[seq.offsets[:-1]].any()  # a user's first item is never a target
    # Eval rows never see an item that training never saw.
    for rows in (data.valid, data.test):
        assert rows.target.min() >= 1 and rows.history.max() <= data.n_items
        assert np.isin(rows.target, seq.items).all() and np.isin(rows.history[rows.history > 0], seq.items).all()


@pytest.mark.parametrize("cut", [{"valid_from": 0, "test_from": 70}, {"valid_from": 50, "test_from": 91}])
def test_split_cut_outside_the_time_range_is_an_error(tmp_path, cut):
    path = write(tmp_path, LOG)
    with pytest.raises(DataError, match=r"log\.csv: column 'timestamp': split\.(valid|test)_from = \d+ is outside "
                                        r"the data's time range: after filtering, timestamps span 5 \.\. 90"):
        load_dataset({"interactions": path, "split": {"method": "absolute", **cut}}, tmp_path / "c")
    assert not (tmp_path / "c" / "processed").exists() or not any((tmp_path / "c" / "processed").iterdir())


def test_iso_date_cuts_are_converted_with_the_timestamp_unit(tmp_path):
    log = "user,item,timestamp\n" + "".join(f"u{k % 3},i{k % 4},{1_600_000_000 + k * 86_400}\n" for k in range(40))
    spec = {"interactions": write(tmp_path, log), "split": {"method": "absolute", "valid_from": "2020-10-01",
                                                             "test_from": "2020-10-15T00:00:00Z"}}
    data = load_dataset(spec, tmp_path / "c")
    assert data.params["notes"]["split"]["valid_from"] == 1_601_510_400
    assert data.params["notes"]["split"]["test_from"] == 1_602_720_000
    assert data.valid.timestamp.min() >= 1_601_510_400 > data.train.timestamp.max()
