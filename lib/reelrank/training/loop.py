"""The one training loop of every torch model (the rankers of :mod:`reelrank.models`, the sequence models of
:mod:`reelrank.seqmodels`): AdamW, seeding, bfloat16 autocast on CUDA, validation every few epochs, early stopping
that keeps the best epoch's weights, a work cap counted in samples, a checkpoint after every epoch that a later fit
of the same data and settings resumes from, progress callbacks and DDP. The model gives its batches, its loss and
its validation as a :class:`Task`. Nothing here reads the clock to decide: the same data, settings and seed train
the same weights whatever the machine's load (issue 30).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from reelrank.device import autocast
from reelrank.training.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 3
"""Bumped when the checkpoint layout changes: a checkpoint of another layout is ignored (with a warning)."""
PER_EPOCH_SEED = 1000
"""With ``reseed_each_epoch``, epoch ``e`` runs under ``torch.manual_seed(seed * PER_EPOCH_SEED + e + 1)``."""


@dataclass
class EpochStats:
    """What one epoch did: mean training loss, validation loss and NDCG@k (None when not validated), its samples
    (rows or positions) and speed (reported only: nothing is decided by the clock)."""

    epoch: int
    train_loss: float
    val_loss: float | None
    val_ndcg: float | None
    samples_per_s: float
    seconds: float
    samples: int = 0


@dataclass
class History:
    """Per-epoch statistics of a fit; ``best_epoch`` is the epoch whose weights the model kept."""

    epochs: list[EpochStats] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False
    """Validation stopped improving for ``patience`` validations before the last epoch."""
    capped: bool = False
    """Training stopped at ``max_samples``."""
    resumed_from: int | None = None
    """The first epoch run in this call when it continued from a checkpoint."""


class Progress(Protocol):
    """Receives training progress (a progress bar, a log); every method is called on rank 0 only."""

    def start_epoch(self, epoch: int, epochs: int, total_rows: int) -> None: ...

    def batch(self, rows: int, loss: float) -> None: ...

    def end_epoch(self, stats: EpochStats) -> None: ...


@dataclass(frozen=True)
class LoopConfig:
    """How long and how to train; each model maps its own config section onto it."""

    epochs: int
    learning_rate: float
    weight_decay: float
    seed: int
    patience: int = 0
    """Validations without a better metric before stopping; 0 never stops early."""
    eval_every: int = 1
    """Epochs between validations (the last epoch, and the one that reaches the work cap, always validate)."""
    max_samples: int = 0
    """Work cap over the whole fit, in the samples (rows or positions) the task's loss counts: the batch that
    reaches it is the last (on several processes, the epoch that reaches it); 0: none."""
    mixed_precision: bool = True
    """bfloat16 autocast on CUDA; ignored on CPU."""
    reseed_each_epoch: bool = False
    """Seed torch per epoch (see :data:`PER_EPOCH_SEED`), so an epoch's randomness does not depend on earlier ones."""
    resume: bool = True
    """Continue from the checkpoint when one of the same fingerprint is there."""


@dataclass
class Task:
    """What a model gives the loop."""

    name: str
    module: nn.Module
    """The network whose weights are trained, kept and checkpointed (the loop moves it to the device)."""
    batches: Callable[[int], AbstractContextManager[Iterable[Any]]]
    """The training batches of an epoch, on the device."""
    loss: Callable[[nn.Module, Any], tuple[torch.Tensor, int]]
    """One batch's mean loss through the given net (the module or its DDP wrapper) and the rows or positions it
    averages over; called under autocast."""
    validate: Callable[[], tuple[float | None, float | None]] | None = None
    """Validation loss and NDCG@k (either may be None); the best epoch has the highest NDCG (the lowest loss where
    NDCG is None or NaN). None: no validation, the last epoch is kept."""
    fingerprint: Callable[[], str] = str
    """What a checkpoint must share with this fit to be resumed (data, model, settings), as a string."""
    rows_per_epoch: int = 0
    """The total that :meth:`Progress.start_epoch` announces."""
    backward_scale: Callable[[int], float] | None = None
    """Factor on a batch's loss before ``backward`` from the count :attr:`loss` returned (None: 1)."""
    generator: torch.Generator | None = None
    """A generator the batches or the loss draw from; checkpointed with torch's global RNG."""
    uneven_inputs: bool = False
    """Processes of a distributed fit may run different numbers of batches (DDP ``join``)."""


def fit(task: Task, cfg: LoopConfig, device: torch.device, *, progress: Progress | None = None,
        checkpoint_path: str | os.PathLike | None = None, distributed: bool = False) -> History:
    """Train ``task.module`` for up to ``cfg.epochs`` epochs and leave the best epoch's weights in it.

    ``distributed``: torch.distributed is initialised by the caller; the module is wrapped in DDP, rank 0 reports
    progress and writes the checkpoint, and every process stops after the same epoch.
    """
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)
    torch.manual_seed(cfg.seed)
    module = task.module.to(device)
    net: nn.Module = module
    if distributed:
        net = nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    ckpt = os.fspath(checkpoint_path) if checkpoint_path else None
    fingerprint = json.dumps({"checkpoint": CHECKPOINT_FORMAT, "model": task.fingerprint()}) if ckpt else ""
    hist, best = History(), _Best()
    state = load_checkpoint(ckpt, "cpu") if ckpt and cfg.resume else None
    if state is not None:
        if state["fingerprint"] == fingerprint:
            module.load_state_dict(state["module"])
            opt.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
            if task.generator is not None:
                task.generator.set_state(state["generator"])
            hist = History(**{**state["history"], "epochs": [EpochStats(**e) for e in state["history"]["epochs"]]})
            best = _Best(state["best_state"], state["best_metric"], state["bad_epochs"])
            hist.resumed_from = len(hist.epochs)
            log.info("resuming %s from %s after epoch %d", task.name, ckpt, len(hist.epochs))
        else:
            log.warning("ignoring checkpoint %s: written for other data or settings", ckpt)

    for epoch in range(len(hist.epochs), cfg.epochs):
        done = sum(e.samples for e in hist.epochs)
        if 0 < cfg.max_samples <= done:  # resumed past this fit's work cap (a checkpoint may hold a larger one)
            hist.capped = True
            break
        if best.bad >= cfg.patience > 0:
            hist.stopped_early = True
            break
        if cfg.reseed_each_epoch:
            torch.manual_seed(cfg.seed * PER_EPOCH_SEED + epoch + 1)
        if progress and rank == 0:
            progress.start_epoch(epoch, cfg.epochs, task.rows_per_epoch)
        t0 = time.perf_counter()
        left = cfg.max_samples - done if cfg.max_samples > 0 and not distributed else 0
        loss_sum, count = _train_epoch(task, net, opt, epoch, cfg, device, left, progress if rank == 0 else None)
        seconds = time.perf_counter() - t0
        train_loss, samples = loss_sum / max(count, 1), count
        if distributed:  # every process stops after the same epoch: the cap is checked on the summed count
            tot = torch.tensor([loss_sum, count], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(tot)
            train_loss, samples = float(tot[0] / tot[1].clamp(min=1)), int(tot[1].item())
        capped = cfg.max_samples > 0 and done + samples >= cfg.max_samples
        validated = task.validate is not None and ((epoch + 1) % cfg.eval_every == 0
                                                   or epoch == cfg.epochs - 1 or capped)
        val_loss, val_ndcg = task.validate() if task.validate is not None and validated else (None, None)
        stats = EpochStats(epoch, train_loss, val_loss, val_ndcg, samples / max(seconds, 1e-9), seconds, samples)
        hist.epochs.append(stats)
        if task.validate is None:  # nothing to choose by: keep the latest epoch
            best.keep(module, -math.inf)
            hist.best_epoch = epoch
        elif validated:
            metric = val_ndcg if val_ndcg is not None and not math.isnan(val_ndcg) else -(val_loss or 0.0)
            if metric > best.metric:
                best.keep(module, metric)
                hist.best_epoch = epoch
            else:
                best.bad += 1
        hist.capped = capped
        if progress and rank == 0:
            progress.end_epoch(stats)
        if ckpt and rank == 0:
            save_checkpoint({"fingerprint": fingerprint, "module": module.state_dict(), "optimizer": opt.state_dict(),
                             "history": dataclasses.asdict(hist), "best_state": best.state,
                             "best_metric": best.metric, "bad_epochs": best.bad, "torch_rng": torch.get_rng_state(),
                             "generator": task.generator.get_state() if task.generator is not None else None}, ckpt)
        if capped:
            break
    if best.state is not None:
        module.load_state_dict(best.state)
    return hist


@dataclass
class _Best:
    """The best epoch's weights and metric so far, and the validations since it."""

    state: dict[str, torch.Tensor] | None = None
    metric: float = -math.inf
    bad: int = 0

    def keep(self, module: nn.Module, metric: float) -> None:
        self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self.metric, self.bad = metric, 0


def _train_epoch(task: Task, net: nn.Module, opt: torch.optim.Optimizer, epoch: int, cfg: LoopConfig,
                 device: torch.device, left: int, progress: Progress | None) -> tuple[float, int]:
    """One pass over the epoch's batches: the summed loss (times each batch's count) and the count. ``left`` > 0:
    the epoch ends at the batch that brings the count to it (the fit's work cap)."""
    net.train()
    loss_sum, count = 0.0, 0
    join = net.join() if isinstance(net, nn.parallel.DistributedDataParallel) and task.uneven_inputs else nullcontext()
    with task.batches(epoch) as batches, join:
        for batch in batches:
            with autocast(device, cfg.mixed_precision):
                loss, n = task.loss(net, batch)
            opt.zero_grad(set_to_none=True)
            (loss * task.backward_scale(n) if task.backward_scale else loss).backward()
            opt.step()
            value = float(loss.detach())
            loss_sum += value * n
            count += n
            if progress:
                progress.batch(n, value)
            if 0 < left <= count:
                break
    return loss_sum, count
