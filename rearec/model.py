"""ReaRec: a SASRec / BERT4Rec encoder that reasons K latent steps after the sequence (paper §3.1).

Conventions (identical in every training and inference path):
- items 1..n_items, 0 = padding; histories are left-padded, the newest item in the last column.
- item positions count from the oldest kept item (0..n-1), so an item's position embedding does not
  depend on how much padding a batch carries. BERT4Rec appends a [MASK] token at position n; its output
  is r_0 (the standard BERT4Rec next-item read-out). BERT4Rec's cloze training (rearec/cloze.py) also
  turns some history items into [MASK] tokens, which keep their positions; evaluation never masks.
- reasoning token k (1..K) = r_{k-1} + RPE[k-1] (Eq. 4); it gets no item position embedding. Every input
  token, item or reasoning, passes the input LayerNorm and dropout (docs/released-code.md, "Model defaults").
- masks: SASRec items are causal; BERT4Rec items (and [MASK]) are bidirectional; no item ever sees a
  reasoning token; reasoning token k sees every real item and reasoning tokens <= k ("prefix masking").
  Because items never see reasoning tokens, their keys/values are computed once and cached, and each
  reasoning step runs one new position through each layer -- in training and in inference (layers.py
  ReasoningKV: buffers written in place without autograd; with it, the item block is never copied).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import MethodConfig, ModelConfig
from .items import make_item_encoder
from .layers import KV, ReasoningKV, TransformerLayer
from .objectives import Scoring
from .output_head import OutputHead


class ReaRecModel(nn.Module):
    # per-batch item-id range check; rearec.static turns it off after checking the rows once on the host,
    # because reading values back inside a CUDA-graph capture is not allowed
    check_inputs = True

    def __init__(self, cfg: ModelConfig, n_items: int, reasoning_steps: int, use_rpe: bool = True,
                 item_features: np.ndarray | None = None):
        super().__init__()
        if n_items < 1:
            raise ValueError(f"n_items: must be >= 1, got {n_items!r}")
        if reasoning_steps < 0:
            raise ValueError(f"reasoning_steps: must be >= 0, got {reasoning_steps!r}")
        self.cfg = cfg
        self.n_items = n_items
        self.K = reasoning_steps
        self.bidirectional = cfg.backbone == "bert4rec"
        d = cfg.hidden_size
        self.mask_token = n_items + 1  # only used by BERT4Rec
        self.items = make_item_encoder(cfg, n_items, item_features)  # table (n_items + 2, d)
        self.pos_emb = nn.Embedding(cfg.max_len + 1, d)  # +1: BERT4Rec's [MASK] after max_len items
        self.rpe = nn.Embedding(reasoning_steps, d) if (use_rpe and reasoning_steps > 0) else None
        self.input_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.input_drop = nn.Dropout(cfg.input_dropout)
        self.layers = nn.ModuleList(
            TransformerLayer(d, cfg.num_heads, cfg.ffn_size, cfg.dropout, cfg.attn_dropout, cfg.layer_norm_eps)
            for _ in range(cfg.num_layers)
        )
        # BERT4Rec's output layer (ModelConfig.bert4rec_head, rearec/output_head.py); built last, so a model
        # without it initialises every other parameter exactly as before the option existed
        self.head = OutputHead(d, n_items, cfg.layer_norm_eps) if self.bidirectional and cfg.bert4rec_head else None
        self.apply(self._init)

    def _init(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.cfg.init_range)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    @classmethod
    def from_configs(cls, model_cfg: ModelConfig, method_cfg: MethodConfig, n_items: int,
                     item_features: np.ndarray | None = None) -> ReaRecModel:
        return cls(model_cfg, n_items, method_cfg.reasoning_steps, use_rpe=method_cfg.uses_rpe,
                   item_features=item_features)

    # ---- candidates -------------------------------------------------------------------------------
    @property
    def item_weights(self) -> torch.Tensor:
        """(n_items, d) candidate representations of items 1..n_items (tied with the input table)."""
        return self.items.table()[1 : self.n_items + 1]

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) -> (B, T, d) item representations; padding rows get no gradient."""
        return F.embedding(tokens, self.items.table(), padding_idx=0)

    @property
    def scoring(self) -> Scoring:
        """The backbone's scoring (ModelConfig.item_scoring): dot product, or cosine / score_temperature."""
        cfg = self.cfg
        base = Scoring(cfg.item_scoring, cfg.score_temperature if cfg.item_scoring == "cosine" else 1.0)
        return base if self.head is None else self.head.wrap(base)  # BERT4Rec's head: [head(h), 1] . [E, b]

    def candidates(self) -> torch.Tensor:
        """(n_items, d) candidate matrix as scored: item_weights, unit-normalised for cosine scoring.
        Every full-vocabulary logit in training and evaluation is scoring.queries(state) . candidates()."""
        return self.scoring.candidates(self.item_weights)

    def scores(self, states: torch.Tensor) -> torch.Tensor:
        """states (..., d) -> (..., n_items) scores (dot, or cosine / score_temperature); column j is item j + 1."""
        scoring = self.scoring
        return scoring.queries(states) @ scoring.candidates(self.item_weights).T

    # ---- encoding -----------------------------------------------------------------------------------
    def _check(self, history: torch.Tensor) -> None:
        if history.ndim != 2 or history.shape[0] == 0:
            raise ValueError(f"history: expected a non-empty (B, L) batch, got shape {tuple(history.shape)}")
        if history.shape[1] > self.cfg.max_len:
            raise ValueError(f"history: length {history.shape[1]} exceeds max_len {self.cfg.max_len}")
        if not self.check_inputs:
            return
        lo, hi = int(history.min()), int(history.max())
        if lo < 0 or hi > self.n_items:
            bad = lo if lo < 0 else hi
            raise ValueError(f"history: item id {bad} out of range 0..{self.n_items}")

    def _item_inputs(self, history: torch.Tensor, masked: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """history (B, L) -> token ids (B, T) and position ids (B, T); T = L (+1 for BERT4Rec's [MASK]).

        masked (B, L) bool (BERT4Rec's cloze training, rearec/cloze.py): those history items become [MASK]
        tokens; they keep their positions and stay visible as keys, but their own item id is gone.
        """
        valid = history > 0
        pos = (valid.long().cumsum(1) - 1).clamp(min=0)  # oldest kept item = 0
        if masked is not None:
            if not self.bidirectional:
                raise ValueError("masked: cloze masking needs the bidirectional BERT4Rec backbone")
            if masked.shape != history.shape or bool((masked & ~valid).any()):
                raise ValueError(f"masked: expected a (B, L) = {tuple(history.shape)} bool mask over real items, "
                                 f"got shape {tuple(masked.shape)}")
            history = history.masked_fill(masked, self.mask_token)
        if self.bidirectional:
            n = valid.sum(1, keepdim=True)
            history = torch.cat([history, torch.full_like(n, self.mask_token)], 1)
            pos = torch.cat([pos, n], 1)
        return history, pos

    def _item_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 1, T, T) bool: who may attend to whom inside the item block."""
        T = tokens.shape[1]
        key_ok = (tokens > 0)[:, None, None, :]  # (B, 1, 1, T)
        if self.bidirectional:
            mask = key_ok.expand(-1, 1, T, T)
        else:
            causal = torch.ones(T, T, dtype=torch.bool, device=tokens.device).tril()
            mask = key_ok & causal
        # a padded query may see nothing; let it see itself so softmax stays finite (its output is unused)
        return mask | torch.eye(T, dtype=torch.bool, device=tokens.device)

    def encode_items(self, history: torch.Tensor) -> tuple[torch.Tensor, list[KV], torch.Tensor]:
        """history (B, L) -> r_0 (B, d), per-layer caches [(B, h, T, d_h) x2], key_ok (B, T) bool."""
        x, caches, tokens = self._item_pass(history)
        return x[:, -1], caches, tokens > 0

    def encode_cloze(
        self, history: torch.Tensor, masked: torch.Tensor
    ) -> tuple[torch.Tensor, list[KV], torch.Tensor, torch.Tensor]:
        """BERT4Rec cloze training: history (B, L) with ``masked`` (B, L) items replaced by [MASK].

        Returns r_0 (B, d) -- the appended final [MASK], which sees every position --, the caches and
        key_ok (B, T) as ``encode_items`` (reasoning tokens see the [MASK]ed positions as keys too), and the
        last-layer outputs of the L history positions (B, L, d), read at the masked ones by the cloze loss.
        """
        x, caches, tokens = self._item_pass(history, masked)
        return x[:, -1], caches, tokens > 0, x[:, : history.shape[1]]

    def _item_pass(
        self, history: torch.Tensor, masked: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[KV], torch.Tensor]:
        """history (B, L) -> last-layer outputs (B, T, d), per-layer caches, token ids (B, T)."""
        self._check(history)
        tokens, pos = self._item_inputs(history, masked)
        x = self.input_drop(self.input_norm(self.embed(tokens) + self.pos_emb(pos)))
        mask = self._item_mask(tokens)
        caches = []
        for layer in self.layers:
            x, kv = layer(x, mask, None)
            caches.append(kv)
        return x, caches, tokens

    def reasoning_input(self, prev: torch.Tensor, k: int) -> torch.Tensor:
        """Input of reasoning step k >= 1 before normalisation: r_{k-1} (+ RPE[k-1]) (Eq. 4), shape (B, d)."""
        return prev + self.rpe.weight[k - 1] if self.rpe is not None else prev

    def reason_groups(
        self, r0: torch.Tensor, caches: list[KV], item_mask: torch.Tensor, steps: int,
        feed: torch.Tensor | None = None, noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Cached reasoning for P query groups per sequence: one new position per group and step.

        r0 (B, P, d): each group's step-0 state; caches: the item block's per-layer keys/values over T
        positions; item_mask (B, 1, P, T): which item keys each group may see. Group p's reasoning token at
        step k sees those items and group p's own tokens of steps 1..k (a block mask), so P = 1 is ordinary
        per-row reasoning and P > 1 reasons for every prefix of a packed sequence at once.
        feed (B, P, K+1, d) / noise (B, P, K, d): PRL's noisy view (Eq. 10) -- step k's input is the *clean*
        r_{k-1} + RPE + noise, run with its own reasoning cache. Returns (B, P, steps + 1, d).
        """
        if steps == 0:
            return r0[:, :, None]
        B, P, _ = r0.shape
        T = item_mask.shape[-1]
        own = torch.eye(P, dtype=torch.bool, device=r0.device)
        # keys: [items (T) ; step 1 (P) ; ... ; step `steps` (P)]; step k attends to the first T + k * P
        mask = torch.cat([item_mask.expand(B, 1, P, T), own.repeat(1, steps).expand(B, 1, P, steps * P)], -1)
        kv = [ReasoningKV(c, steps * P) for c in caches]  # per layer, filled in place (see layers.py)
        r, states = r0, [r0]
        for k in range(1, steps + 1):
            x = self.reasoning_input(feed[:, :, k - 1] if feed is not None else r, k)
            if noise is not None:
                x = x + noise[:, :, k - 1]
            h = self.input_drop(self.input_norm(x))  # (B, P, d)
            for layer, cache in zip(self.layers, kv, strict=True):
                h = layer.step(h, cache, mask[..., : T + k * P])
            r = h
            states.append(r)
        return torch.stack(states, 2)

    def forward(self, history: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """KV-cached reasoning. history (B, L) -> states (B, K + 1, d): r_0..r_K."""
        K = self.K if steps is None else steps
        self._check_steps(K)
        return self.reason(*self.encode_items(history), K)

    def reason(self, r0: torch.Tensor, caches: list[KV], key_ok: torch.Tensor, steps: int) -> torch.Tensor:
        """Run reasoning steps 1..steps over an encoded item block -> states (B, steps + 1, d)."""
        return self.reason_groups(r0[:, None], caches, key_ok[:, None, None, :], steps)[:, 0]

    def reason_from(
        self, r0: torch.Tensor, caches: list[KV], key_ok: torch.Tensor, clean: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """PRL's noisy view of per-row reasoning. clean (B, K+1, d); noise (B, K, d) -> (B, K, d)."""
        K = clean.shape[1] - 1
        out = self.reason_groups(r0[:, None], caches, key_ok[:, None, None, :], K, clean[:, None], noise[:, None])
        return out[:, 0, 1:]

    def encode_packed(self, items: torch.Tensor, ends: torch.Tensor) -> tuple[torch.Tensor, list[KV], torch.Tensor]:
        """Packed prefixes (causal backbones only): one pass over each sequence encodes all its prefixes.

        items (U, L) left-padded sequences; ends (U, P) column of each prefix's last item, -1 = empty slot.
        Returns r_0 (U, P, d) -- the causal output at each prefix end --, the item caches, and item_mask
        (U, 1, P, L): a prefix's reasoning tokens see only that prefix's items.
        """
        if self.bidirectional:
            raise ValueError("training: packed prefixes need a causal backbone; BERT4Rec's bidirectional "
                             "item attention is not prefix-consistent (use training: bucketed)")
        x, caches, tokens = self._item_pass(items)
        col = torch.arange(items.shape[1], device=items.device)
        item_mask = (col[None, None, :] <= ends[:, :, None]) & (tokens > 0)[:, None, :]  # (U, P, L)
        # an empty slot sees no item; it still sees its own reasoning tokens, so softmax stays finite
        r0 = x.gather(1, ends.clamp(min=0)[:, :, None].expand(-1, -1, x.shape[-1]))  # (U, P, d)
        return r0, caches, item_mask[:, None]

    def forward_uncached(self, history: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Reference path: re-encode [items ; reasoning tokens 1..k] from scratch at every step k."""
        K = self.K if steps is None else steps
        self._check_steps(K)
        self._check(history)
        tokens, pos = self._item_inputs(history)
        item_x = self.embed(tokens) + self.pos_emb(pos)  # (B, T, d)
        item_mask = self._item_mask(tokens)
        B, T, _ = item_x.shape
        r = self._run(self.input_drop(self.input_norm(item_x)), item_mask)[:, -1]
        states, raw = [r], []
        for k in range(1, K + 1):
            raw.append(self.reasoning_input(r, k))
            x = torch.cat([item_x, torch.stack(raw, 1)], 1)  # (B, T + k, d)
            mask = torch.zeros(B, 1, T + k, T + k, dtype=torch.bool, device=x.device)
            mask[:, :, :T, :T] = item_mask  # items never see reasoning tokens
            mask[:, :, T:, :T] = (tokens > 0)[:, None, None, :]
            mask[:, :, T:, T:] = torch.ones(k, k, dtype=torch.bool, device=x.device).tril()
            r = self._run(self.input_drop(self.input_norm(x)), mask)[:, -1]
            states.append(r)
        return torch.stack(states, 1)

    def _run(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x, _ = layer(x, mask, None)
        return x

    def _check_steps(self, K: int) -> None:
        if K < 0:
            raise ValueError(f"steps: must be >= 0, got {K!r}")
        if self.rpe is not None and K > self.rpe.num_embeddings:
            raise ValueError(f"steps: {K} exceeds the {self.rpe.num_embeddings} trained reasoning position embeddings")
