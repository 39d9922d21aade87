"""Datasets: built-in and generic sources, the paper's preprocessing and splits, a Parquet cache.

    from rearec.data import load_dataset, dataset_stats, format_stats
    data = load_dataset("synthetic")                       # or "yelp", "amazon2023-video-games", ...
    data = load_dataset({"interactions": "../shared/datasets/ml-100k/ml-100k.inter"})
    data = load_dataset("../shared/datasets/ml-100k")      # a folder: interactions.* / one *.inter [+ items]
    print(format_stats(dataset_stats(data)))

Item-text embeddings live in ``rearec.data.text`` (imported lazily: it needs torch / transformers); the
official Amazon 2023 files are fetched by ``rearec.data.download`` (standard library only).
"""

from .errors import DataError
from .load import load_dataset, prepare
from .spec import PRESETS, ColumnSpec, DatasetSpec, SplitSpec, SyntheticSpec
from .stats import dataset_stats, format_stats
from .types import PAD, Rows, Sequences, SplitData

__all__ = [
    "PAD",
    "PRESETS",
    "ColumnSpec",
    "DataError",
    "DatasetSpec",
    "Rows",
    "Sequences",
    "SplitData",
    "SplitSpec",
    "SyntheticSpec",
    "dataset_stats",
    "format_stats",
    "load_dataset",
    "prepare",
]
