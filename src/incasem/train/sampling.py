"""Random training blocks from the ROIs of a data config (DESIGN §6, the original's sampling).

Each call of :meth:`TrainingSampler.sample` draws, with a ``numpy.random.Generator``:

1. a ROI (data config entry), with probability proportional to its volume;
2. a location such that the *output* block (``output_shape``, the region the labels are
   trained on) lies inside the ROI, uniformly over all such locations;
3. acceptance, as the original's gunpowder ``Reject`` nodes do it: a block whose share of
   voxels inside the cell mask is at most ``min_masked`` (0.75) is rejected with
   probability ``mask_reject_probability`` (0.95), and a block whose share of foreground
   voxels (class id != 0 and inside the mask) is at most ``min_foreground`` (0.05) is
   rejected with probability ``foreground_reject_probability`` (0.9). Both shares are
   counted over the output block. A rejected block starts again at step 1.

Grid convention
---------------
A :class:`Sample` holds three arrays of the same shape ``source_shape`` on the same voxel
grid: the *source block*, centred on the output block (``source_shape - output_shape``
must be even per axis), which is what :func:`incasem.train.augment.augment` expects.

* ``raw`` is read from the raw dataset; where the source block leaves the dataset it is
  filled by reflection (``padding="reflect"``), so a ROI at the border of the data needs no
  extra context.
* ``labels`` (class ids, merged as in the data config: a voxel claimed by two classes is
  background, see :func:`incasem.evaluate.evaluate.class_targets`) and ``mask`` are read
  inside the ROI only. Outside the ROI ``labels`` is 0 and ``mask`` is 0, so voxels that
  augmentation moves in from outside the ROI never count in the loss.
* ``mask`` is the entry's cell mask (non-zero = inside; everywhere when the entry has
  none). Metric masks are not used for training.

Impossible requests fail early with one-line errors: a ROI smaller than the output block,
a config whose labels hold no foreground anywhere (checked up front, chunk by chunk, stopping
at the first foreground voxel), or ``max_attempts`` consecutive rejections.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from incasem.errors import ConfigError, InvalidValueError
from incasem.evaluate.evaluate import class_targets
from incasem.geometry import Roi, Triple, as_positive_triple
from incasem.io.data_config import DataConfig, RoiEntry
from incasem.io.padding import pad_to_region
from incasem.io.volume import Volume, open_volume


@dataclass(frozen=True)
class Sample:
    """One training block; all arrays have ``source_shape`` and share the voxel grid.

    Attributes
    ----------
    raw : numpy.ndarray
        uint8 (z, y, x), reflected where the source block leaves the raw dataset.
    labels : numpy.ndarray
        int64 class ids (z, y, x), 0 (background) outside the ROI.
    mask : numpy.ndarray
        uint8 (z, y, x), 1 inside the cell mask and the ROI, else 0.
    entry : str
        Name of the data config entry the block comes from.
    source_roi : Roi
        Region of the arrays, voxels on the world grid.
    output_roi : Roi
        The output block (labels trained on), centred in ``source_roi`` and inside the ROI.
    """

    raw: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    entry: str
    source_roi: Roi
    output_roi: Roi


@dataclass(frozen=True)
class _Source:
    """The opened datasets of one entry."""

    entry: RoiEntry
    roi: Roi
    raw: Volume
    labels: tuple[tuple[Volume, int], ...]
    mask: Volume | None


class TrainingSampler:
    """Draws training blocks from the ROIs of a data config (see the module docstring).

    Parameters
    ----------
    config : DataConfig
        A loaded data config (:func:`incasem.io.data_config.load_data_config`, with its
        datasets checked so that every entry has a ROI).
    source_shape : sequence of int
        Shape (z, y, x) of the returned arrays, voxels: the network input plus the elastic
        margin (:func:`incasem.train.augment.source_shape`).
    output_shape : sequence of int
        Shape (z, y, x) of the network output, voxels; the part that must lie in a ROI.
    min_masked, mask_reject_probability : float
        A block with at most this share inside the cell mask is rejected with this
        probability (original: 0.75, 0.95).
    min_foreground, foreground_reject_probability : float
        A block with at most this share of foreground inside the mask is rejected with
        this probability (original: 0.05, 0.9).
    max_attempts : int
        Consecutive rejections after which :meth:`sample` gives up with an error.

    Raises
    ------
    InvalidValueError
        If the shapes or the rejection settings are invalid.
    ConfigError
        If a ROI is unknown or smaller than ``output_shape``, raw is not uint8, or no
        labels dataset holds any foreground inside its ROI.
    """

    def __init__(
        self,
        config: DataConfig,
        source_shape: Sequence[int],
        output_shape: Sequence[int],
        *,
        min_masked: float = 0.75,
        mask_reject_probability: float = 0.95,
        min_foreground: float = 0.05,
        foreground_reject_probability: float = 0.9,
        max_attempts: int = 1000,
    ) -> None:
        self.source_shape = as_positive_triple(source_shape, "source_shape")
        self.output_shape = as_positive_triple(output_shape, "output_shape")
        if any(s < o or (s - o) % 2 for s, o in zip(self.source_shape, self.output_shape)):
            raise InvalidValueError(
                f"source_shape {list(self.source_shape)} must be output_shape {list(self.output_shape)} plus an even number of voxels per axis"
            )
        self.min_masked = _fraction(min_masked, "min_masked")
        self.mask_reject_probability = _fraction(mask_reject_probability, "mask_reject_probability")
        self.min_foreground = _fraction(min_foreground, "min_foreground")
        self.foreground_reject_probability = _fraction(foreground_reject_probability, "foreground_reject_probability")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise InvalidValueError(f"max_attempts must be a whole number >= 1, got {max_attempts!r}")
        self.max_attempts = max_attempts
        self.config = config
        self._sources = tuple(_open_source(config, entry, self.output_shape) for entry in config)
        sizes = np.array([source.roi.size for source in self._sources], dtype=np.float64)
        self.probabilities = sizes / sizes.sum()
        _require_foreground(config, self._sources)

    def sample(self, generator: np.random.Generator) -> Sample:
        """Draw one accepted training block (deterministic for a given generator state).

        Parameters
        ----------
        generator : numpy.random.Generator
            The only source of randomness.

        Returns
        -------
        Sample
            Arrays of ``source_shape`` and where they come from.

        Raises
        ------
        ConfigError
            If ``max_attempts`` blocks in a row were rejected.
        """
        for _ in range(self.max_attempts):
            source = self._sources[generator.choice(len(self._sources), p=self.probabilities)]
            output_roi = self._location(source.roi, generator)
            source_roi = output_roi.grow([(s - o) // 2 for s, o in zip(self.source_shape, self.output_shape)])
            labels, mask = self._labels_and_mask(source, source_roi)
            if self._accept(labels, mask, source_roi, output_roi, generator):
                raw = source.raw.read(source_roi, padding="reflect")
                return Sample(raw, labels, mask, source.entry.name, source_roi, output_roi)
        raise ConfigError(
            f"{self.config.path}: no training block of {list(self.output_shape)} voxels with more than {self.min_masked:g} "
            f"inside the mask and more than {self.min_foreground:g} foreground in {self.max_attempts} attempts: lower "
            "min_masked/min_foreground or the reject probabilities, or choose ROIs with more labelled foreground"
        )

    def _location(self, roi: Roi, generator: np.random.Generator) -> Roi:
        """A uniformly random output block inside ``roi``."""
        last = [e - n for e, n in zip(roi.end, self.output_shape)]
        z, y, x = (int(o) for o in generator.integers(roi.offset, np.array(last) + 1))
        return Roi((z, y, x), self.output_shape)

    def _labels_and_mask(self, source: _Source, source_roi: Roi) -> tuple[np.ndarray, np.ndarray]:
        """Class ids (int64) and mask (uint8) over ``source_roi``, zero outside the entry's ROI."""
        inside = source_roi.intersect(source.roi)
        labels = class_targets([(volume.read(inside), class_id) for volume, class_id in source.labels], inside.shape)
        mask = np.ones(inside.shape, np.uint8) if source.mask is None else (source.mask.read(inside) != 0).astype(np.uint8)
        return (
            pad_to_region(labels.astype(np.int64), inside, source_roi, "constant"),
            pad_to_region(mask, inside, source_roi, "constant"),
        )

    def _accept(self, labels: np.ndarray, mask: np.ndarray, source_roi: Roi, output_roi: Roi, generator: np.random.Generator) -> bool:
        """The original's two ``Reject`` checks, on the output block."""
        window = output_roi.relative_to(source_roi.offset).to_slices()
        inside = mask[window] != 0
        checks = (
            (inside.mean(), self.min_masked, self.mask_reject_probability),
            ((inside & (labels[window] != 0)).mean(), self.min_foreground, self.foreground_reject_probability),
        )
        return all(not (share <= minimum and generator.random() < reject_probability) for share, minimum, reject_probability in checks)


def _fraction(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise InvalidValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _open_source(config: DataConfig, entry: RoiEntry, output_shape: Triple) -> _Source:
    """Open an entry's datasets and check that an output block fits in its ROI."""
    where = f"{config.path}: entry '{entry.name}'"
    if entry.roi is None:
        raise ConfigError(f"{where}: its ROI is unknown: load the config with its datasets checked, or give 'offset' and 'shape'")
    if any(r < o for r, o in zip(entry.roi.shape, output_shape)):
        raise ConfigError(
            f"{where}, key 'shape': ROI of {list(entry.roi.shape)} voxels is smaller than the training output block "
            f"{list(output_shape)}: enlarge the ROI or train with a smaller output shape"
        )
    raw = open_volume(entry.container, entry.raw)
    if raw.dtype != np.uint8:
        raise ConfigError(f"{where}, key 'raw': {raw.label} is {raw.dtype}, training reads uint8 raw: convert it to uint8 first")
    labels = tuple((open_volume(entry.container, label.dataset), label.class_id) for label in entry.labels)
    mask = None if entry.mask is None else open_volume(entry.container, entry.mask)
    return _Source(entry, entry.roi, raw, labels, mask)


def _require_foreground(config: DataConfig, sources: Sequence[_Source]) -> None:
    """Raise unless some labels dataset has a non-zero voxel inside its ROI (stops at the first)."""
    for source in sources:
        for volume, _ in source.labels:
            for tile in source.roi.tiles(volume.chunks, grid_origin=volume.roi.offset):
                if np.any(volume.read(tile)):
                    return
    raise ConfigError(
        f"{config.path}: no labels dataset has any foreground (non-zero voxel) inside its ROI, so there is nothing to "
        "train on: check the 'labels' datasets and the ROIs"
    )
