"""Model: masks (no future leak, no peeking at reasoning tokens), KV cache == recompute, padding, K = 0."""

import pytest
import torch

from rearec.config import MethodConfig, ModelConfig
from rearec.model import ReaRecModel

BACKBONES = ["sasrec", "bert4rec"]


def make(backbone, K=3, use_rpe=True, d=32, max_len=12, n_items=40, seed=0):
    torch.manual_seed(seed)
    return ReaRecModel(ModelConfig(backbone=backbone, hidden_size=d, num_heads=2, max_len=max_len), n_items, K, use_rpe).eval()


def batch():
    return torch.tensor([[0, 0, 0, 5, 6, 7], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 9], [0, 8, 8, 2, 40, 1]])


@pytest.mark.parametrize("backbone", BACKBONES)
def test_cached_equals_uncached(backbone):
    model = make(backbone, K=5)
    h = batch()
    cached, uncached = model(h), model.forward_uncached(h)
    assert cached.shape == (4, 6, 32)
    assert (cached - uncached).abs().max().item() <= 1e-5
    # and the scores over all items agree too
    assert (model.scores(cached) - model.scores(uncached)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("backbone", BACKBONES)
def test_padding_never_changes_outputs(backbone):
    model = make(backbone)
    h = batch()
    wider = torch.cat([torch.zeros(4, 6, dtype=torch.long), h], 1)
    assert (model(wider) - model(h)).abs().max().item() <= 1e-5
    # a row alone gives the same states as inside a batch with longer rows
    alone = model(h[2:3, -1:])
    assert (alone - model(h)[2:3]).abs().max().item() <= 1e-5


def item_block_outputs(model, h):
    tokens, pos = model._item_inputs(h)
    x = model.input_norm(model.embed(tokens) + model.pos_emb(pos))
    return model._run(x, model._item_mask(tokens))


def test_sasrec_item_never_sees_later_item():
    model = make("sasrec")
    h = torch.tensor([[1, 2, 3, 4, 5, 6]])
    changed = h.clone()
    changed[0, 4] = 30  # change the 5th item
    a, b = item_block_outputs(model, h), item_block_outputs(model, changed)
    assert (a[0, :4] - b[0, :4]).abs().max().item() == 0.0  # earlier positions are untouched
    assert (a[0, 4:] - b[0, 4:]).abs().max().item() > 1e-3  # later ones do change


def test_bert4rec_items_are_bidirectional():
    model = make("bert4rec")
    h = torch.tensor([[1, 2, 3, 4, 5, 6]])
    changed = h.clone()
    changed[0, 5] = 30
    a, b = item_block_outputs(model, h), item_block_outputs(model, changed)
    assert (a[0, 0] - b[0, 0]).abs().max().item() > 1e-3  # the first item sees the last


@pytest.mark.parametrize("backbone", BACKBONES)
def test_items_never_see_reasoning_tokens(backbone):
    """Perturbing the reasoning position embeddings changes r_1..r_K but never the item block."""
    model = make(backbone, K=3)
    h = batch()
    r0, caches, _ = model.encode_items(h)
    before = model(h)
    with torch.no_grad():
        model.rpe.weight.add_(torch.randn_like(model.rpe.weight))  # a constant would vanish in LayerNorm
    after = model(h)
    r0_after, caches_after, _ = model.encode_items(h)
    assert torch.equal(r0, r0_after)
    for (k1, v1), (k2, v2) in zip(caches, caches_after, strict=True):
        assert torch.equal(k1, k2) and torch.equal(v1, v2)
    assert torch.equal(before[:, 0], after[:, 0])
    assert (before[:, 1:] - after[:, 1:]).abs().max().item() > 1e-3


@pytest.mark.parametrize("backbone", BACKBONES)
def test_reasoning_sees_all_items_and_only_earlier_steps(backbone):
    model = make(backbone, K=3)
    h = torch.tensor([[1, 2, 3, 4, 5, 6]])
    changed = h.clone()
    changed[0, 0] = 30  # the oldest item
    a, b = model(h), model(changed)
    assert ((a - b).abs().amax(-1) > 1e-4).all()  # every step's output depends on it
    # step k's output does not depend on later reasoning inputs: truncating K gives the same prefix
    assert (model(h, steps=2) - a[:, :3]).abs().max().item() <= 1e-6


def test_k_zero_is_the_plain_backbone():
    plain = make("sasrec", K=0)
    reasoning = make("sasrec", K=2)
    state = {k: v for k, v in reasoning.state_dict().items() if not k.startswith("rpe")}
    plain.load_state_dict(state)
    h = batch()
    out = plain(h)
    assert out.shape == (4, 1, 32)
    assert plain.rpe is None
    assert (out[:, 0] - reasoning(h)[:, 0]).abs().max().item() == 0.0
    assert sum(p.numel() for p in reasoning.parameters()) - sum(p.numel() for p in plain.parameters()) == 2 * 32


def test_naive_has_no_rpe_and_feeds_back_the_raw_state():
    model = ReaRecModel.from_configs(ModelConfig(hidden_size=16, num_heads=2), MethodConfig(name="naive", reasoning_steps=2), 10)
    assert model.rpe is None
    r = torch.randn(3, 16)
    assert torch.equal(model.reasoning_input(r, 1), r)


@pytest.mark.parametrize("bad,match", [
    (torch.tensor([[1, 2, 41]]), "item id 41 out of range"),
    (torch.tensor([[1, -1, 2]]), "item id -1 out of range"),
    (torch.zeros(0, 3, dtype=torch.long), "non-empty"),
    (torch.ones(2, 13, dtype=torch.long), "exceeds max_len"),
])
def test_bad_batches_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        make("sasrec")(bad)


def test_more_steps_than_trained_rpe_rejected():
    with pytest.raises(ValueError, match="steps: 4 exceeds"):
        make("sasrec", K=3)(batch(), steps=4)
