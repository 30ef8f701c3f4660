"""Train a ranker from the feature shards: choose the device, seed everything, fit, report, save.

``num_processes > 1`` trains data-parallel through Spark's ``TorchDistributor`` in local mode (gloo on CPU,
nccl on GPU): each process reads a disjoint share of the row groups and rank 0 saves the model.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np
import torch

from reelrank.config import TrainConfig
from reelrank.device import choose_device, use_mixed_precision
from reelrank.loader import check_shards
from reelrank.models import make_ranker
from reelrank.training import EpochStats, History
from reelrank.training.distributed import run_distributed
from reelrank.warehouse import storage

log = logging.getLogger(__name__)

BAR_WIDTH = 30
BAR_REFRESH_S = 0.2
"""Seconds between progress-bar redraws."""
PROGRESS_STEP = 0.25
"""Without a terminal (a scheduler's log), a progress line each time an epoch passes this share of its rows..."""
PROGRESS_QUIET_S = 10.0
"""...once the epoch has run this long (a short epoch logs only its end line)."""


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` produced."""

    model_path: str
    train_loss: list[float]
    """Mean training loss of each epoch run."""
    val_loss: list[float | None]
    val_ndcg: list[float | None]
    samples_per_s: float
    """Training rows per second over all epochs (validation excluded)."""
    device: str
    best_epoch: int
    """The epoch (0-based) whose weights were saved."""
    stopped_early: bool
    num_processes: int


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) so a run with ``reader_workers = 1`` is reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class ProgressBar:
    """A carriage-return progress bar per epoch on a terminal (loss and samples/s), one log line per epoch."""

    def __init__(self, stream: TextIO | None = None, draw: bool | None = None,
                 quiet_s: float = PROGRESS_QUIET_S) -> None:
        self.stream = stream or sys.stderr
        self.draw = self.stream.isatty() if draw is None else draw
        self.quiet_s = quiet_s
        self._epoch, self._epochs, self._total, self._done, self._logged = 0, 0, 1, 0, 0
        self._loss, self._t0, self._last = 0.0, 0.0, 0.0

    def start_epoch(self, epoch: int, epochs: int, total_rows: int) -> None:
        self._epoch, self._epochs, self._total, self._done = epoch, epochs, max(total_rows, 1), 0
        self._logged = 0
        self._t0 = self._last = time.perf_counter()

    def batch(self, rows: int, loss: float) -> None:
        self._done += rows
        self._loss = loss
        now = time.perf_counter()
        if self.draw and now - self._last >= BAR_REFRESH_S:
            self._last = now
            self._render(now)
        steps = int(min(self._done / self._total, 1.0) / PROGRESS_STEP)
        if not self.draw and steps > self._logged and steps * PROGRESS_STEP < 1.0 and now - self._t0 >= self.quiet_s:
            self._logged = steps
            log.info("epoch %d/%d %3.0f%% of %s rows, loss %.4f, %s samples/s", self._epoch + 1, self._epochs,
                     100 * self._done / self._total, f"{self._total:,}", loss,
                     f"{self._done / max(now - self._t0, 1e-9):,.0f}")

    def _render(self, now: float) -> None:
        frac = min(self._done / self._total, 1.0)
        filled = int(frac * BAR_WIDTH)
        rate = self._done / max(now - self._t0, 1e-9)
        self.stream.write(f"\repoch {self._epoch + 1}/{self._epochs} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
                          f"{frac:4.0%} loss {self._loss:.4f} {rate:,.0f} samples/s")
        self.stream.flush()

    def end_epoch(self, stats: EpochStats) -> None:
        if self.draw:
            self._render(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()
        val = "" if stats.val_loss is None else f" val_loss {stats.val_loss:.4f} val_ndcg {stats.val_ndcg:.4f}"
        log.info("epoch %d/%d train_loss %.4f%s %.0f samples/s %.1fs", stats.epoch + 1, self._epochs,
                 stats.train_loss, val, stats.samples_per_s, stats.seconds)


def checkpoint_path(out_path: str) -> str:
    """Where a run writing ``out_path`` keeps its per-epoch checkpoint (removed once the model is saved)."""
    return out_path + ".ckpt"


def train(
    train_dir: str, val_dir: str | None, cfg: TrainConfig, out_path: str | os.PathLike, n_users: int, n_items: int
) -> TrainResult:
    """Fit ``cfg.model`` on the shards in ``train_dir`` (``val_dir`` picks the best epoch), save it to ``out_path``."""
    out_path = os.fspath(out_path)
    for shard_dir in (train_dir, val_dir):
        if shard_dir is not None:
            check_shards(shard_dir)  # one line naming a corrupt file, not a trace from a reader thread or worker
    device = choose_device(cfg.device)
    log.info("training %s on %s (%d process(es), mixed precision %s), %d epochs, batch %d",
             cfg.model, device, cfg.num_processes, use_mixed_precision(device, cfg.mixed_precision),
             cfg.epochs, cfg.batch_size)
    if cfg.num_processes > 1:
        hist = _train_distributed(train_dir, val_dir, cfg, out_path, n_users, n_items, device)
        return _result(hist, out_path, device, cfg.num_processes)
    threads = torch.get_num_threads()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    try:
        seed_everything(cfg.seed)
        ranker = make_ranker(cfg, n_users, n_items)
        ckpt = checkpoint_path(out_path)
        hist = ranker.fit(train_dir, val_dir, cfg, device=device, progress=ProgressBar(), checkpoint_path=ckpt)
        ranker.save(out_path)
        storage.remove(ckpt)
    finally:
        torch.set_num_threads(threads)
    return _result(hist, out_path, device, cfg.num_processes)


def _result(hist: History, out_path: str, device: torch.device, processes: int) -> TrainResult:
    seconds = sum(e.seconds for e in hist.epochs)
    rows = sum(e.samples for e in hist.epochs)
    return TrainResult(
        model_path=out_path,
        train_loss=[e.train_loss for e in hist.epochs],
        val_loss=[e.val_loss for e in hist.epochs],
        val_ndcg=[e.val_ndcg for e in hist.epochs],
        samples_per_s=rows / seconds if seconds > 0 else 0.0,
        device=str(device),
        best_epoch=hist.best_epoch,
        stopped_early=hist.stopped_early,
        num_processes=processes,
    )


def _train_distributed(train_dir: str, val_dir: str | None, cfg: TrainConfig, out_path: str, n_users: int,
                       n_items: int, device: torch.device) -> History:
    """Run :func:`_distributed_worker` in ``cfg.num_processes`` local processes (:func:`run_distributed`)."""
    out = run_distributed(_distributed_worker, cfg.num_processes, device.type == "cuda", str(train_dir),
                          str(val_dir) if val_dir else None, dataclasses.asdict(cfg), out_path, n_users, n_items)
    hist = History([EpochStats(**e) for e in out["epochs"]], out["best_epoch"], out["stopped_early"])
    storage.remove(checkpoint_path(out_path))
    return hist


def _distributed_worker(device: torch.device, train_dir: str, val_dir: str | None, cfg_dict: dict[str, Any],
                        out_path: str, n_users: int, n_items: int) -> dict[str, Any]:
    """One training process (in the process group): fit its share, rank 0 saves."""
    import torch.distributed as dist

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = TrainConfig(**cfg_dict)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    ranker = make_ranker(cfg, n_users, n_items)
    rank = dist.get_rank()
    progress = ProgressBar(draw=False) if rank == 0 else None
    hist = ranker.fit(train_dir, val_dir, cfg, device=device, progress=progress,
                      checkpoint_path=checkpoint_path(out_path), distributed=True)
    if rank == 0:
        ranker.save(out_path)
    return {"epochs": [dataclasses.asdict(e) for e in hist.epochs], "best_epoch": hist.best_epoch,
            "stopped_early": hist.stopped_early}
