"""UniSRec and MoRec: shapes, causal masks, over-fitting, identical text, KV cache, eval cache, bad configs."""

import numpy as np
import pytest
import torch

from rearec.config import MethodConfig, ModelConfig, TrainConfig
from rearec.errors import ConfigError
from rearec.identity import Trial, resolved
from rearec.model import ReaRecModel
from rearec.text_items import MoRecItemEncoder, UniSRecItemEncoder
from rearec.train import make_optimizer, train_step

TEXT = ["unisrec", "morec"]
N_ITEMS, F = 40, 24


pytestmark = pytest.mark.usefixtures("one_thread")


def batch():
    return torch.tensor([[0, 0, 0, 5, 6, 7], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 9], [0, 8, 8, 2, 40, 1]])


def item_block_outputs(model, h):
    """Last-layer outputs of the item block alone (B, T, d), as tests/test_core_model.py reads them."""
    tokens, pos = model._item_inputs(h)
    x = model.input_norm(model.embed(tokens) + model.pos_emb(pos))
    return model._run(x, model._item_mask(tokens))


def features(n_items=N_ITEMS, f=F, seed=0):
    """Random stand-ins for sentence-encoder features, (n_items + 1, f), row 0 = padding zeros."""
    x = np.random.default_rng(seed).normal(size=(n_items + 1, f)).astype(np.float32)
    x[0] = 0.0
    return x


def make(backbone, K=3, d=32, feats=None, seed=0, **cfg):
    torch.manual_seed(seed)
    model_cfg = ModelConfig(backbone=backbone, hidden_size=d, num_heads=2, max_len=12, **cfg)
    return ReaRecModel(model_cfg, N_ITEMS, K, item_features=features() if feats is None else feats).eval()


@pytest.mark.parametrize("backbone", TEXT)
def test_shapes_and_table_rows(backbone):
    model = make(backbone, K=2)
    table = model.items.table()
    assert table.shape == (N_ITEMS + 2, 32)
    assert torch.equal(table[0], torch.zeros(32))  # padding
    assert not model.bidirectional  # SASRec-style causal transformer
    states = model(batch())
    assert states.shape == (4, 3, 32)
    assert model.scores(states).shape == (4, 3, N_ITEMS)
    expected = UniSRecItemEncoder if backbone == "unisrec" else MoRecItemEncoder
    assert isinstance(model.items, expected)
    assert "features" not in model.state_dict() and "items.features" not in model.state_dict()  # data, not weights


def test_unisrec_adaptor_matches_the_formula():
    """e_i = sum_k softmax(x_i W_gate)_k (x_i - b_k) W_k, computed here by hand (eval: no noise, no dropout)."""
    model = make("unisrec", n_experts=3)
    adaptor = model.items.adaptor
    with torch.no_grad():
        adaptor.w_gate.normal_()
        for e in adaptor.experts:
            e.bias.normal_()
    x = torch.from_numpy(features()[1:])
    gates = torch.softmax(x @ adaptor.w_gate, -1)
    expected = sum(gates[:, k : k + 1] * ((x - e.bias) @ e.proj.weight.T) for k, e in enumerate(adaptor.experts))
    with torch.no_grad():
        assert torch.allclose(model.item_weights, expected, atol=1e-5)


@pytest.mark.parametrize("backbone", TEXT)
def test_item_never_sees_later_item(backbone):
    model = make(backbone)
    h = torch.tensor([[1, 2, 3, 4, 5, 6]])
    changed = h.clone()
    changed[0, 4] = 30
    with torch.no_grad():
        a, b = item_block_outputs(model, h), item_block_outputs(model, changed)
    assert (a[0, :4] - b[0, :4]).abs().max().item() == 0.0
    assert (a[0, 4:] - b[0, 4:]).abs().max().item() > 1e-4


@pytest.mark.parametrize("backbone", TEXT)
def test_cached_equals_uncached(backbone):
    model = make(backbone, K=5)
    h = batch()
    with torch.no_grad():
        cached, uncached = model(h), model.forward_uncached(h)
        assert (cached - uncached).abs().max().item() <= 1e-5
        assert (model.scores(cached) - model.scores(uncached)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("backbone,cfg", [("unisrec", {}), ("morec", {}), ("unisrec", {"text_mode": "transductive"})])
def test_identical_text_gives_identical_items(backbone, cfg):
    feats = features()
    feats[7] = feats[3]
    model = make(backbone, feats=feats, **cfg)
    with torch.no_grad():
        table = model.items.table()
        same = torch.allclose(table[3], table[7], atol=1e-6, rtol=0)
        # and the same history scores the same against both
        scores = model.scores(model(batch()))
    if cfg.get("text_mode") == "transductive":
        assert not same  # the ID embedding tells them apart
    else:
        assert same and torch.allclose(scores[..., 2], scores[..., 6], atol=1e-5, rtol=0)
        assert not torch.allclose(table[3], table[4], atol=1e-3)


@pytest.mark.parametrize("backbone", TEXT)
def test_overfits_a_tiny_batch(backbone):
    """Loss falls and every memorised next item ranks first (ReaRec rpe, K = 2, on top of the backbone)."""
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=backbone, hidden_size=32, num_heads=2, max_len=8, dropout=0.0, attn_dropout=0.0,
                      input_dropout=0.0, adaptor_dropout=0.0)
    method = MethodConfig(name="rpe", reasoning_steps=2)
    model = ReaRecModel.from_configs(cfg, method, N_ITEMS, features())
    g = torch.Generator().manual_seed(1)
    history = torch.randint(1, N_ITEMS + 1, (16, 6), generator=g)
    target = torch.randint(1, N_ITEMS + 1, (16,), generator=g)
    opt = make_optimizer(model, TrainConfig(lr=5e-3))
    losses = []
    for _ in range(80):
        opt.zero_grad()
        losses.append(train_step(model, method, history, target, 1, 1024))
        opt.step()
    assert losses[-1] < 0.05 * losses[0]
    model.eval()
    with torch.no_grad():
        scores = model.scores(model(history)[:, -1])  # rpe infers with r_K
    assert torch.equal(scores.argmax(-1) + 1, target)


@pytest.mark.parametrize("backbone", TEXT)
def test_gradients_reach_the_adaptor_not_the_features_nor_padding(backbone):
    model = make(backbone, K=1).train()
    h, y = batch(), torch.tensor([1, 2, 3, 4])
    train_step(model, MethodConfig(name="rpe", reasoning_steps=1), h, y, 1, 1024)
    grads = {n: p.grad for n, p in model.items.named_parameters()}
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n != "mask_row"), grads.keys()
    assert not model.items.features.requires_grad


def test_eval_table_cache_follows_parameter_changes():
    model = make("unisrec")
    with torch.no_grad():
        first = model.items.table()
        assert model.items.table() is first  # reused between the input and candidate look-ups
        model.items.adaptor.experts[0].bias.add_(1.0)  # in-place update (optimizer.step does the same)
        changed = model.items.table()
        assert changed is not first and not torch.equal(changed, first)
        model.load_state_dict(make("unisrec", seed=5).state_dict())
        assert not torch.equal(model.items.table(), changed)
    model.train()
    with torch.no_grad():
        assert model.items.table() is not model.items.table()  # never cached while training (dropout, noise)


@pytest.mark.parametrize("bad,field", [
    ({"n_experts": 0}, "n_experts"), ({"adaptor_dropout": 1.0}, "adaptor_dropout"), ({"pca_dim": 0}, "pca_dim"),
    ({"text_encoder": " "}, "text_encoder"), ({"text_mode": "both"}, "text_mode"),
    ({"backbone": "morec", "finetune_text_encoder": True, "pca_dim": 64}, "pca_dim"),
])
def test_bad_configs_raise(bad, field):
    with pytest.raises(ConfigError) as err:
        ModelConfig.from_dict({"backbone": "unisrec", **bad})
    assert err.value.path == field


def test_stored_settings_keep_only_the_text_fields_a_backbone_reads():
    def stored(cfg):
        return resolved(Trial(cfg, MethodConfig(), TrainConfig()))["model"]

    assert "n_experts" not in stored(ModelConfig(backbone="sasrec"))
    assert set(stored(ModelConfig(backbone="morec"))) >= {"text_encoder", "pca_dim", "finetune_text_encoder"}
    assert "n_experts" not in stored(ModelConfig(backbone="morec"))
    cfg = ModelConfig(backbone="unisrec", pca_dim=64, n_experts=4, text_mode="transductive")
    assert ModelConfig.from_dict(stored(cfg)) == cfg


@pytest.mark.parametrize("feats,match", [
    (None, "item_features: backbone 'unisrec' needs"),
    (features()[:-1], r"item_features: expected shape \(41, f\)"),
    (np.full((N_ITEMS + 1, 4), np.nan), "NaN"),
])
def test_bad_features_raise(feats, match):
    with pytest.raises(ValueError, match=match):
        ReaRecModel(ModelConfig(backbone="unisrec", hidden_size=16), N_ITEMS, 0, item_features=feats)


def test_pca_dim_must_match_the_features():
    with pytest.raises(ValueError, match="item_features: width 24 does not match pca_dim 16"):
        ReaRecModel(ModelConfig(backbone="morec", hidden_size=16, pca_dim=16), N_ITEMS, 0, item_features=features())


def test_finetuning_without_cuda_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = ModelConfig(backbone="morec", hidden_size=16, finetune_text_encoder=True)
    with pytest.raises(ConfigError, match="finetune_text_encoder: .*needs a CUDA GPU"):
        ReaRecModel(cfg, 3, 0, item_features=np.array(["", "a", "b", "c"], dtype=object))


@pytest.mark.text_extra
def test_real_encoder_features_and_finetuning_mechanics(monkeypatch, tmp_path):
    """The default encoder on a handful of texts: identical texts -> identical items; and MoRec's fine-tuning
    path (run on CPU here by pretending CUDA exists) keeps the pretrained weights and trains them."""
    from rearec.data.text import MeanPoolEncoder, render_item_text

    texts = [render_item_text({"title": t}) for t in ["Halo 3", "Mario Kart 8", "Halo 3", "FIFA 19 - PS4"]]
    enc = MeanPoolEncoder()
    feats = np.zeros((5, 384), dtype=np.float32)
    feats[1:] = enc.encode(texts)
    torch.manual_seed(0)
    model = ReaRecModel(ModelConfig(backbone="unisrec", hidden_size=16), 4, 1, item_features=feats).eval()
    with torch.no_grad():
        table = model.items.table()
    assert torch.allclose(table[1], table[3], atol=1e-6) and not torch.allclose(table[1], table[2], atol=1e-4)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = ModelConfig(backbone="morec", hidden_size=16, finetune_text_encoder=True)
    model = ReaRecModel(cfg, 4, 1, item_features=np.array(["", *texts], dtype=object))
    text_model = model.items.text_model
    with torch.no_grad():  # pretrained weights survived ReaRecModel's N(0, 0.02) init: same vectors as frozen
        assert torch.allclose(text_model(), torch.from_numpy(feats[1:]), atol=1e-4)
    model.train()
    train_step(model, MethodConfig(name="rpe", reasoning_steps=1), torch.tensor([[1, 2], [2, 3]]),
               torch.tensor([3, 4]), 1, 1024)
    assert text_model.encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0
