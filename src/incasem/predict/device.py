"""Where the network runs and how large a block it can take there."""

from __future__ import annotations

from typing import Literal

import psutil
import torch

from incasem.errors import IncasemError, option
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

#: Input voxels of one block beyond which a device gains no speed, so ``--block-size auto``
#: takes no larger block and memory stays flat as regions grow. On the CPU (2 cores,
#: bf16, standard net) output throughput rises from 254 kvox/s at 204³ input to 391 at
#: 300³ and stays there (390 at 228 x 356²); BENCHMARKS.md has the figures.
MAX_INPUT_VOXELS: dict[str, int] = {"cpu": 32 * 2**20}


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
        raise IncasemError(f"device '{requested}' asked for, but torch sees no CUDA GPU: use {option('device', '--device')} cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise IncasemError(f"device '{requested}' asked for, but Apple MPS is not available: use {option('device', '--device')} cpu or auto")
    return device


def free_memory_bytes(device: torch.device) -> int:
    """Memory available to a new block on ``device``, in bytes (portable: psutil on the CPU)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory())
    return int(psutil.virtual_memory().available)


def input_bytes(input_shape: Triple, precision: Precision) -> int:
    """Estimated peak memory (bytes) of one forward pass of the standard-width network."""
    return input_shape[0] * input_shape[1] * input_shape[2] * BYTES_PER_INPUT_VOXEL[precision]


def _axis_options(config: UNetConfig, axis: int, size: int) -> list[tuple[int, int, int]]:
    """Per number of blocks along ``axis``: (blocks, balanced block edge, input edge), each edge once.

    The balanced edge is the region split into that many equal parts, rounded up to
    the network's downsampling step: no thin sliver at the end.
    """
    step = config.total_downsample_factor[axis]
    options, seen = [], set()
    for blocks in range(1, -(-size // step) + 1):
        part = -(-size // blocks)  # the region split into `blocks` parts, rounded up
        edge = -(-part // step) * step
        if edge in seen or edge > MAX_AUTO_BLOCK:
            continue
        seen.add(edge)
        input_shape = [1, 1, 1]
        input_shape[axis] = edge
        input_edge = config.input_shape_for_output(tuple(input_shape))[axis]
        options.append((-(-size // edge), edge, input_edge))
    return options or [(-(-size // step), step, config.input_shape_for_output((step, step, step))[axis])]


def balanced_block_shape(config: UNetConfig, device: torch.device, precision: Precision, roi_shape: Triple, memory_bytes: int | None = None) -> Triple:
    """The output block that predicts ``roi_shape`` with the least network input in all, within memory.

    Every block pays the network's context on each side, so the cost of a tiling is
    the number of blocks times the input voxels of one; among the tilings whose block
    fits the device's free memory (:data:`MEMORY_SHARE` of it) and
    :data:`MAX_INPUT_VOXELS`, the cheapest wins (ties: fewer blocks). Edges are equal
    along each axis up to the downsampling step, so a region is never cut into one big
    block and thin slivers that pay the full context for little output.
    """
    budget = (free_memory_bytes(device) if memory_bytes is None else memory_bytes) * MEMORY_SHARE[device.type]
    width_scale = config.num_fmaps / 32
    per_axis = [_axis_options(config, axis, size) for axis, size in enumerate(roi_shape)]
    best: tuple[float, int, Triple] | None = None
    for nz, ez, iz in per_axis[0]:
        for ny, ey, iy in per_axis[1]:
            for nx, ex, ix in per_axis[2]:
                too_large = iz * iy * ix > MAX_INPUT_VOXELS.get(device.type, iz * iy * ix)
                if too_large or input_bytes((iz, iy, ix), precision) * width_scale > budget:
                    continue
                candidate = (nz * ny * nx * iz * iy * ix, nz * ny * nx, (ez, ey, ex))
                if best is None or candidate[:2] < best[:2]:
                    best = candidate
    if best is None:
        return config.total_downsample_factor
    return best[2]


def choose_block_shape(config: UNetConfig, device: torch.device, precision: Precision, roi_shape: Triple, requested: Triple | None) -> Triple:
    """The output block: :func:`balanced_block_shape`, or ``requested`` rounded down to the
    downsampling step (at least one step) and no larger than the region needs."""
    if requested is None:
        return balanced_block_shape(config, device, precision, roi_shape)
    step = config.total_downsample_factor
    z, y, x = (min(max(g, (b // g) * g), -(-r // g) * g) for b, g, r in zip(requested, step, roi_shape))
    return (z, y, x)


def output_chunk_shape(block_shape: Triple, step: Triple) -> Triple:
    """Chunks of the output datasets: the largest divisor of each block edge that is a
    multiple of ``step`` and at most 128 voxels (the block edge itself if none is)."""
    chunks = []
    for edge, s in zip(block_shape, step):
        divisors = [d for d in range(s, min(edge, 128) + 1, s) if edge % d == 0]
        chunks.append(max(divisors) if divisors else edge)
    return (chunks[0], chunks[1], chunks[2])
