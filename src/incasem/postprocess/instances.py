"""``incasem instances``: one id per object (connected component), blockwise, across block borders.

The objects are the 6-connected components of a foreground (probabilities ≥ a
threshold, one class of a segmentation, or non-zero labels; optionally only inside a
cell mask; see :mod:`incasem.postprocess.foreground`); objects smaller than a minimum
size are dropped. Ids run 1..n in raster order of each object's first voxel: the
result equals, voxel for voxel, ``skimage.segmentation.relabel_sequential`` of
``scipy.ndimage.label`` of the whole volume with the small objects removed
(:mod:`incasem.postprocess.components` explains how).

Nothing is written until the objects are known: passes 1 and 2 keep their files in
a scratch folder inside the output dataset (removed at the end); the output is marked
incomplete until pass 3 has written every block, and ``--resume`` continues any pass.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.segmentation import relabel_sequential

from incasem.blockwise import (
    Block,
    BlockwiseTask,
    RunOptions,
    check_job,
    done_record_for,
    run_blockwise,
)
from incasem.errors import InvalidValueError, option
from incasem.geometry import Triple
from incasem.io.volume import Volume, WriteMode, check_output, create_like, open_volume
from incasem.postprocess.components import (
    ComponentMap,
    label_fragments,
    merge_fragments,
    plan_component_blocks,
)
from incasem.postprocess.foreground import Foreground, check_probability_dataset, open_with_output

#: Folder inside the output dataset that holds passes 1 and 2 while the job runs.
SCRATCH_FOLDER = ".incasem_fragments"

ID_DTYPES: dict[str, type[np.unsignedinteger]] = {"uint32": np.uint32, "uint64": np.uint64}


@dataclass(frozen=True)
class InstanceOptions:
    """How objects are made; validated on construction.

    Attributes
    ----------
    min_size_voxels
        Objects of fewer voxels are dropped (0 or 1 keeps all).
    dtype
        ``uint32`` (up to 4 294 967 295 objects) or ``uint64``.
    """

    min_size_voxels: int = 0
    dtype: str = "uint32"

    def __post_init__(self) -> None:
        size = self.min_size_voxels
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidValueError(f"{option('min_size_voxels', '--min-size')} must be a whole number of voxels, at least 0, got {size!r}")
        if self.dtype not in ID_DTYPES:
            raise InvalidValueError(f"{option('dtype', '--dtype')} must be uint32 or uint64, got {self.dtype!r}")


def _write_block(components: ComponentMap, dtype: np.dtype, block: Block, state: tuple) -> None:
    read, target = state
    target.write(block.write_roi, components.labels(block, read(block.write_roi)).astype(dtype))


def default_output(dataset: str) -> str:
    """``<dataset>_instances``."""
    return f"{dataset.rstrip('/')}_instances"


def label_instances(
    foreground: Foreground,
    output_dataset: str | None = None,
    *,
    options: InstanceOptions = InstanceOptions(),
    chunks: Triple | None = None,
    mode: WriteMode = "create",
    run: RunOptions = RunOptions(),
) -> Volume:
    """Write the objects of ``foreground`` as instance ids into ``output_dataset``.

    Parameters
    ----------
    foreground
        The dataset and what counts as object in it (:func:`~incasem.postprocess.foreground.foreground_of`).
    output_dataset
        Output dataset in the same container; default :func:`default_output`.
    options
        Minimum object size and id type (:class:`InstanceOptions`).
    chunks
        Chunk shape of the output = block shape (voxels); default the source's chunks.
    mode, run
        Write mode (:data:`~incasem.io.volume.WriteMode`) and run options (:class:`~incasem.blockwise.RunOptions`).

    Returns
    -------
    Volume
        The complete output; its attribute ``instances`` holds the number of objects.
    """
    check_job(mode, run)
    source = open_volume(foreground.container, foreground.dataset)
    output = output_dataset or default_output(foreground.dataset)
    job = {
        "job": "instances",
        "source": foreground.dataset,
        "kind": foreground.kind,
        "threshold": foreground.threshold,
        "class_id": foreground.class_id,
        "mask": foreground.mask,
        "min_size_voxels": options.min_size_voxels,
        "seed_threshold": foreground.seed_threshold,
    }
    dtype = np.dtype(ID_DTYPES[options.dtype])
    reads = [n for n in (foreground.dataset, foreground.mask) if n]
    check_output(source.container, output, mode=mode, job=job, reads=reads)
    if foreground.kind == "probabilities":  # values outside [0, 1] are refused before anything is written
        check_probability_dataset(source, run)
    target = create_like(
        source,
        output,
        dtype,
        chunks,
        mode=mode,
        job=job,
        reads=reads,
        default_chunks=source.chunks,
    )
    blocks, components = find_objects(foreground, target, options.min_size_voxels, run, f"instances {output}")
    if components.count > np.iinfo(dtype).max:
        raise InvalidValueError(f"{components.count} objects do not fit in {options.dtype}: rerun with --dtype uint64 --overwrite")
    task = BlockwiseTask(
        f"instances {output}: write",
        blocks,
        partial(_write_block, components, dtype),
        partial(open_with_output, foreground, target.container, output),
        done_record_for(target.container, output),
    )
    run_blockwise(task, run)
    target.array.attrs["instances"] = components.count
    target.mark_complete()
    shutil.rmtree(Path(target.container) / output / SCRATCH_FOLDER, ignore_errors=True)
    return target


def find_objects(foreground: Foreground, target: Volume, min_size_voxels: int, run: RunOptions, name: str) -> tuple[list[Block], ComponentMap]:
    """Passes 1 and 2 over the blocks (= chunks) of the output ``target``: the objects of
    ``foreground`` (with its seeds, if any) of at least ``min_size_voxels``.

    The passes keep their files in :data:`SCRATCH_FOLDER` inside ``target`` (resumable;
    the caller removes it once the output is complete).
    """
    scratch = Path(target.container) / target.name / SCRATCH_FOLDER
    blocks = plan_component_blocks(target.roi, target.chunks)
    label_fragments(blocks, target.roi, scratch, foreground.open, run, f"{name}: label blocks", seeds=foreground.seeds())
    return blocks, merge_fragments(blocks, scratch, min_size_voxels, run, f"{name}: join blocks")


def instances_in_memory(foreground: np.ndarray, min_size_voxels: int = 0) -> np.ndarray:
    """The whole-volume computation in memory: 6-connected components, small ones dropped, ids 1..n in raster order."""
    labels, _ = ndimage.label(foreground)
    sizes = np.bincount(labels.ravel())
    labels[sizes[labels] < max(min_size_voxels, 1)] = 0
    return relabel_sequential(labels)[0]
