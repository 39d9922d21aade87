"""Item scoring: UniSRec ranks by cosine / 0.07 in training, every step loss and evaluation; dot elsewhere."""


import numpy as np
import pytest
import torch

from rearec.config import MethodConfig, ModelConfig
from rearec.evaluate import evaluate
from rearec.latency import time_inference
from rearec.model import ReaRecModel
from rearec.objectives import Scoring
from rearec.train import train_step

N_ITEMS = 30


pytestmark = pytest.mark.usefixtures("one_thread")


def features(seed=0):
    x = np.random.default_rng(seed).normal(size=(N_ITEMS + 1, 12)).astype(np.float32)
    x[0] = 0.0
    return x


def make(backbone="unisrec", K=2, method="rpe", **cfg):
    torch.manual_seed(0)
    model_cfg = ModelConfig(backbone=backbone, hidden_size=16, num_heads=2, max_len=8, dropout=0.0,
                            attn_dropout=0.0, input_dropout=0.0, adaptor_dropout=0.0, **cfg)
    m = MethodConfig(name=method, reasoning_steps=K) if method != "base" else MethodConfig()
    feats = features() if backbone in ("unisrec", "morec") else None
    model = ReaRecModel.from_configs(model_cfg, m, N_ITEMS, feats)
    if backbone == "unisrec":  # no gating noise: training-mode outputs are then deterministic
        model.items.adaptor.noisy_gating = False
    return model, m


def np_cosine_scores(states, items, temperature):
    s = states / np.linalg.norm(states, axis=-1, keepdims=True)
    e = items / np.linalg.norm(items, axis=-1, keepdims=True)
    return s @ e.T / temperature


def test_backbone_defaults():
    assert (ModelConfig(backbone="unisrec").item_scoring, ModelConfig(backbone="unisrec").score_temperature) == ("cosine", 0.07)
    for backbone in ("sasrec", "bert4rec", "morec"):
        cfg = ModelConfig(backbone=backbone)
        assert (cfg.item_scoring, cfg.score_temperature) == ("dot", None)
    assert ModelConfig(backbone="unisrec", item_scoring="dot").item_scoring == "dot"  # a visible choice
    assert ModelConfig(item_scoring="cosine", score_temperature=0.2).score_temperature == 0.2


def test_unisrec_scores_are_cosine_over_temperature():
    model, _ = make()
    model.eval()
    history = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 30]])
    with torch.no_grad():
        states = model(history)  # (2, 3, 16)
        got = model.scores(states).numpy()
        items = model.item_weights.numpy()
    expected = np_cosine_scores(states.numpy().astype(np.float64), items.astype(np.float64), 0.07)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
    assert np.abs(got).max() <= 1 / 0.07 + 1e-4  # bounded: cosine


def test_dot_scoring_is_the_unchanged_product():
    """SASRec / BERT4Rec / MoRec: queries are the states themselves and scores the plain product, bit for bit."""
    for backbone in ("sasrec", "morec"):
        model, _ = make(backbone)
        model.eval()
        states = torch.randn(4, 3, 16)
        assert model.scoring == Scoring("dot", 1.0) and model.scoring.queries(states) is states
        with torch.no_grad():
            assert torch.equal(model.scores(states), states @ model.item_weights.T)
            assert torch.equal(model.candidates(), model.item_weights)


@pytest.mark.parametrize("method", ["base", "rpe"])
def test_unisrec_training_loss_uses_cosine(method):
    """The trained CE is the CE of cos(r, e) / 0.07 (NumPy from the same, dropout-free, states)."""
    model, m = make(method=method, K=0 if method == "base" else 2)
    history = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 30], [0, 0, 0, 7, 8]])
    target = torch.tensor([6, 9, 9])
    with torch.no_grad():
        model.train()
        states = model(history)[:, -1].double().numpy()
        items = model.item_weights.double().numpy()
    logits = np_cosine_scores(states, items, 0.07)
    logits = logits - logits.max(-1, keepdims=True)
    lp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -lp[np.arange(3), target.numpy() - 1].mean()
    assert train_step(model, m, history, target, epoch=1, chunk=2) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("method", ["rpe", "erl"])
def test_evaluation_ranks_unisrec_by_cosine(method, tiny_data):
    data = tiny_data(n_users=20, n_items=N_ITEMS, max_len=8)
    model, m = make(method=method)
    ev = evaluate(model, m, data.test, data.item_popularity(), batch_size=7)
    model.eval()
    with torch.no_grad():
        states = model(torch.from_numpy(data.test.history)).double().numpy()  # (N, K+1, d)
        items = model.item_weights.double().numpy()
    reps = np.concatenate([states, (states.mean(1) if method == "erl" else states[:, -1])[:, None]], 1)
    scores = np_cosine_scores(reps, items, 0.07)  # (N, K+2, n_items)
    target = scores[np.arange(len(reps)), :, data.test.target - 1]  # (N, K+2)
    ranks = (scores >= target[..., None]).sum(-1)  # pessimistic ties, as rearec.metrics.target_ranks
    assert np.array_equal(ev.ranks, ranks)
    dot = (reps @ items.T)
    dot_ranks = (dot >= dot[np.arange(len(reps)), :, data.test.target - 1][..., None]).sum(-1)
    assert not np.array_equal(ev.ranks, dot_ranks)  # the two scorings rank differently here


def test_latency_runs_with_cosine_scoring(tiny_data):
    data = tiny_data(n_users=10, n_items=N_ITEMS, max_len=8)
    model, m = make(method="prl")
    assert time_inference(model, m, data.test, batch_size=4) > 0.0
