"""Training objectives: per-step CE, ERL's KL diversity term, PRL's annealed CE and RCL (paper §3.2-3.3).

Losses are split in two so the trainer can bound memory: ``vocab_loss`` needs full-vocabulary logits and
is computed per chunk of rows (it returns a *sum* over rows); ``rcl_loss`` needs in-batch
negatives and only the (B, K, d) states, so it runs on the whole batch (a batch *mean*).

Every full-vocabulary logit is ``Scoring.queries(state) . candidate``: the dot product (SASRec, BERT4Rec,
MoRec) or UniSRec's cosine similarity / score_temperature. Method temperatures divide on top of that
(PRL: cos(r_k, e) / score_temperature / tau_k -- the temperatures multiply).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import MethodConfig


@dataclass(frozen=True)
class Scoring:
    """How a user state meets the candidates: logit = queries(state) . candidates(E)[item].

    'dot': the raw vectors (Eq. 5). 'cosine': both unit-normalised, the query also divided by
    ``temperature`` (UniSRec: cos / 0.07), so a (b, d) x (d, N) product still gives every logit.
    """

    kind: str = "dot"
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("dot", "cosine"):
            raise ValueError(f"item_scoring: must be 'dot' or 'cosine', got {self.kind!r}")
        if not self.temperature > 0:
            raise ValueError(f"score_temperature: must be > 0, got {self.temperature!r}")

    def queries(self, states: torch.Tensor) -> torch.Tensor:
        """states (..., d) -> (..., d); the dot path returns the very tensor it got (bit-identical scores)."""
        if self.kind == "dot":
            return states
        return F.normalize(states, dim=-1) / self.temperature

    def candidates(self, item_w: torch.Tensor) -> torch.Tensor:
        """item_w (N, d) -> (N, d) candidate matrix."""
        return item_w if self.kind == "dot" else F.normalize(item_w, dim=-1)


DOT = Scoring()


def _ce_sum(queries: torch.Tensor, cand: torch.Tensor, target_idx: torch.Tensor, temperature: float) -> torch.Tensor:
    """queries (b, d), cand (N, d), target_idx (b,) 0-based -> sum of CE over rows."""
    if temperature != 1.0:  # scale the (b, d) queries, not the (b, N) logits: same values, less work
        queries = queries / temperature
    return F.cross_entropy(queries @ cand.T, target_idx, reduction="sum")


def _kl_mix(kind: str, S: int, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, C), both (S, S), that write ERL's KL term and its gradient in the log-probabilities lp_j:
    KL = sum_i sum_j M_ij <p_i, lp_j>, d KL / d z_i = p_i * sum_j M_ij (z_j - <p_i, z_j>) + sum_j C_ij p_j.
    'pairs' (Eq. 7, sum_{i<j} KL(p_i || p_j)): M_ii = S-1-i, M_ij = -1 for j > i; C_ii = i, C_ij = -1 for j < i.
    'released' (mean over ordered pairs i != j of KL(p_j || sg(p_i))): M = (S I - 1) / (S (S-1)), C = 0
    (the detached side carries no gradient)."""
    eye = torch.eye(S, dtype=dtype, device=device)
    if kind == "pairs":
        upper = torch.ones(S, S, dtype=dtype, device=device).triu(1)
        m = torch.diag(torch.arange(S - 1, -1, -1, dtype=dtype, device=device)) - upper
        c = torch.diag(torch.arange(S, dtype=dtype, device=device)) - upper.T
        return m, c
    return (S * eye - 1.0) / (S * (S - 1)), torch.zeros(S, S, dtype=dtype, device=device)


class _StepsLoss(torch.autograd.Function):
    """ERL's full-vocabulary loss from queries q (b, S, d) and candidates E (N, d), S = K + 1 steps:
    sum over rows of [ce * sum_k CE(z_k) + coef * KL], z = q E^T. One softmax per step serves its CE and
    every KL pair (issue 13.5: the old code built each step's logits once for CE and again for KL).

    Rows are processed ``block`` at a time: a block holds whole rows, so its softmax, loss *and* its
    gradient w.r.t. z are complete there, and the gradients w.r.t. q and E are accumulated in the same
    pass while the block's (n, S, N) logits are in cache -- the (b, S, N) logits never exist, nothing of
    size N is kept for backward, and backward only scales the stored (b, S, d) and (N, d) gradients.
    With lse_k = logsumexp(z_k), p_k = softmax(z_k) and G_ij = <p_i, z_j>: <p_i, lp_j> = G_ij - lse_j,
    so the KL needs only (b, S, S) numbers (see _kl_mix), and
    d/dz_i = ce (p_i - onehot) + coef [p_i * ((M z)_i - sum_j M_ij G_ij) + (C p)_i].
    tests/test_core_objectives.py checks values and gradients against the plain autograd formulas.
    """

    @staticmethod
    def forward(ctx, q, cand, idx, ce: bool, coef: float, kind: str, block: int, grad: bool):
        # fit runs the step under autocast: the full-vocabulary softmax stays in >= float32
        with torch.autocast(q.device.type, enabled=False):
            dtypes = (q.dtype, cand.dtype)
            dtype = torch.promote_types(torch.promote_types(q.dtype, cand.dtype), torch.float32)
            total, grad_q, grad_cand = _steps_loss(q.to(dtype), cand.to(dtype), idx, ce, coef, kind, block,
                                                   grad)
        if grad_q is not None:
            ctx.save_for_backward(grad_q.to(dtypes[0]), grad_cand.to(dtypes[1]))
        return total.to(dtypes[0])

    @staticmethod
    def backward(ctx, grad_out):
        grad_q, grad_cand = ctx.saved_tensors
        return grad_q * grad_out, grad_cand * grad_out, None, None, None, None, None, None


def _erl_loss(q, cand, idx, ce, coef, kind):
    """_StepsLoss, computing the gradients in its forward pass only when autograd will want them."""
    grad = torch.is_grad_enabled() and (q.requires_grad or cand.requires_grad)
    return _StepsLoss.apply(q, cand, idx, ce, coef, kind, ERL_BLOCK, grad)


def _steps_loss(q, cand, idx, ce, coef, kind, block, grad):
    """_StepsLoss's block loop -> (loss, d loss / d q or None, d loss / d E or None)."""
    b, S, d = q.shape
    m, c = _kl_mix(kind, S, q.dtype, q.device)
    m_kl = coef * m  # p_i * ((m_kl z)_i - beta_i) is the KL's gradient part ...
    mix = coef * c + (torch.eye(S, dtype=q.dtype, device=q.device) if ce else 0.0)  # ... + (mix p)_i
    total = q.new_zeros(())
    grad_q = torch.empty_like(q) if grad else None
    grad_cand = torch.zeros_like(cand) if grad else None
    for r in range(0, b, block):
        qb = q[r : r + block]
        n, ib = len(qb), idx[r : r + block, None, None].expand(-1, S, 1)
        z = qb @ cand.T  # (n, S, N)
        top = z.amax(-1, keepdim=True)
        p = (z - top).exp_()
        norm = p.sum(-1, keepdim=True)
        lse = top + norm.log()  # (n, S, 1)
        p.div_(norm)  # softmax of every step
        if ce:
            total = total + (lse - z.gather(2, ib)).sum()
        if coef != 0.0:
            gram = p @ z.transpose(1, 2)  # (n, S, S): G_ij = <p_i, z_j>
            total = total + coef * (m * (gram - lse.transpose(1, 2))).sum()
        if not grad:
            continue
        if coef != 0.0:
            beta = (m_kl * gram).sum(-1, keepdim=True)  # (n, S, 1)
            g = torch.matmul(m_kl, z).sub_(beta).mul_(p).baddbmm_(mix.expand(n, S, S), p)
        else:
            g = p if ce else torch.zeros_like(p)
        if ce:
            g.scatter_add_(2, ib, g.new_full((n, S, 1), -1.0))
        grad_q[r : r + block] = g @ cand
        grad_cand.addmm_(g.reshape(-1, g.shape[-1]).T, qb.reshape(-1, d))
    return total, grad_q, grad_cand


ERL_BLOCK = 16  # rows per cache-resident block of _StepsLoss (16 x 3 x 13,917 floats = 2.7 MB; 8-32 measured alike)


def inference_state(method: MethodConfig, states: torch.Tensor) -> torch.Tensor:
    """The method's user representation h_u from states (B, K+1, d): ERL mean-pools r_0..r_K (§3.2.3),
    every other method reads the last state (r_0 for base, r_K otherwise, §3.3.3)."""
    return states.mean(1) if method.traits.readout == "mean" else states[:, -1]


def vocab_loss(method: MethodConfig, states: torch.Tensor, cand: torch.Tensor, target: torch.Tensor,
               scoring: Scoring) -> torch.Tensor:
    """Sum over the b rows of the method's full-vocabulary loss. states (b, K+1, d) raw reasoning states;
    cand (N, d) = scoring.candidates(item table) (ReaRecModel.candidates); target (b,) in 1..N."""
    idx = target - 1
    K = states.shape[1] - 1
    released = method.formulation == "released"
    loss = method.traits.loss
    if loss == "ce":  # one CE on the read-out state
        return _ce_sum(scoring.queries(inference_state(method, states)), cand, idx, method.tau if released else 1.0)
    if loss == "erl":
        sign = -1.0 if method.kl_sign == "maximize" else 1.0
        coef = sign * method.kl_lambda if K > 0 else 0.0
        if released:  # one CE on the pooled state (the user representation), KL at the global tau
            rec = _ce_sum(scoring.queries(states.mean(1)), cand, idx, method.tau)
            if coef == 0.0:
                return rec
            q = scoring.queries(states) / method.tau
            return rec + _erl_loss(q, cand, idx, False, coef, "released")
        # every step's CE and the KL pairs share one softmax per step
        return _erl_loss(scoring.queries(states), cand, idx, True, coef, "pairs")
    if loss == "prl":  # step k's logits at its own temperature tau_k (on top of the scoring's)
        temps = method.step_temperatures()
        per_step = [_ce_sum(scoring.queries(states[:, k]), cand, idx, temps[k]) for k in range(K + 1)]
        if released:  # CE_K + mean of the earlier steps' CE (docs/released-code.md, "PRL")
            return per_step[K] + sum(per_step[:K]) / K
        return sum(per_step)
    raise ValueError(f"method: unknown loss {loss!r} of method {method.name!r}")


def noise_std(method: MethodConfig) -> float:
    """Eq. 10 writes eps ~ N(0, gamma I): gamma is a variance in the paper, a std in the released code."""
    return method.gamma if method.formulation == "released" else math.sqrt(method.gamma)


def rcl_loss(method: MethodConfig, clean: torch.Tensor, noisy: torch.Tensor,
             groups: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 11, InfoNCE from each noisy state to its clean twin, negatives = the other rows' clean states
    at the same step. clean, noisy (B, K, d) for steps 1..K. Paper: sum over steps of the batch mean;
    released: mean over B*K.

    ``method.rcl_similarity``: 'dot' (Eq. 11 and the released code) or 'cosine' (unit-normalised states);
    either is divided by tau. ``groups`` (B,) int: rows sharing a group id are not each other's negatives
    (packed training's own-user prefixes, rcl_negatives 'other_users'); a row's positive always stays.
    """
    B, K, _ = clean.shape
    if method.rcl_similarity not in ("dot", "cosine"):
        raise ValueError(f"rcl_similarity: must be 'dot' or 'cosine', got {method.rcl_similarity!r}")
    if method.rcl_similarity == "cosine":
        clean, noisy = F.normalize(clean, dim=-1), F.normalize(noisy, dim=-1)
    labels = torch.arange(B, device=clean.device)
    excluded = None
    if groups is not None:
        excluded = (groups[:, None] == groups[None, :]) & ~torch.eye(B, dtype=torch.bool, device=clean.device)
    terms = []
    for k in range(K):
        logits = noisy[:, k] @ clean[:, k].T / method.tau  # (B, B): row = noisy query, column = clean key
        if excluded is not None:
            logits = logits.masked_fill(excluded, float("-inf"))
        terms.append(F.cross_entropy(logits, labels))
    total = torch.stack(terms)
    return total.mean() if method.formulation == "released" else total.sum()


def uses_rcl(method: MethodConfig, epoch: int) -> bool:
    """PRL's noisy view and RCL are active after the warm-up epochs (epochs are 1-based); rcl=False (PRL w/o
    RCL) turns both off."""
    traits = method.traits
    return (traits.uses_noise and method.rcl and method.reasoning_steps > 0
            and (not traits.uses_warmup or epoch > method.warmup))
