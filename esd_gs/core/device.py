"""Which device and dtype a command runs on."""

from __future__ import annotations

import torch


def pick_device(name: str) -> torch.device:
    """auto: CUDA when present, else the CPU; cpu, cuda or cuda:N (there must be such a device), or another torch
    device name. A name that is none of these is a one-line UserError."""
    from ..errors import UserError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"--device must be auto, cpu, cuda or cuda:N (got {name!r})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA device here (torch {torch.__version__}"
                            f"{'' if torch.version.cuda else ', built without CUDA'}); use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA devices")
    return device


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """Diffusion weights' dtype; auto = bfloat16 on CUDA, float32 on CPU."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def upload(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on `device` without making the CPU wait: to a GPU through pinned memory, asynchronously
    (a copy from pageable memory waits for the GPU to finish its queue)."""
    if tensor.device == device:
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)
