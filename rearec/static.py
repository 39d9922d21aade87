"""Static-shape batched inference: fixed batch (last one padded), bucketed widths, CUDA-graph replay.

On a GPU a reasoning step is a chain of small kernels, so evaluation is bound by kernel launches, not
arithmetic (bench/README.md). With every batch of one shape -- ``batch_size`` rows, the last batch padded
by repeating a row, histories left-padded to the next width bucket -- the whole pass (item encoding, K
reasoning steps, full-ranking scores, ranks) can be captured once per shape as a CUDA graph and replayed
with a single launch. On CPU the same static shapes run eagerly (what the tests check: padding never
changes an output, rearec/model.py). Padding rows and columns are dropped by the caller.

Why CUDA graphs and not torch.compile(mode="reduce-overhead"): the graph replays exactly the eager kernels
(results equal the eager path's), costs milliseconds to capture instead of a compile per shape and
trial, and needs no Triton; what compile adds (fusion) matters less than launches at d = 256.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .batching import eval_batches
from .data.types import Rows

Outputs = tuple[torch.Tensor | None, ...]


def width_buckets(max_len: int) -> list[int]:
    """Widths a batch is padded to: powers of two below ``max_len``, then ``max_len`` -- at most twice the
    columns of trimming each batch to its longest history, and at most 1 + log2(max_len) graphs."""
    widths, w = [], 1
    while w < max_len:
        widths.append(w)
        w *= 2
    return widths + [max_len]


def static_batches(rows: Rows, batch_size: int, device="cpu") -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """``eval_batches``' batches (same rows, same order) at static shapes: (row indices (n,), history
    (batch_size, W), target (batch_size,)); W is the smallest width bucket holding the batch's longest
    history; rows n..batch_size-1 repeat the batch's first row (their outputs are to be dropped)."""
    widths = np.array(width_buckets(rows.max_len))
    for index, history, target in eval_batches(rows, batch_size, device):
        width = int(widths[np.searchsorted(widths, history.shape[1])])
        history = F.pad(history, (width - history.shape[1], 0))  # left padding: items stay newest-last
        fill = batch_size - len(index)
        if fill:
            history = torch.cat([history, history[:1].expand(fill, -1)])
            target = torch.cat([target, target[:1].expand(fill)])
        yield index, history, target


def check_rows(rows: Rows, n_items: int, max_len: int) -> None:
    """The model's per-batch input check, once on the host: a captured graph cannot read values back."""
    if len(rows) and (int(rows.history.min()) < 0 or int(rows.history.max()) > n_items):
        raise ValueError(f"history: item ids must be in 0..{n_items}")
    if rows.max_len > max_len:
        raise ValueError(f"history: length {rows.max_len} exceeds max_len {max_len}")


def _signature(module: torch.nn.Module) -> tuple:
    # a graph reads parameters at fixed addresses; a moved tensor or any in-place update (optimizer step,
    # load_state_dict) may also invalidate values derived from them outside the graph (a text encoder's
    # cached item table), so either means capture again
    return tuple((t.data_ptr(), t._version) for t in (*module.parameters(), *module.buffers()))


def _same(a: Outputs, b: Outputs) -> bool:
    """Whether a replay reproduced the eager pass: a broken capture gives garbage, while legitimately different
    kernel rounding may move a float in its last bits and so flip the odd near-tied rank."""
    for x, y in zip(a, b, strict=True):
        if (x is None) != (y is None):
            return False
        if x is None:
            continue
        if x.is_floating_point():
            ok = torch.isclose(x, y, rtol=1e-3, atol=1e-4, equal_nan=True).float().mean().item() >= 0.999
        else:
            ok = (x == y).float().mean().item() >= 0.99
        if not ok:
            return False
    return True


class StaticRunner:
    """Runs ``fn(model, history (B, W), target (B,)) -> tuple of tensors`` on static shapes.

    With ``graphs`` and CUDA inputs every shape is captured once as a CUDA graph (after one eager warm-up
    on a side stream) and later calls copy their inputs into the graph's static buffers and replay it; the
    first replay must reproduce the eager result, or the runner warns and stays eager. Otherwise ``fn``
    runs eagerly. Returned tensors are overwritten by the next call: copy what you keep. The model is held
    weakly (a runner is cached per model, see ``runner_for``); input checks are the caller's
    (``check_rows``), since the model's own check reads values back to the host.
    """

    def __init__(self, model: torch.nn.Module, fn: Callable[..., Outputs], graphs: bool):
        self.model = weakref.ref(model)
        self.fn = fn
        self.requested = graphs
        self.graphs = graphs  # False after a failed capture
        self.captured: dict[tuple, tuple[Any, torch.Tensor, torch.Tensor, Outputs]] = {}
        self.signature: tuple | None = None
        self.pool = None

    def __call__(self, history: torch.Tensor, target: torch.Tensor) -> Outputs:
        model = self.model()
        if model is None:
            raise RuntimeError("StaticRunner: its model no longer exists")
        if not (self.graphs and history.is_cuda):
            return self._eager(model, history, target)
        signature = _signature(model)
        if signature != self.signature:
            self.captured.clear()
            self.signature = signature
        key = (tuple(history.shape), history.device)
        entry = self.captured.get(key)
        if entry is None:
            return self._capture(model, key, history, target)
        graph, static_h, static_t, out = entry
        static_h.copy_(history)
        static_t.copy_(target)
        graph.replay()
        return out

    def _eager(self, model, history, target) -> Outputs:
        checks, model.check_inputs = model.check_inputs, False
        try:
            return self.fn(model, history, target)
        finally:
            model.check_inputs = checks

    def _capture(self, model, key, history, target) -> Outputs:
        static_h, static_t = history.clone(), target.clone()
        side = torch.cuda.Stream(device=history.device)
        side.wait_stream(torch.cuda.current_stream(history.device))
        with torch.cuda.stream(side):  # warm-up outside the capture: lazy initialisation, kernel choice
            expected = self._eager(model, static_h, static_t)
        current = torch.cuda.current_stream(history.device)
        current.wait_stream(side)
        for t in expected:  # made on the side stream, used on the current one
            if t is not None:
                t.record_stream(current)
        # a mode switch drops derived eval caches (a text encoder's item table, rearec/text_items.py), so the
        # capture computes them inside the graph rather than reading a tensor that a later switch frees
        model.train(False)
        try:
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            # one pool for all shapes: graphs run one at a time and the caller consumes each replay's
            # outputs before the next call, so intermediates may share memory
            with torch.cuda.graph(graph, pool=self.pool):
                out = self._eager(model, static_h, static_t)
            graph.replay()
            if not _same(out, expected):
                raise RuntimeError("the replayed graph's outputs differ from the eager pass")
        except RuntimeError as err:  # never fail an evaluation over an optimisation: stay eager
            warnings.warn(f"CUDA graphs: capture of shape {key[0]} failed ({err}); running eagerly", stacklevel=3)
            self.graphs = False
            self.captured.clear()
            torch.cuda.synchronize(history.device)
            return expected
        self.captured[key] = (graph, static_h, static_t, out)
        return out


_RUNNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def runner_for(model: torch.nn.Module, key: tuple, fn: Callable[..., Outputs], graphs: bool) -> StaticRunner:
    """The cached runner of ``model`` for ``key`` (captured graphs live as long as the model does)."""
    per_model = _RUNNERS.setdefault(model, {})
    runner = per_model.get(key)
    if runner is None or runner.requested != graphs:
        runner = per_model[key] = StaticRunner(model, fn, graphs)
    return runner


def graph_count(model: torch.nn.Module, key: tuple | None = None) -> int:
    """How many CUDA graphs ``model``'s runners (or the one for ``key``) hold now: 0 = eager."""
    runners = _RUNNERS.get(model, {})
    chosen = runners.values() if key is None else [runners[key]] if key in runners else []
    return sum(len(r.captured) for r in chosen if r.graphs)
