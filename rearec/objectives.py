"""Training objectives: per-step CE, ERL's KL diversity term, PRL's annealed CE and RCL (paper §3.2-3.3).

Losses are split in two so the trainer can bound memory: ``vocab_loss`` needs full-vocabulary logits and
is computed per chunk of rows (it returns a *sum* over rows); ``state_loss`` (RCL) needs in-batch
negatives and only the (B, K, d) states, so it runs on the whole batch (a batch *mean*).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import MethodConfig


def _ce_sum(states: torch.Tensor, item_w: torch.Tensor, target_idx: torch.Tensor, temperature: float) -> torch.Tensor:
    """states (b, d), item_w (N, d), target_idx (b,) 0-based -> sum of CE over rows."""
    if temperature != 1.0:  # scale the (b, d) states, not the (b, N) logits: same values, less work
        states = states / temperature
    return F.cross_entropy(states @ item_w.T, target_idx, reduction="sum")


def _kl_pairs_sum(log_p: torch.Tensor) -> torch.Tensor:
    """Eq. 7 summed over rows: sum_b sum_{i<j} KL(p_i || p_j). log_p (b, K+1, N) log-probabilities."""
    p = log_p.exp()
    total = log_p.new_zeros(())
    S = log_p.shape[1]
    for i in range(S - 1):
        for j in range(i + 1, S):
            total = total + (p[:, i] * (log_p[:, i] - log_p[:, j])).sum()
    return total


def _kl_released_sum(log_p: torch.Tensor) -> torch.Tensor:
    """Released code: per row, the mean over ordered pairs i != j of KL(p_j || p_i) with log p_i detached
    (p_j carries the gradient), summed over rows. log_p (b, K+1, N)."""
    S = log_p.shape[1]
    ref = log_p.detach()
    p = log_p.exp()
    total = log_p.new_zeros(())
    for i in range(S):
        for j in range(S):
            if i != j:
                total = total + (p[:, j] * (log_p[:, j] - ref[:, i])).sum()
    return total / (S * (S - 1))


def inference_state(method: MethodConfig, states: torch.Tensor) -> torch.Tensor:
    """The method's user representation h_u from states (B, K+1, d): ERL mean-pools r_0..r_K (§3.2.3),
    every other method reads the last state (r_0 for base, r_K otherwise, §3.3.3)."""
    return states.mean(1) if method.name == "erl" else states[:, -1]


def vocab_loss(method: MethodConfig, states: torch.Tensor, item_w: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over the b rows of the method's full-vocabulary loss. states (b, K+1, d); target (b,) in 1..N."""
    idx = target - 1
    K = states.shape[1] - 1
    released = method.formulation == "released"
    sign = -1.0 if method.kl_sign == "maximize" else 1.0
    if method.name in ("base", "naive", "rpe"):
        return _ce_sum(states[:, -1], item_w, idx, method.tau if released else 1.0)
    if method.name == "erl":
        if released:
            rec = _ce_sum(states.mean(1), item_w, idx, method.tau)
        else:
            rec = sum(_ce_sum(states[:, k], item_w, idx, 1.0) for k in range(K + 1))
        if method.kl_lambda == 0.0 or K == 0:
            return rec
        temperature = method.tau if released else 1.0
        log_p = F.log_softmax((states @ item_w.T) / temperature, dim=-1)  # (b, K+1, N)
        kl = _kl_released_sum(log_p) if released else _kl_pairs_sum(log_p)
        return rec + sign * method.kl_lambda * kl
    if method.name == "prl":
        temps = method.step_temperatures()
        per_step = [_ce_sum(states[:, k], item_w, idx, temps[k]) for k in range(K + 1)]
        if released:  # CE_K + mean of the earlier steps' CE (official-code.md §3)
            return per_step[K] + sum(per_step[:K]) / K
        return sum(per_step)
    raise ValueError(f"method: unknown method {method.name!r}")


def noise_std(method: MethodConfig) -> float:
    """Eq. 10 writes eps ~ N(0, gamma I): gamma is a variance in the paper, a std in the released code."""
    return method.gamma if method.formulation == "released" else math.sqrt(method.gamma)


def rcl_loss(method: MethodConfig, clean: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
    """Eq. 11, InfoNCE from each noisy state to its clean twin, negatives = the other rows' clean states
    at the same step. clean, noisy (B, K, d) for steps 1..K. Paper: sum over steps of the batch mean;
    released: mean over B*K."""
    B, K, _ = clean.shape
    labels = torch.arange(B, device=clean.device)
    terms = []
    for k in range(K):
        logits = noisy[:, k] @ clean[:, k].T / method.tau  # (B, B) dot-product similarity
        terms.append(F.cross_entropy(logits, labels))
    total = torch.stack(terms)
    return total.mean() if method.formulation == "released" else total.sum()


def uses_rcl(method: MethodConfig, epoch: int) -> bool:
    """PRL's noisy view and RCL are active after the warm-up epochs (epochs are 1-based)."""
    return method.name == "prl" and method.rcl and method.reasoning_steps > 0 and epoch > method.warmup
