"""Training loop: learning, determinism, early stopping and restore, callbacks, batching equivalences."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rearec.batching import train_batches
from rearec.config import MethodConfig, ModelConfig, TrainConfig
from rearec.data.types import Rows
from rearec.latency import measure_latency
from rearec.model import ReaRecModel
from rearec.train import fit, train_step

SMALL = ModelConfig(hidden_size=32, max_len=8, dropout=0.1, attn_dropout=0.1)
FAST = TrainConfig(batch_size=64, max_epochs=12, patience=12, lr=3e-3)


@pytest.fixture(scope="module")
def data(tiny_data):
    return tiny_data()


def test_model_learns_the_pattern_and_beats_popularity(data):
    result = fit(data, SMALL, MethodConfig(name="prl", reasoning_steps=2, tau=0.5, alpha=1.5), FAST)
    pop = data.item_popularity()[1:]
    popular_rank = 1 + (pop > pop[data.test.target - 1][:, None]).sum(1)  # most-popular baseline ranks
    assert result.test.metrics()["ndcg@10"] > 0.6
    assert result.test.metrics()["ndcg@10"] > 3 * float(np.mean(np.where(popular_rank <= 10, 1 / np.log2(popular_rank + 1), 0)))
    assert result.epochs[0].train_loss > result.epochs[-1].train_loss


@pytest.mark.parametrize("method", [MethodConfig(name="erl", reasoning_steps=2, kl_lambda=0.05),
                                    MethodConfig(name="prl", reasoning_steps=2, tau=0.5, formulation="released",
                                                 warmup_epochs=1)])
def test_same_seed_is_bit_for_bit_repeatable(data, method):
    cfg = TrainConfig(batch_size=64, max_epochs=3, patience=3, seed=7)
    a, b = fit(data, SMALL, method, cfg), fit(data, SMALL, method, cfg)
    assert [e.train_loss for e in a.epochs] == [e.train_loss for e in b.epochs]
    assert np.array_equal(a.test.ranks, b.test.ranks)
    for (n1, p1), (_, p2) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        assert torch.equal(p1, p2), n1
    c = fit(data, SMALL, method, TrainConfig(batch_size=64, max_epochs=3, patience=3, seed=8))
    assert [e.train_loss for e in a.epochs] != [e.train_loss for e in c.epochs]


def test_early_stopping_restores_the_best_validation_epoch(data):
    logs = []
    cfg = TrainConfig(batch_size=64, max_epochs=40, patience=2, lr=3e-2)
    result = fit(data, SMALL, MethodConfig(name="base"), cfg, on_epoch=logs.append)
    best = max(logs, key=lambda e: e.valid["ndcg@20"])
    assert result.best_epoch == best.epoch == logs.index(best) + 1
    assert len(logs) == result.best_epoch + 2 or len(logs) == 40  # stopped `patience` epochs after the best
    assert result.valid.metrics()["ndcg@20"] == pytest.approx(best.valid["ndcg@20"])
    assert sum(e.is_best for e in logs) >= 1 and logs[result.best_epoch - 1].is_best


def test_callback_can_stop_training_and_sees_per_step_metrics(data):
    seen = []

    def stop_after_two(log):
        seen.append(log)
        return log.epoch == 2

    result = fit(data, SMALL, MethodConfig(name="rpe", reasoning_steps=2), FAST, on_epoch=stop_after_two)
    assert len(result.epochs) == 2 and [e.epoch for e in seen] == [1, 2]
    assert set(seen[0].valid_steps) == {0, 1, 2}
    assert seen[0].valid_steps[2] == seen[0].valid  # rpe's output is r_K


def grads_of(model, method, history, target, chunk, epoch=1):
    model.zero_grad()
    torch.manual_seed(0)
    loss = train_step(model, method, history, target, epoch, chunk)
    return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_chunking_is_exact(model, method, data):
    """Loss and gradients with the vocabulary loss in chunks of 7 rows equal the unchunked ones."""
    history, target = torch.from_numpy(data.train.history[:40]), torch.from_numpy(data.train.target[:40])
    full_loss, full = grads_of(model, method, history, target, chunk=10_000)
    part_loss, part = grads_of(model, method, history, target, chunk=7)
    assert part_loss == pytest.approx(full_loss, rel=1e-9)
    for name in full:
        assert torch.allclose(full[name], part[name], atol=1e-10), name


@pytest.mark.parametrize("method", [MethodConfig(name="erl", reasoning_steps=2, kl_lambda=0.1),
                                    MethodConfig(name="prl", reasoning_steps=2, tau=0.5, alpha=2.0, gamma=0.0)])
def test_chunked_vocabulary_loss_equals_unchunked(data, method):
    cfg = ModelConfig(hidden_size=16, max_len=8, dropout=0.0, attn_dropout=0.0, input_dropout=0.0)
    torch.manual_seed(1)
    model = ReaRecModel.from_configs(cfg, method, data.n_items).double()
    assert_chunking_is_exact(model, method, data)


def test_length_bucketed_batches_equal_padded_loss_and_gradients(data):
    """Same rows, trimmed to their own longest history vs padded to max_len: same loss and grads."""
    method = MethodConfig(name="prl", reasoning_steps=2, tau=0.5, gamma=0.0)
    cfg = ModelConfig(hidden_size=16, max_len=8, dropout=0.0, attn_dropout=0.0, input_dropout=0.0)
    torch.manual_seed(2)
    model = ReaRecModel.from_configs(cfg, method, data.n_items)
    rows = data.train
    short = np.flatnonzero(rows.lengths() <= 4)[:32]
    padded_h = torch.from_numpy(rows.history[short])
    trimmed_h = padded_h[:, -4:]
    target = torch.from_numpy(rows.target[short])
    l1, g1 = grads_of(model, method, padded_h, target, 1024)
    l2, g2 = grads_of(model, method, trimmed_h, target, 1024)
    assert l1 == pytest.approx(l2, abs=1e-5)
    for name in g1:
        assert (g1[name] - g2[name]).abs().max().item() <= 1e-5, name


def test_bucketed_epochs_cover_every_row_once_and_reshuffle(data):
    rows = data.train
    rng = np.random.default_rng(0)
    epoch1 = list(train_batches(rows, 16, "bucketed", rng))
    epoch2 = list(train_batches(rows, 16, "bucketed", rng))
    seen = np.sort(np.concatenate([t.numpy() for _, t in epoch1]))
    assert np.array_equal(seen, np.sort(rows.target))
    widths = [h.shape[1] for h, _ in epoch1]
    assert max(widths) <= rows.max_len and min(widths) < rows.max_len
    assert [t.tolist() for _, t in epoch1] != [t.tolist() for _, t in epoch2]
    for h, _ in epoch1:  # every batch is trimmed to its longest history
        assert (h[:, 0] > 0).any()


def test_latency_table_has_every_step_cached_and_uncached(data):
    frame = measure_latency(data.test, data.n_items, ModelConfig(hidden_size=16, max_len=8), steps=range(3), repeats=1)
    assert len(frame) == 6 and set(frame.cached) == {True, False}
    assert (frame.seconds > 0).all()
    assert frame.loc[frame.reasoning_steps == 0, "increase_pct"].tolist() == [0.0, 0.0]


def test_fit_rejects_items_outside_the_vocabulary(data):
    bad = Rows(data.train.user, data.train.history, data.train.target.copy() + data.n_items,
               data.train.timestamp, data.train.history_len)
    broken = type(data)(**{**data.__dict__, "train": bad})
    with pytest.raises(ValueError, match="item ids exceed n_items"):
        fit(broken, SMALL, MethodConfig(), FAST)


def test_core_never_imports_orchestration_packages():
    root = Path(__file__).resolve().parents[1]
    code = (
        "import sys, pkgutil, importlib, rearec\n"
        "for m in pkgutil.walk_packages(rearec.__path__, 'rearec.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in ('ray', 'duckdb', 'optuna', 'yaml') if n in sys.modules)\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    for path in (root / "rearec").rglob("*.py"):
        text = path.read_text()
        for name in ("ray", "duckdb", "optuna", "yaml"):
            assert f"import {name}" not in text and f"from {name}" not in text, f"{path} imports {name}"


@pytest.mark.parametrize("backbone", ["unisrec", "morec"])
def test_chunked_loss_on_text_backbones_equals_unchunked(data, backbone):
    """The item table of a text backbone comes out of an adaptor: chunking must still backpropagate once."""
    cfg = ModelConfig(backbone=backbone, hidden_size=16, max_len=8, dropout=0.0, attn_dropout=0.0,
                      input_dropout=0.0, adaptor_dropout=0.0)
    method = MethodConfig(name="prl", reasoning_steps=2, tau=0.5, gamma=0.0)
    features = np.random.default_rng(0).normal(size=(data.n_items + 1, 12))
    features[0] = 0
    torch.manual_seed(1)
    model = ReaRecModel.from_configs(cfg, method, data.n_items, item_features=features).double()
    assert_chunking_is_exact(model, method, data)
