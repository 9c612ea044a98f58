"""Pick the torch device: CUDA when present (``auto``), with a loud fallback when a GPU was asked for."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> cuda if available else cpu; ``cuda`` without a GPU warns and falls back to cpu."""
    if device not in DEVICE_CHOICES and not device.startswith("cuda:"):
        raise ValueError(f"device must be one of {DEVICE_CHOICES} or cuda:N, got {device!r}")
    if device == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        chosen = torch.device("cuda" if device == "auto" else device)
        log.info("Using GPU %s (%s)", chosen, torch.cuda.get_device_name(chosen))
        return chosen
    if device != "auto":
        log.warning("A GPU was requested (--device %s) but CUDA is not available: running on the CPU, "
                    "which is much slower. Check the GPU settings of your executor/container.", device)
    return torch.device("cpu")
