"""``incasem threshold``: probabilities → a binary segmentation (1 = organelle), blockwise.

A voxel is organelle where its probability is at least the threshold (and, with a
mask, where the mask is non-zero): the rule of :mod:`incasem.postprocess.foreground`,
the same that ``incasem evaluate --threshold`` scores. With a seed threshold
(hysteresis), only the objects (6-connected components) that reach the seed
probability somewhere are kept: a network's false detections are mostly objects of
middling probability, real organelles are certain somewhere. That needs the objects
across block borders (:mod:`incasem.postprocess.components`: two passes into a
scratch folder inside the output, then the write). Float probability maps are
checked for values outside [0, 1] before anything is written.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import numpy as np

from incasem.blockwise import (
    Block,
    BlockwiseTask,
    DoneRecord,
    RunOptions,
    check_job,
    done_record_for,
    plan_blocks,
    run_blockwise,
)
from incasem.errors import InvalidValueError, option
from incasem.geometry import Triple, as_positive_triple
from incasem.io.layout import PROB_MAPS
from incasem.io.volume import (
    Volume,
    WriteMode,
    check_output,
    create_like,
    open_volume,
)
from incasem.postprocess.components import ComponentMap
from incasem.postprocess.foreground import (
    Foreground,
    check_probability_dataset,
    open_with_output,
)
from incasem.postprocess.instances import SCRATCH_FOLDER, find_objects


def default_output(dataset: str, threshold: float, seed_threshold: float | None = None) -> str:
    """``<group>/threshold_<t>/class_<c>`` for ``<group>/prob_maps/class_<c>``, else ``<dataset>_threshold_<t>``
    (``threshold_<t>_seed_<s>`` with a seed threshold)."""
    name = f"threshold_{threshold:g}" + ("" if seed_threshold is None else f"_seed_{seed_threshold:g}")
    parts = dataset.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == PROB_MAPS:
        return "/".join([*parts[:-2], name, parts[-1]])
    return f"{dataset.rstrip('/')}_{name}"


def _threshold_block(block: Block, state: tuple) -> None:
    read, target = state
    target.write(block.write_roi, read(block.write_roi).astype(np.uint8))


def _seeded_block(components: ComponentMap, block: Block, state: tuple) -> None:
    read, target = state
    target.write(block.write_roi, (components.labels(block, read(block.write_roi)) != 0).astype(np.uint8))


def write_seeded(foreground: Foreground, target: Volume, run: RunOptions) -> None:
    """Write 1 where ``foreground``'s seeded objects are (0 elsewhere) into ``target`` (same region), block by block.

    Resumable: the objects' passes and the record of written blocks live in a scratch
    folder inside ``target`` (so ``target`` may hold the done record of an earlier job,
    as a prediction's segmentation does), removed at the end.
    """
    scratch = Path(target.container) / target.name / SCRATCH_FOLDER
    blocks, components = find_objects(foreground, target, 0, run, f"threshold {target.name}")
    task = BlockwiseTask(
        f"threshold {target.name}: write",
        blocks,
        partial(_seeded_block, components),
        partial(open_with_output, foreground, target.container, target.name),
        DoneRecord(scratch / "written"),
    )
    run_blockwise(task, run)
    shutil.rmtree(scratch, ignore_errors=True)


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
        A probability dataset with its threshold, optional mask and optional seed threshold
        (:func:`~incasem.postprocess.foreground.foreground_of`, kind ``probabilities``).
    output_dataset
        Output dataset in the same container; default :func:`default_output`.
    chunks
        Output chunk shape = block shape (voxels); default the source's chunks.
    mode, run
        Write mode and run options, as for every job.
    """
    check_job(mode, run)
    chunks = None if chunks is None else as_positive_triple(chunks, option("chunks", "--chunks"))
    if foreground.kind != "probabilities":
        raise InvalidValueError(
            f"{foreground.container}/{foreground.dataset} is a segmentation: threshold a probability map "
            f"(e.g. volumes/predictions/<model>/<id>/prob_maps/class_1), or give {option('kind', '--kind')} probabilities"
        )
    source = open_volume(foreground.container, foreground.dataset)
    output = output_dataset or default_output(foreground.dataset, foreground.threshold, foreground.seed_threshold)
    job = {
        "job": "threshold",
        "source": foreground.dataset,
        "threshold": foreground.threshold,
        "mask": foreground.mask,
        "seed_threshold": foreground.seed_threshold,
    }
    reads = [n for n in (foreground.dataset, foreground.mask) if n]
    check_output(source.container, output, mode=mode, job=job, reads=reads)
    check_probability_dataset(source, run)
    target = create_like(
        source,
        output,
        np.uint8,
        chunks,
        mode=mode,
        job=job,
        reads=reads,
        default_chunks=source.chunks,
    )
    if foreground.seed_threshold is None:
        task = BlockwiseTask(
            f"threshold {output}",
            plan_blocks(target.roi, target.chunks, (0, 0, 0), target.roi.offset),
            _threshold_block,
            partial(open_with_output, foreground, target.container, output),
            done_record_for(target.container, output),
        )
        run_blockwise(task, run)
    else:
        write_seeded(foreground, target, run)
    target.mark_complete()
    return target
