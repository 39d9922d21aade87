"""The training loop: epochs, early stopping on validation, best-epoch restore, then test."""

from __future__ import annotations

import contextlib
import copy
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .batching import train_batches
from .cloze import cloze_loss_into, draw_masks, mask_generator
from .config import MethodConfig, ModelConfig, TrainConfig
from .data.types import SplitData
from .evaluate import Evaluation, evaluate
from .model import ReaRecModel
from .objectives import noise_std, rcl_loss, uses_rcl, vocab_loss
from .packing import PackedBatch, build_windows, packed_batches


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels (CPU runs repeat bit for bit)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    # deterministic mode also NaN-fills every new tensor, a debugging aid that costs ~5 % per step and
    # changes no result of a correct program
    torch.utils.deterministic.fill_uninitialized_memory = False
    # flush denormal floats to zero (x86 FTZ/DAZ): RCL's near-one-hot softmax sends ~1e-40 gradients back
    # through the reasoning layers, and every matmul touching them ran 3-10x slower (bench_training_modes)
    torch.set_flush_denormal(True)


def batch_tokens(batch: PackedBatch | tuple[torch.Tensor, ...]) -> int:
    """Item tokens the encoder runs for a training batch: rows x width (packed: windows x width)."""
    return batch.items.numel() if isinstance(batch, PackedBatch) else batch[0].numel()


@contextlib.contextmanager
def checkpointing(model: ReaRecModel, on: bool = True) -> Iterator[None]:
    """Activation checkpointing of the item encoder's layers inside the block (rearec/layers.py)."""
    for layer in model.layers:
        layer.checkpointed = on
    try:
        yield
    finally:
        for layer in model.layers:
            layer.checkpointed = False


@dataclass
class EpochLog:
    epoch: int  # 1-based
    train_loss: float  # mean over batches
    valid: dict[str, float]  # metrics of the method's own output
    valid_steps: dict[int, dict[str, float]]  # step k -> metrics of r_k
    seconds: float  # training + validation wall time of this epoch
    is_best: bool


@dataclass
class FitResult:
    best_epoch: int
    epochs: list[EpochLog]
    valid: Evaluation
    test: Evaluation
    wall_seconds: float
    n_parameters: int
    model: ReaRecModel = field(repr=False)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam; biases and LayerNorm parameters carry no weight decay (as in the released runner)."""
    decay, no_decay = [], []
    for param in model.parameters():
        (no_decay if param.ndim < 2 else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.Adam(groups, lr=cfg.lr)


def _noise(method: MethodConfig, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    return torch.randn(shape, device=like.device, dtype=like.dtype) * noise_std(method)


def backward_loss(
    model: ReaRecModel, method: MethodConfig, states: torch.Tensor, noisy: torch.Tensor | None,
    target: torch.Tensor, chunk: int, groups: torch.Tensor | None = None,
) -> float:
    """Backward of the method's loss for rows ``states`` (B, K+1, d) -> the batch loss (mean over rows).

    The full-vocabulary terms are computed ``chunk`` rows at a time against detached states and their
    gradients pushed back through the encoder in one call, so peak memory holds one chunk's (chunk, K+1, N)
    logits instead of the whole batch's; the result equals the unchunked loss and gradients.
    RCL (``noisy`` (B, K, d), PRL only) needs in-batch negatives, so it runs on the whole batch; rows with
    equal ``groups`` (B,) are not each other's negatives (rcl_loss). Logits use the model's scoring:
    ``model.candidates()`` once per batch, ``model.scoring.queries`` inside vocab_loss.
    """
    B = len(target)
    extra = rcl_loss(method, states[:, 1:], noisy, groups) if noisy is not None else None
    item_w, scoring = model.candidates(), model.scoring
    if B <= chunk:
        loss = vocab_loss(method, states, item_w, target, scoring) / B
        if extra is not None:
            loss = loss + extra
        loss.backward()
        return float(loss.detach())
    detached = states.detach().requires_grad_(True)
    # text backbones compute item_w from parameters (an adaptor over all items), whose graph can be walked
    # only once: the chunks get a detached copy too, and its summed gradient goes back in the final call
    item_d = item_w.detach().requires_grad_(True)
    total = 0.0
    for i in range(0, B, chunk):
        part = vocab_loss(method, detached[i : i + chunk], item_d, target[i : i + chunk], scoring) / B
        part.backward()  # accumulates into detached.grad and item_d.grad
        total += float(part.detach())
    tensors, grads = [states, item_w], [detached.grad, item_d.grad]
    if extra is not None:
        tensors.append(extra)
        grads.append(torch.ones_like(extra))
        total += float(extra.detach())
    torch.autograd.backward(tensors, grads)
    return total


def train_step(
    model: ReaRecModel, method: MethodConfig, history: torch.Tensor, target: torch.Tensor,
    epoch: int, chunk: int, groups: torch.Tensor | None = None,
) -> float:
    """Forward + backward of one per-row batch, history (B, L_b), target (B,); returns the batch loss.
    ``groups`` (B,): optional RCL negative exclusion (rcl_loss); fit passes none (per-row batches keep
    the paper's in-batch negatives), tests use it to state packed training's exactness."""
    r0, caches, key_ok = model.encode_items(history)
    states = model.reason(r0, caches, key_ok, model.K)  # (B, K+1, d)
    noisy = None
    if uses_rcl(method, epoch):
        noise = _noise(method, (len(target), model.K, states.shape[-1]), states)
        if method.formulation == "released":  # the released code duplicates the batch: new dropout masks
            r0, caches, key_ok = model.encode_items(history)
        noisy = model.reason_from(r0, caches, key_ok, states, noise)  # (B, K, d)
    return backward_loss(model, method, states, noisy, target, chunk, groups)


def train_step_cloze(
    model: ReaRecModel, method: MethodConfig, history: torch.Tensor, target: torch.Tensor,
    epoch: int, chunk: int, mask_prob: float, mask_rng: np.random.Generator, clean_ratio: float = 0.0,
) -> float:
    """BERT4Rec's cloze step (rearec/cloze.py): ``train_step`` on a history whose items are [MASK]ed at
    rate ``mask_prob`` (none in a fraction ``clean_ratio`` of the rows), plus the CE of the masked items;
    returns method loss + cloze loss."""
    masked = draw_masks(history.cpu().numpy(), mask_prob, mask_rng, clean_ratio)
    masked = torch.from_numpy(masked).to(history.device)  # (B, L) bool
    r0, caches, key_ok, hidden = model.encode_cloze(history, masked)
    states = model.reason(r0, caches, key_ok, model.K)  # (B, K+1, d), reasoning from the final [MASK]
    noisy = None
    if uses_rcl(method, epoch):
        noise = _noise(method, (len(target), model.K, states.shape[-1]), states)
        if method.formulation == "released":  # same token masks, new dropout masks
            r0, caches, key_ok, _ = model.encode_cloze(history, masked)
        noisy = model.reason_from(r0, caches, key_ok, states, noise)  # (B, K, d)
    states, cloze = cloze_loss_into(states, hidden[masked], history[masked], model.scores, chunk)
    return backward_loss(model, method, states, noisy, target, chunk) + cloze


def train_step_packed(model: ReaRecModel, method: MethodConfig, batch: PackedBatch, epoch: int, chunk: int) -> float:
    """Forward + backward of one packed batch: every prefix of every window is a row. RCL's negatives are
    the other users' prefixes (rcl_negatives 'other_users'), or every other prefix in the batch ('all')."""
    r0, caches, item_mask = model.encode_packed(batch.items, batch.ends)
    grouped = model.reason_groups(r0, caches, item_mask, model.K)  # (U, P, K+1, d)
    real = batch.ends >= 0
    states = grouped[real]  # (N, K+1, d) in the order of batch.target_pos
    noisy = None
    if uses_rcl(method, epoch):
        U, P, _, d = grouped.shape
        noise = _noise(method, (U, P, model.K, d), grouped)
        if method.formulation == "released":
            r0, caches, item_mask = model.encode_packed(batch.items, batch.ends)
        noisy = model.reason_groups(r0, caches, item_mask, model.K, feed=grouped, noise=noise)[:, :, 1:][real]
    groups = None
    if noisy is not None and method.rcl_negatives == "other_users":
        groups = batch.users[:, None].expand(batch.ends.shape)[real]  # (N,) each row's user
    return backward_loss(model, method, states, noisy, batch.targets[real], chunk, groups)


def fit(
    data: SplitData,
    model_cfg: ModelConfig,
    method_cfg: MethodConfig,
    train_cfg: TrainConfig,
    device: str | torch.device = "cpu",
    on_epoch: Callable[[EpochLog], bool | None] | None = None,
    item_features: np.ndarray | None = None,
) -> FitResult:
    """Train on ``data.train``, select the epoch on validation only, and evaluate that epoch on test.

    ``on_epoch`` is called after every epoch; returning True stops training (e.g. an ASHA decision).
    ``item_features`` (n_items + 1, f) are frozen item-text features for text-based backbones.
    """
    start = time.perf_counter()
    seed_everything(train_cfg.seed)
    device = torch.device(device)
    if int(data.train.history.max(initial=0)) > data.n_items or int(data.train.target.max(initial=0)) > data.n_items:
        raise ValueError(f"data: item ids exceed n_items={data.n_items}")
    model = ReaRecModel.from_configs(model_cfg, method_cfg, data.n_items, item_features).to(device)
    if data.train.max_len > model_cfg.max_len:
        raise ValueError(f"max_len: data histories have {data.train.max_len} columns, model max_len is {model_cfg.max_len}")
    optimizer = make_optimizer(model, train_cfg)
    rng = np.random.default_rng(train_cfg.seed)
    popularity = data.item_popularity()
    autocast = train_cfg.amp and device.type == "cuda"
    metric = train_cfg.selection_metric
    packed = train_cfg.training == "packed"
    cloze = model.bidirectional and model_cfg.bert4rec_objective == "cloze"
    mask_rng = mask_generator(train_cfg.seed) if cloze else None
    if packed:
        if model.bidirectional:
            raise ValueError("training: 'packed' needs a causal backbone; BERT4Rec's bidirectional item attention "
                             "is not prefix-consistent -- use 'bucketed'")
        windows = build_windows(data.train_sequences, model_cfg.max_len)

    def epoch_batches():
        if packed:
            return packed_batches(data.train_sequences, windows, train_cfg.batch_size, rng, device)
        return train_batches(data.train, train_cfg.batch_size, train_cfg.training, rng, device)

    logs: list[EpochLog] = []
    best_value, best_epoch, best_state = -np.inf, 0, None
    for epoch in range(1, train_cfg.max_epochs + 1):
        t0 = time.perf_counter()
        model.train()
        losses = []
        for batch in epoch_batches():
            optimizer.zero_grad(set_to_none=True)
            # host memory is what a CPU trial runs out of; on a GPU it would cost time for memory it has
            wide = (device.type == "cpu" and train_cfg.checkpoint_tokens is not None
                    and batch_tokens(batch) > train_cfg.checkpoint_tokens)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast), checkpointing(model, wide):
                if packed:
                    losses.append(train_step_packed(model, method_cfg, batch, epoch, train_cfg.loss_chunk))
                elif cloze:
                    losses.append(train_step_cloze(model, method_cfg, *batch, epoch, train_cfg.loss_chunk,
                                                   model_cfg.mask_prob, mask_rng, model_cfg.clean_ratio))
                else:
                    losses.append(train_step(model, method_cfg, *batch, epoch, train_cfg.loss_chunk))
            if train_cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
            optimizer.step()
        valid = evaluate(model, method_cfg, data.valid, popularity, train_cfg.eval_batch_size, device,
                         train_cfg.mask_history, graphs=train_cfg.cuda_graphs)
        current = valid.metrics()
        is_best = current[metric] > best_value  # strict: the first of tying epochs is kept
        if is_best:
            best_value, best_epoch = current[metric], epoch
            best_state = copy.deepcopy(model.state_dict())
        log = EpochLog(epoch, float(np.mean(losses)), current,
                       {k: valid.metrics(k) for k in range(model.K + 1)}, time.perf_counter() - t0, is_best)
        logs.append(log)
        if not np.isfinite(log.train_loss):
            raise FloatingPointError(f"train_loss: became {log.train_loss} at epoch {epoch}")
        if on_epoch is not None and on_epoch(log):
            break
        if epoch - best_epoch >= train_cfg.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    valid = evaluate(model, method_cfg, data.valid, popularity, train_cfg.eval_batch_size, device, train_cfg.mask_history,
                     signals=train_cfg.step_signals, graphs=train_cfg.cuda_graphs)
    test = evaluate(model, method_cfg, data.test, popularity, train_cfg.eval_batch_size, device, train_cfg.mask_history,
                    signals=train_cfg.step_signals, graphs=train_cfg.cuda_graphs)
    return FitResult(
        best_epoch=best_epoch, epochs=logs, valid=valid, test=test,
        wall_seconds=time.perf_counter() - start,
        n_parameters=sum(p.numel() for p in model.parameters()),
        model=model,
    )
