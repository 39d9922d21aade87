"""Reasoning KV cache: the preallocated (inference) and autograd-safe (training) paths against references."""

import pytest
import torch
from torch.overrides import TorchFunctionMode

from rearec.config import ModelConfig
from rearec.model import ReaRecModel

BACKBONES = ["sasrec", "bert4rec"]


def make(backbone, K=5, d=32, seed=0, dropout=0.5):
    torch.manual_seed(seed)
    cfg = ModelConfig(backbone=backbone, hidden_size=d, num_heads=2, max_len=12, dropout=dropout,
                      attn_dropout=dropout, input_dropout=0.2 if dropout else 0.0)
    return ReaRecModel(cfg, 40, K)


def batch():
    return torch.tensor([[0, 0, 0, 5, 6, 7], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 9], [0, 8, 8, 2, 40, 1]])


def concat_reference(model, r0, caches, item_mask, steps, feed=None, noise=None):
    """The reasoning loop as it was before the preallocated cache: every step concatenates the whole
    per-layer cache (items + earlier steps) and runs scaled_dot_product_attention over it."""
    B, P, _ = r0.shape
    own = torch.eye(P, dtype=torch.bool)
    r, states = r0, [r0]
    for k in range(1, steps + 1):
        x = model.reasoning_input(feed[:, :, k - 1] if feed is not None else r, k)
        if noise is not None:
            x = x + noise[:, :, k - 1]
        h = model.input_drop(model.input_norm(x))
        mask = torch.cat([item_mask, own.repeat(1, k).expand(B, 1, P, k * P)], -1)
        new = []
        for layer, past in zip(model.layers, caches, strict=True):
            a, kv = layer.attn(h, mask, past)
            h = layer._block(h, a)
            new.append(kv)
        caches, r = new, h
        states.append(r)
    return torch.stack(states, 2)


class CountCat(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.cat:
            self.calls += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("backbone", BACKBONES)
def test_preallocated_cache_equals_uncached(backbone):
    model = make(backbone).eval()
    h = batch()
    with torch.no_grad():
        cached, uncached = model(h), model.forward_uncached(h)
    assert cached.shape == (4, 6, 32)
    assert (cached - uncached).abs().max().item() <= 1e-5
    assert (model.scores(cached) - model.scores(uncached)).abs().max().item() <= 1e-5
    # the autograd-safe path (grad enabled, no buffers) gives the same states
    assert (model(h) - cached).abs().max().item() <= 1e-5


@pytest.mark.parametrize("steps", [1, 5])
def test_preallocated_cache_never_concatenates_per_step(steps):
    """Under no_grad the step loop writes into buffers: one torch.cat (the mask) whatever K is."""
    model = make("sasrec").eval()
    with torch.no_grad():
        r0, caches, key_ok = model.encode_items(batch())
        with CountCat() as counter:
            model.reason(r0, caches, key_ok, steps)
    assert counter.calls == 1


def test_grouped_paths_agree_with_concat_reference():
    """P > 1 groups (packed training) with PRL's noisy feed: buffered, autograd-safe and the old concat loop."""
    model = make("sasrec", K=3).eval()
    items = torch.tensor([[0, 1, 2, 3, 4, 5], [0, 0, 7, 8, 9, 10]])
    ends = torch.tensor([[2, 4, 5], [3, 5, -1]])
    r0, caches, item_mask = model.encode_packed(items, ends)
    feed, noise = torch.randn(2, 3, 4, 32), torch.randn(2, 3, 3, 32)
    ref = concat_reference(model, r0, caches, item_mask, 3, feed, noise)
    grad_path = model.reason_groups(r0, caches, item_mask, 3, feed, noise)
    with torch.no_grad():
        buffered = model.reason_groups(r0, caches, item_mask, 3, feed, noise)
    assert (grad_path - ref).abs().max().item() <= 1e-5
    assert (buffered - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("backbone", BACKBONES)
def test_training_path_has_the_concat_loops_dropout_and_gradients(backbone):
    """In training mode (dropout on) the autograd-safe path draws the same dropout masks as the old
    concat + scaled_dot_product_attention loop on CPU, so states and every gradient agree to rounding."""
    h = batch()
    results = []
    for reference in (False, True):
        model = make(backbone, K=3).train()
        torch.manual_seed(123)
        r0, caches, key_ok = model.encode_items(h)
        if reference:
            states = concat_reference(model, r0[:, None], caches, key_ok[:, None, None, :], 3)[:, 0]
        else:
            states = model.reason(r0, caches, key_ok, 3)
        loss = (model.scores(states) ** 2).mean()
        loss.backward()
        results.append((states.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (new, g_new), (old, g_old) = results
    assert (new - old).abs().max().item() <= 1e-5
    assert new.std().item() > 0.1  # dropout was on: a different mask would differ by O(1)
    for name, grad in g_old.items():
        scale = grad.abs().max().item() + 1e-12
        assert (g_new[name] - grad).abs().max().item() <= 1e-5 * max(1.0, scale), name
