"""One-pass full-ranking evaluation of every reasoning step and of the method's own output."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .batching import eval_batches
from .config import METRICS, MethodConfig
from .data.types import Rows
from .metrics import item_groups, summarize, target_ranks, user_groups
from .model import ReaRecModel
from .objectives import inference_state
from .signals import SignalCollector, StepSignals
from .static import check_rows, runner_for, static_batches


@dataclass
class Evaluation:
    """Per-sample ranks of one split. ``ranks[:, k]`` uses r_k (k = 0..K); ``ranks[:, -1]`` uses the
    method's own inference representation (mean of r_0..r_K for ERL, r_K otherwise)."""

    ranks: np.ndarray  # (N, K + 2) int64
    history_len: np.ndarray  # (N,) untruncated history lengths
    target_popularity: np.ndarray  # (N,) training popularity of each target
    step_similarity: np.ndarray  # (K + 1, K + 1) mean cosine similarity between steps' states
    signals: StepSignals | None = None  # per-sample signals of each depth (rearec.signals), when asked for

    @property
    def reasoning_steps(self) -> int:
        return self.ranks.shape[1] - 2

    def metrics(self, step: int | None = None) -> dict[str, float]:
        """Mean metrics of step ``step`` (0..K), or of the method's output when ``step`` is None."""
        return summarize(self.ranks[:, -1 if step is None else step])

    def groups(self) -> dict[str, np.ndarray]:
        """Sample indices of 'all', 'user:UG0'..'user:UG3' and 'item:IG0'..'item:IG3'."""
        n = len(self.ranks)
        out = {"all": np.arange(n)}
        ug, ig = user_groups(self.history_len), item_groups(self.target_popularity)
        for g in range(4):
            out[f"user:UG{g}"] = np.flatnonzero(ug == g)
        for g in range(4):
            out[f"item:IG{g}"] = np.flatnonzero(ig == g)
        return out

    def summary(self) -> pd.DataFrame:
        """Long frame (step, user_group, metric, value); step is <NA> for the method's own output."""
        records = []
        K = self.reasoning_steps
        for label, index in self.groups().items():
            for col in range(K + 2):
                step = None if col == K + 1 else col
                for metric, value in summarize(self.ranks[index, col]).items():
                    records.append((step, label, metric, value))
        frame = pd.DataFrame(records, columns=["step", "user_group", "metric", "value"])
        frame["step"] = frame["step"].astype("Int64")
        return frame


@torch.no_grad()
def evaluate(
    model: ReaRecModel,
    method: MethodConfig,
    rows: Rows,
    item_popularity: np.ndarray,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    mask_history: bool = False,
    signals: bool = False,
    graphs: bool = True,
    static: bool | None = None,
) -> Evaluation:
    """Rank every item for every sample once per representation (steps 0..K and the method output);
    ``signals`` also records each depth's per-sample signals (rearec.signals) in the same pass.

    ``graphs`` (TrainConfig.cuda_graphs): on CUDA, run static shapes captured once as CUDA graphs and
    replayed (rearec/static.py); no effect on CPU. ``static`` forces static shapes on (also on CPU, where
    they run eagerly) or off; None = on exactly when graphs run. Both give the eager path's ranks.
    """
    if len(rows) == 0:
        raise ValueError("rows: empty evaluation split")
    was_training = model.training
    model.eval()
    K = model.K
    ranks = np.empty((len(rows), K + 2), dtype=np.int64)
    sim_sum = torch.zeros(K + 1, K + 1, dtype=torch.float64)
    collector = SignalCollector(len(rows), K) if signals else None

    def outputs(model: ReaRecModel, history: torch.Tensor, target: torch.Tensor):
        """history (B, L) -> states (B, K+1, d), scores (B, K+2, N), seen (B, N) or None, ranks (B, K+2)."""
        states = model(history)  # (B, K+1, d)
        reps = torch.cat([states, inference_state(method, states)[:, None]], 1)  # (B, K+2, d)
        scores = model.scores(reps)  # (B, K+2, N)
        seen = None
        if mask_history:  # drop items already in the history (the target too, if repeated)
            seen = torch.zeros(len(history), model.n_items + 1, dtype=torch.bool, device=history.device)
            seen = seen.scatter_(1, history, True)[:, 1:]  # (B, N); column 0 (padding) dropped
            scores.masked_fill_(seen[:, None, :], float("-inf"))
        return states, scores, seen, target_ranks(scores, target - 1)

    if static if static is not None else (graphs and torch.device(device).type == "cuda"):
        check_rows(rows, model.n_items, model.cfg.max_len)
        run = runner_for(model, ("evaluate", method.name, mask_history), outputs, graphs)
        batches = static_batches(rows, batch_size, device)
    else:
        batches = eval_batches(rows, batch_size, device)

        def run(history, target):
            return outputs(model, history, target)

    for index, history, target in batches:
        n = len(index)  # static batches carry padding rows after the first n
        states, scores, seen, batch_ranks = (None if t is None else t[:n] for t in run(history, target))
        ranks[index] = batch_ranks.cpu().numpy()
        if collector is not None:
            collector.add(index, model, method, states, scores, target[:n], seen)
        unit = torch.nn.functional.normalize(states, dim=-1)
        sim_sum += (unit @ unit.transpose(1, 2)).sum(0).double().cpu()
    model.train(was_training)
    return Evaluation(
        ranks=ranks,
        history_len=np.asarray(rows.history_len),
        target_popularity=np.asarray(item_popularity)[rows.target],
        step_similarity=(sim_sum / len(rows)).numpy(),
        signals=collector.result() if collector is not None else None,
    )


__all__ = ["Evaluation", "evaluate", "METRICS"]
