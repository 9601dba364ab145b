"""Random training blocks from the ROIs of a data config (DESIGN §6, the original's sampling).

Each call of :meth:`TrainingSampler.sample` draws, with a ``numpy.random.Generator``:

1. a ROI (data config entry), with probability proportional to its labelled voxels (its
   volume, when all of it is labelled);
2. a location such that the *output* block (``output_shape``, the region the labels are
   trained on) lies inside the ROI: uniformly over all such locations when every voxel is
   labelled; with partial labels (an entry's ``labelled`` mask), uniformly among the
   locations that contain a labelled voxel drawn uniformly from all labelled voxels, so a
   volume labelled on a few sections is sampled where it is labelled;
3. acceptance, as the original's gunpowder ``Reject`` nodes do it, counted over the
   *labelled* voxels of the output block (all of them, for fully labelled data, which is
   the original's rule): a block whose labelled share inside the cell mask is at most
   ``min_masked`` (0.75) is rejected with probability ``mask_reject_probability`` (0.95),
   and a block whose labelled share of foreground voxels (class id != 0 and inside the
   mask) is at most ``min_foreground`` (0.05) is rejected with probability
   ``foreground_reject_probability`` (0.9). A block whose share of labelled voxels is at
   most ``min_labelled`` (default 0: a block without any labelled voxel) is always
   rejected. A rejected block starts again at step 1.

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
* ``mask`` is where the loss counts: the entry's cell mask (non-zero = inside; everywhere
  when the entry has none) and, with partial labels, its labelled mask. Metric masks are
  not used for training.

Impossible requests fail early with one-line errors: a ROI smaller than the output block,
an entry whose labelled mask marks no voxel of its ROI, a config whose labels hold no
(labelled) foreground anywhere (checked up front, chunk by chunk, stopping at the first
foreground voxel), or ``max_attempts`` consecutive rejections.
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
        uint8 (z, y, x), 1 where the loss counts (inside the cell mask, the ROI and the
        labelled voxels), else 0.
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
class _LabelledTiles:
    """Where an entry's partial labels are: the chunk tiles of its ROI that hold labelled voxels, and how many."""

    tiles: tuple[Roi, ...]
    counts: np.ndarray

    @property
    def total(self) -> int:
        """Labelled voxels in the ROI."""
        return int(self.counts.sum())


@dataclass(frozen=True)
class _Source:
    """The opened datasets of one entry (``labelled``/``tiles`` only with partial labels)."""

    entry: RoiEntry
    roi: Roi
    raw: Volume
    labels: tuple[tuple[Volume, int], ...]
    mask: Volume | None
    labelled: Volume | None = None
    tiles: _LabelledTiles | None = None

    @property
    def labelled_voxels(self) -> int:
        """Labelled voxels in the ROI (all of them without a labelled mask)."""
        return self.roi.size if self.tiles is None else self.tiles.total


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
    min_labelled : float
        A block with at most this share of labelled voxels is always rejected (default 0:
        blocks without labelled voxels).
    max_attempts : int
        Consecutive rejections after which :meth:`sample` gives up with an error.

    Raises
    ------
    InvalidValueError
        If the shapes or the rejection settings are invalid.
    ConfigError
        If a ROI is unknown or smaller than ``output_shape``, raw is not uint8, a labelled
        mask marks nothing in its ROI, or no labels dataset holds any labelled foreground
        inside its ROI.
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
        min_labelled: float = 0.0,
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
        self.min_labelled = _fraction(min_labelled, "min_labelled")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise InvalidValueError(f"max_attempts must be a whole number >= 1, got {max_attempts!r}")
        self.max_attempts = max_attempts
        self.config = config
        self._sources = tuple(_open_source(config, entry, self.output_shape) for entry in config)
        sizes = np.array([source.labelled_voxels for source in self._sources], dtype=np.float64)
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
            output_roi = self._location(source, generator)
            source_roi = output_roi.grow([(s - o) // 2 for s, o in zip(self.source_shape, self.output_shape)])
            labels, cell, labelled = self._read_labels(source, source_roi)
            if self._accept(labels, cell, labelled, source_roi, output_roi, generator):
                raw = source.raw.read(source_roi, padding="reflect")
                return Sample(raw, labels, cell & labelled, source.entry.name, source_roi, output_roi)
        raise ConfigError(
            f"{self.config.path}: no training block of {list(self.output_shape)} voxels with more than {self.min_masked:g} "
            f"inside the mask, more than {self.min_foreground:g} foreground and more than {self.min_labelled:g} labelled in "
            f"{self.max_attempts} attempts: lower reject.min_masked/min_foreground/min_labelled or the reject probabilities, "
            "or choose ROIs with more labelled foreground"
        )

    def _location(self, source: _Source, generator: np.random.Generator) -> Roi:
        """A random output block inside the entry's ROI: uniform, or around a random labelled voxel (partial labels)."""
        roi = source.roi
        first, last = np.array(roi.offset), np.array([e - n for e, n in zip(roi.end, self.output_shape)])
        if source.tiles is not None and source.labelled is not None:
            tiles = source.tiles
            tile = tiles.tiles[generator.choice(len(tiles.tiles), p=tiles.counts / tiles.total)]
            where = np.flatnonzero(source.labelled.read(tile))
            voxel = np.array(np.unravel_index(where[generator.integers(len(where))], tile.shape)) + tile.offset
            first, last = np.maximum(first, voxel - np.array(self.output_shape) + 1), np.minimum(last, voxel)
        z, y, x = (int(o) for o in generator.integers(first, last + 1))
        return Roi((z, y, x), self.output_shape)

    def _read_labels(self, source: _Source, source_roi: Roi) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Class ids (int64), cell mask and labelled mask (uint8 0/1) over ``source_roi``, zero outside the entry's ROI."""
        inside = source_roi.intersect(source.roi)
        labels = class_targets([(volume.read(inside), class_id) for volume, class_id in source.labels], inside.shape)
        cell, labelled = (
            np.ones(inside.shape, np.uint8) if volume is None else (volume.read(inside) != 0).astype(np.uint8) for volume in (source.mask, source.labelled)
        )
        return (
            pad_to_region(labels.astype(np.int64), inside, source_roi, "constant"),
            pad_to_region(cell, inside, source_roi, "constant"),
            pad_to_region(labelled, inside, source_roi, "constant"),
        )

    def _accept(self, labels: np.ndarray, cell: np.ndarray, labelled: np.ndarray, source_roi: Roi, output_roi: Roi, generator: np.random.Generator) -> bool:
        """The original's two ``Reject`` checks, over the labelled voxels of the output block, after the labelled-share check."""
        window = output_roi.relative_to(source_roi.offset).to_slices()
        counted = labelled[window] != 0
        labelled_voxels = int(counted.sum())
        if labelled_voxels == 0 or labelled_voxels <= self.min_labelled * counted.size:
            return False
        inside = counted & (cell[window] != 0)
        checks = (
            (inside.sum() / labelled_voxels, self.min_masked, self.mask_reject_probability),
            ((inside & (labels[window] != 0)).sum() / labelled_voxels, self.min_foreground, self.foreground_reject_probability),
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
    if entry.labelled is None:
        return _Source(entry, entry.roi, raw, labels, mask)
    labelled = open_volume(entry.container, entry.labelled)
    tiles = _labelled_tiles(labelled, entry.roi)
    if not tiles.tiles:
        raise ConfigError(
            f"{where}, key 'labelled': {labelled.label} marks no voxel of the ROI {entry.roi} as labelled, so the entry has "
            "nothing to train on: fix the ROI or the labelled mask, or remove the entry"
        )
    return _Source(entry, entry.roi, raw, labels, mask, labelled, tiles)


def _labelled_tiles(labelled: Volume, roi: Roi) -> _LabelledTiles:
    """The chunk tiles of ``roi`` holding labelled voxels (one pass over the mask, one chunk at a time)."""
    tiles, counts = [], []
    for tile in roi.tiles(labelled.chunks, grid_origin=labelled.roi.offset):
        count = int(np.count_nonzero(labelled.read(tile)))
        if count:
            tiles.append(tile)
            counts.append(count)
    return _LabelledTiles(tuple(tiles), np.array(counts, dtype=np.float64))


def _require_foreground(config: DataConfig, sources: Sequence[_Source]) -> None:
    """Raise unless some labels dataset has a labelled non-zero voxel inside its ROI (stops at the first)."""
    for source in sources:
        for volume, _ in source.labels:
            tiles = source.roi.tiles(volume.chunks, grid_origin=volume.roi.offset) if source.tiles is None else source.tiles.tiles
            for tile in tiles:
                foreground = volume.read(tile) != 0
                if source.labelled is not None:
                    foreground &= source.labelled.read(tile) != 0
                if np.any(foreground):
                    return
    raise ConfigError(
        f"{config.path}: no labels dataset has any labelled foreground (non-zero voxel) inside its ROI, so there is "
        "nothing to train on: check the 'labels' (and 'labelled') datasets and the ROIs"
    )
