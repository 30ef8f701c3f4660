"""Data-parallel training in local processes through Spark's ``TorchDistributor``: the one place it is started."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch

from reelrank.device import process_group

R = TypeVar("R")


def run_distributed(worker: Callable[..., R], num_processes: int, use_gpu: bool, *args: Any) -> R:
    """``worker(device, *args)`` in ``num_processes`` local processes (NCCL on one GPU each, gloo on the CPU),
    inside the process group; rank 0's return value comes back. ``worker`` and ``args`` must pickle."""
    from pyspark.ml.torch.distributor import TorchDistributor

    distributor = TorchDistributor(num_processes=num_processes, local_mode=True, use_gpu=use_gpu)
    out = distributor.run(_in_process_group, worker, use_gpu, *args)
    assert out is not None  # run() returns rank 0's return value for a callable (None only for a script path)
    return out


def _in_process_group(worker: Callable[..., R], use_gpu: bool, *args: Any) -> R:
    """One process started by torchrun: join the group, run ``worker``, wait for every process, leave."""
    with process_group(use_gpu) as device:
        out = worker(device, *args)
        torch.distributed.barrier()
    return out
