"""BERT4Rec's output layer (Sun et al. 2019, Eq. 7): logits = LN(GELU(W h + b)) . E^T + b_out.

The paper writes P(v) = softmax(GELU(h W^P + b^P) E^T + b^O); the authors' released code (and RecBole's
BERT4Rec) adds a LayerNorm after the GELU, as BERT's masked-LM head does. E is the input item table
(tied), b_out one bias per item. With ``bert4rec_head: true`` every BERT4Rec state that is scored goes
through it -- the cloze positions, the final [MASK], each reasoning step, ERL's pooled state -- while the
reasoning itself (r_k + RPE as the next input, RCL's states) stays on the encoder's raw outputs r_k.

The head plugs into the objectives' scoring contract (logit = queries(state) . candidates) without a new
code path: queries = [head(state), 1] and candidates = [E, b_out], one extra column, so each logit is
head(state) . e_j + b_j and every temperature (PRL's tau_k, RCL excluded) divides the bias too, exactly as
it divides a logit.
"""

from __future__ import annotations

import torch
from torch import nn


class OutputHead(nn.Module):
    """Transform (d -> d, GELU, LayerNorm) and a per-item output bias (n_items,) initialised at zero."""

    def __init__(self, hidden: int, n_items: int, eps: float):
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden, eps=eps))
        self.bias = nn.Parameter(torch.zeros(n_items))

    def wrap(self, scoring) -> HeadScoring:
        return HeadScoring(scoring, self)


class HeadScoring:
    """A ``Scoring`` (rearec.objectives) seen through the output head: same two methods, one more column."""

    def __init__(self, base, head: OutputHead):
        self.base, self.head = base, head
        self.kind, self.temperature = base.kind, base.temperature

    def queries(self, states: torch.Tensor) -> torch.Tensor:
        """states (..., d) -> (..., d + 1): [base.queries(head(states)), 1]."""
        q = self.base.queries(self.head.transform(states))
        return torch.cat([q, q.new_ones(*q.shape[:-1], 1)], -1)

    def candidates(self, item_w: torch.Tensor) -> torch.Tensor:
        """item_w (N, d) -> (N, d + 1): [base.candidates(item_w), b_out]."""
        cand = self.base.candidates(item_w)
        return torch.cat([cand, self.head.bias[:, None].to(cand.dtype)], -1)
