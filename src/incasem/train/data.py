"""The stream of training samples: sampling, augmentation and prefetching (DESIGN §6).

Sample ``i`` of a run is a pure function of ``(seed, i)``: its ROI, location, rejection
draws and augmentation all come from generators seeded with both numbers. Iteration
``t`` with global batch ``B`` trains on samples ``t·B … t·B + B − 1``; a resumed run
therefore sees exactly the data stream of an uninterrupted one, whatever the number of
loader processes, and ``torchrun`` ranks split each global batch between them.

Where augmentation runs depends on the device:

* on the CPU, :class:`TrainingSamples` reads *and* augments in DataLoader worker
  processes, so samples are ready before the model asks;
* on a GPU (or MPS), the workers only read the source crops (uint8); the crops travel to
  the device and :func:`augment_on_device` runs the tensor augmentations there, so the
  accelerator does not wait for a few CPU cores.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from incasem.io.data_config import DataConfig
from incasem.model.unet import normalize_raw
from incasem.train.augment import AugmentConfig, augment, source_shape
from incasem.train.sampling import TrainingSampler

__all__ = ["SampleStream", "TrainingSamples", "augment_on_device", "batch_indices", "loader_processes", "sample_generators"]


def sample_generators(seed: int, index: int, device: torch.device | str = "cpu") -> tuple[np.random.Generator, torch.Generator]:
    """The numpy generator (sampling) and torch generator (augmentation) of sample ``index``."""
    numpy_generator = np.random.default_rng([seed, index])
    torch_generator = torch.Generator(device=device)
    torch_generator.manual_seed(int(np.random.default_rng([seed, index, 1]).integers(2**63 - 1)))
    return numpy_generator, torch_generator


def batch_indices(iteration: int, batch_size: int, rank: int = 0, world_size: int = 1) -> range:
    """Indices of the samples that process ``rank`` trains on at ``iteration`` (0-based).

    The global batch ``batch_size`` is split into ``world_size`` equal consecutive shares.
    """
    share = batch_size // world_size
    start = iteration * batch_size + rank * share
    return range(start, start + share)


@dataclass(frozen=True)
class _Shapes:
    source: tuple[int, int, int]
    input: tuple[int, int, int]
    output: tuple[int, int, int]


def augment_on_device(
    raw: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    config: AugmentConfig,
    generator: torch.Generator,
    input_shape: Sequence[int],
    output_shape: Sequence[int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalise and augment one source crop on the device its tensors are on.

    Parameters
    ----------
    raw : torch.Tensor
        uint8 source crop (z, y, x).
    labels, mask : torch.Tensor
        Class ids (int64) and cell mask (uint8) of the same shape.
    config, generator, input_shape, output_shape
        As for :func:`incasem.train.augment.augment`; ``generator`` lives on the tensors' device.

    Returns
    -------
    raw, labels, mask
        Float raw (1, *input_shape) in [-1, 1], labels (int64) and mask (uint8) of
        ``output_shape``.
    """
    raw, labels, masks = augment(normalize_raw(raw)[None], labels, [mask], config, generator, input_shape, output_shape)
    return raw, labels.long(), masks[0]


class TrainingSamples(Dataset):
    """Map-style dataset: item ``i`` is sample ``i`` of the run (see the module docstring).

    The sampler (which opens the zarr datasets) is built lazily in each process that
    reads, so the dataset pickles cheaply into DataLoader workers.

    Parameters
    ----------
    data_config : DataConfig
        Training data (loaded with its datasets checked).
    augment_config : AugmentConfig
        The augmentation settings.
    input_shape, output_shape : sequence of int
        Network input and output shapes (z, y, x), voxels.
    sampler_kwargs : dict
        Rejection settings of :class:`~incasem.train.sampling.TrainingSampler`.
    seed : int
        The run's seed.
    augment_here : bool
        Augment in the reading process (CPU training); otherwise items are the raw
        source crops, to be augmented on the device with :func:`augment_on_device`.
    """

    def __init__(
        self,
        data_config: DataConfig,
        augment_config: AugmentConfig,
        input_shape: Sequence[int],
        output_shape: Sequence[int],
        sampler_kwargs: dict[str, Any],
        seed: int,
        augment_here: bool,
    ) -> None:
        (iz, iy, ix), (oz, oy, ox) = input_shape, output_shape
        self.shapes = _Shapes(source_shape(input_shape, augment_config), (iz, iy, ix), (oz, oy, ox))
        self.data_config = data_config
        self.augment_config = augment_config
        self.sampler_kwargs = dict(sampler_kwargs)
        self.seed = seed
        self.augment_here = augment_here
        self._sampler: TrainingSampler | None = None

    def check(self) -> None:
        """Open the data and run the sampler's up-front checks (ROI sizes, dtype, foreground) in this process."""
        self.sampler()

    def sampler(self) -> TrainingSampler:
        """This process's sampler (opened on first use)."""
        if self._sampler is None:
            self._sampler = TrainingSampler(self.data_config, self.shapes.source, self.shapes.output, **self.sampler_kwargs)
        return self._sampler

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_sampler": None}

    def __len__(self) -> int:  # indices are drawn by the loader's sampler, not enumerated
        return 2**62

    def __getitem__(self, index: int) -> dict[str, Any]:
        numpy_generator, torch_generator = sample_generators(self.seed, index)
        sample = self.sampler().sample(numpy_generator)
        raw = torch.from_numpy(sample.raw)
        labels = torch.from_numpy(sample.labels)
        mask = torch.from_numpy(sample.mask)
        item: dict[str, Any] = {"index": index, "entry": sample.entry, "offset": torch.tensor(sample.source_roi.offset)}
        if self.augment_here:
            raw, labels, mask = augment_on_device(raw, labels, mask, self.augment_config, torch_generator, self.shapes.input, self.shapes.output)
        item.update(raw=raw, labels=labels, mask=mask)
        return item


def loader_processes(num_workers: int, device: torch.device) -> int:
    """Loader processes to start: at most ``num_workers``; on the CPU at most one per 8 cores.

    On the CPU the model and the loaders share the cores, and one iteration of the
    standard network takes seconds while a sample takes a fraction of that, so few
    loaders keep the model fed (the benchmark measures the wait) without taking its cores.
    """
    cpus = os.cpu_count() or 1
    return min(num_workers, cpus if device.type != "cpu" else max(1, cpus // 8))


class _Indices(torch.utils.data.Sampler):
    """The sample indices of a run from ``start_iteration`` on (endless), for one rank."""

    def __init__(self, start_iteration: int, batch_size: int, rank: int, world_size: int) -> None:
        self.start_iteration, self.batch_size, self.rank, self.world_size = start_iteration, batch_size, rank, world_size

    def __iter__(self) -> Iterator[int]:
        iteration = self.start_iteration
        while True:
            yield from batch_indices(iteration, self.batch_size, self.rank, self.world_size)
            iteration += 1


class SampleStream:
    """Batches of augmented samples on ``device`` from ``start_iteration`` on.

    Parameters
    ----------
    samples : TrainingSamples
        The dataset (``augment_here`` decides where augmentation runs).
    device : torch.device
        The training device.
    batch_size : int
        Global batch; this process takes ``batch_size / world_size`` samples per iteration.
    start_iteration : int
        First iteration (0 for a new run).
    num_workers : int
        Loader processes (0: read in this process); capped by :func:`loader_processes`.
    rank, world_size : int
        This process's share of each global batch (``torchrun``).
    """

    def __init__(
        self,
        samples: TrainingSamples,
        device: torch.device,
        batch_size: int,
        start_iteration: int,
        num_workers: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.samples = samples
        self.device = device
        workers = loader_processes(num_workers, device)
        self.loader = DataLoader(
            samples,
            batch_size=batch_size // world_size,
            sampler=_Indices(start_iteration, batch_size, rank, world_size),
            num_workers=workers,
            prefetch_factor=2 if workers else None,
            persistent_workers=bool(workers),
            pin_memory=device.type == "cuda",
        )
        self._iterator: Iterator[dict[str, Any]] | None = None

    def next_batch(self) -> dict[str, Any]:
        """The next batch: ``raw`` (N, 1, *input), ``labels`` (N, *output, int64), ``mask`` (N, *output), on the device."""
        if self._iterator is None:
            self._iterator = iter(self.loader)
        batch = next(self._iterator)
        moved = {key: batch[key].to(self.device, non_blocking=True) for key in ("raw", "labels", "mask")}
        if not self.samples.augment_here:
            moved = self._augment(batch["index"], moved)
        return {**batch, **moved}

    def _augment(self, indices: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        shapes, config = self.samples.shapes, self.samples.augment_config
        results = [
            augment_on_device(
                batch["raw"][i],
                batch["labels"][i],
                batch["mask"][i],
                config,
                sample_generators(self.samples.seed, int(index), self.device)[1],
                shapes.input,
                shapes.output,
            )
            for i, index in enumerate(indices)
        ]
        return {key: torch.stack([r[k] for r in results]) for k, key in enumerate(("raw", "labels", "mask"))}

    def close(self) -> None:
        """Stop the worker processes."""
        self._iterator = None
