"""Transformer layer with fused-kernel attention and a key/value cache (post-LayerNorm, as released)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

KV = tuple[torch.Tensor, torch.Tensor]  # (B, h, T, d_h) keys and values of one layer


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, attn_dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.attn_dropout = attn_dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor, past: KV | None = None) -> tuple[torch.Tensor, KV]:
        """x (B, T, d); mask (B, 1, T, T_past + T) bool, True = may attend; returns (B, T, d) and the layer's
        full keys/values (past ones first) so the next reasoning step can reuse them."""
        B, T, d = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, h, T, d_h)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        p = self.attn_dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, h, T, d_h)
        return self.out(a.transpose(1, 2).reshape(B, T, d)), (k, v)


class TransformerLayer(nn.Module):
    """Post-LN block (attention -> dropout -> LN(x + .), FFN -> dropout -> LN(x + .)), GeLU FFN."""

    def __init__(self, hidden: int, heads: int, ffn: int, dropout: float, attn_dropout: float, eps: float):
        super().__init__()
        self.attn = SelfAttention(hidden, heads, attn_dropout)
        self.norm1 = nn.LayerNorm(hidden, eps=eps)
        self.ffn = nn.Sequential(nn.Linear(hidden, ffn), nn.GELU(), nn.Linear(ffn, hidden))
        self.norm2 = nn.LayerNorm(hidden, eps=eps)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, past: KV | None = None) -> tuple[torch.Tensor, KV]:
        a, kv = self.attn(x, mask, past)
        x = self.norm1(x + self.drop(a))
        x = self.norm2(x + self.drop(self.ffn(x)))
        return x, kv
