"""What counts as organelle in a dataset: probabilities above a threshold, one class, or non-zero.

A :class:`Foreground` names a dataset and the rule; it is checked against the data
when created with :func:`foreground_of` and is picklable, so blockwise jobs (also on a
Dask cluster) open it once per worker with :meth:`Foreground.open`.

Kinds of dataset:

- **probabilities**: floats in [0, 1], or uint8 0..255 read as /255 (how predictions
  store them, ``prob_maps/class_<c>``); a voxel is organelle where probability ≥ threshold.
- **segmentation / labels**: integers; a voxel is organelle where it equals the class
  id, or, without one, where it is non-zero.

A dataset counts as probabilities where :func:`incasem.io.layout.dataset_kind` says so
(floats; integers named ``prob*``, e.g. ``prob_maps/class_1``); ``kind`` overrides the guess.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np

from incasem.blockwise import Block, BlockwiseTask, RunOptions, plan_blocks, run_blockwise
from incasem.errors import DatasetMismatchError, InvalidValueError, RoiError, option
from incasem.geometry import Roi
from incasem.io.layout import dataset_kind, decode_probability
from incasem.io.volume import Volume, open_volume

Kind = Literal["probabilities", "segmentation"]


def guess_kind(volume: Volume) -> Kind:
    """``probabilities`` where :func:`incasem.io.layout.dataset_kind` says so, else ``segmentation`` (non-zero = organelle)."""
    return "probabilities" if dataset_kind(volume.name, volume.dtype) == "probabilities" else "segmentation"


def check_probability_values(volume: Volume, values: np.ndarray) -> np.ndarray:
    """``values`` of ``volume`` as probabilities in [0, 1], or a one-line error naming the dataset."""
    try:
        return decode_probability(values)
    except ValueError as error:
        raise InvalidValueError(f"{volume.label}: {error}: give a probability map (floats in [0, 1] or uint8 0..255) or a segmentation") from None


def _check_block_values(volume: Volume, block: Block, state: None) -> None:
    check_probability_values(volume, volume.read(block.write_roi))


def check_probability_dataset(volume: Volume, run: RunOptions) -> None:
    """Refuse a float probability map with values outside [0, 1] (one blockwise read; uint8 maps
    cannot have any): jobs call this before they write anything."""
    if volume.dtype == np.uint8:
        return
    blocks = plan_blocks(volume.roi, volume.chunks, (0, 0, 0), volume.roi.offset)
    run_blockwise(BlockwiseTask(f"check {volume.name}", blocks, partial(_check_block_values, volume)), run)


@dataclass(frozen=True)
class Foreground:
    """Where ``dataset`` of ``container`` shows the organelle (see the module docstring).

    Attributes
    ----------
    container, dataset
        The data.
    kind
        ``probabilities`` or ``segmentation``.
    threshold
        Probabilities: least probability of organelle voxels, in [0, 1].
    class_id
        Segmentation: the class id of organelle voxels; ``None``: every non-zero voxel.
    mask
        Optional dataset (same voxel size, covering the data): only where it is
        non-zero can a voxel be organelle.
    seed_threshold
        Probabilities: an object (connected component) is organelle only where it
        reaches this probability somewhere (hysteresis; used by the jobs that find
        objects); ``None``: every object.
    """

    container: Path
    dataset: str
    kind: Kind
    threshold: float = 0.5
    class_id: int | None = None
    mask: str | None = None
    seed_threshold: float | None = None

    def seeds(self) -> Callable[[], Callable[[Roi], np.ndarray]] | None:
        """A factory of readers giving the seed voxels (probability ≥ ``seed_threshold``), or ``None``."""
        return None if self.seed_threshold is None else replace(self, threshold=self.seed_threshold, seed_threshold=None).open

    def open(self) -> Callable[[Roi], np.ndarray]:
        """A reader giving the foreground (bool) of a region."""
        volume = open_volume(self.container, self.dataset)
        mask = None if self.mask is None else open_volume(self.container, self.mask)

        def read(roi: Roi) -> np.ndarray:
            values = volume.read(roi)
            if self.kind == "probabilities":
                inside = check_probability_values(volume, values) >= self.threshold
            elif self.class_id is None:
                inside = values != 0
            else:
                inside = values == self.class_id
            if mask is not None:
                inside &= mask.read(roi) != 0
            return inside

        return read


def open_with_output(foreground: Foreground, container: Path, output: str) -> tuple[Callable[[Roi], np.ndarray], Volume]:
    """A job's per-worker state: the foreground reader and the output dataset opened for writing."""
    return foreground.open(), open_volume(container, output, "r+", require_complete=False)


def _check_threshold(threshold: float, name: str = option("threshold", "--threshold")) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise InvalidValueError(f"{name} must be a probability in [0, 1], got {threshold!r}")


def check_seed_threshold(seed_threshold: float | None, threshold: float) -> None:
    """A seed threshold is a probability at least the foreground threshold (or ``None``)."""
    if seed_threshold is None:
        return
    _check_threshold(seed_threshold, option("seed_threshold", "--seed-threshold"))
    if seed_threshold < threshold:
        raise InvalidValueError(
            f"{option('seed_threshold', '--seed-threshold')} {seed_threshold:g} is below the threshold {threshold:g}: "
            "give a seed threshold at least the threshold"
        )


def check_mask(volume: Volume, mask_dataset: str) -> Volume:
    """Open ``mask_dataset`` beside ``volume``: same voxel size, covering it."""
    mask = open_volume(volume.container, mask_dataset)
    if mask.voxel_size != volume.voxel_size:
        raise DatasetMismatchError(
            f"mask {mask.label} has voxel size {list(mask.voxel_size)} nm, {volume.label} has {list(volume.voxel_size)} nm: give a mask of the same voxel size"
        )
    if not mask.roi.contains(volume.roi):
        raise RoiError(f"mask {mask.label} covers {mask.roi}, not all of {volume.label} ({volume.roi}): give a mask that covers it")
    return mask


def foreground_of(
    container: str | Path,
    dataset: str,
    *,
    kind: Kind | None = None,
    threshold: float = 0.5,
    class_id: int | None = None,
    mask: str | None = None,
    seed_threshold: float | None = None,
) -> Foreground:
    """Check the dataset, the rule, the mask and the seed threshold (probabilities only); return the :class:`Foreground`.

    Raises
    ------
    DatasetNotFoundError, InvalidValueError, DatasetMismatchError, RoiError
        One line naming the dataset or option at fault.
    """
    volume = open_volume(container, dataset)
    kind = guess_kind(volume) if kind is None else kind
    if kind not in ("probabilities", "segmentation"):
        raise InvalidValueError(f"{option('kind', '--kind')} must be probabilities or segmentation, got {kind!r}")
    _check_threshold(threshold)
    if kind == "segmentation" and not (np.issubdtype(volume.dtype, np.integer) or volume.dtype == np.bool_):
        raise DatasetMismatchError(
            f"{volume.label} is {volume.dtype}: a segmentation holds integers; for probabilities give {option('kind', '--kind')} probabilities"
        )
    if kind == "probabilities" and not (np.issubdtype(volume.dtype, np.floating) or volume.dtype == np.uint8):
        raise DatasetMismatchError(f"{volume.label} is {volume.dtype}: probabilities are floats in [0, 1] or uint8 0..255")
    if class_id is not None and (isinstance(class_id, bool) or not isinstance(class_id, int) or class_id < 1):
        raise InvalidValueError(f"{option('class_id', '--class')} must be a class id of at least 1, got {class_id!r}")
    if mask is not None:
        check_mask(volume, mask)
    check_seed_threshold(seed_threshold, threshold)
    if seed_threshold is not None and kind != "probabilities":
        raise InvalidValueError(
            f"{option('seed_threshold', '--seed-threshold')} needs a probability map, {volume.label} is a segmentation: give prob_maps/class_<c>"
        )
    seed = None if seed_threshold is None else float(seed_threshold)
    return Foreground(volume.container, volume.name, kind, float(threshold), class_id, mask, seed)
