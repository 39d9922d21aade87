"""RCL (Eq. 11): dot vs cosine similarity against NumPy, and the own-user negative mask of packed training."""

import math

import numpy as np
import pytest
import torch

from rearec.config import MethodConfig
from rearec.objectives import rcl_loss

rng = np.random.default_rng(1)


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_rcl(clean, noisy, tau, similarity, formulation, groups=None):
    """Independent InfoNCE: per step k, row i's positive is clean[i], its negatives the other rows' clean
    states at step k (minus rows of the same group)."""
    if similarity == "cosine":
        clean = clean / np.linalg.norm(clean, axis=-1, keepdims=True)
        noisy = noisy / np.linalg.norm(noisy, axis=-1, keepdims=True)
    B, K, _ = clean.shape
    per_step = []
    for k in range(K):
        terms = []
        for i in range(B):
            keep = [j for j in range(B) if j == i or groups is None or groups[j] != groups[i]]
            logits = np.array([noisy[i, k] @ clean[j, k] for j in keep]) / tau
            terms.append(-log_softmax(logits)[keep.index(i)])
        per_step.append(np.mean(terms))
    return sum(per_step) if formulation == "paper" else np.mean(per_step)


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
@pytest.mark.parametrize("formulation", ["paper", "released"])
@pytest.mark.parametrize("grouped", [False, True], ids=["all", "other_users"])
def test_rcl_matches_numpy(similarity, formulation, grouped):
    clean, noisy = rng.normal(size=(6, 2, 5)) * 3, rng.normal(size=(6, 2, 5)) * 3
    groups = np.array([0, 0, 1, 2, 2, 2]) if grouped else None
    m = MethodConfig(name="prl", reasoning_steps=2, tau=0.7, formulation=formulation, rcl_similarity=similarity)
    got = rcl_loss(m, torch.tensor(clean), torch.tensor(noisy), torch.tensor(groups) if grouped else None).item()
    assert got == pytest.approx(np_rcl(clean, noisy, 0.7, similarity, formulation, groups), rel=1e-9)


def test_cosine_rcl_ignores_state_norms_dot_does_not():
    clean, noisy = torch.tensor(rng.normal(size=(4, 1, 3))), torch.tensor(rng.normal(size=(4, 1, 3)))
    cos = MethodConfig(name="prl", reasoning_steps=1, rcl_similarity="cosine")
    dot = MethodConfig(name="prl", reasoning_steps=1)
    assert rcl_loss(cos, clean * 16, noisy * 16).item() == pytest.approx(rcl_loss(cos, clean, noisy).item(), rel=1e-9)
    assert rcl_loss(dot, clean * 16, noisy * 16).item() != pytest.approx(rcl_loss(dot, clean, noisy).item(), rel=1e-3)


def test_own_user_mask_hand_computed():
    """B = 3 rows, users (0, 0, 1), K = 1, d = 2, tau = 1, dot products:
    clean = [1,0], [0,1], [1,1]; noisy = [1,0], [1,0], [0,1] -> logits rows [1,0,1], [1,0,1], [0,1,1].
    Masked: row 0 drops column 1 (its own user's other prefix): -log(e / (e + e)) = log 2;
            row 1 drops column 0: -log(1 / (1 + e)) = log(1 + e); row 2 keeps all: log(1 + 2e) - 1.
    Unmasked: log(1 + 2e) - 1, log(1 + 2e), log(1 + 2e) - 1."""
    clean = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 1.0]]], dtype=torch.float64)
    noisy = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]], [[0.0, 1.0]]], dtype=torch.float64)
    m = MethodConfig(name="prl", reasoning_steps=1, tau=1.0)
    e = math.e
    masked = (math.log(2) + math.log(1 + e) + math.log(1 + 2 * e) - 1) / 3
    unmasked = (2 * (math.log(1 + 2 * e) - 1) + math.log(1 + 2 * e)) / 3
    assert rcl_loss(m, clean, noisy, torch.tensor([0, 0, 1])).item() == pytest.approx(masked, rel=1e-12)
    assert rcl_loss(m, clean, noisy).item() == pytest.approx(unmasked, rel=1e-12)
    # all rows from different users: the mask removes nothing
    assert rcl_loss(m, clean, noisy, torch.tensor([4, 7, 9])).item() == pytest.approx(unmasked, rel=1e-12)


def test_masked_negatives_get_no_gradient():
    """Two prefixes of one user: each row's only candidate is its own positive, so the InfoNCE is 0 and no
    gradient reaches the other prefix (unmasked, the same pair gives a positive loss)."""
    clean = torch.tensor(rng.normal(size=(2, 1, 4)), requires_grad=True)
    noisy = torch.tensor(rng.normal(size=(2, 1, 4)), requires_grad=True)
    m = MethodConfig(name="prl", reasoning_steps=1)
    loss = rcl_loss(m, clean, noisy, torch.tensor([5, 5]))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(clean.grad) == 0 and torch.count_nonzero(noisy.grad) == 0
    assert rcl_loss(m, clean, noisy).item() > 0.0


def test_unknown_similarity_is_refused():
    m = MethodConfig(name="prl", reasoning_steps=1, rcl_similarity="euclid")
    with pytest.raises(ValueError, match="^rcl_similarity: must be 'dot' or 'cosine', got 'euclid'"):
        rcl_loss(m, torch.zeros(2, 1, 3), torch.zeros(2, 1, 3))
