"""TEMPORARY adapter: the hook signature of the architecture issue's ``training.train_model``.

``train_with_hooks(model, data, *, val, config, compose, loss, select, params, progress, description)`` with
``compose(x, y, generator) -> batch``, ``loss(model, batch) -> scalar``, ``select(model) -> float`` (higher is
better; the best epoch's weights are restored) and ``params`` (what the optimiser updates). Single process
only. Delete this module and call :func:`modelshield.training.train_model` once the hooks are on main.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modelshield.data.types import TensorData
from modelshield.errors import ConfigError
from modelshield.training import TrainConfig, TrainResult, _augment, _optimizer, _scheduler, evaluate, make_progress

__all__ = ["train_with_hooks"]


def train_with_hooks(model: nn.Module, data: TensorData, *, val: TensorData | None = None, config: TrainConfig | None = None,
                     compose: Callable[[torch.Tensor, torch.Tensor, torch.Generator], Any] | None = None,
                     loss: Callable[[nn.Module, Any], torch.Tensor] | None = None,
                     select: Callable[[nn.Module], float] | None = None,
                     params: Iterable[nn.Parameter] | None = None, progress: bool = True,
                     description: str = "train") -> TrainResult:
    """Train ``model`` in place with the hooks described in the module docstring."""
    config = config or TrainConfig()
    if len(data) == 0:
        raise ConfigError("the training data is empty")
    chosen = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    opt = _optimizer(chosen, config)
    steps = math.ceil(len(data) / config.batch_size)
    sched = _scheduler(opt, config, steps)
    gen = torch.Generator().manual_seed(config.seed)
    aug_gen = torch.Generator().manual_seed(config.seed + 1)
    compose_gen = torch.Generator().manual_seed(config.seed + 2)
    best, best_state, best_epoch = -math.inf, None, 0
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    with make_progress(progress) as bar:
        task = bar.add_task(description, total=config.epochs * steps, status="")
        for epoch in range(1, config.epochs + 1):
            t0 = time.perf_counter()
            model.train()
            total, seen = 0.0, 0
            for index in torch.randperm(len(data), generator=gen).split(config.batch_size):
                x = _augment(data.x[index], config.augment, aug_gen)
                batch = compose(x, data.y[index], compose_gen) if compose is not None else (x, data.y[index])
                value = loss(model, batch) if loss is not None else F.cross_entropy(model(batch[0]), batch[1])
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                total += float(value.detach()) * len(index)
                seen += len(index)
                bar.advance(task)
            record: dict[str, float] = {"epoch": epoch, "loss": total / max(seen, 1), "seconds": time.perf_counter() - t0}
            score = None
            if select is not None:
                score = float(select(model))
            elif val is not None and len(val):
                score = evaluate(model, val, config.eval_batch_size).accuracy
            if score is not None:
                record["select"] = score
                if score > best:
                    best, best_epoch, best_state = score, epoch, copy.deepcopy(model.state_dict())
            history.append(record)
            bar.update(task, status=f"loss {record['loss']:.4f}" + (f" select {score:.4f}" if score is not None else ""))
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(epochs_run=config.epochs, best_epoch=best_epoch or config.epochs,
                       val_accuracy=best if best_state is not None else None, history=history,
                       wall_seconds=time.perf_counter() - start)
