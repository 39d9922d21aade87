"""Text-based item encoders: UniSRec's whitening mixture-of-experts adaptor and MoRec's projection.

Both turn item-text features X (n_items, f) -- frozen sentence-encoder outputs from
``rearec.data.text.item_embeddings``, optionally PCA-reduced -- into the item table of rearec/items.py
(n_items + 2, d): row 0 padding (zeros), rows 1..n_items the items (transformer inputs *and* full-ranking
candidates), row n_items + 1 a learned [MASK] row that only BERT4Rec-style backbones read. The sequence
encoder on top is SASRec's causal transformer (rearec/model.py), so reasoning, the KV cache, every method
and the evaluation work unchanged.

- UniSRec (Hou et al., KDD 2022, Eq. 2-4): e_i = sum_k g_k(x_i) (x_i - b_k) W_k, i.e. n_experts parametric
  whitening experts mixed by a softmax gate over the features (noisy gating while training, as released),
  with dropout on x inside every expert. "inductive" uses text only; "transductive" adds a learned ID
  embedding (e_i + id_i). Trained from scratch on the target data: UniSRec's multi-domain pre-training
  is not reproduced (the ReaRec paper does not describe one either).
- MoRec (Yuan et al., SIGIR 2023): e_i = GELU(Linear(dropout(x_i))) -- the dense layer + GELU that MoRec
  puts on the text encoder's output -- and no ID embedding. Features are frozen by default; with
  ``finetune_text_encoder`` the encoder itself is trained end to end (CUDA only, see FineTunedTextModel).

Scoring is ModelConfig.item_scoring: UniSRec ranks by cosine similarity / 0.07 as its paper and released
code do (rearec/objectives.py Scoring, applied to training, every step loss and evaluation); MoRec by
the dot product.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import ModelConfig
from .errors import ConfigError

NOISE_EPS = 1e-2  # UniSRec's noisy gating: std = softplus(x W_noise) + 1e-2


def check_features(cfg: ModelConfig, n_items: int, item_features: np.ndarray | None) -> np.ndarray:
    """Validate frozen features (n_items + 1, f) for a text backbone; row 0 (padding) is never read."""
    if item_features is None:
        raise ValueError(f"item_features: backbone {cfg.backbone!r} needs frozen item-text features of shape "
                         f"(n_items + 1, f) = ({n_items + 1}, f); compute them with "
                         "rearec.data.text.item_embeddings(data, encoder=cfg.text_encoder, pca_dim=cfg.pca_dim)")
    x = np.asarray(item_features)
    if x.ndim != 2 or x.shape[0] != n_items + 1 or x.shape[1] < 1:
        raise ValueError(f"item_features: expected shape ({n_items + 1}, f) (row 0 = padding), got {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"item_features: expected numbers, got dtype {x.dtype}")
    if not np.isfinite(x[1:]).all():
        raise ValueError("item_features: contains NaN or infinite values")
    if cfg.pca_dim is not None and x.shape[1] != cfg.pca_dim:
        raise ValueError(f"item_features: width {x.shape[1]} does not match pca_dim {cfg.pca_dim} "
                         "(features computed with another PCA size?)")
    return x


class TextItemEncoder(nn.Module):
    """Common part: the frozen feature buffer, the learned [MASK] row, the table, an evaluation cache.

    Subclasses implement ``items() -> (n_items, d)`` from ``self.text_features()`` (n_items, f).
    """

    def __init__(self, features: np.ndarray | None, n_items: int, hidden: int):
        super().__init__()
        self.n_items = n_items
        self.hidden = hidden
        if features is not None:
            # persistent=False: features come from the data, not from training; keep them out of checkpoints
            self.register_buffer("features", torch.as_tensor(np.asarray(features[1:], dtype=np.float32)),
                                 persistent=False)  # (n_items, f)
        # A raw Parameter: ReaRecModel's init (Linear / Embedding / LayerNorm only) leaves it alone.
        self.mask_row = nn.Parameter(torch.empty(1, hidden).normal_(std=0.02))  # (1, d) BERT4Rec's [MASK]
        self._cache: tuple[tuple, torch.Tensor] | None = None

    def text_features(self) -> torch.Tensor:
        return self.features

    def items(self) -> torch.Tensor:
        raise NotImplementedError

    def table(self) -> torch.Tensor:
        """(n_items + 2, d): [padding zeros ; items ; [MASK]]."""
        if self.training or torch.is_grad_enabled():
            self._cache = None
            return self._build()
        # Evaluation calls table() twice per batch (inputs and candidates) with unchanged parameters; the
        # adaptor over all items costs more than the batch itself, so reuse it while no parameter or
        # buffer changed (in-place updates such as optimizer.step / load_state_dict bump _version).
        key = tuple((t.data_ptr(), t._version) for t in (*self.parameters(), *self.buffers()))
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._build())
        return self._cache[1]

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    def _build(self) -> torch.Tensor:
        rows = self.items()  # (n_items, d)
        return torch.cat([rows.new_zeros(1, self.hidden), rows, self.mask_row.to(rows.dtype)], 0)


# ---- UniSRec ------------------------------------------------------------------------------------------
class WhiteningExpert(nn.Module):
    """UniSRec's parametric whitening (PWLayer): (dropout(x) - b) W, with a learned bias b (f,) and W (f, d)."""

    def __init__(self, in_dim: int, hidden: int, dropout: float):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.bias = nn.Parameter(torch.zeros(in_dim))
        self.proj = nn.Linear(in_dim, hidden, bias=False)  # N(0, 0.02) from ReaRecModel's init, as in UniSRec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.drop(x) - self.bias)  # (N, f) -> (N, d)


class MoEAdaptor(nn.Module):
    """UniSRec's MoE adaptor: a softmax gate over the features mixes the whitening experts' outputs."""

    def __init__(self, in_dim: int, hidden: int, n_experts: int, dropout: float, noisy_gating: bool = True):
        super().__init__()
        self.experts = nn.ModuleList(WhiteningExpert(in_dim, hidden, dropout) for _ in range(n_experts))
        # zero-initialised as released: the gate starts uniform and learns which expert fits which item
        self.w_gate = nn.Parameter(torch.zeros(in_dim, n_experts))
        self.w_noise = nn.Parameter(torch.zeros(in_dim, n_experts))
        self.noisy_gating = noisy_gating

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """(N, f) -> (N, E) softmax weights; Gaussian noise on the logits while training (released code)."""
        logits = x @ self.w_gate
        if self.noisy_gating and self.training:
            std = F.softplus(x @ self.w_noise) + NOISE_EPS
            logits = logits + torch.randn_like(logits) * std
        return logits.softmax(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.stack([expert(x) for expert in self.experts], 1)  # (N, E, d)
        return (self.gates(x)[..., None] * out).sum(1)  # (N, d)


class UniSRecItemEncoder(TextItemEncoder):
    """Items = MoE-adapted text features (inductive), plus a learned ID embedding (transductive)."""

    def __init__(self, cfg: ModelConfig, n_items: int, features: np.ndarray):
        super().__init__(features, n_items, cfg.hidden_size)
        self.adaptor = MoEAdaptor(features.shape[1], cfg.hidden_size, cfg.n_experts, cfg.adaptor_dropout)
        self.id_emb = nn.Embedding(n_items, cfg.hidden_size) if cfg.text_mode == "transductive" else None

    def items(self) -> torch.Tensor:
        rows = self.adaptor(self.text_features())  # (n_items, d)
        return rows + self.id_emb.weight if self.id_emb is not None else rows


# ---- MoRec --------------------------------------------------------------------------------------------
class FineTunedTextModel(nn.Module):
    """A Hugging Face encoder trained end to end: mean-pooled last hidden states of every item's text.

    The item table needs every item's vector at every call, so items are encoded in chunks under
    activation checkpointing (memory holds one chunk's activations, the backward pass recomputes them).
    That is a full pass of the encoder over all item texts for each table() call -- practical on a GPU
    only, hence the CUDA requirement in make_text_item_encoder.
    """

    def __init__(self, model: str, texts: list[str], max_length: int = 256, chunk: int = 512):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        from .data.text import DEFAULT_ENCODER, default_model_path

        path = default_model_path() if model == DEFAULT_ENCODER else model
        tokenizer = AutoTokenizer.from_pretrained(path)
        self.encoder = AutoModel.from_pretrained(path)
        self.chunk = chunk
        tok = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        # Items sorted by length so each chunk pads only to its own longest text; `order` maps back.
        lengths = tok["attention_mask"].sum(1)
        order = torch.argsort(-lengths, stable=True)
        self.register_buffer("ids", tok["input_ids"][order], persistent=False)  # (N, T)
        self.register_buffer("mask", tok["attention_mask"][order], persistent=False)  # (N, T)
        self.register_buffer("inverse", torch.argsort(order), persistent=False)  # (N,)

    def apply(self, fn):
        # ReaRecModel.apply(_init) re-draws every Linear / Embedding / LayerNorm; the pretrained weights must
        # survive it, so the walk stops here.
        fn(self)
        return self

    def _encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (n, T, f)
        m = mask[..., None].to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)  # (n, f), as rearec.data.text.MeanPoolEncoder

    def forward(self) -> torch.Tensor:
        parts = []
        for i in range(0, len(self.ids), self.chunk):
            mask = self.mask[i : i + self.chunk]
            width = int(mask.sum(1).max())
            ids, mask = self.ids[i : i + self.chunk, :width], mask[:, :width]
            if torch.is_grad_enabled():
                parts.append(checkpoint(self._encode, ids, mask, use_reentrant=False))
            else:
                parts.append(self._encode(ids, mask))
        return torch.cat(parts, 0)[self.inverse]  # (N, f) in item order


class MoRecItemEncoder(TextItemEncoder):
    """Items = GELU(Linear(dropout(text features))); no ID embedding."""

    def __init__(self, cfg: ModelConfig, n_items: int, features: np.ndarray | None = None,
                 text_model: FineTunedTextModel | None = None):
        super().__init__(features, n_items, cfg.hidden_size)
        self.text_model = text_model
        in_dim = text_model.encoder.config.hidden_size if text_model is not None else features.shape[1]
        self.drop = nn.Dropout(cfg.adaptor_dropout)
        self.proj = nn.Linear(in_dim, cfg.hidden_size)

    def text_features(self) -> torch.Tensor:
        return self.text_model() if self.text_model is not None else self.features

    def items(self) -> torch.Tensor:
        return F.gelu(self.proj(self.drop(self.text_features())))  # (n_items, d)


def make_text_item_encoder(cfg: ModelConfig, n_items: int, item_features) -> TextItemEncoder:
    """The UniSRec / MoRec item encoder. ``item_features``: frozen features (n_items + 1, f); for MoRec with
    ``finetune_text_encoder``, the item texts instead (a sequence of n_items + 1 strings, row 0 unused)."""
    if cfg.backbone == "unisrec":
        return UniSRecItemEncoder(cfg, n_items, check_features(cfg, n_items, item_features))
    if cfg.backbone != "morec":
        raise ValueError(f"backbone: {cfg.backbone!r} is not a text-based backbone")
    if not cfg.finetune_text_encoder:
        return MoRecItemEncoder(cfg, n_items, check_features(cfg, n_items, item_features))
    if not torch.cuda.is_available():
        raise ConfigError("finetune_text_encoder", "fine-tuning the text encoder end to end needs a CUDA GPU "
                          "(every training step re-encodes every item text); none is available, so use "
                          "frozen features (finetune_text_encoder: false)")
    texts = list(item_features) if item_features is not None else None
    if texts is None or len(texts) != n_items + 1 or not all(isinstance(t, str) for t in texts[1:]):
        raise ValueError(f"item_features: with finetune_text_encoder, pass the item texts: {n_items + 1} strings "
                         "(row 0 = padding, unused), e.g. ['', *rearec.data.text.item_texts(data)]")
    return MoRecItemEncoder(cfg, n_items, text_model=FineTunedTextModel(cfg.text_encoder, texts[1:]))
