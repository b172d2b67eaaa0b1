"""Choosing the torch device for inference commands (training devices come from Lightning)."""

from __future__ import annotations

import torch

from geoxai.errors import GeoxaiError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; an unavailable device is a clear error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise GeoxaiError(f"--device {device!r}: not a device; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise GeoxaiError(f"--device {device}: CUDA is not available here; use --device cpu")
    return resolved


def autocast(device: torch.device):
    """bf16 autocast on CUDA (inference), a no-op context elsewhere."""
    enabled = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)
