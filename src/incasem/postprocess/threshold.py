"""``incasem threshold``: probabilities → a binary segmentation (1 = organelle), blockwise.

A voxel is organelle where its probability is at least the threshold (and, with a
mask, where the mask is non-zero): the rule of :mod:`incasem.postprocess.foreground`,
the same that ``incasem evaluate --threshold`` scores. Float probability maps are
checked for values outside [0, 1] before anything is written.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from incasem.blockwise import Block, BlockwiseTask, RunOptions, check_job, done_record_for, plan_blocks, run_blockwise
from incasem.errors import InvalidValueError
from incasem.geometry import Triple, as_positive_triple
from incasem.io.volume import Volume, WriteMode, check_output, create_volume, open_volume
from incasem.postprocess.foreground import Foreground, open_with_output, check_probability_values


def default_output(dataset: str, threshold: float) -> str:
    """``<group>/threshold_<t>/class_<c>`` for ``<group>/prob_maps/class_<c>``, else ``<dataset>_threshold_<t>``."""
    parts = dataset.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "prob_maps":
        return "/".join([*parts[:-2], f"threshold_{threshold:g}", parts[-1]])
    return f"{dataset.rstrip('/')}_threshold_{threshold:g}"


def _value_range(volume: Volume, block: Block, state: None) -> None:
    check_probability_values(volume, volume.read(block.write_roi))


def _check_values(volume: Volume, run: RunOptions) -> None:
    """Float maps: refuse values outside [0, 1] (one read of the data) before writing."""
    if volume.dtype == np.uint8:
        return
    blocks = plan_blocks(volume.roi, volume.chunks, (0, 0, 0), volume.roi.offset)
    run_blockwise(BlockwiseTask(f"check {volume.name}", blocks, partial(_value_range, volume)), run)


def _threshold_block(block: Block, state: tuple) -> None:
    read, target = state
    target.write(block.write_roi, read(block.write_roi).astype(np.uint8))


def threshold_probabilities(
    foreground: Foreground,
    output_dataset: str | None = None,
    *,
    chunks: Triple | None = None,
    mode: WriteMode = "create",
    run: RunOptions = RunOptions(),
) -> Volume:
    """Write the binary segmentation ``probability >= threshold`` (uint8 0/1) of a probability map.

    Parameters
    ----------
    foreground
        A probability dataset with its threshold and optional mask
        (:func:`~incasem.postprocess.foreground.foreground_of`, kind ``probabilities``).
    output_dataset
        Output dataset in the same container; default :func:`default_output`.
    chunks
        Output chunk shape = block shape (voxels); default the source's chunks.
    mode, run
        Write mode and run options, as for every job.
    """
    check_job(mode, run)
    chunks = None if chunks is None else as_positive_triple(chunks, "--chunks")
    if foreground.kind != "probabilities":
        raise InvalidValueError(
            f"{foreground.container}/{foreground.dataset} is a segmentation: threshold a probability map "
            "(e.g. volumes/predictions/<model>/<id>/prob_maps/class_1), or give --kind probabilities"
        )
    source = open_volume(foreground.container, foreground.dataset)
    output = output_dataset or default_output(foreground.dataset, foreground.threshold)
    job = {"job": "threshold", "source": foreground.dataset, "threshold": foreground.threshold, "mask": foreground.mask}
    reads = [n for n in (foreground.dataset, foreground.mask) if n]
    check_output(source.container, output, mode=mode, job=job, reads=reads)
    _check_values(source, run)
    target = create_volume(
        source.container, output, source.shape, np.uint8, source.voxel_size, source.offset_nm,
        chunks or source.chunks, mode=mode, job=job, reads=reads,
    )
    task = BlockwiseTask(
        f"threshold {output}", plan_blocks(target.roi, target.chunks, (0, 0, 0), target.roi.offset), _threshold_block,
        partial(open_with_output, foreground, target.container, output), done_record_for(target.container, output),
    )
    run_blockwise(task, run)
    target.mark_complete()
    return target
