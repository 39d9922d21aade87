"""The data tests' slow reference helpers (tests/conftest.py, fixture data_files) checked by hand."""

from __future__ import annotations


def test_official_5core_helper_keeps_earliest_duplicate(data_files):
    recs = [{"user_id": "u", "parent_asin": "a", "rating": 5.0, "timestamp": 2},
            {"user_id": "u", "parent_asin": "a", "rating": 1.0, "timestamp": 1}]
    assert data_files.official_5core(recs, k=1) == [recs[1]]
