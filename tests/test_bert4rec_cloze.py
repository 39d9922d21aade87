"""BERT4Rec's cloze objective (rearec/cloze.py): masking, information flow, the loss, determinism, config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rearec.cloze import draw_masks, mask_counts, mask_generator
from rearec.config import MethodConfig, ModelConfig, TrainConfig
from rearec.errors import ConfigError
from rearec.model import ReaRecModel
from rearec.train import fit, train_step_cloze

N_ITEMS = 20


def _model(K: int = 2, objective: str = "cloze", seed: int = 0) -> ReaRecModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(backbone="bert4rec", hidden_size=16, ffn_size=32, max_len=8, bert4rec_objective=objective)
    method = MethodConfig(name="prl", reasoning_steps=K) if K else MethodConfig()
    return ReaRecModel.from_configs(cfg, method, N_ITEMS).eval()  # eval: no dropout, outputs are exact


HISTORY = torch.tensor([[0, 0, 3, 7, 1, 9, 4, 2], [0, 0, 0, 0, 0, 11, 5, 6]])
MASKED = torch.tensor([[0, 0, 0, 1, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0, 1, 0]], dtype=torch.bool)


def _outputs(model: ReaRecModel, history: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Every output the cloze step reads: the history positions' outputs and r_0..r_K, concatenated."""
    r0, caches, key_ok, hidden = model.encode_cloze(history, masked)
    states = model.reason(r0, caches, key_ok, model.K)
    return torch.cat([hidden.flatten(1), states.flatten(1)], 1)


# ---- masks --------------------------------------------------------------------------------------------


def test_mask_counts_round_half_up_and_keep_one_item_visible():
    n = np.array([0, 1, 2, 3, 4, 5, 10, 50])
    assert mask_counts(n, 0.6).tolist() == [0, 0, 1, 2, 2, 3, 6, 30]
    assert mask_counts(n, 0.2).tolist() == [0, 0, 0, 1, 1, 1, 2, 10]
    assert mask_counts(n, 0.99).tolist() == [0, 0, 1, 2, 3, 4, 9, 49]  # never the whole history


def test_draw_masks_hits_only_real_items_with_exact_counts():
    rng = np.random.default_rng(3)
    lengths = rng.integers(0, 13, size=400)
    history = np.zeros((400, 12), dtype=np.int64)
    for row, n in enumerate(lengths):
        history[row, 12 - n:] = rng.integers(1, 50, size=n)
    masks = draw_masks(history, 0.6, np.random.default_rng(0))
    assert not (masks & (history == 0)).any()
    assert (masks.sum(1) == mask_counts(lengths, 0.6)).all()
    # every real position is picked about equally often (uniform choice without replacement)
    full = history[lengths == 12]
    rate = draw_masks(np.repeat(full, 50, 0), 0.5, np.random.default_rng(1)).mean(0)
    assert np.allclose(rate, 0.5, atol=0.04)
    # the mask stream is a function of the seed only, and differs from the batch-order stream
    a, b = mask_generator(7).random(5), mask_generator(7).random(5)
    assert np.array_equal(a, b) and not np.array_equal(a, np.random.default_rng(7).random(5))


def test_clean_rows_have_no_mask_and_the_other_rows_keep_their_masks():
    rng = np.random.default_rng(5)
    history = rng.integers(1, 50, size=(4000, 10))
    plain = draw_masks(history, 0.4, np.random.default_rng(2))
    mixed = draw_masks(history, 0.4, np.random.default_rng(2), clean_ratio=0.3)
    clean = ~mixed.any(1)
    assert not plain[~plain.any(1)].any() and plain.any(1).all()  # without clean rows every row has masks
    # the masks are drawn first: a row that is not clean keeps exactly the masks clean_ratio 0 gives it
    assert np.array_equal(mixed[~clean], plain[~clean])
    # each row is clean with probability 0.3: 1,200 expected of 4,000 (sd 29)
    assert abs(int(clean.sum()) - 1200) < 6 * 29
    # clean_ratio 0 draws nothing more: the next draw of the stream is the one it was before the setting
    a, b = np.random.default_rng(2), np.random.default_rng(2)
    draw_masks(history, 0.4, a, clean_ratio=0.0), draw_masks(history, 0.4, b)
    assert a.random() == b.random()


# ---- information flow ---------------------------------------------------------------------------------


def test_a_masked_position_never_sees_its_own_item():
    model = _model()
    base = _outputs(model, HISTORY, MASKED)
    for row, col in MASKED.nonzero().tolist():
        changed = HISTORY.clone()
        changed[row, col] = 17  # another item under the same [MASK]
        assert torch.equal(_outputs(model, changed, MASKED), base)
    # control: the same change at an unmasked position reaches the outputs
    changed = HISTORY.clone()
    changed[0, 2] = 17
    assert not torch.allclose(_outputs(model, changed, MASKED)[0], base[0])


def test_the_final_mask_sees_every_item_and_no_reasoning_token():
    model = _model(K=3)
    r0, caches, key_ok, _ = model.encode_cloze(HISTORY, MASKED)
    for col in range(2, 8):  # each real position of row 0, masked or not, reaches r_0
        if MASKED[0, col]:
            continue
        changed = HISTORY.clone()
        changed[0, col] = 17
        assert not torch.allclose(model.encode_cloze(changed, MASKED)[0][0], r0[0])
    changed_masks = MASKED.clone()
    changed_masks[0, 2] = True  # masking one more item changes what the final [MASK] reads
    assert not torch.allclose(model.encode_cloze(HISTORY, changed_masks)[0][0], r0[0])
    # no item position, the final [MASK] included, sees a reasoning token: r_0 and the history outputs
    # are the same whatever the reasoning position embeddings are, and r_0 is the first reasoning state
    before = _outputs(model, HISTORY, MASKED)
    states = model.reason(r0, caches, key_ok, 3)
    assert torch.equal(states[:, 0], r0)
    with torch.no_grad():
        model.rpe.weight.add_(torch.randn_like(model.rpe.weight))  # not a constant: LN removes it
    after = _outputs(model, HISTORY, MASKED)
    width = 8 * 16 + 16  # history outputs, then r_0
    assert torch.equal(after[:, :width], before[:, :width]) and not torch.allclose(after, before)


def test_no_masks_is_the_next_item_encoding_bit_for_bit():
    model = _model()
    r0, caches, key_ok, hidden = model.encode_cloze(HISTORY, torch.zeros_like(MASKED))
    ref_r0, ref_caches, ref_ok = model.encode_items(HISTORY)
    assert torch.equal(r0, ref_r0) and torch.equal(key_ok, ref_ok)
    assert all(torch.equal(a, b) for c, rc in zip(caches, ref_caches, strict=True) for a, b in zip(c, rc, strict=True))


def test_masking_needs_bert4rec_and_real_items():
    sasrec = ReaRecModel(ModelConfig(hidden_size=16, max_len=8), N_ITEMS, 0)
    with pytest.raises(ValueError, match="bidirectional"):
        sasrec.encode_cloze(HISTORY, MASKED)
    on_padding = MASKED.clone()
    on_padding[1, 0] = True
    with pytest.raises(ValueError, match="masked"):
        _model().encode_cloze(HISTORY, on_padding)


# ---- the loss -----------------------------------------------------------------------------------------


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.mark.parametrize("chunk, clean_ratio, seed, counts", [(1, 0.0, 4, [4, 2]), (3, 0.0, 4, [4, 2]),
                                                               (1024, 0.0, 4, [4, 2]), (3, 0.5, 0, [0, 2])])
def test_loss_equals_an_independent_numpy_computation(chunk, clean_ratio, seed, counts):
    """base method: CE of the final [MASK] (mean over rows) + CE of the masked items (mean over them); a
    clean row (clean_ratio) adds its final [MASK] and no cloze position."""
    model = _model(K=0)
    target = torch.tensor([5, 12])
    masks = draw_masks(HISTORY.numpy(), 0.6, mask_generator(seed), clean_ratio)  # the masks the step will draw
    loss = train_step_cloze(model, MethodConfig(), HISTORY, target, 1, chunk, 0.6, mask_generator(seed),
                            clean_ratio)
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    with torch.no_grad():
        r0, _, _, hidden = model.encode_cloze(HISTORY, torch.from_numpy(masks))
    E = model.item_weights.detach().numpy().astype(np.float64)  # (N, d), item j + 1 in row j
    final = -_log_softmax(r0.numpy() @ E.T)[np.arange(2), target.numpy() - 1].mean()
    h = hidden.numpy()[masks]
    cloze = -_log_softmax(h @ E.T)[np.arange(len(h)), HISTORY.numpy()[masks] - 1].mean()
    assert masks.sum(1).tolist() == counts  # round(0.6 * 6) and round(0.6 * 3); 0 in a clean row
    assert loss == pytest.approx(final + cloze, rel=1e-5)
    # the gradient the single backward pass delivers is the plain autograd gradient of that sum
    model.zero_grad(set_to_none=True)
    r0, _, _, hidden = model.encode_cloze(HISTORY, torch.from_numpy(masks))
    m = torch.from_numpy(masks)
    ref = (torch.nn.functional.cross_entropy(model.scores(r0), target - 1)
           + torch.nn.functional.cross_entropy(model.scores(hidden[m]), HISTORY[m] - 1))
    ref.backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.allclose(grads[name], p.grad, atol=1e-6), name


def test_reasoning_losses_apply_to_the_final_mask():
    """PRL (K = 2, paper form, no RCL): sum_k CE(r_k / tau_k) over the final [MASK]'s reasoning states
    (mean over rows), plus the same cloze term -- computed here in NumPy from the model's states."""
    model = _model(K=2)
    method = MethodConfig(name="prl", reasoning_steps=2, tau=0.5, alpha=2.0, rcl=False)
    target = torch.tensor([5, 12])
    masks = draw_masks(HISTORY.numpy(), 0.6, mask_generator(1))
    loss = train_step_cloze(model, method, HISTORY, target, 1, 1024, 0.6, mask_generator(1))
    with torch.no_grad():
        r0, caches, key_ok, hidden = model.encode_cloze(HISTORY, torch.from_numpy(masks))
        states = model.reason(r0, caches, key_ok, 2).numpy()  # (2, 3, d)
    E = model.item_weights.detach().numpy().astype(np.float64)
    rows = np.arange(2)
    steps = sum(-_log_softmax(states[:, k] @ E.T / (0.5 * 2.0 ** (2 - k)))[rows, target.numpy() - 1].mean()
                for k in range(3))
    h = hidden.numpy()[masks]
    cloze = -_log_softmax(h @ E.T)[np.arange(len(h)), HISTORY.numpy()[masks] - 1].mean()
    assert loss == pytest.approx(steps + cloze, rel=1e-5)


# ---- BERT4Rec's output head ---------------------------------------------------------------------------


def _gelu(x: np.ndarray) -> np.ndarray:
    from math import erf, sqrt

    return x * 0.5 * (1.0 + np.vectorize(erf)(x / sqrt(2.0)))


def _np_head_logits(model: ReaRecModel, h: np.ndarray) -> np.ndarray:
    """LN(GELU(h W^T + b)) E^T + b_out, in NumPy (float64) from the model's parameters."""
    lin, _, norm = model.head.transform
    W, b = lin.weight.detach().double().numpy(), lin.bias.detach().double().numpy()
    u = _gelu(h @ W.T + b)
    u = (u - u.mean(-1, keepdims=True)) / np.sqrt(u.var(-1, keepdims=True) + norm.eps)
    u = u * norm.weight.detach().double().numpy() + norm.bias.detach().double().numpy()
    E = model.item_weights.detach().double().numpy()
    return u @ E.T + model.head.bias.detach().double().numpy()


def _head_model(K: int = 0) -> ReaRecModel:
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="bert4rec", hidden_size=16, ffn_size=32, max_len=8, bert4rec_head=True)
    method = MethodConfig(name="prl", reasoning_steps=K, rcl=False) if K else MethodConfig()
    model = ReaRecModel.from_configs(cfg, method, N_ITEMS).eval()
    with torch.no_grad():  # a trained-looking bias and LayerNorm, so each term of the head is checked
        model.head.bias.normal_(0, 0.5)
        model.head.transform[2].weight.normal_(1, 0.2)
        model.head.transform[2].bias.normal_(0, 0.2)
    return model


def test_the_output_head_scores_as_sun_et_al():
    model = _head_model()
    h = torch.randn(5, 16)
    expected = _np_head_logits(model, h.double().numpy())
    assert np.allclose(model.scores(h).detach().numpy(), expected, atol=1e-5)
    assert tuple(model.candidates().shape) == (N_ITEMS, 17)  # [E, b_out]: one extra column


def test_cloze_loss_with_the_head_equals_numpy():
    model = _head_model(K=2)
    method = MethodConfig(name="prl", reasoning_steps=2, tau=0.5, alpha=2.0, rcl=False)
    target = torch.tensor([5, 12])
    masks = draw_masks(HISTORY.numpy(), 0.6, mask_generator(2))
    loss = train_step_cloze(model, method, HISTORY, target, 1, 2, 0.6, mask_generator(2))
    for p in model.head.parameters():  # the head and its bias are trained
        assert p.grad is not None and p.grad.abs().sum() > 0
    with torch.no_grad():
        r0, caches, key_ok, hidden = model.encode_cloze(HISTORY, torch.from_numpy(masks))
        states = model.reason(r0, caches, key_ok, 2).double().numpy()
    rows = np.arange(2)
    steps = sum(-_log_softmax(_np_head_logits(model, states[:, k]) / (0.5 * 2.0 ** (2 - k)))[rows, target.numpy() - 1]
                .mean() for k in range(3))  # PRL's tau_k divides the whole logit, bias included
    h = hidden.double().numpy()[masks]
    cloze = -_log_softmax(_np_head_logits(model, h))[np.arange(len(h)), HISTORY.numpy()[masks] - 1].mean()
    assert loss == pytest.approx(steps + cloze, rel=1e-5)


def test_the_head_leaves_reasoning_on_the_raw_states():
    """The head only scores: r_0..r_K (and so every reasoning input) are the same with or without it."""
    torch.manual_seed(0)
    plain = _model(K=2)
    headed = _head_model(K=2)
    state = {k: v for k, v in headed.state_dict().items() if not k.startswith("head.")}
    plain.load_state_dict(state)
    assert torch.equal(plain(HISTORY), headed(HISTORY))
    assert not torch.allclose(plain.scores(plain(HISTORY)), headed.scores(headed(HISTORY)))


# ---- training -----------------------------------------------------------------------------------------


def _fit(data, objective: str, method: MethodConfig | None = None, **train):
    cfg = ModelConfig(backbone="bert4rec", hidden_size=16, ffn_size=32, bert4rec_objective=objective)
    return fit(data, cfg, method or MethodConfig(), TrainConfig(max_epochs=2, batch_size=64, loss_chunk=16, **train))


def test_cloze_training_is_deterministic_on_cpu(tiny_data):
    prl = MethodConfig(name="prl", reasoning_steps=2, formulation="released", warmup_epochs=0)
    a, b = _fit(tiny_data(), "cloze", prl), _fit(tiny_data(), "cloze", prl)
    assert [e.train_loss for e in a.epochs] == [e.train_loss for e in b.epochs]
    assert np.array_equal(a.test.ranks, b.test.ranks)
    other = _fit(tiny_data(), "cloze", prl, seed=1)
    assert [e.train_loss for e in other.epochs] != [e.train_loss for e in a.epochs]


# fit(bert4rec, next_item) on tiny_data, taken from the code before the cloze objective existed
# (commit 009afee): next_item keeps today's behaviour exactly
NEXT_ITEM_LOSSES = [3.404657678944724, 3.3886573144367764]
NEXT_ITEM_NDCG20 = 0.170251583862089


def test_next_item_keeps_the_legacy_training(tiny_data):
    result = _fit(tiny_data(), "next_item")
    assert [e.train_loss for e in result.epochs] == pytest.approx(NEXT_ITEM_LOSSES, rel=1e-5)
    assert result.test.metrics()["ndcg@20"] == pytest.approx(NEXT_ITEM_NDCG20, rel=1e-5)
    cloze = _fit(tiny_data(), "cloze")
    assert cloze.epochs[0].train_loss > result.epochs[0].train_loss + 1.0  # the cloze CE is added


def test_packed_training_stays_refused_for_bert4rec(tiny_data):
    with pytest.raises(ValueError, match="packed"):
        _fit(tiny_data(), "cloze", training="packed")


def test_clean_rows_change_training_and_stay_deterministic(tiny_data):
    cloze = _fit(tiny_data(), "cloze")  # default clean_ratio 0.5
    again = _fit(tiny_data(), "cloze")
    assert [e.train_loss for e in cloze.epochs] == [e.train_loss for e in again.epochs]
    cfg = ModelConfig(backbone="bert4rec", hidden_size=16, ffn_size=32, clean_ratio=0.0)
    all_cloze = fit(tiny_data(), cfg, MethodConfig(), TrainConfig(max_epochs=2, batch_size=64, loss_chunk=16))
    # half the rows lose their cloze positions, and the cloze CE (mean over positions) stays: same scale,
    # other masks, so another loss
    assert [e.train_loss for e in all_cloze.epochs] != [e.train_loss for e in cloze.epochs]
    assert ModelConfig(backbone="bert4rec").clean_ratio == 0.5


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan")])
def test_bad_clean_ratio_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="clean_ratio.*must be in \\[0, 1\\)"):
        ModelConfig(backbone="bert4rec", clean_ratio=bad)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.2, 1.5, float("nan")])
def test_bad_mask_prob_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="mask_prob"):
        ModelConfig(backbone="bert4rec", mask_prob=bad)


def test_unknown_objective_is_a_config_error():
    with pytest.raises(ConfigError, match="bert4rec_objective"):
        ModelConfig.from_dict({"backbone": "bert4rec", "bert4rec_objective": "mlm"})
