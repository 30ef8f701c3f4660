"""The one place the torch device (and with it mixed precision) is chosen."""

from __future__ import annotations

import logging

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
