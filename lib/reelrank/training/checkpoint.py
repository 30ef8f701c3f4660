"""Reading torch payloads safely (tensors and plain values only) and writing training checkpoints whole."""

from __future__ import annotations

import io
import pickle
from typing import Any

import torch

from reelrank.errors import CorruptFile, first_line
from reelrank.warehouse import storage

CHECKPOINT_REMEDY = "delete it to train from the first epoch"
_TORCH_ADVICE = ("Weights only load failed", "Please file an issue", "Check the documentation", "In PyTorch")


def read_torch(data: bytes, source: str, what: str, remedy: str, map_location: torch.device | str = "cpu") -> Any:
    """``torch.load`` of tensors and plain values only (``weights_only``); a truncated, corrupt or code-carrying
    payload raises :class:`CorruptFile` naming ``what`` and ``source`` (a path) and the ``remedy``."""
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        detail = _unpickler_reason(str(e))
        if "GLOBAL" in detail:  # a pickled class or function: weights_only refuses to run code from a file
            raise CorruptFile(source, f"{what} {source} holds Python objects other than tensors and plain values "
                                      f"({detail}); refused to load it: {remedy}") from None
        raise CorruptFile(source, f"{what} {source} is truncated or corrupt ({detail}): {remedy}") from None
    except Exception as e:  # torch's zip reader and unpickler fail in many ways on damaged bytes (IndexError...)
        text = first_line(str(e)).split(". This is an internal miniz error")[0]
        detail = text if isinstance(e, RuntimeError) and text else f"{type(e).__name__}: {text}".rstrip(": ")
        raise CorruptFile(source, f"{what} {source} is truncated or corrupt ({detail}): {remedy}") from None


def _unpickler_reason(text: str) -> str:
    """What torch's weights-only unpickler objected to, without its advice to turn ``weights_only`` off."""
    parts = [p.strip() for p in text.split("\n\n")]
    reasons = [p for p in parts if p and not p.startswith(_TORCH_ADVICE)]
    return first_line(reasons[0]).rstrip(".") if reasons else "not a PyTorch file"


def save_checkpoint(state: dict[str, Any], path: str) -> None:
    """Write the whole checkpoint at once (:func:`storage.write_bytes`): a kill mid-write leaves the previous one
    whole."""
    buf = io.BytesIO()
    torch.save(state, buf)
    storage.write_bytes(path, buf.getvalue())


def load_checkpoint(path: str, map_location: torch.device | str) -> dict[str, Any] | None:
    """The checkpoint :func:`save_checkpoint` wrote at ``path`` (tensors and plain values only), or None."""
    if not storage.exists(path):
        return None
    state = read_torch(storage.read_bytes(path), path, "checkpoint", CHECKPOINT_REMEDY, map_location)
    if not isinstance(state, dict) or "fingerprint" not in state:
        raise CorruptFile(path, f"checkpoint {path} is not a reelrank checkpoint (no fingerprint): {CHECKPOINT_REMEDY}")
    return state
