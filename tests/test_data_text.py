"""Item text rendering, the frozen encoder (a handful of texts only: it is slow on CPU), PCA and caching."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from rearec.data import load_dataset
from rearec.data.text import (
    DEFAULT_ENCODER,
    MeanPoolEncoder,
    default_model_path,
    item_embeddings,
    item_texts,
    pca,
    render_item_text,
)
from rearec.errors import ConfigError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Five items with titles (one with HTML entities, one with a missing year)."""
    folder = tmp_path_factory.mktemp("tiny")
    (folder / "log.tsv").write_text("user\titem\ttime\n" + "".join(
        f"u{k % 4}\t{'abcde'[(k * 3 + k // 4) % 5]}\t{k}\n" for k in range(60)))
    (folder / "items.tsv").write_text("item\ttitle\tyear\na\tTom &amp; Jerry\t1990\nb\tZelda\t1986\n"
                                      "c\tMario\t\nd\tTetris\t1984\ne\tPong &#39;72\t1972\n")
    spec = {"interactions": str(folder / "log.tsv"), "items": str(folder / "items.tsv")}
    return load_dataset(spec, folder / "cache"), folder / "cache"


def test_render_follows_the_paper_format():
    text = render_item_text({"title": "Tom &amp; Jerry &quot;Deluxe&quot;", "price": None, "year": " 1990 ",
                             "store": ""})
    assert text == 'The item information is as follows:\ntitle: Tom & Jerry "Deluxe"\nyear: 1990'


def test_item_texts_are_in_index_order(tiny):
    data, _ = tiny
    texts = item_texts(data)
    assert len(texts) == data.n_items == 5
    by_raw = dict(zip(data.item_ids[1:], texts, strict=True))
    assert by_raw["a"] == "The item information is as follows:\ntitle: Tom & Jerry\nyear: 1990"
    assert by_raw["c"] == "The item information is as follows:\ntitle: Mario"
    assert by_raw["e"] == "The item information is as follows:\ntitle: Pong '72\nyear: 1972"


@dataclass
class CountingEncoder:
    """A fake encoder: vectors from character counts, so PCA and caching can be checked exactly and fast."""

    name: str = "counting-v1"
    calls: list = field(default_factory=list)

    def encode(self, texts):
        self.calls.append(len(texts))
        return np.array([[t.count(c) + 0.1 * len(t) for c in "aeiourst &'"] for t in texts], dtype=np.float32)


def test_embeddings_shape_padding_row_and_cache(tiny, tmp_path):
    data, _ = tiny
    enc = CountingEncoder()
    full = item_embeddings(data, enc, cache_dir=tmp_path)
    assert full.shape == (6, 11) and full.dtype == np.float32
    assert np.all(full[0] == 0)
    np.testing.assert_allclose(full[1:], enc.encode(item_texts(data)))
    reduced = item_embeddings(data, enc, pca_dim=3, cache_dir=tmp_path)
    assert reduced.shape == (6, 3) and np.all(reduced[0] == 0)
    assert enc.calls == [5, 5]  # encoded once (the second entry is the direct call above), cache reused
    # PCA: centred, uncorrelated components with non-increasing variance.
    z = reduced[1:].astype(np.float64)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-5)
    cov = np.cov(z.T)
    np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0, atol=1e-4)
    assert np.all(np.diff(np.diag(cov)) <= 1e-6)
    with pytest.raises(ConfigError, match=r"pca_dim: must be between 1 and min\(#items, encoder dim\) = 5, got 6"):
        item_embeddings(data, enc, pca_dim=6, cache_dir=tmp_path)


def test_pca_is_deterministic_in_sign():
    x = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    a, b = pca(x, 3), pca(-x, 3)
    big = np.abs(a).argmax(axis=0)
    # Flipping the data flips the scores, but the axes keep their sign convention.
    np.testing.assert_allclose(a[big, range(3)], -b[big, range(3)], rtol=1e-4)


@pytest.mark.text_extra
def test_default_encoder_is_offline_minilm_with_mean_pooling(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data, _ = tiny
    vectors = item_embeddings(data, cache_dir=tmp_path, pca_dim=4)
    assert vectors.shape == (6, 4) and np.all(vectors[0] == 0)
    raw = item_embeddings(data, DEFAULT_ENCODER, cache_dir=tmp_path)  # cached: no second model run
    assert raw.shape == (6, 384)
    # Same as sentence-transformers' own mean pooling for this model (its extra normalisation aside).
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(default_model_path(), device="cpu").encode(item_texts(data))
    cos = (raw[1:] * reference).sum(1) / np.linalg.norm(raw[1:], axis=1) / np.linalg.norm(reference, axis=1)
    np.testing.assert_allclose(cos, 1.0, atol=1e-4)
    assert MeanPoolEncoder().name == f"{DEFAULT_ENCODER}|mean|max_length=256"


def test_dataset_without_item_text_is_a_clear_error(tmp_path):
    (tmp_path / "log.csv").write_text("user,item,timestamp\n" + "".join(f"u{k % 3},i{k % 4},{k}\n" for k in range(40)))
    data = load_dataset({"interactions": str(tmp_path / "log.csv")}, tmp_path / "c")
    assert data.item_text is None
    with pytest.raises(ValueError, match="log: item_text: this dataset has no item attributes"):
        item_embeddings(data, CountingEncoder(), cache_dir=tmp_path)
