"""Item encoders: where item representations come from (ID embeddings here; text-based ones plug in).

An item encoder returns one table of shape (n_items + 2, d): row 0 is padding (all zeros, no gradient),
rows 1..n_items are the items -- used both as the transformer's inputs and as the ranking candidates --
and row n_items + 1 is BERT4Rec's [MASK] token.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .config import TEXT_BACKBONES, ModelConfig
from .text_items import make_text_item_encoder


class IDItemEncoder(nn.Module):
    """A learned embedding per item id (SASRec, BERT4Rec)."""

    def __init__(self, n_items: int, hidden: int):
        super().__init__()
        self.emb = nn.Embedding(n_items + 2, hidden, padding_idx=0)

    def table(self) -> torch.Tensor:
        return self.emb.weight


def make_item_encoder(cfg: ModelConfig, n_items: int, item_features: np.ndarray | None = None) -> nn.Module:
    """The item encoder for ``cfg.backbone``; ID-based backbones ignore ``item_features``."""
    if cfg.backbone in ("sasrec", "bert4rec"):
        return IDItemEncoder(n_items, cfg.hidden_size)
    if cfg.backbone in TEXT_BACKBONES:  # UniSRec / MoRec over frozen item-text features
        return make_text_item_encoder(cfg, n_items, item_features)
    raise ValueError(f"backbone: no item encoder for {cfg.backbone!r}")
