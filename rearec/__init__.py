"""ReaRec core: SASRec / BERT4Rec with K latent reasoning steps, ERL / PRL objectives, training, evaluation.

Plain PyTorch; never imports ray, duckdb, optuna or yaml, so it works from a notebook.
"""

from .config import METHODS, METRICS, MethodConfig, ModelConfig, TrainConfig
from .errors import ConfigError

__all__ = ["ConfigError", "METHODS", "METRICS", "MethodConfig", "ModelConfig", "TrainConfig"]
__version__ = "0.1.0"
