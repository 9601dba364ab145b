"""Blockwise scores of a segmentation against the labels of a data-config entry.

Counts are taken inside ``mask ∧ metric masks`` of the entry (absent = everywhere)
block by block and summed, so memory stays bounded by one block whatever the ROI.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from incasem.blockwise import (
    Block,
    BlockwiseTask,
    RunOptions,
    plan_blocks,
    run_blockwise,
)
from incasem.evaluate.metrics import ConfusionCounts, confusion_counts
from incasem.geometry import Roi, Triple
from incasem.io.data_config import RoiEntry
from incasem.io.volume import Volume, open_volume

#: Block edge (voxels) of evaluation reads.
EVALUATION_BLOCK = (128, 128, 128)


def class_targets(label_blocks: list[tuple[np.ndarray, int]], shape: Triple) -> np.ndarray:
    """Per-voxel class id from binary label datasets (0 where no class or two classes claim it)."""
    target = np.zeros(shape, dtype=np.int32)
    claims = np.zeros(shape, dtype=np.uint8)
    for data, class_id in label_blocks:
        inside = data != 0
        target[inside] = class_id
        claims += inside
    target[claims > 1] = 0
    return target


@dataclass(frozen=True)
class Reference:
    """The opened labels (with their class ids) and masks (mask and metric masks) of a data-config entry."""

    labels: tuple[tuple[Volume, int], ...]
    masks: tuple[Volume, ...]

    @classmethod
    def open(cls, entry: RoiEntry) -> Reference:
        """Open the entry's labels, cell mask and metric masks."""
        return cls(
            labels=tuple((open_volume(entry.container, label.dataset), label.class_id) for label in entry.labels),
            masks=tuple(open_volume(entry.container, name) for name in (entry.mask, *entry.metric_masks) if name is not None),
        )

    def read(self, roi: Roi) -> tuple[np.ndarray, np.ndarray]:
        """Class ids (:func:`class_targets`) and where to count (bool: inside every mask) over ``roi``."""
        target = class_targets([(volume.read(roi), c) for volume, c in self.labels], roi.shape)
        inside = np.ones(roi.shape, dtype=bool)
        for mask in self.masks:
            inside &= mask.read(roi) != 0
        return target, inside


@dataclass(frozen=True)
class _Sources:
    segmentation: Volume
    reference: Reference


def _open_sources(segmentation: tuple[Path, str], entry: RoiEntry) -> _Sources:
    return _Sources(open_volume(*segmentation), Reference.open(entry))


def _count_block(class_ids: tuple[int, ...], block: Block, sources: _Sources) -> dict[int, ConfusionCounts]:
    roi = block.write_roi
    prediction = sources.segmentation.read(roi)
    target, inside = sources.reference.read(roi)
    return {c: confusion_counts(prediction == c, target == c, inside) for c in class_ids}


def evaluate_segmentation(
    container: str | Path, segmentation: str, entry: RoiEntry, run: RunOptions = RunOptions()
) -> dict[int, ConfusionCounts]:
    """Confusion counts per class id of segmentation dataset ``segmentation`` over ``entry``'s ROI.

    The segmentation holds class ids (0 = background); the entry's labels map label
    datasets to class ids as in the data config. ``run``: scheduler, local threads and
    progress bar (see :class:`incasem.blockwise.RunOptions`).
    """
    class_ids = tuple(sorted({label.class_id for label in entry.labels}))
    seg = open_volume(container, segmentation)
    roi = entry.roi if entry.roi is not None else seg.roi
    task = BlockwiseTask(
        name=f"evaluate {entry.name}",
        blocks=plan_blocks(roi, EVALUATION_BLOCK, grid_origin=roi.offset),
        process=partial(_count_block, class_ids),
        setup=partial(_open_sources, (Path(container), segmentation), entry),
    )
    totals = {c: ConfusionCounts() for c in class_ids}
    for counts in run_blockwise(task, run):
        totals = {c: totals[c] + counts[c] for c in class_ids}
    return totals
