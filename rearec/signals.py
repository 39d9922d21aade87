"""Per-sample signals of each reasoning depth's predicted distribution, for stopping rules evaluated offline.

For every evaluated sample and every depth k = 0..K this records what a stopping rule could look at after
computing k reasoning steps, and what the model would recommend if it stopped there:

- ``rank``: the target's 1-based rank under the depth-k read-out (pessimistic ties, as rearec.metrics);
- ``entropy``: entropy (nats) of the softmax of the depth-k scores over all items;
- ``top1_prob`` / ``top1_item``: its largest probability and that item's id (1..n; ties: the lowest id);
- ``top1_repeats``: how many depths in a row before k had the same top-1 item (0 at k = 0, or when it
  changed), so "the top-1 item repeated m times" is one comparison per row;
- ``kl_prev``: KL(p_k || p_{k-1}) in nats for k >= 1 (NaN at k = 0).

The depth-k read-out is the method's own representation had it stopped after k steps
(``objectives.inference_state`` over r_0..r_k): r_k for base / naive / rpe / prl, and the mean of
r_0..r_k for ERL, whose output is the mean of its steps (so for ERL ``rank`` at k < K differs from the
r_k rank in ``Evaluation.ranks``; at k = K it is the method's output). The softmax is taken over the
model's own ranking scores (``model.scores``: dot product, or cosine / temperature where configured) at
temperature 1 -- PRL's training temperatures tau_k are not applied, so depths are compared on one scale.
Items excluded from the ranking (``mask_history``) get probability 0 and add nothing to either sum.

Storage: 4 bytes per value, 5 values per (sample, depth) plus a 1-byte repeat count = 21 bytes, i.e.
21 (K + 1) bytes per sample before the store's compression.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import MethodConfig
from .metrics import target_ranks
from .objectives import inference_state

SIGNALS = ("rank", "entropy", "top1_prob", "top1_item", "kl_prev", "top1_repeats")
BYTES = {"rank": 4, "entropy": 4, "top1_prob": 4, "top1_item": 4, "kl_prev": 4, "top1_repeats": 1}
_DTYPES = {"rank": np.int32, "top1_item": np.int32, "top1_repeats": np.uint8}


@dataclass
class StepSignals:
    """(N, K + 1) arrays, column k = depth k; see the module docstring."""

    rank: np.ndarray  # int32
    entropy: np.ndarray  # float32, nats
    top1_prob: np.ndarray  # float32
    top1_item: np.ndarray  # int32, 1..n_items
    kl_prev: np.ndarray  # float32, nats; column 0 is NaN
    top1_repeats: np.ndarray  # uint8, consecutive earlier depths with the same top-1 item

    @property
    def reasoning_steps(self) -> int:
        return self.rank.shape[1] - 1


def bytes_per_sample(reasoning_steps: int) -> int:
    """Raw bytes the signals of one sample take (before any compression by the store)."""
    return sum(BYTES.values()) * (reasoning_steps + 1)


def depth_readouts(method: MethodConfig, states: torch.Tensor) -> torch.Tensor:
    """states (B, K+1, d) -> (B, K+1, d): column k is the method's read-out after k steps."""
    if method.name != "erl":  # the last state read out: r_k itself
        return states
    return torch.stack([inference_state(method, states[:, : k + 1]) for k in range(states.shape[1])], 1)


def depth_scores(model, method: MethodConfig, states: torch.Tensor, scores: torch.Tensor,
                 seen: torch.Tensor | None = None) -> torch.Tensor:
    """Scores (B, K+1, N) of the depth read-outs. ``scores`` (B, K+2, N) are evaluate's scores of r_0..r_K and
    the method output (already masked); ERL's intermediate means are scored here (``model.scores``, so the
    configured item scoring applies) and masked with ``seen`` (B, N) like the rest."""
    K = states.shape[1] - 1
    if method.name != "erl" or K < 2:  # ERL depth 0 is r_0 and depth K is the output: both scored already
        return torch.cat([scores[:, :K], scores[:, -1:]], 1) if method.name == "erl" else scores[:, : K + 1]
    middle = model.scores(depth_readouts(method, states)[:, 1:K])  # (B, K-1, N)
    if seen is not None:
        middle = middle.masked_fill(seen[:, None, :], float("-inf"))
    return torch.cat([scores[:, :1], middle, scores[:, -1:]], 1)


def batch_signals(scores: torch.Tensor, target_idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """scores (B, S, N) of S depths, target_idx (B,) 0-based -> each signal as a (B, S) tensor.

    One depth at a time, so memory holds two (B, N) log-probability tables, not S of them."""
    out = {name: [] for name in SIGNALS}
    prev = prev_item = None
    for k in range(scores.shape[1]):
        logp = torch.log_softmax(scores[:, k].float(), dim=-1)  # (B, N); -inf where masked
        p = logp.exp()
        live = p > 0  # masked (and underflowed) items contribute 0 * log 0 = 0
        out["entropy"].append(-torch.where(live, p * logp, 0.0).sum(-1))
        top_p, top_i = p.max(-1)  # the first maximum: the lowest item id among ties
        out["top1_prob"].append(top_p)
        item = (top_i + 1).int()
        out["top1_item"].append(item)
        if prev is None:
            out["kl_prev"].append(torch.full_like(top_p, float("nan")))
            out["top1_repeats"].append(torch.zeros_like(item))
        else:  # KL(p_k || p_{k-1}) = sum_j p_k,j (log p_k,j - log p_{k-1},j)
            out["kl_prev"].append(torch.where(live, p * (logp - prev), 0.0).sum(-1))
            out["top1_repeats"].append(torch.where(item == prev_item, out["top1_repeats"][-1] + 1, 0))
        prev, prev_item = logp, item
    stacked = {name: torch.stack(values, 1) for name, values in out.items() if values}
    stacked["rank"] = target_ranks(scores, target_idx).int()
    return stacked


class SignalCollector:
    """Fills StepSignals batch by batch during evaluate's single pass (rows arrive in any order)."""

    def __init__(self, n_rows: int, reasoning_steps: int):
        shape = (n_rows, reasoning_steps + 1)
        self._arrays = {name: np.empty(shape, dtype=_DTYPES.get(name, np.float32)) for name in SIGNALS}

    def add(self, index: np.ndarray, model, method: MethodConfig, states: torch.Tensor, scores: torch.Tensor,
            target: torch.Tensor, seen: torch.Tensor | None = None) -> None:
        """index (B,) rows of this batch; states (B, K+1, d); scores (B, K+2, N) as in evaluate; target (B,)
        in 1..N; seen (B, N) the mask_history mask or None."""
        values = batch_signals(depth_scores(model, method, states, scores, seen), target - 1)
        for name, tensor in values.items():
            self._arrays[name][index] = tensor.cpu().numpy()

    def result(self) -> StepSignals:
        return StepSignals(**self._arrays)
