"""Data-parallel training over several processes (``torchrun``), and the single-process case.

``torchrun --nproc_per_node N -m incasem train ...`` starts N processes with the usual
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).
Each process trains on its share of every global batch (see
:func:`incasem.train.data.batch_indices`); DistributedDataParallel averages the
gradients, so N processes with batch ``B/N`` each take the same steps as one process
with batch ``B``. Only rank 0 writes the run folder, validates and saves checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from incasem.errors import ConfigError

__all__ = ["Distributed", "start_distributed"]


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run folder (rank 0)."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether several processes train together."""
        return self.world_size > 1

    def broadcast(self, value: Any) -> Any:
        """``value`` of rank 0, on every rank (a picklable object)."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait for every process."""
        if self.enabled:
            dist.barrier()

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``model`` wrapped for gradient averaging (unchanged in a single process)."""
        if not self.enabled:
            return model
        ids = [device.index] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def close(self) -> None:
        """Leave the process group."""
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def start_distributed(device: torch.device, batch_size: int) -> tuple[Distributed, torch.device]:
    """Join the ``torchrun`` process group if there is one; the device of this process.

    On CUDA each process takes GPU ``LOCAL_RANK`` (NCCL); elsewhere the processes talk over gloo.

    Raises
    ------
    ConfigError
        If the global batch does not split evenly between the processes.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed(), device
    if batch_size % world_size:
        raise ConfigError(
            f"key 'training.batch_size' {batch_size} must be a multiple of the {world_size} processes started by torchrun "
            "(each takes an equal share of the global batch)"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), world_size, local_rank), device
