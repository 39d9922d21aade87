"""BERT4Rec's cloze objective (Sun et al. 2019): [MASK]ed history items predicted over the full vocabulary.

Protocol (``bert4rec_objective: cloze``; ``next_item`` trains the final [MASK] only):
- Rows: the harness's per-prefix rows (every training target is a row, as RecBole's data augmentation and
  the ReaRec protocol have it), each drawing fresh masks every epoch. BERT4Rec's paper trains one row per
  user sequence; per-prefix rows keep the reasoning methods' step losses on exactly the rows and targets
  they have with every other backbone, so "with vs without reasoning" compares the same supervision.
- Masks: in a history of n items, round-half-up(mask_prob * n) positions, chosen uniformly without
  replacement, become [MASK] (BERT4Rec's generator draws an exact count; its runs always use [MASK], never
  the 80/10/10 rule). The count is capped at n - 1 so at least one real item stays visible: a 1-item history
  gets no mask (its final [MASK] must still see an item). No minimum of one mask: the appended final
  [MASK] already gives every row a prediction.
- Clean rows (``clean_ratio``, Sun et al. §3.6's "samples that only mask the last item"): a fraction of the
  rows, drawn per row every epoch, keeps its history unmasked, as at test time; such a row contributes
  only its final [MASK]. Default 0.5 as RecBole 1.2.1's ft_ratio; RecBole alternates whole batches of each
  kind, here every batch mixes both, which keeps batch order and sizes those of every other backbone.
- Loss: the method's own loss on the final [MASK]'s reasoning states (a mean over rows, exactly what
  ``next_item`` trains) + the cloze CE averaged over the batch's masked positions (clean rows have none),
  weight 1 each. Each term keeps the scale of one CE, so ERL's lambda and PRL's temperatures mean what they
  mean on other backbones, and the two objectives get equal weight -- as RecBole 1.2.1, which alternates
  cloze and last-item batches half and half (ft_ratio 0.5). Summing all predictions into one mean (the final
  [MASK] as one more masked position) would weight the next-item and reasoning losses by ~1 / (mask_prob * n).
- Masks come from their own generator, derived from the trial seed (``mask_generator``), so a cloze and a
  next-item trial see the same batch order, and CPU runs repeat bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

CLOZE_STREAM = 0x636C6F7A  # spawn key of the mask generator ("cloz"): independent of the batch-order stream


def mask_generator(seed: int) -> np.random.Generator:
    """The trial's mask stream: a child of ``seed`` that never shares draws with the batch order."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(CLOZE_STREAM,)))


def mask_counts(n: np.ndarray, mask_prob: float) -> np.ndarray:
    """(B,) history lengths -> (B,) number of masked items: round-half-up(mask_prob * n), at most n - 1."""
    k = np.floor(mask_prob * n + 0.5).astype(np.int64)
    return np.minimum(k, np.maximum(n - 1, 0))


def draw_masks(history: np.ndarray, mask_prob: float, rng: np.random.Generator,
               clean_ratio: float = 0.0) -> np.ndarray:
    """history (B, L) left-padded ids (0 = pad) -> (B, L) bool: which real items become [MASK].

    ``clean_ratio``: each row is, with this probability, a clean row with no mask at all (its final [MASK]
    alone is predicted). Drawn after the masks, and only when > 0, so clean_ratio 0 draws exactly the
    masks it drew before the setting existed."""
    valid = history > 0
    k = mask_counts(valid.sum(1), mask_prob)
    keys = rng.random(history.shape)
    keys[~valid] = 2.0  # padding sorts after every real item, so only real items can be among the first k
    rank = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
    masks = rank < k[:, None]
    if clean_ratio > 0:
        masks[rng.random(len(history)) < clean_ratio] = False  # (B,) clean rows
    return masks


class _AddGradient(torch.autograd.Function):
    """y = x, and whenever a backward pass reaches y, ``grad`` also flows into ``source``.

    Lets the cloze term join the method loss's single backward pass (rearec/train.py ``backward_loss``)
    without a second walk through the encoder: the cloze CE is differentiated chunk by chunk against a
    detached copy of its hidden states, and the resulting gradient rides along with the final states.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, source: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(grad)
        return x.clone()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad_out, grad, None


def cloze_loss_into(
    states: torch.Tensor, hidden: torch.Tensor, target: torch.Tensor,
    scores, chunk: int,
) -> tuple[torch.Tensor, float]:
    """Differentiate the cloze CE and attach its gradient to ``states``.

    states (B, K+1, d): the final [MASK]'s reasoning states, whose backward will also run the cloze one;
    hidden (M, d): the last-layer outputs at the M masked positions; target (M,) their original items
    (1..N); scores: states (m, d) -> (m, N) logits (the model's scorer, as at evaluation).
    The cloze CE is the mean over the M positions, computed ``chunk`` positions at a time so memory holds
    one chunk's (chunk, N) logits; gradients into the item table accumulate at once (it is a leaf for the
    ID backbones that cloze applies to), the hidden-state gradient rides on the returned states.
    Returns (states carrying the cloze gradient, the cloze loss value); M = 0 gives (states, 0.0).
    """
    M = len(target)
    if M == 0:
        return states, 0.0
    detached = hidden.detach().requires_grad_(True)
    total = 0.0
    for i in range(0, M, chunk):
        part = F.cross_entropy(scores(detached[i : i + chunk]), target[i : i + chunk] - 1, reduction="sum") / M
        part.backward()  # into detached.grad and the item table's .grad
        total += float(part.detach())
    return _AddGradient.apply(states, hidden, detached.grad), total
