"""Packed-prefix training: windows reproduce per-row histories; losses and gradients equal per-row."""


import numpy as np
import pytest
import torch

from rearec.config import MethodConfig, ModelConfig, TrainConfig
from rearec.model import ReaRecModel
from rearec.packing import build_windows, make_batch, packed_batches
from rearec.train import fit, train_step, train_step_packed

MAX_LEN = 6


@pytest.fixture(scope="module")
def data(tiny_data):
    return tiny_data(n_users=40, max_len=MAX_LEN)


def row_of_target(data):
    """tiny_data's train rows follow the order of the marked positions in train_sequences."""
    return {int(p): i for i, p in enumerate(np.flatnonzero(data.train_sequences.is_target))}


def test_windows_cover_every_target_once_and_reproduce_histories(data):
    seqs = data.train_sequences
    win = build_windows(seqs, MAX_LEN)
    assert sorted(win.target_pos.tolist()) == np.flatnonzero(seqs.is_target).tolist()
    rows, index = data.train, row_of_target(data)
    n_exact = 0
    for w in range(len(win.length)):
        inputs = seqs.items[win.start[w] : win.start[w] + win.length[w]]
        assert 1 <= len(inputs) <= MAX_LEN
        for j in range(win.offsets[w], win.offsets[w + 1]):
            row = index[int(win.target_pos[j])]
            per_row = rows.history[row][rows.history[row] > 0]
            packed = inputs[: win.target_col[j] + 1]
            assert seqs.items[win.target_pos[j]] == rows.target[row] == win.target_item[j]
            # packed history is the per-row history or, in a later window, a suffix of it (>= L - S + 1)
            assert np.array_equal(per_row[len(per_row) - len(packed):], packed)
            assert len(packed) >= min(len(per_row), MAX_LEN - MAX_LEN // 2 + 1)
            n_exact += len(packed) == len(per_row)
    assert 0 < n_exact < len(win.target_pos)  # tiny has users longer than MAX_LEN + 1


def test_epoch_batches_hold_every_target_once(data):
    seqs = data.train_sequences
    win = build_windows(seqs, MAX_LEN)
    batches = list(packed_batches(seqs, win, 30, np.random.default_rng(0)))
    seen = np.concatenate([b.target_pos for b in batches])
    assert sorted(seen.tolist()) == sorted(win.target_pos.tolist())
    assert max(b.n_rows for b in batches) < 30 + MAX_LEN  # whole windows: at most one window over
    for b in batches:
        real = b.ends >= 0
        assert torch.equal(b.targets[real], torch.from_numpy(seqs.items[b.target_pos]))


def test_batch_users_name_each_window_and_repeat_for_a_long_users_windows(data):
    seqs = data.train_sequences
    win = build_windows(seqs, MAX_LEN)
    owner = np.searchsorted(seqs.offsets, win.start, side="right") - 1  # (W,) user of each window
    long_user = int(np.bincount(owner).argmax())
    both = np.flatnonzero(owner == long_user)[:2]
    assert len(both) == 2  # tiny has users longer than MAX_LEN + 1: two windows of one user
    batch = make_batch(seqs, win, np.concatenate([both, [int(np.flatnonzero(owner != long_user)[0])]]))
    assert batch.users.tolist() == [long_user, long_user, int(owner[owner != long_user][0])]


METHODS = [
    MethodConfig(name="base"),
    MethodConfig(name="naive", reasoning_steps=2),
    MethodConfig(name="rpe", reasoning_steps=3),
    MethodConfig(name="erl", reasoning_steps=2, kl_lambda=0.1),
    MethodConfig(name="erl", reasoning_steps=2, kl_lambda=0.1, formulation="released", tau=0.5),
    MethodConfig(name="prl", reasoning_steps=2, tau=0.5, alpha=2.0, gamma=0.0),
    MethodConfig(name="prl", reasoning_steps=2, tau=0.5, alpha=2.0, gamma=0.0, rcl_negatives="all"),
    MethodConfig(name="prl", reasoning_steps=2, tau=0.5, alpha=2.0, gamma=0.0, rcl_similarity="cosine"),
    MethodConfig(name="prl", reasoning_steps=2, tau=0.5, alpha=2.0, gamma=0.0, formulation="released", warmup_epochs=0),
    MethodConfig(name="prl", reasoning_steps=2, tau=0.5, rcl=False),
]


@pytest.mark.parametrize("method", METHODS,
                         ids=lambda m: f"{m.name}-{m.formulation}-rcl{m.rcl}-{m.rcl_negatives}-{m.rcl_similarity}")
def test_packed_loss_and_gradients_equal_per_row(data, method):
    """Users whose sequence fits in max_len + 1 items: identical rows, identical loss and gradients.
    RCL: packed 'other_users' equals per-row on the same rows with each row's own-user rows taken out of
    its negatives (train_step's groups); 'all' equals per-row with every other row a negative."""
    seqs = data.train_sequences
    win = build_windows(seqs, MAX_LEN)
    exact_users = np.flatnonzero(np.diff(seqs.offsets) <= MAX_LEN + 1)[:12]
    first_window = {int(np.searchsorted(seqs.offsets, s, side="right") - 1): w for w, s in enumerate(win.start)}
    batch = make_batch(seqs, win, np.array([first_window[u] for u in exact_users]))
    index = row_of_target(data)
    rows = np.array([index[int(p)] for p in batch.target_pos])
    cfg = ModelConfig(hidden_size=16, max_len=MAX_LEN, dropout=0.0, attn_dropout=0.0, input_dropout=0.0)
    torch.manual_seed(3)
    model = ReaRecModel.from_configs(cfg, method, data.n_items)

    def grads(step):
        model.zero_grad()
        loss = step()
        return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    history, target = torch.from_numpy(data.train.history[rows]), torch.from_numpy(data.train.target[rows])
    users = torch.from_numpy(data.train.user[rows])
    assert torch.equal(batch.users[:, None].expand(batch.ends.shape)[batch.ends >= 0], users)
    groups = users if method.rcl_negatives == "other_users" else None
    l_row, g_row = grads(lambda: train_step(model, method, history, target, epoch=1, chunk=1024, groups=groups))
    l_pack, g_pack = grads(lambda: train_step_packed(model, method, batch, epoch=1, chunk=7))
    assert l_pack == pytest.approx(l_row, abs=1e-5)
    assert g_row.keys() == g_pack.keys()
    for name in g_row:
        assert (g_row[name] - g_pack[name]).abs().max().item() <= 1e-5, name


def test_packed_training_learns_and_is_repeatable(data):
    cfg = ModelConfig(hidden_size=32, max_len=MAX_LEN, dropout=0.1, attn_dropout=0.1)
    method = MethodConfig(name="prl", reasoning_steps=2, tau=0.5, alpha=1.5)
    train = TrainConfig(batch_size=64, max_epochs=12, patience=12, lr=3e-3, training="packed")
    a, b = fit(data, cfg, method, train), fit(data, cfg, method, train)
    assert [e.train_loss for e in a.epochs] == [e.train_loss for e in b.epochs]
    assert a.epochs[-1].train_loss < a.epochs[0].train_loss
    assert a.test.metrics()["ndcg@10"] > 0.5


def test_packed_rejects_bert4rec(data):
    with pytest.raises(ValueError, match="training: 'packed' needs a causal backbone"):
        fit(data, ModelConfig(backbone="bert4rec", hidden_size=16, max_len=MAX_LEN), MethodConfig(),
            TrainConfig(training="packed", max_epochs=1))
