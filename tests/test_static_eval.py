"""Static-shape inference: fixed batch (last padded), bucketed widths, CUDA-graph replay == the eager path."""


import numpy as np
import pytest
import torch

from rearec.batching import eval_batches
from rearec.config import MethodConfig, ModelConfig
from rearec.data.types import Rows
from rearec.evaluate import evaluate
from rearec.latency import time_inference
from rearec.model import ReaRecModel
from rearec.static import check_rows, graph_count, static_batches, width_buckets

CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def data(tiny_data):
    return tiny_data()


def model_for(data, backbone="sasrec", method=None, device="cpu"):
    method = method or MethodConfig(name="prl", reasoning_steps=3)
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=backbone, hidden_size=32, num_heads=2, max_len=8)
    return ReaRecModel.from_configs(cfg, method, data.n_items).to(device), method


def test_width_buckets():
    assert width_buckets(50) == [1, 2, 4, 8, 16, 32, 50]
    assert width_buckets(8) == [1, 2, 4, 8]
    assert width_buckets(1) == [1]


def test_static_batches_are_eval_batches_padded(data):
    rows = data.test
    eager = list(eval_batches(rows, 7))
    static = list(static_batches(rows, 7))
    assert len(eager) == len(static) == 9  # 60 rows: 8 full batches and one of 4
    for (i_e, h_e, t_e), (i_s, h_s, t_s) in zip(eager, static, strict=True):
        assert np.array_equal(i_e, i_s)
        n, L = h_e.shape
        W = h_s.shape[1]
        assert h_s.shape == (7, W) and t_s.shape == (7,) and W in (1, 2, 4, 8) and W >= L
        assert torch.equal(h_s[:n, W - L :], h_e) and not h_s[:n, : W - L].any()  # left padding only
        assert torch.equal(t_s[:n], t_e)
        assert torch.equal(h_s[n:], h_s[:1].expand(7 - n, -1)) and torch.equal(t_s[n:], t_s[:1].expand(7 - n))
    assert len(static[-1][0]) == 4


@pytest.mark.parametrize("backbone,method,mask", [
    ("sasrec", MethodConfig(name="prl", reasoning_steps=3), False),
    ("sasrec", MethodConfig(name="erl", reasoning_steps=2), True),
    ("bert4rec", MethodConfig(name="prl", reasoning_steps=2), False),
    ("sasrec", MethodConfig(name="base"), False),
])
def test_static_evaluation_equals_eager(data, backbone, method, mask):
    model, method = model_for(data, backbone, method)
    pop = data.item_popularity()
    eager = evaluate(model, method, data.test, pop, batch_size=7, mask_history=mask, signals=True, static=False)
    static = evaluate(model, method, data.test, pop, batch_size=7, mask_history=mask, signals=True, static=True)
    assert np.array_equal(eager.ranks, static.ranks)
    assert np.abs(eager.step_similarity - static.step_similarity).max() <= 1e-6
    assert np.array_equal(eager.signals.rank, static.signals.rank)
    assert np.array_equal(eager.signals.top1_item, static.signals.top1_item)
    assert np.abs(eager.signals.entropy - static.signals.entropy).max() <= 1e-4
    # CPU: graphs are a no-op, so the default is today's eager path and no graph is ever captured
    default = evaluate(model, method, data.test, pop, batch_size=7, mask_history=mask)
    assert np.array_equal(default.ranks, eager.ranks) and graph_count(model) == 0


def test_static_latency_runs_every_row(data):
    model, method = model_for(data)
    for cached in (True, False):
        assert time_inference(model, method, data.test, 7, cached=cached, static=True) > 0


def test_bad_rows_are_refused_before_any_batch(data):
    model, method = model_for(data)
    bad = Rows(data.test.user, data.test.history.copy(), data.test.target, data.test.timestamp, data.test.history_len)
    bad.history[3, -1] = data.n_items + 1
    with pytest.raises(ValueError, match=f"item ids must be in 0..{data.n_items}"):
        evaluate(model, method, bad, data.item_popularity(), static=True)
    with pytest.raises(ValueError, match="exceeds max_len 4"):
        check_rows(data.test, data.n_items, 4)


@pytest.mark.skipif(not CUDA, reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("backbone,mask", [("sasrec", False), ("sasrec", True), ("bert4rec", False)])
def test_cuda_graph_evaluation_equals_eager(data, backbone, mask):
    model, method = model_for(data, backbone, device="cuda")
    pop = data.item_popularity()
    eager = evaluate(model, method, data.test, pop, batch_size=7, device="cuda", mask_history=mask, graphs=False)
    graphed = evaluate(model, method, data.test, pop, batch_size=7, device="cuda", mask_history=mask)
    assert graph_count(model) > 0  # captured, not fallen back to eager
    assert np.array_equal(eager.ranks, graphed.ranks)
    assert np.abs(eager.step_similarity - graphed.step_similarity).max() <= 1e-5
    # replays after an in-place parameter update see the new values (the graph is captured again)
    with torch.no_grad():
        model.rpe.weight.add_(1.0)
    after = evaluate(model, method, data.test, pop, batch_size=7, device="cuda", mask_history=mask)
    fresh = evaluate(model, method, data.test, pop, batch_size=7, device="cuda", mask_history=mask, graphs=False)
    assert np.array_equal(after.ranks, fresh.ranks)


@pytest.mark.skipif(not CUDA, reason="CUDA graphs need a GPU")
def test_cuda_graphs_with_a_cached_text_item_table(data):
    """UniSRec caches its item table between eval calls and drops it on a mode switch: the graph must
    compute the table itself, so evaluations after a switch (every evaluate call) still agree."""
    features = np.random.default_rng(0).normal(size=(data.n_items + 1, 16)).astype(np.float32)
    method = MethodConfig(name="prl", reasoning_steps=2)
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="unisrec", hidden_size=32, num_heads=2, max_len=8)
    model = ReaRecModel.from_configs(cfg, method, data.n_items, item_features=features).to("cuda")
    pop = data.item_popularity()
    eager = evaluate(model, method, data.test, pop, batch_size=7, device="cuda", graphs=False)
    for _ in range(2):
        graphed = evaluate(model, method, data.test, pop, batch_size=7, device="cuda")
        assert graph_count(model) > 0 and np.array_equal(eager.ranks, graphed.ranks)
