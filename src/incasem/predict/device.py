"""Where the network runs and how large a block it can take there."""

from __future__ import annotations

import os
from typing import Literal

import torch

from incasem.errors import IncasemError
from incasem.geometry import Triple
from incasem.model.unet import UNetConfig

Precision = Literal["fp32", "bf16", "fp16"]

#: Peak bytes of activations per input voxel of the standard U-Net, measured on the
#: CPU (channels-last, inference mode): about 350 B in fp32 and 255 B with bf16
#: autocast. Rounded up for headroom.
BYTES_PER_INPUT_VOXEL: dict[str, int] = {"fp32": 400, "bf16": 300, "fp16": 300}

#: Share of the free memory a block may use.
MEMORY_SHARE = {"cpu": 0.5, "cuda": 0.8, "mps": 0.5}

#: The largest output block edge ``--block-size auto`` considers, in voxels.
MAX_AUTO_BLOCK = 512


def select_device(requested: str = "auto") -> torch.device:
    """The device to predict on: ``auto`` prefers CUDA, then Apple MPS, then the CPU."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise IncasemError(f"unknown device '{requested}': use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise IncasemError(f"device '{requested}' asked for, but torch sees no CUDA GPU: use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise IncasemError(f"device '{requested}' asked for, but Apple MPS is not available: use --device cpu or auto")
    return device


def free_memory_bytes(device: torch.device) -> int:
    """Memory available to a new block on ``device``, in bytes."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory())
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(available)


def input_bytes(input_shape: Triple, precision: Precision) -> int:
    """Estimated peak memory (bytes) of one forward pass of the standard-width network."""
    return input_shape[0] * input_shape[1] * input_shape[2] * BYTES_PER_INPUT_VOXEL[precision]


def auto_block_shape(
    config: UNetConfig, device: torch.device, precision: Precision, roi_shape: Triple, memory_bytes: int | None = None
) -> Triple:
    """The largest output block (voxels) whose forward pass fits the device's free memory.

    Blocks are multiples of the network's total downsampling factor (so that
    blockwise output equals a whole-volume pass) and no larger than the ROI needs.
    """
    step = config.total_downsample_factor
    budget = (free_memory_bytes(device) if memory_bytes is None else memory_bytes) * MEMORY_SHARE[device.type]
    width_scale = config.num_fmaps / 32
    needed = tuple(-(-r // s) for r, s in zip(roi_shape, step))
    best = step
    for multiple in range(1, MAX_AUTO_BLOCK // min(step) + 1):
        block = tuple(min(multiple, n) * s for n, s in zip(needed, step))
        if input_bytes(config.input_shape_for_output(block), precision) * width_scale > budget:
            break
        best = block
        if all(multiple >= n for n in needed):
            break
    return (best[0], best[1], best[2])


def output_chunk_shape(block_shape: Triple, step: Triple) -> Triple:
    """Chunks of the output datasets: the largest divisor of each block edge that is a
    multiple of ``step`` and at most 128 voxels (the block edge itself if none is)."""
    chunks = []
    for edge, s in zip(block_shape, step):
        divisors = [d for d in range(s, min(edge, 128) + 1, s) if edge % d == 0]
        chunks.append(max(divisors) if divisors else edge)
    return (chunks[0], chunks[1], chunks[2])
