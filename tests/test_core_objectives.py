"""Losses against the paper's formulas (and the released code's) computed independently in NumPy."""

import math

import numpy as np
import pytest
import torch

from rearec.config import MethodConfig
from rearec.objectives import inference_state, noise_std, rcl_loss, uses_rcl, vocab_loss

rng = np.random.default_rng(0)
STATES = rng.normal(size=(3, 3, 4))  # (B, K+1, d), K = 2
ITEMS = rng.normal(size=(5, 4))  # 5 items
TARGET = np.array([1, 4, 5])  # 1-based


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def ce(states, temperature=1.0):
    lp = log_softmax(states @ ITEMS.T / temperature)
    return -lp[np.arange(len(TARGET)), TARGET - 1].sum()


def kl(lp_a, lp_b):  # KL(a || b) per row
    return (np.exp(lp_a) * (lp_a - lp_b)).sum(-1)


def torch_loss(**cfg):
    method = MethodConfig(reasoning_steps=2, **cfg)
    s = torch.tensor(STATES, dtype=torch.float64)
    return vocab_loss(method, s, torch.tensor(ITEMS), torch.tensor(TARGET)).item()


def test_base_rpe_naive_use_plain_ce_on_the_last_state():
    assert torch_loss(name="rpe") == pytest.approx(ce(STATES[:, 2]), rel=1e-9)
    assert torch_loss(name="naive") == pytest.approx(ce(STATES[:, 2]), rel=1e-9)
    base = vocab_loss(MethodConfig(name="base"), torch.tensor(STATES[:, :1]), torch.tensor(ITEMS), torch.tensor(TARGET))
    assert base.item() == pytest.approx(ce(STATES[:, 0]), rel=1e-9)


@pytest.mark.parametrize("sign", ["maximize", "printed"])
def test_erl_paper_is_sum_of_step_ce_and_pairwise_kl(sign):
    lam = 0.3
    rec = sum(ce(STATES[:, k]) for k in range(3))
    lp = [log_softmax(STATES[:, k] @ ITEMS.T) for k in range(3)]
    pairs = sum(kl(lp[i], lp[j]).sum() for i in range(3) for j in range(i + 1, 3))
    expected = rec + (-lam if sign == "maximize" else lam) * pairs
    assert torch_loss(name="erl", kl_lambda=lam, kl_sign=sign) == pytest.approx(expected, rel=1e-9)
    assert torch_loss(name="erl", kl_lambda=0.0) == pytest.approx(rec, rel=1e-9)  # ERL w/o KL


def test_erl_released_is_ce_on_mean_minus_mean_ordered_pair_kl():
    lam, tau = 0.05, 0.5
    rec = ce(STATES.mean(1), tau)
    lp = [log_softmax(STATES[:, k] @ ITEMS.T / tau) for k in range(3)]
    ordered = np.mean([kl(lp[j], lp[i]) for i in range(3) for j in range(3) if i != j], axis=0).sum()
    got = torch_loss(name="erl", kl_lambda=lam, tau=tau, formulation="released")
    assert got == pytest.approx(rec - lam * ordered, rel=1e-9)


def test_erl_released_kl_reference_side_is_detached():
    method = MethodConfig(name="erl", reasoning_steps=1, kl_lambda=1.0, formulation="released")
    s = torch.tensor(STATES[:, :2], requires_grad=True)
    vocab_loss(method, s, torch.tensor(ITEMS), torch.tensor(TARGET)).backward()
    # compare with the same loss where both sides carry gradient: they must differ
    s2 = torch.tensor(STATES[:, :2], requires_grad=True)
    lp = torch.log_softmax(s2 @ torch.tensor(ITEMS).T, -1)
    full = torch.nn.functional.cross_entropy(s2.mean(1) @ torch.tensor(ITEMS).T, torch.tensor(TARGET) - 1, reduction="sum")
    kl01 = (lp[:, 1].exp() * (lp[:, 1] - lp[:, 0])).sum() + (lp[:, 0].exp() * (lp[:, 0] - lp[:, 1])).sum()
    (full - kl01 / 2).backward()
    assert not torch.allclose(s.grad, s2.grad)


def test_prl_temperatures_follow_eq9():
    m = MethodConfig(name="prl", reasoning_steps=3, tau=0.5, alpha=2.0)
    assert m.step_temperatures() == [4.0, 2.0, 1.0, 0.5]


def test_prl_paper_sums_annealed_step_ce():
    tau, alpha = 0.5, 1.5
    temps = [tau * alpha ** (2 - k) for k in range(3)]
    expected = sum(ce(STATES[:, k], temps[k]) for k in range(3))
    assert torch_loss(name="prl", tau=tau, alpha=alpha) == pytest.approx(expected, rel=1e-9)


def test_prl_released_averages_the_earlier_steps():
    tau, alpha = 0.5, 5.0
    temps = [tau * alpha ** (2 - k) for k in range(3)]
    expected = ce(STATES[:, 2], temps[2]) + (ce(STATES[:, 0], temps[0]) + ce(STATES[:, 1], temps[1])) / 2
    assert torch_loss(name="prl", tau=tau, alpha=alpha, formulation="released") == pytest.approx(expected, rel=1e-9)


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
