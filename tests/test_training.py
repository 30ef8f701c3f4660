"""The one training loop on a toy task (a linear model on in-memory rows): early stopping, validation cadence,
checkpoint and resume, the time budget and progress callbacks."""

from __future__ import annotations

import logging
from contextlib import nullcontext

import torch
from torch import nn
from torch.nn import functional as F

from reelrank.training import EpochStats, LoopConfig, Task, fit

ROWS, FEATURES, BATCH = 96, 4, 16


class Recorder:
    """A :class:`~reelrank.training.Progress` that records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def start_epoch(self, epoch: int, epochs: int, total_rows: int) -> None:
        self.calls.append(("start", epoch, epochs, total_rows))

    def batch(self, rows: int, loss: float) -> None:
        self.calls.append(("batch", rows))

    def end_epoch(self, stats: EpochStats) -> None:
        self.calls.append(("end", stats.epoch))


def toy_task(ndcgs: list[float | None] | None = None, seed: int = 0) -> tuple[Task, list[dict]]:
    """A dropout-regularised linear model whose batches are drawn from a generator; ``ndcgs`` scripts the validation
    NDCG of each validation (None: no validation). Also returns the weights at each validation."""
    data = torch.Generator().manual_seed(1)
    x = torch.randn(ROWS, FEATURES, generator=data)
    y = (x @ torch.tensor([1.0, -2.0, 0.5, 0.0]) > 0).float()
    torch.manual_seed(seed)
    module = nn.Sequential(nn.Dropout(0.2), nn.Linear(FEATURES, 1))
    gen = torch.Generator().manual_seed(seed)
    snapshots: list[dict] = []

    def batches(epoch: int):
        order = torch.randperm(ROWS, generator=gen)
        return nullcontext((x[idx], y[idx]) for idx in order.split(BATCH))

    def loss(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, int]:
        return F.binary_cross_entropy_with_logits(net(batch[0]).squeeze(1), batch[1]), len(batch[1])

    def validate() -> tuple[float | None, float | None]:
        assert ndcgs is not None
        snapshots.append({k: v.clone() for k, v in module.state_dict().items()})
        return 1.0, ndcgs[len(snapshots) - 1]

    task = Task("toy", module, batches, loss, validate=validate if ndcgs is not None else None,
                fingerprint=lambda: "toy", rows_per_epoch=ROWS, generator=gen)
    return task, snapshots


def settings(**over) -> LoopConfig:
    return LoopConfig(**{"epochs": 4, "learning_rate": 0.1, "weight_decay": 0.0, "seed": 0, **over})


CPU = torch.device("cpu")


def test_early_stopping_keeps_the_best_validated_weights():
    task, snaps = toy_task([0.5, 0.7, 0.6, 0.65, 0.9])
    hist = fit(task, settings(epochs=5, patience=2), CPU)
    assert [e.val_ndcg for e in hist.epochs] == [0.5, 0.7, 0.6, 0.65]
    assert hist.stopped_early and hist.best_epoch == 1 and not hist.capped
    for key, value in task.module.state_dict().items():
        assert torch.equal(value, snaps[1][key])


def test_patience_running_out_on_the_last_epoch_is_not_an_early_stop():
    task, _ = toy_task([0.5, 0.4, 0.3])
    hist = fit(task, settings(epochs=3, patience=2), CPU)
    assert len(hist.epochs) == 3 and not hist.stopped_early and hist.best_epoch == 0


def test_validation_every_other_epoch_and_at_the_last():
    task, snaps = toy_task([0.1, 0.2, 0.3])
    hist = fit(task, settings(epochs=5, eval_every=2), CPU)
    assert [e.val_ndcg is not None for e in hist.epochs] == [False, True, False, True, True]
    assert hist.best_epoch == 4 and len(snaps) == 3


def test_nan_ndcg_falls_back_to_the_validation_loss_and_no_validation_keeps_the_last_epoch():
    task, _ = toy_task([float("nan")] * 3)
    assert fit(task, settings(epochs=3), CPU).best_epoch == 0  # -loss is the same each time: the first stays
    task, _ = toy_task(None)
    hist = fit(task, settings(epochs=3), CPU)
    assert hist.best_epoch == 2 and all(e.val_ndcg is None and e.val_loss is None for e in hist.epochs)


def test_a_fit_resumed_from_its_checkpoint_equals_an_unbroken_one(tmp_path):
    ckpt = tmp_path / "toy.ckpt"
    straight, _ = toy_task([0.1, 0.3, 0.2, 0.4])
    unbroken = fit(straight, settings(), CPU)
    first, _ = toy_task([0.1, 0.3])
    fit(first, settings(epochs=2), CPU, checkpoint_path=ckpt)
    again, _ = toy_task([0.2, 0.4])  # validations 3 and 4 of the unbroken fit
    hist = fit(again, settings(), CPU, checkpoint_path=ckpt)
    assert hist.resumed_from == 2 and len(hist.epochs) == 4
    assert [e.train_loss for e in hist.epochs] == [e.train_loss for e in unbroken.epochs]
    for key, value in straight.module.state_dict().items():
        assert torch.equal(again.module.state_dict()[key], value)


def test_a_checkpoint_of_other_settings_is_ignored(tmp_path, caplog):
    ckpt = tmp_path / "toy.ckpt"
    task, _ = toy_task(None)
    fit(task, settings(epochs=1), CPU, checkpoint_path=ckpt)
    other, _ = toy_task(None)
    other.fingerprint = lambda: "other data"
    with caplog.at_level(logging.WARNING):
        hist = fit(other, settings(epochs=1), CPU, checkpoint_path=ckpt)
    assert hist.resumed_from is None and "ignoring checkpoint" in caplog.text
    task, _ = toy_task(None)
    assert fit(task, settings(epochs=1, resume=False), CPU, checkpoint_path=ckpt).resumed_from is None


def test_the_work_cap_ends_the_fit_at_the_batch_that_reaches_it():
    task, _ = toy_task([0.3, 0.4])
    hist = fit(task, settings(epochs=50, max_samples=1), CPU)
    assert hist.capped and len(hist.epochs) == 1 and hist.epochs[0].val_ndcg == 0.3
    assert hist.epochs[0].samples_per_s > 0 and hist.epochs[0].samples >= 1
    per_epoch = fit(toy_task(None)[0], settings(epochs=1), CPU).epochs[0].samples
    two = fit(toy_task(None)[0], settings(epochs=50, max_samples=2 * per_epoch), CPU)
    assert two.capped and [e.samples for e in two.epochs] == [per_epoch, per_epoch]
    assert not fit(toy_task(None)[0], settings(epochs=2), CPU).capped


def test_a_fit_resumed_after_its_work_cap_trains_no_further(tmp_path):
    """The checkpoint of the epoch that reached ``max_samples`` is the end of the fit: resuming it adds nothing."""
    ckpt = tmp_path / "toy.ckpt"
    capped = fit(toy_task([0.3, 0.4])[0], settings(epochs=50, max_samples=1), CPU, checkpoint_path=ckpt)
    again = fit(toy_task([0.3, 0.4])[0], settings(epochs=50, max_samples=1), CPU, checkpoint_path=ckpt)
    assert capped.capped and again.capped and again.resumed_from == 1
    assert [e.samples for e in again.epochs] == [e.samples for e in capped.epochs]
    per_epoch = capped.epochs[0].samples  # a larger cap under the same checkpoint trains on to it
    more = fit(toy_task([0.3, 0.4])[0], settings(epochs=50, max_samples=per_epoch + 1), CPU, checkpoint_path=ckpt)
    assert more.resumed_from == 1 and more.capped and len(more.epochs) == 2


def test_progress_sees_every_epoch_and_batch():
    task, _ = toy_task(None)
    rec = Recorder()
    fit(task, settings(epochs=2), CPU, progress=rec)
    per_epoch = [("start", 0, 2, ROWS)] + [("batch", BATCH)] * (ROWS // BATCH) + [("end", 0)]
    assert rec.calls[: len(per_epoch)] == per_epoch and len(rec.calls) == 2 * len(per_epoch)
    assert rec.calls[len(per_epoch)] == ("start", 1, 2, ROWS)
