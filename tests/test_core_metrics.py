"""Metrics against hand-computed values (ties included), subgroups, and one-pass evaluation."""

import math

import numpy as np
import pytest
import torch

from rearec.config import MethodConfig, ModelConfig
from rearec.evaluate import evaluate
from rearec.metrics import item_groups, per_sample, summarize, target_ranks, user_groups
from rearec.model import ReaRecModel


def test_ranks_are_pessimistic_on_ties():
    scores = torch.tensor([[0.9, 0.5, 0.5, 0.1], [1.0, 1.0, 1.0, 1.0], [0.1, 0.2, 0.3, 0.4]])
    ranks = target_ranks(scores, torch.tensor([1, 0, 3]))
    assert ranks.tolist() == [3, 4, 1]  # item 1 ties with item 2 -> both ahead counted; all tied -> last


def test_metric_values_by_hand():
    ranks = np.array([1, 3, 10, 11, 20, 21])
    assert per_sample(ranks, "recall@10").tolist() == [1, 1, 1, 0, 0, 0]
    assert per_sample(ranks, "recall@20").tolist() == [1, 1, 1, 1, 1, 0]
    nd10 = [1.0, 0.5, 1 / math.log2(11), 0, 0, 0]
    nd20 = [1.0, 0.5, 1 / math.log2(11), 1 / math.log2(12), 1 / math.log2(21), 0]
    assert per_sample(ranks, "ndcg@10") == pytest.approx(nd10)
    s = summarize(ranks)
    assert s["ndcg@20"] == pytest.approx(sum(nd20) / 6)
    assert s["recall@20"] == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="metric: unknown metric 'mrr@5'"):
        per_sample(ranks, "mrr@5")


def test_user_and_item_groups():
    lengths = np.array([1, 2, 3, 4, 5, 6, 7, 8])
    assert user_groups(lengths).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    pop = np.array([50, 1, 1, 7, 3, 100, 2, 9])
    # ordered by popularity (stable): idx 1,2,6,4,3,7,0,5 -> groups 0,0,1,1,2,2,3,3
    assert item_groups(pop).tolist() == [3, 0, 0, 2, 1, 3, 1, 2]


def test_one_pass_evaluation_matches_per_step_scoring(tiny_data):
    data = tiny_data()
    torch.manual_seed(0)
    method = MethodConfig(name="erl", reasoning_steps=2)
    model = ReaRecModel.from_configs(ModelConfig(hidden_size=16, max_len=8), method, data.n_items).eval()
    ev = evaluate(model, method, data.test, data.item_popularity(), batch_size=7)
    assert ev.ranks.shape == (len(data.test), 4)
    with torch.no_grad():
        states = model(torch.from_numpy(data.test.history))
        target = torch.from_numpy(data.test.target) - 1
        for k in range(3):
            assert ev.ranks[:, k].tolist() == target_ranks(model.scores(states[:, k]), target).tolist()
        mean_ranks = target_ranks(model.scores(states.mean(1)), target)
    assert ev.ranks[:, 3].tolist() == mean_ranks.tolist()  # ERL's own output = mean of r_0..r_K
    assert ev.metrics() == summarize(ev.ranks[:, 3])
    assert np.allclose(np.diag(ev.step_similarity), 1.0)
    frame = ev.summary()
    assert set(frame.user_group) == {"all"} | {f"user:UG{i}" for i in range(4)} | {f"item:IG{i}" for i in range(4)}
    assert len(frame) == 9 * 4 * 4  # groups x (3 steps + output) x metrics
    row = frame[(frame.user_group == "all") & frame.step.isna() & (frame.metric == "ndcg@20")]
    assert row.value.item() == pytest.approx(ev.metrics()["ndcg@20"])


def test_mask_history_excludes_seen_items(tiny_data):
    data = tiny_data()
    method = MethodConfig(name="base")
    model = ReaRecModel.from_configs(ModelConfig(hidden_size=16, max_len=8), method, data.n_items).eval()
    pop = data.item_popularity()
    plain = evaluate(model, method, data.test, pop)
    masked = evaluate(model, method, data.test, pop, mask_history=True)
    in_hist = np.array([t in h for t, h in zip(data.test.target, data.test.history, strict=True)])
    with torch.no_grad():
        scores = model.scores(model(torch.from_numpy(data.test.history))[:, 0])
    for i in np.flatnonzero(~in_hist)[:10]:
        hist = set(data.test.history[i][data.test.history[i] > 0].tolist())
        t = data.test.target[i]
        ahead = [j + 1 for j in range(data.n_items) if scores[i, j] >= scores[i, t - 1] and j + 1 != t]
        assert masked.ranks[i, 0] == 1 + len([j for j in ahead if j not in hist])
    assert (masked.ranks[~in_hist, 0] <= plain.ranks[~in_hist, 0]).all()
    assert (masked.ranks[in_hist, 0] > data.n_items // 2).all()  # a repeated target is masked away too
