"""The one place the torch device (and with it mixed precision) is chosen."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

log = logging.getLogger(__name__)

DEVICE_SETTINGS = ("auto", "cpu", "cuda")


class DeviceError(RuntimeError):
    """The configured device cannot be used on this machine."""


def choose_device(setting: str) -> torch.device:
    """``auto``: cuda when available, else cpu; ``cpu``; ``cuda`` (an error when there is no GPU)."""
    if setting not in DEVICE_SETTINGS:
        raise DeviceError(f"train.device must be one of {', '.join(DEVICE_SETTINGS)}, got {setting!r}")
    has_cuda = torch.cuda.is_available()
    if setting == "cuda" and not has_cuda:
        raise DeviceError(f"train.device = 'cuda' but torch sees no CUDA GPU (torch {torch.__version__})")
    device = torch.device("cuda" if setting == "cuda" or (setting == "auto" and has_cuda) else "cpu")
    log.debug("device %s (setting %r)", device, setting)
    return device


def use_mixed_precision(device: torch.device, enabled: bool = True) -> bool:
    """Mixed precision (bfloat16 autocast) only on CUDA; on CPU it is slower and changes results."""
    return enabled and device.type == "cuda"


def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """An autocast context for the forward pass: bfloat16 on CUDA when ``enabled``, a no-op otherwise."""
    on = use_mixed_precision(device, enabled)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=on)


@contextmanager
def process_group(use_gpu: bool) -> Iterator[torch.device]:
    """Inside a process started by torchrun (TorchDistributor): join the process group (NCCL on this process's
    local GPU, gloo on the CPU), yield the device, leave the group on exit."""
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_gpu:
        torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank) if use_gpu else torch.device("cpu")
    dist.init_process_group(backend="nccl" if use_gpu else "gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()
