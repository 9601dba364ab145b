"""Connected components of a volume far larger than memory, equal to the whole-volume result.

Three passes over the blocks of a region, each in memory bounded by one block:

1. :func:`label_fragments`: every block labels its own foreground with
   ``scipy.ndimage.label`` (6-connected: face neighbours) into *fragments* and stores,
   in a scratch folder, its six boundary faces (fragment ids), each fragment's size
   and the position of its first voxel in raster order. Nothing is written to a
   container.
2. :func:`merge_fragments`: fragments that touch across a block face belong to one
   object; the face pairs give a graph whose connected components
   (``scipy.sparse.csgraph``) are the objects. Objects of fewer than
   ``min_size_voxels`` voxels are dropped; the others are numbered 1..n in raster
   order of their first voxel, which is how ``scipy.ndimage.label`` numbers the
   components of the whole volume.
3. :meth:`ComponentMap.labels`: a block labels its foreground again (the same input
   gives the same fragments) and maps its fragments to object ids.

With *seeds* (a second foreground inside the first, e.g. probability ≥ a higher
threshold), pass 1 also notes which fragments hold a seed voxel and pass 2 drops the
objects without one: hysteresis thresholding, equal to
``skimage.filters.apply_hysteresis_threshold`` of the whole volume.

So the ids equal ``relabel_sequential`` of the whole-volume ``ndimage.label`` with
small objects removed, for any block shape. Pass 1 is resumable (a block whose
fragment file exists is not labelled again), and its files are all the driver keeps
between passes: memory on the driver grows with the number of fragments, not voxels.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from incasem.blockwise import (
    Block,
    BlockwiseTask,
    RunOptions,
    plan_blocks,
    run_blockwise,
)
from incasem.geometry import Roi, Triple

#: Reads the foreground (bool) of a region; built once per worker by a setup function.
ForegroundReader = Callable[[Roi], np.ndarray]

#: 6-connectivity, scipy's default.
FACES = ndimage.generate_binary_structure(3, 1)


def _fragment_file(scratch: Path, block: Block) -> Path:
    return scratch / f"fragments_{block.block_id}.npz"


def _label(foreground: np.ndarray) -> np.ndarray:
    return ndimage.label(foreground, structure=FACES)[0]


def _first_voxels(local: np.ndarray, block_roi: Roi, region: Roi) -> np.ndarray:
    """Raster index in ``region`` of each fragment's first voxel (fragments 1..n)."""
    ids, first = np.unique(local.ravel(), return_index=True)
    first = first[ids != 0]
    position = np.stack(np.unravel_index(first, local.shape), axis=1) + np.subtract(block_roi.offset, region.offset)
    return np.ravel_multi_index(position.T, region.shape).astype(np.int64)


def _save(path: Path, **arrays: np.ndarray) -> None:
    """Write an .npz atomically: a file that exists is complete."""
    partial_path = path.with_name(f".{path.name}.{os.getpid()}.partial")
    # typed Any: otherwise mypy matches **entries against savez_compressed's allow_pickle (a bool) as well
    entries: dict[str, Any] = arrays
    with open(partial_path, "wb") as stream:
        np.savez_compressed(stream, **entries)
    os.replace(partial_path, path)


def _readers(setup: Callable[[], ForegroundReader], seeds: Callable[[], ForegroundReader] | None) -> tuple:
    """Per worker: the foreground reader and the seed reader (``None`` without seeds)."""
    return setup(), None if seeds is None else seeds()


def _fragment_block(scratch: Path, region: Roi, block: Block, readers: tuple) -> None:
    path = _fragment_file(scratch, block)
    if path.exists():
        return
    read, read_seeds = readers
    local = _label(read(block.write_roi))
    count = int(local.max())
    seeded = np.ones(count, bool) if read_seeds is None else np.bincount(local[read_seeds(block.write_roi)], minlength=count + 1)[1:] > 0
    faces = {f"low{axis}": np.take(local, 0, axis=axis) for axis in range(3)}
    faces.update({f"high{axis}": np.take(local, -1, axis=axis) for axis in range(3)})
    _save(
        path,
        sizes=np.bincount(local.ravel(), minlength=count + 1)[1:].astype(np.int64),
        first=_first_voxels(local, block.write_roi, region),
        seeded=seeded,
        **faces,
    )


def plan_component_blocks(region: Roi, block_shape: Triple, grid_origin: Triple | None = None) -> list[Block]:
    """The blocks of ``region`` (no context: labelling a block needs nothing around it)."""
    return plan_blocks(region, block_shape, (0, 0, 0), region.offset if grid_origin is None else grid_origin)


def label_fragments(
    blocks: list[Block],
    region: Roi,
    scratch: Path,
    setup: Callable[[], ForegroundReader],
    run: RunOptions,
    name: str,
    seeds: Callable[[], ForegroundReader] | None = None,
) -> None:
    """Pass 1: label every block's foreground on its own, keep faces, sizes, first voxels and
    (with ``seeds``, a reader of seed voxels inside the foreground) which fragments hold a seed in ``scratch``."""
    scratch.mkdir(parents=True, exist_ok=True)
    run_blockwise(BlockwiseTask(name, blocks, partial(_fragment_block, scratch, region), partial(_readers, setup, seeds)), run)


@dataclass(frozen=True)
class ComponentMap:
    """Object id of every fragment of every block (0: dropped or background).

    Attributes
    ----------
    first_fragment
        Per block id, the index in ``object_ids`` of its fragment 1.
    object_ids
        Object id per fragment (all blocks, in block order).
    count
        Number of objects, numbered 1..count.
    """

    first_fragment: dict[str, int]
    object_ids: np.ndarray
    count: int

    def labels(self, block: Block, foreground: np.ndarray) -> np.ndarray:
        """Object ids (uint64) of ``block`` from its foreground: pass 3."""
        local = _label(foreground)
        lookup = np.concatenate(([0], self.object_ids[self.first_fragment[block.block_id] :][: int(local.max())]))
        return lookup.astype(np.uint64)[local]


def _neighbour_offsets(block: Block) -> list[tuple[int, tuple[int, int, int]]]:
    """(axis, offset of the block after ``block`` along that axis)."""
    roi = block.write_roi
    result = []
    for axis in range(3):
        after = list(roi.offset)
        after[axis] += roi.shape[axis]
        result.append((axis, (after[0], after[1], after[2])))
    return result


def _face_pairs(scratch: Path, first_fragment: dict[str, int], by_offset: dict[Triple, Block], block: Block, state: Any) -> np.ndarray:
    """Pairs (fragment index, fragment index) that touch across the block's three upper faces."""
    pairs = []
    with np.load(_fragment_file(scratch, block)) as own:
        for axis, after in _neighbour_offsets(block):
            neighbour = by_offset.get(after)
            if neighbour is None:
                continue
            with np.load(_fragment_file(scratch, neighbour)) as other:
                high, low = own[f"high{axis}"], other[f"low{axis}"]
            touching = (high != 0) & (low != 0)
            if touching.any():
                found = np.unique(np.stack([high[touching], low[touching]], axis=1), axis=0).astype(np.int64)
                found[:, 0] += first_fragment[block.block_id] - 1
                found[:, 1] += first_fragment[neighbour.block_id] - 1
                pairs.append(found)
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)


def merge_fragments(blocks: list[Block], scratch: Path, min_size_voxels: int, run: RunOptions, name: str) -> ComponentMap:
    """Pass 2: join fragments across block faces into objects, drop small ones and those
    without a seed, number the rest."""
    sizes, firsts, seeds, first_fragment, total = [], [], [], {}, 0
    for block in blocks:
        with np.load(_fragment_file(scratch, block)) as stored:
            sizes.append(stored["sizes"])
            firsts.append(stored["first"])
            seeds.append(stored["seeded"])
        first_fragment[block.block_id] = total
        total += len(sizes[-1])
    size = np.concatenate(sizes) if sizes else np.zeros(0, np.int64)
    first = np.concatenate(firsts) if firsts else np.zeros(0, np.int64)
    seeded = np.concatenate(seeds) if seeds else np.zeros(0, bool)
    by_offset = {block.write_roi.offset: block for block in blocks}
    found = run_blockwise(BlockwiseTask(name, blocks, partial(_face_pairs, scratch, first_fragment, by_offset)), run)
    pairs = np.concatenate([np.zeros((0, 2), np.int64), *found])
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(total, total))
    n_objects, component = connected_components(graph, directed=False)
    object_size = np.bincount(component, weights=size, minlength=n_objects).astype(np.int64)
    object_first = np.full(n_objects, np.iinfo(np.int64).max)
    np.minimum.at(object_first, component, first)
    object_seeded = np.bincount(component, weights=seeded, minlength=n_objects) > 0
    kept = np.flatnonzero((object_size >= max(min_size_voxels, 1)) & object_seeded)
    kept = kept[np.argsort(object_first[kept], kind="stable")]
    number = np.zeros(n_objects, np.int64)
    number[kept] = np.arange(1, len(kept) + 1)
    return ComponentMap(first_fragment, number[component], len(kept))
