"""Losses against the paper's formulas (and the released code's) computed independently in NumPy."""

import math

import numpy as np
import pytest
import torch

from rearec import objectives
from rearec.config import MethodConfig
from rearec.objectives import DOT, Scoring, inference_state, noise_std, rcl_loss, uses_rcl, vocab_loss

rng = np.random.default_rng(0)
STATES = rng.normal(size=(3, 3, 4))  # (B, K+1, d), K = 2
ITEMS = rng.normal(size=(5, 4))  # 5 items
TARGET = np.array([1, 4, 5])  # 1-based
COSINE = Scoring("cosine", 0.07)
SCORINGS = pytest.mark.parametrize("scoring", [DOT, COSINE], ids=["dot", "cosine"])


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_logits(states, scoring=DOT, temperature=1.0):
    """states (b, d) -> (b, N): dot products, or cosine / score_temperature; then / temperature."""
    items = ITEMS
    if scoring.kind == "cosine":
        states = states / np.linalg.norm(states, axis=-1, keepdims=True) / scoring.temperature
        items = ITEMS / np.linalg.norm(ITEMS, axis=-1, keepdims=True)
    return states @ items.T / temperature


def ce(states, temperature=1.0, scoring=DOT):
    lp = log_softmax(np_logits(states, scoring, temperature))
    return -lp[np.arange(len(TARGET)), TARGET - 1].sum()


def kl(lp_a, lp_b):  # KL(a || b) per row
    return (np.exp(lp_a) * (lp_a - lp_b)).sum(-1)


def torch_loss(scoring=DOT, **cfg):
    method = MethodConfig(reasoning_steps=2, **cfg)
    s = torch.tensor(STATES, dtype=torch.float64)
    return vocab_loss(method, s, scoring.candidates(torch.tensor(ITEMS)), torch.tensor(TARGET), scoring).item()


@SCORINGS
def test_base_rpe_naive_use_plain_ce_on_the_last_state(scoring):
    assert torch_loss(scoring, name="rpe") == pytest.approx(ce(STATES[:, 2], scoring=scoring), rel=1e-9)
    assert torch_loss(scoring, name="naive") == pytest.approx(ce(STATES[:, 2], scoring=scoring), rel=1e-9)
    base = vocab_loss(MethodConfig(name="base"), torch.tensor(STATES[:, :1]), scoring.candidates(torch.tensor(ITEMS)),
                      torch.tensor(TARGET), scoring)
    assert base.item() == pytest.approx(ce(STATES[:, 0], scoring=scoring), rel=1e-9)


@SCORINGS
@pytest.mark.parametrize("sign", ["maximize", "printed"])
def test_erl_paper_is_sum_of_step_ce_and_pairwise_kl(sign, scoring):
    lam = 0.3
    rec = sum(ce(STATES[:, k], scoring=scoring) for k in range(3))
    lp = [log_softmax(np_logits(STATES[:, k], scoring)) for k in range(3)]
    pairs = sum(kl(lp[i], lp[j]).sum() for i in range(3) for j in range(i + 1, 3))
    expected = rec + (-lam if sign == "maximize" else lam) * pairs
    assert torch_loss(scoring, name="erl", kl_lambda=lam, kl_sign=sign) == pytest.approx(expected, rel=1e-9)
    assert torch_loss(scoring, name="erl", kl_lambda=0.0) == pytest.approx(rec, rel=1e-9)  # ERL w/o KL


@SCORINGS
def test_erl_released_is_ce_on_mean_minus_mean_ordered_pair_kl(scoring):
    lam, tau = 0.05, 0.5
    rec = ce(STATES.mean(1), tau, scoring)  # cosine: the pooled state is normalised (it is h_u)
    lp = [log_softmax(np_logits(STATES[:, k], scoring, tau)) for k in range(3)]
    ordered = np.mean([kl(lp[j], lp[i]) for i in range(3) for j in range(3) if i != j], axis=0).sum()
    got = torch_loss(scoring, name="erl", kl_lambda=lam, tau=tau, formulation="released")
    assert got == pytest.approx(rec - lam * ordered, rel=1e-9)


def test_erl_released_kl_reference_side_is_detached():
    method = MethodConfig(name="erl", reasoning_steps=1, kl_lambda=1.0, formulation="released")
    s = torch.tensor(STATES[:, :2], requires_grad=True)
    vocab_loss(method, s, torch.tensor(ITEMS), torch.tensor(TARGET), DOT).backward()
    # compare with the same loss where both sides carry gradient: they must differ
    s2 = torch.tensor(STATES[:, :2], requires_grad=True)
    lp = torch.log_softmax(s2 @ torch.tensor(ITEMS).T, -1)
    full = torch.nn.functional.cross_entropy(s2.mean(1) @ torch.tensor(ITEMS).T, torch.tensor(TARGET) - 1, reduction="sum")
    kl01 = (lp[:, 1].exp() * (lp[:, 1] - lp[:, 0])).sum() + (lp[:, 0].exp() * (lp[:, 0] - lp[:, 1])).sum()
    (full - kl01 / 2).backward()
    assert not torch.allclose(s.grad, s2.grad)


def reference_erl(method, states, items, target):
    """ERL as the code before issue 13.5 computed it, op by op through autograd: every step's logits for
    its CE, then the same logits again for the KL pairs (the independent reference of the fused loss)."""
    F = torch.nn.functional
    idx, S = target - 1, states.shape[1]
    sign = -1.0 if method.kl_sign == "maximize" else 1.0
    if method.formulation == "released":
        rec = F.cross_entropy(states.mean(1) / method.tau @ items.T, idx, reduction="sum")
        lp = F.log_softmax(states @ items.T / method.tau, -1)
        ref, p = lp.detach(), lp.exp()
        kl_ = sum((p[:, j] * (lp[:, j] - ref[:, i])).sum() for i in range(S) for j in range(S) if i != j) / (S * (S - 1))
    else:
        rec = sum(F.cross_entropy(states[:, k] @ items.T, idx, reduction="sum") for k in range(S))
        lp = F.log_softmax(states @ items.T, -1)
        p = lp.exp()
        kl_ = sum((p[:, i] * (lp[:, i] - lp[:, j])).sum() for i in range(S) for j in range(i + 1, S))
    return rec + sign * method.kl_lambda * kl_


# float64: the same numbers to 1e-10. float32: each implementation is ~1e-6 (relative to the largest gradient)
# from the float64 value -- float32 rounding over 300 items --, so they agree to 2e-6 of each other.
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 2e-6)], ids=["f64", "f32"])
@pytest.mark.parametrize("cfg", [
    {"kl_lambda": 0.05}, {"kl_lambda": 0.7, "kl_sign": "printed"}, {"kl_lambda": 0.0},
    {"kl_lambda": 0.05, "formulation": "released", "tau": 0.5}, {"kl_lambda": 0.3, "formulation": "released", "tau": 2.0},
], ids=["paper", "printed", "no-kl", "released", "released-tau2"])
def test_erl_fused_loss_and_gradients_equal_the_plain_formula(cfg, dtype, tol, monkeypatch):
    """Post-LN-sized states (norm ~ 8), a 300-item vocabulary, 11 rows in blocks of 4 (a ragged last block)."""
    monkeypatch.setattr(objectives, "ERL_BLOCK", 4)
    method = MethodConfig(name="erl", reasoning_steps=3, **cfg)
    g = torch.Generator().manual_seed(5)
    states0 = torch.randn(11, 4, 16, generator=g, dtype=torch.float64) * 2.0
    items0 = torch.randn(300, 16, generator=g, dtype=torch.float64) * 0.3
    target = torch.randint(1, 301, (11,), generator=g)
    results = []
    for fn in (lambda s, w: vocab_loss(method, s, w, target, DOT), lambda s, w: reference_erl(method, s, w, target)):
        s, w = states0.to(dtype).clone().requires_grad_(True), items0.to(dtype).clone().requires_grad_(True)
        loss = fn(s, w)
        loss.backward()
        results.append((loss.detach().double(), s.grad.double(), w.grad.double()))
    (l_new, gs_new, gw_new), (l_ref, gs_ref, gw_ref) = results
    assert abs(l_new - l_ref) <= tol * abs(l_ref)
    assert (gs_new - gs_ref).abs().max() <= tol * gs_ref.abs().max()
    assert (gw_new - gw_ref).abs().max() <= tol * gw_ref.abs().max()
    assert gs_ref.abs().max() > 0.1  # the gradients compared are not vanishing


def test_prl_temperatures_follow_eq9():
    m = MethodConfig(name="prl", reasoning_steps=3, tau=0.5, alpha=2.0)
    assert m.step_temperatures() == [4.0, 2.0, 1.0, 0.5]


@SCORINGS
def test_prl_paper_sums_annealed_step_ce(scoring):
    """Cosine scoring: step k's logit is cos(r_k, e) / score_temperature / tau_k (temperatures multiply)."""
    tau, alpha = 0.5, 1.5
    temps = [tau * alpha ** (2 - k) for k in range(3)]
    expected = sum(ce(STATES[:, k], temps[k], scoring) for k in range(3))
    assert torch_loss(scoring, name="prl", tau=tau, alpha=alpha) == pytest.approx(expected, rel=1e-9)


@SCORINGS
def test_prl_released_averages_the_earlier_steps(scoring):
    tau, alpha = 0.5, 5.0
    temps = [tau * alpha ** (2 - k) for k in range(3)]
    expected = ce(STATES[:, 2], temps[2], scoring) + (ce(STATES[:, 0], temps[0], scoring) + ce(STATES[:, 1], temps[1], scoring)) / 2
    got = torch_loss(scoring, name="prl", tau=tau, alpha=alpha, formulation="released")
    assert got == pytest.approx(expected, rel=1e-9)


def info_nce(noisy, clean, tau):
    logits = noisy @ clean.T / tau
    return -np.mean(np.diag(log_softmax(logits)))


@pytest.mark.parametrize("formulation", ["paper", "released"])
def test_rcl_is_infonce_with_in_batch_negatives(formulation):
    clean, noisy = rng.normal(size=(4, 2, 3)), rng.normal(size=(4, 2, 3))
    per_step = [info_nce(noisy[:, k], clean[:, k], 0.7) for k in range(2)]
    expected = sum(per_step) if formulation == "paper" else np.mean(per_step)
    m = MethodConfig(name="prl", reasoning_steps=2, tau=0.7, formulation=formulation)
    assert rcl_loss(m, torch.tensor(clean), torch.tensor(noisy)).item() == pytest.approx(expected, rel=1e-9)


def test_noise_scale_and_warmup():
    assert noise_std(MethodConfig(name="prl", reasoning_steps=1, gamma=0.01)) == pytest.approx(0.1)
    assert noise_std(MethodConfig(name="prl", reasoning_steps=1, gamma=0.01, formulation="released")) == 0.01
    released = MethodConfig(name="prl", reasoning_steps=1, formulation="released")
    assert not uses_rcl(released, 2) and uses_rcl(released, 3)
    assert uses_rcl(MethodConfig(name="prl", reasoning_steps=1), 1)
    assert not uses_rcl(MethodConfig(name="prl", reasoning_steps=1, rcl=False), 5)  # PRL w/o RCL


def test_inference_representation():
    s = torch.tensor(STATES)
    assert torch.equal(inference_state(MethodConfig(name="erl", reasoning_steps=2), s), s.mean(1))
    assert torch.equal(inference_state(MethodConfig(name="prl", reasoning_steps=2), s), s[:, -1])


@pytest.mark.parametrize("kwargs,param", [
    ({"name": "prl", "reasoning_steps": -1}, "reasoning_steps"),
    ({"name": "prl", "reasoning_steps": 2, "tau": 0.0}, "tau"),
    ({"name": "prl", "reasoning_steps": 2, "alpha": -1.0}, "alpha"),
    ({"name": "prl", "reasoning_steps": 2, "gamma": -0.1}, "gamma"),
    ({"name": "erl", "reasoning_steps": 2, "kl_lambda": -0.5}, "kl_lambda"),
    ({"name": "erl", "reasoning_steps": 2, "tau": math.nan}, "tau"),
    ({"name": "magic", "reasoning_steps": 2}, "method"),
])
def test_bad_hyperparameters_name_parameter_and_value(kwargs, param):
    with pytest.raises(ValueError, match=rf"^{param}: .*"):
        MethodConfig(**kwargs)


def test_from_dict_rejects_unknown_keys_and_types():
    from rearec.config import ModelConfig, TrainConfig
    with pytest.raises(ValueError, match=r"kl_lamda: unknown key \(did you mean 'kl_lambda'\?\)"):
        MethodConfig.from_dict({"name": "erl", "reasoning_steps": 2, "kl_lamda": 0.1})
    with pytest.raises(ValueError, match=r"method.tau: expected a number, got 'hot'"):
        MethodConfig.from_dict({"name": "prl", "reasoning_steps": 2, "tau": "hot"}, "method")
    with pytest.raises(ValueError, match=r"backbone: 'gru4rec' is not one of"):
        ModelConfig.from_dict({"backbone": "gru4rec"})
    with pytest.raises(ValueError, match=r"batch_size: must be >= 1, got 0"):
        TrainConfig(batch_size=0)
