"""Training torch models: the one loop (:mod:`~reelrank.training.loop`), checkpoints
(:mod:`~reelrank.training.checkpoint`) and data-parallel processes (:mod:`~reelrank.training.distributed`)."""

from reelrank.training.checkpoint import CHECKPOINT_REMEDY, load_checkpoint, read_torch, save_checkpoint
from reelrank.training.loop import EpochStats, History, LoopConfig, Progress, Task, fit

__all__ = ["CHECKPOINT_REMEDY", "EpochStats", "History", "LoopConfig", "Progress", "Task", "fit", "load_checkpoint",
           "read_torch", "save_checkpoint"]
