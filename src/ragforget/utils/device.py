"""The one device rule for every inference pass (config key ``device``)."""

from __future__ import annotations

import ctypes
import gc
import os

import torch

from ragforget.errors import ConfigError


def check_device(device: str) -> str:
    """``device`` if it is ``auto`` or a torch device this machine has (else a ConfigError naming ``device``)."""
    if device == "auto":
        return device
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise ConfigError("device", f"unknown device {device!r}", "use auto, cpu, cuda or cuda:N") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", f"is {device!r}, but torch sees no CUDA device here", "use auto or cpu")
    return device


def resolve_device(device: str) -> str:
    """The one device rule of every inference pass: ``auto`` is this process's GPU when there is one, else cpu.

    Under a multi-GPU launcher each process takes the GPU of its LOCAL_RANK, not GPU 0.
    """
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


def release_memory() -> None:
    """Give memory that freed tensors left behind back to the system, between the stages of a job.

    Training leaves many mid-sized freed blocks in glibc's heaps (activations of a few MB each): RSS
    stays at its training peak and evaluation's large tensors come on top (the main job reached
    17.5 GB on a 135M model). ``malloc_trim`` returns them; the CUDA cache goes back likewise.
    """
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass
