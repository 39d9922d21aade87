"""Transformer layer with fused-kernel attention, a reasoning-step KV cache and optional checkpointing (post-LN)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

KV = tuple[torch.Tensor, torch.Tensor]  # (B, h, T, d_h) keys and values of one layer


class ReasoningKV:
    """The keys/values one layer's reasoning tokens attend to: the item block's T positions, then P new
    positions per reasoning step (step-major), ``capacity`` = steps * P of them in all.

    Without autograd (evaluation, latency) they live in (B, h, T + capacity, d_h) buffers allocated once
    per call and written in place, one step's P columns at a time; attention reads the filled prefix.
    With autograd an in-place write into a buffer that an earlier step's attention saved for backward
    would fail there (the version counter is shared by every view), so training keeps the item keys and
    values as they are -- saved once, shared by every step, never copied -- and only the small step
    keys/values (k * P columns) are joined; attention then scores both parts and mixes them with one
    softmax, the arithmetic of scaled_dot_product_attention's math path that CPU training runs anyway
    (same dropout draws, results equal to float rounding).
    """

    def __init__(self, items: KV, capacity: int):
        k, v = items
        self.T = k.shape[2]
        self.buffered = not torch.is_grad_enabled()
        if self.buffered:
            B, h, T, dh = k.shape
            self.k = k.new_empty(B, h, T + capacity, dh)
            self.v = v.new_empty(B, h, T + capacity, dh)
            self.k[:, :, :T].copy_(k)  # the only copy of the item block: once per call, not once per step
            self.v[:, :, :T].copy_(v)
        else:
            self.items: KV = (k, v)
            self.steps: list[KV] = []
        self.n = self.T  # positions filled so far

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, dropout: float) -> torch.Tensor:
        """Append this step's k, v (B, h, P, d_h) and attend from q (B, h, P, d_h) over every filled position.
        mask (B, 1, P, T + filled) bool, True = may attend. Returns (B, h, P, d_h)."""
        P = q.shape[2]
        n = self.n + P
        self.n = n
        if self.buffered:
            self.k[:, :, n - P : n].copy_(k)
            self.v[:, :, n - P : n].copy_(v)
            return F.scaled_dot_product_attention(q, self.k[:, :, :n], self.v[:, :, :n], attn_mask=mask, dropout_p=dropout)
        self.steps.append((k, v))
        ks = torch.cat([s[0] for s in self.steps], 2) if len(self.steps) > 1 else k  # (B, h, k*P, d_h)
        vs = torch.cat([s[1] for s in self.steps], 2) if len(self.steps) > 1 else v
        q = q * q.shape[-1] ** -0.5
        scores = torch.cat([q @ self.items[0].transpose(-2, -1), q @ ks.transpose(-2, -1)], -1)  # (B, h, P, n)
        p = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
        if dropout > 0.0:
            p = F.dropout(p, dropout)
        return p[..., : self.T] @ self.items[1] + p[..., self.T :] @ vs


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, attn_dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.attn_dropout = attn_dropout

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, d = x.shape
        return self.qkv(x).view(B, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, h, T, d_h)

    def _merge(self, a: torch.Tensor) -> torch.Tensor:
        B, h, T, dh = a.shape
        return self.out(a.transpose(1, 2).reshape(B, T, h * dh))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, past: KV | None = None) -> tuple[torch.Tensor, KV]:
        """x (B, T, d); mask (B, 1, T, T_past + T) bool, True = may attend; returns (B, T, d) and the layer's
        full keys/values (past ones first). Reasoning steps use ``step`` instead (no concatenation)."""
        q, k, v = self._qkv(x)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        elif torch.is_grad_enabled():
            # training: reasoning steps keep these for backward and multiply with them (bmm); a strided view
            # would be copied by every step's matmul and would pin the whole (B, T, 3d) projection
            k, v = k.contiguous(), v.contiguous()
        p = self.attn_dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, h, T, d_h)
        return self._merge(a), (k, v)

    def step(self, x: torch.Tensor, cache: ReasoningKV, mask: torch.Tensor) -> torch.Tensor:
        """One reasoning step: x (B, P, d) new positions, appended to ``cache``; mask (B, 1, P, filled)."""
        q, k, v = self._qkv(x)
        return self._merge(cache.attend(q, k, v, mask, self.attn_dropout if self.training else 0.0))


class TransformerLayer(nn.Module):
    """Post-LN block (attention -> dropout -> LN(x + .), FFN -> dropout -> LN(x + .)), GeLU FFN.

    ``checkpointed`` (set per training batch by rearec.train): the full-sequence call keeps only its inputs
    for backward and recomputes the rest there, with the dropout masks of the first pass
    (preserve_rng_state), so gradients are those of the plain call.
    """

    def __init__(self, hidden: int, heads: int, ffn: int, dropout: float, attn_dropout: float, eps: float):
        super().__init__()
        self.attn = SelfAttention(hidden, heads, attn_dropout)
        self.norm1 = nn.LayerNorm(hidden, eps=eps)
        self.ffn = nn.Sequential(nn.Linear(hidden, ffn), nn.GELU(), nn.Linear(ffn, hidden))
        self.norm2 = nn.LayerNorm(hidden, eps=eps)
        self.drop = nn.Dropout(dropout)
        self.checkpointed = False

    def _block(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self._feed(self.norm1(x + self.drop(a)))

    def _feed(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm2(x + self.drop(self.ffn(x)))

    def _attend(self, x: torch.Tensor, mask: torch.Tensor, past: KV | None) -> tuple[torch.Tensor, KV]:
        a, kv = self.attn(x, mask, past)
        return self.norm1(x + self.drop(a)), kv

    def forward(self, x: torch.Tensor, mask: torch.Tensor, past: KV | None = None) -> tuple[torch.Tensor, KV]:
        if self.checkpointed and torch.is_grad_enabled():
            # two segments (attention, FFN): backward re-materialises half a layer at a time
            x, kv = checkpoint(self._attend, x, mask, past, use_reentrant=False, preserve_rng_state=True)
            return checkpoint(self._feed, x, use_reentrant=False, preserve_rng_state=True), kv
        x, kv = self._attend(x, mask, past)
        return self._feed(x), kv

    def step(self, x: torch.Tensor, cache: ReasoningKV, mask: torch.Tensor) -> torch.Tensor:
        """One reasoning step through the block: x (B, P, d) -> (B, P, d)."""
        return self._block(x, self.attn.step(x, cache, mask))
