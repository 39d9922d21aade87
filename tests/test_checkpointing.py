"""Activation checkpointing of wide training batches: identical losses and gradients, less saved memory."""


import pytest
import torch

from rearec.config import ConfigError, MethodConfig, ModelConfig, TrainConfig
from rearec.identity import Trial, key_view
from rearec.model import ReaRecModel
from rearec.packing import build_windows, make_batch
from rearec.train import batch_tokens, checkpointing, fit, seed_everything, train_step, train_step_packed

PRL = MethodConfig(name="prl", reasoning_steps=2, tau=0.5, alpha=5.0, gamma=0.01)


def model_for(backbone="sasrec"):
    seed_everything(0)
    cfg = ModelConfig(backbone=backbone, hidden_size=32, num_heads=2, max_len=8)
    return ReaRecModel.from_configs(cfg, PRL, 30).train()


def history_batch(data):
    return torch.from_numpy(data.train.history[:24]).long(), torch.from_numpy(data.train.target[:24]).long()


def grads_of(step, on: bool, backbone="sasrec"):
    model = model_for(backbone)
    torch.manual_seed(7)  # dropout and PRL noise draws
    with checkpointing(model, on):
        loss = step(model)
    assert all(not layer.checkpointed for layer in model.layers)  # the context restores the default
    return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("backbone", ["sasrec", "bert4rec"])
def test_checkpointed_per_row_step_has_identical_gradients(backbone, tiny_data):
    history, target = history_batch(tiny_data())

    def step(model):  # chunk 8 < 24 rows: the chunked vocabulary loss path
        return train_step(model, PRL, history, target, epoch=1, chunk=8)

    (loss_a, plain), (loss_b, ckpt) = grads_of(step, False, backbone), grads_of(step, True, backbone)
    assert loss_a == loss_b
    assert plain.keys() == ckpt.keys() and len(plain) > 10
    for name, grad in plain.items():
        assert torch.equal(grad, ckpt[name]), name


def test_checkpointed_packed_step_has_identical_gradients(tiny_data):
    data = tiny_data()
    windows = build_windows(data.train_sequences, 8)
    batch = make_batch(data.train_sequences, windows, torch.arange(12).numpy())

    def step(model):
        return train_step_packed(model, PRL, batch, epoch=1, chunk=16)

    (loss_a, plain), (loss_b, ckpt) = grads_of(step, False), grads_of(step, True)
    assert loss_a == loss_b
    for name, grad in plain.items():
        assert torch.equal(grad, ckpt[name]), name


def test_checkpointing_keeps_less_for_backward(tiny_data):
    history, _ = history_batch(tiny_data())
    saved = {}
    for on in (False, True):
        model = model_for()
        total = [0]

        def pack(t, total=total):
            total[0] += t.numel() * t.element_size()
            return t

        with checkpointing(model, on), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model.encode_items(history)
        saved[on] = total[0]
    assert saved[True] < 0.5 * saved[False]


def test_fit_with_and_without_checkpointing_is_identical(tiny_data):
    data = tiny_data()
    model_cfg = ModelConfig(hidden_size=16, num_heads=2, max_len=8)
    runs = []
    for tokens in (None, 1):  # never / every batch
        cfg = TrainConfig(batch_size=64, max_epochs=1, checkpoint_tokens=tokens)
        res = fit(data, model_cfg, PRL, cfg)
        runs.append(([e.train_loss for e in res.epochs], res.test.ranks))
    assert runs[0][0] == runs[1][0]
    assert (runs[0][1] == runs[1][1]).all()


def test_batch_tokens_and_settings(tiny_data):
    history, target = history_batch(tiny_data())
    assert batch_tokens((history, target)) == 24 * 8
    with pytest.raises(ConfigError, match="checkpoint_tokens"):
        TrainConfig(checkpoint_tokens=0)
    # speed / memory settings never enter a trial key
    base = key_view(Trial(ModelConfig(), PRL, TrainConfig()))
    assert key_view(Trial(ModelConfig(), PRL, TrainConfig(checkpoint_tokens=None, cuda_graphs=False))) == base
    assert "checkpoint_tokens" not in base["train"] and "cuda_graphs" not in base["train"]
