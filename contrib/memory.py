"""How much memory there is, to refuse early what would not fit (a network, a batch's logits,
a synthetic data set) instead of failing, or swapping, after minutes of work."""

from __future__ import annotations

import os

import torch


def memory_bytes(device: torch.device | str = "cpu") -> tuple[int, str] | None:
    """``(bytes, what they are)`` of the memory new tensors can take on ``device``: a CUDA
    device's free memory; on the CPU the available RAM when ``psutil`` is installed, else the
    physical RAM (``os.sysconf``); ``None`` where unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0], "free"
    if device.type != "cpu":
        return None
    try:
        import psutil
    except ImportError:
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "in all"
        except (AttributeError, ValueError, OSError):
            return None
    return psutil.virtual_memory().available, "available"


def format_bytes(count: float) -> str:
    """``1234567`` -> ``1.2 MB`` (decimal units)."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:,.0f} {unit}" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def check_fits(need: int, what: str, device: torch.device | str = "cpu") -> None:
    """Raise :class:`ValueError` ``"<what> need(s) about X, but <device> has Y"`` when ``need``
    bytes exceed the memory of ``device`` (:func:`memory_bytes`)."""
    memory = memory_bytes(device)
    if memory is not None and need > memory[0]:
        raise ValueError(f"{what} need about {format_bytes(need)}, but {torch.device(device)} has "
                         f"{format_bytes(memory[0])} {memory[1]}")


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation that failed (Python's, or PyTorch's on any device)."""
    return isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in str(exc)
