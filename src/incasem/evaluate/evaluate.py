"""Blockwise evaluation of a prediction against labels: voxel scores, threshold sweeps, instances.

Everything is counted block by block and summed, so memory stays bounded by one block
(plus, for instances, a few numbers per object) whatever the region; the sums equal a
straightforward whole-volume computation with :mod:`incasem.evaluate.metrics`.

Per organelle (class id of the labels), two regions:

- ``plain``: every voxel of the region (inside the cell mask, if one is given);
- ``exclusion_zone``: inside the cell mask and the metric masks, which leave out a
  band around each labelled object's boundary (``incasem metric-mask``).

Partial labels count only where they are labelled: with labelled masks
(``volumes/labelled/<organelle>``, found beside the labels by default) both regions
leave out every voxel that a labelled mask marks 0.

The prediction is a segmentation (class ids; ``segmentation`` of a prediction group)
or probability maps (``prob_maps/class_<c>``): scored at a threshold (default 0.5),
and with ``sweep`` at every threshold k/1000, giving the best threshold and the
average precision. Instances are the 6-connected components of the prediction and
of the labels over the whole region (blockwise, exact across blocks:
:mod:`incasem.postprocess.components`), matched one-to-one at IoU thresholds inside
the cell mask; their scratch files live in a temporary folder (``scratch_dir``).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from incasem.blockwise import (
    Block,
    BlockwiseTask,
    RunOptions,
    check_run,
    plan_blocks,
    run_blockwise,
)
from incasem.errors import (
    DatasetMismatchError,
    DatasetNotFoundError,
    InvalidValueError,
    RoiError,
    option,
)
from incasem.evaluate.metrics import (
    ConfusionCounts,
    ProbabilityHistogram,
    confusion_counts,
    match_instances,
)
from incasem.geometry import Roi, Triple, as_positive_triple, check_not_empty
from incasem.io.data_config import LabelSource, RoiEntry
from incasem.io.defaults import default_labelled_masks, default_labels, default_metric_masks
from incasem.io.layout import PROB_MAPS, organelle_of, probability_map, segmentation_of
from incasem.io.volume import Volume, dataset_exists, open_volume
from incasem.postprocess.components import (
    ComponentMap,
    label_fragments,
    merge_fragments,
)
from incasem.postprocess.foreground import Foreground, foreground_of

#: Block edge (voxels) of evaluation reads.
EVALUATION_BLOCK = (128, 128, 128)

#: The two regions scores are given for.
REGIONS = ("plain", "exclusion_zone")


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


def _inside(volumes: Sequence[Volume], roi: Roi) -> np.ndarray:
    inside = np.ones(roi.shape, dtype=bool)
    for volume in volumes:
        inside &= volume.read(roi) != 0
    return inside


@dataclass(frozen=True)
class Reference:
    """The opened labels (with their class ids), cell mask, metric masks and labelled masks of a region."""

    labels: tuple[tuple[Volume, int], ...]
    mask: Volume | None = None
    metric_masks: tuple[Volume, ...] = ()
    labelled: tuple[Volume, ...] = ()

    @classmethod
    def of(cls, container: Path, labels: Sequence[LabelSource], mask: str | None, metric_masks: Sequence[str], labelled: Sequence[str] = ()) -> Reference:
        """Open the labels, the cell mask, the metric masks and the labelled masks of ``container``."""
        return cls(
            labels=tuple((open_volume(container, label.dataset), label.class_id) for label in labels),
            mask=None if mask is None else open_volume(container, mask),
            metric_masks=tuple(open_volume(container, name) for name in metric_masks),
            labelled=tuple(open_volume(container, name) for name in labelled),
        )

    @classmethod
    def open(cls, entry: RoiEntry) -> Reference:
        """Open a data-config entry's labels, cell mask, metric masks and labelled mask."""
        return cls.of(entry.container, entry.labels, entry.mask, entry.metric_masks, () if entry.labelled is None else (entry.labelled,))

    def scored(self, roi: Roi) -> np.ndarray:
        """Where voxels count over ``roi`` (bool): inside the cell mask and labelled."""
        return _inside(([] if self.mask is None else [self.mask]) + list(self.labelled), roi)

    def labelled_boxes(self, roi: Roi, merge_gap: int = 0) -> list[Roi]:
        """The parts of ``roi`` worth predicting for a score: ``[roi]`` for fully labelled data; with
        partial labels each run of sections (z) holding labelled voxels, cut to the y-x box of its
        labelled voxels (a labelled section costs a thin slab, not the region). Runs less than
        ``merge_gap`` sections apart are one box (for a network, whose context makes two thin
        slabs cost more than one slab across both when they are close)."""
        if not self.labelled:
            return [roi]
        labelled = _inside(self.labelled, roi)
        sections = np.flatnonzero(labelled.any(axis=(1, 2)))
        boxes = []
        for run in np.split(sections, np.flatnonzero(np.diff(sections) > max(merge_gap, 1)) + 1) if sections.size else []:
            part = labelled[run[0] : run[-1] + 1]
            rows, columns = np.flatnonzero(part.any(axis=(0, 2))), np.flatnonzero(part.any(axis=(0, 1)))
            start = (int(run[0]), int(rows[0]), int(columns[0]))
            shape = (int(run[-1] - run[0] + 1), int(rows[-1] - rows[0] + 1), int(columns[-1] - columns[0] + 1))
            boxes.append(Roi(roi.offset, shape).shift(start))
        return boxes

    def read_regions(self, roi: Roi) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Class ids (:func:`class_targets`), where voxels count (:meth:`scored`), and there ∧ metric masks (bool) over ``roi``."""
        target = class_targets([(volume.read(roi), c) for volume, c in self.labels], roi.shape)
        cell = self.scored(roi)
        return target, cell, cell & _inside(self.metric_masks, roi)

    def read(self, roi: Roi) -> tuple[np.ndarray, np.ndarray]:
        """Class ids and where to count (inside every mask) over ``roi``."""
        target, _, inside = self.read_regions(roi)
        return target, inside


@dataclass(frozen=True)
class EvaluationOptions:
    """What to compute; validated on construction.

    Attributes
    ----------
    threshold
        Probability from which a voxel counts as organelle (probability maps), in [0, 1];
        ``None``: the prediction's segmentation where it has one, else 0.5.
    sweep
        Also score every threshold k/``bins``: best threshold and average precision
        (needs probability maps).
    instances
        Also match instances at each of ``iou_thresholds``.
    iou_thresholds
        Least IoU of a matched pair of instances, each in (0, 1].
    min_size_voxels
        Predicted instances smaller than this are dropped before matching.
    bins
        Probability bins of the sweep.
    scratch_dir
        Folder for the instances' scratch files (a temporary folder inside it; on a
        Dask cluster it must be shared by the workers); ``None``: the system's.
    block_voxels
        Block shape of the reads (memory ~ 30 bytes per voxel of a block).
    """

    threshold: float | None = None
    sweep: bool = False
    instances: bool = False
    iou_thresholds: tuple[float, ...] = (0.5, 0.75)
    min_size_voxels: int = 0
    bins: int = 1000
    scratch_dir: Path | None = None
    block_voxels: Triple = EVALUATION_BLOCK

    def __post_init__(self) -> None:
        t = self.threshold
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 1):
            raise InvalidValueError(f"{option('threshold', '--threshold')} must be a probability in [0, 1], got {t!r}")
        if not self.iou_thresholds or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1 for v in self.iou_thresholds):
            raise InvalidValueError(f"{option('iou_thresholds', '--iou')} must be IoU thresholds in (0, 1], got {list(self.iou_thresholds)!r}")
        size = self.min_size_voxels
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidValueError(f"{option('min_size_voxels', '--min-size')} must be a whole number of voxels, at least 0, got {size!r}")
        if isinstance(self.bins, bool) or not isinstance(self.bins, int) or not 2 <= self.bins <= 100_000:
            raise InvalidValueError(f"bins must be a whole number from 2 to 100000, got {self.bins!r}")
        if self.scratch_dir is not None and not Path(self.scratch_dir).is_dir():
            raise InvalidValueError(f"{option('scratch_dir', '--scratch')} {self.scratch_dir} is not a folder: give an existing folder for temporary files")
        object.__setattr__(self, "block_voxels", as_positive_triple(self.block_voxels, "block_voxels"))


@dataclass(frozen=True)
class RegionScores:
    """Scores of one organelle in one region: at the threshold, and from the sweep if asked."""

    counts: ConfusionCounts
    histogram: ProbabilityHistogram | None = None

    def best(self) -> tuple[float, ConfusionCounts] | None:
        """The threshold of highest F1 and its counts (``None`` without a sweep or labels)."""
        if self.histogram is None or not self.histogram.positives.sum():
            return None
        threshold = self.histogram.best_threshold()
        return threshold, self.histogram.counts_at(threshold)

    def to_json(self) -> dict[str, Any]:
        """Counts and scores; with a sweep also ``best_threshold``, ``best`` scores, ``average_precision``."""
        result: dict[str, Any] = self.counts.to_json()
        best = self.best()
        if best is not None and self.histogram is not None:  # best() is None without a histogram
            ap = self.histogram.average_precision()
            result.update(best_threshold=round(best[0], 6), best=best[1].to_json(), average_precision=None if math.isnan(ap) else ap)
        return result


@dataclass(frozen=True)
class InstanceScores:
    """Instances matched at one IoU threshold: tp = matched pairs, fp / fn = unmatched predicted / true ones."""

    iou_threshold: float
    counts: ConfusionCounts
    predicted: int
    true: int

    def to_json(self) -> dict[str, Any]:
        """Counts and precision / recall / F1 of instances."""
        scores = {k: None if math.isnan(v) else v for k, v in self.counts.scores().items() if k != "iou"}
        return {"iou_threshold": self.iou_threshold, **scores, "matched": self.counts.tp, "predicted": self.predicted, "true": self.true}


@dataclass(frozen=True)
class ClassEvaluation:
    """Everything measured for one organelle."""

    name: str
    class_id: int
    regions: dict[str, RegionScores]
    instances: tuple[InstanceScores, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Scores per region and instance scores."""
        result: dict[str, Any] = {"class_id": self.class_id, **{k: v.to_json() for k, v in self.regions.items()}}
        if self.instances:
            result["instances"] = [scores.to_json() for scores in self.instances]
        return result


@dataclass(frozen=True)
class Evaluation:
    """The evaluation of a prediction over a region, per organelle."""

    container: Path
    prediction: str
    roi: Roi
    source: str
    classes: tuple[ClassEvaluation, ...] = field(default_factory=tuple)
    labelled: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Strict JSON (undefined scores are ``null``)."""
        return {
            "container": str(self.container),
            "prediction": self.prediction,
            "scored": self.source,
            "labelled": list(self.labelled),
            "roi": {"offset": list(self.roi.offset), "shape": list(self.roi.shape)},
            "classes": {c.name: c.to_json() for c in self.classes},
        }


@dataclass(frozen=True)
class _Predicted:
    """Per class id, the foreground rule of the prediction, and its probabilities for a sweep."""

    foregrounds: dict[int, Foreground]
    probabilities: dict[int, Foreground]
    source: str


def resolve_prediction(container: Path, prediction: str, class_ids: Sequence[int], options: EvaluationOptions) -> _Predicted:
    """What counts as predicted organelle, per class: from a prediction group or one dataset."""
    group = prediction.rstrip("/")
    if dataset_exists(container, segmentation_of(group)):
        probabilities = {c: probability_map(group, c) for c in class_ids if dataset_exists(container, probability_map(group, c))}
        if options.sweep or options.threshold is not None:
            missing = [c for c in class_ids if c not in probabilities]
            if missing:
                raise DatasetNotFoundError(
                    f"{container}/{group} has no probability map for class {missing[0]} ({probability_map(group, missing[0])}): "
                    f"{option('threshold', '--threshold')} and {option('sweep', '--sweep')} need one; leave them out to score the segmentation"
                )
        maps = {c: foreground_of(container, d, kind="probabilities", threshold=options.threshold or 0.5) for c, d in probabilities.items()}
        if options.threshold is not None:
            return _Predicted(maps, maps if options.sweep else {}, f"{group}/{PROB_MAPS} ≥ {options.threshold:g}")
        segmentation = {c: foreground_of(container, segmentation_of(group), kind="segmentation", class_id=c) for c in class_ids}
        return _Predicted(segmentation, maps if options.sweep else {}, segmentation_of(group))
    single = foreground_of(container, prediction, threshold=0.5 if options.threshold is None else options.threshold)
    if single.kind == "probabilities":
        if len(class_ids) != 1:
            raise InvalidValueError(
                f"{container}/{prediction} is one probability map but the labels have {len(class_ids)} classes: "
                "evaluate one organelle at a time, or give a prediction group"
            )
        return _Predicted({class_ids[0]: single}, {class_ids[0]: single} if options.sweep else {}, f"{prediction} ≥ {single.threshold:g}")
    if options.sweep:
        raise InvalidValueError(f"{container}/{prediction} is a segmentation: {option('sweep', '--sweep')} needs a probability map")
    by_class = {c: Foreground(single.container, single.dataset, "segmentation", class_id=c if len(class_ids) > 1 else None) for c in class_ids}
    return _Predicted(by_class, {}, prediction)


@dataclass(frozen=True)
class _BlockSources:
    predicted: dict[int, Any]
    probabilities: dict[int, Volume]
    reference: Reference


def _open_block_sources(
    predicted: _Predicted, container: Path, labels: tuple[LabelSource, ...], mask: str | None, metric_masks: tuple[str, ...], labelled: tuple[str, ...]
) -> _BlockSources:
    return _BlockSources(
        {c: f.open() for c, f in predicted.foregrounds.items()},
        {c: open_volume(f.container, f.dataset) for c, f in predicted.probabilities.items()},
        Reference.of(container, labels, mask, metric_masks, labelled),
    )


def _score_block(bins: int, block: Block, sources: _BlockSources) -> dict[int, dict[str, tuple]]:
    roi = block.write_roi
    target, cell, zone = sources.reference.read_regions(roi)
    result = {}
    for c, read in sources.predicted.items():
        predicted, truth = read(roi), target == c
        probabilities = sources.probabilities[c].read(roi) if c in sources.probabilities else None
        result[c] = {
            region: (
                confusion_counts(predicted, truth, inside),
                None if probabilities is None else ProbabilityHistogram.from_arrays(probabilities, truth, inside, bins),
            )
            for region, inside in zip(REGIONS, (cell, zone))
        }
    return result


def _check_geometry(container: Path, datasets: Sequence[str], roi: Roi | None) -> Roi:
    """Same voxel size for all datasets; the region (default: where all overlap) inside each of them."""
    volumes = [open_volume(container, name) for name in datasets]
    first = volumes[0]
    for volume in volumes[1:]:
        if volume.voxel_size != first.voxel_size:
            raise DatasetMismatchError(
                f"{volume.label} has voxel size {list(volume.voxel_size)} nm but {first.label} has "
                f"{list(first.voxel_size)} nm: evaluate datasets of one voxel size"
            )
    if roi is None:
        roi = first.roi
        for volume in volumes[1:]:
            roi = roi.intersect(volume.roi)
        if roi.empty:
            listing = ", ".join(f"{v.name} {v.roi}" for v in volumes)
            raise RoiError(
                f"the prediction and the labels do not overlap ({listing}): the region to evaluate is empty; give labels and masks that cover the prediction"
            )
        return roi
    check_not_empty(roi)
    for volume in volumes:
        if not volume.roi.contains(roi):
            raise RoiError(f"region {roi} (voxels) reaches outside {volume.label}, which covers {volume.roi}: choose a region inside it")
    return roi


def _components(foreground: Foreground, blocks: list[Block], roi: Roi, scratch: Path, min_size: int, run: RunOptions) -> ComponentMap:
    label_fragments(blocks, roi, scratch, foreground.open, run, f"instances of {foreground.dataset}")
    return merge_fragments(blocks, scratch, min_size, run, f"join instances of {foreground.dataset}")


def _overlap_block(maps: tuple[ComponentMap, ComponentMap], block: Block, state: tuple) -> tuple[np.ndarray, ...]:
    """Sizes inside the cell mask (and the labelled voxels) of the block's predicted and true instances, and their overlaps."""
    read_predicted, read_true, reference = state
    roi = block.write_roi
    cell = reference.scored(roi)
    predicted = np.where(cell, maps[0].labels(block, read_predicted(roi)), 0)
    true = np.where(cell, maps[1].labels(block, read_true(roi)), 0)
    both = (predicted != 0) & (true != 0)
    pairs, shared = np.unique(np.stack([predicted[both], true[both]]), axis=1, return_counts=True)
    return (*np.unique(predicted[predicted != 0], return_counts=True), *np.unique(true[true != 0], return_counts=True), pairs, shared)


def _open_instance_sources(predicted: Foreground, true: Foreground, reference: Reference) -> tuple:
    return predicted.open(), true.open(), reference


def _match(maps: tuple[ComponentMap, ComponentMap], parts: list[tuple[np.ndarray, ...]], thresholds: Sequence[float]) -> tuple[InstanceScores, ...]:
    pred_sizes = np.zeros(maps[0].count + 1, np.int64)
    true_sizes = np.zeros(maps[1].count + 1, np.int64)
    pairs, shared = [np.zeros((2, 0), np.uint64)], [np.zeros(0, np.int64)]
    for pred_ids, pred_counts, true_ids, true_counts, block_pairs, block_shared in parts:
        np.add.at(pred_sizes, pred_ids.astype(np.int64), pred_counts)
        np.add.at(true_sizes, true_ids.astype(np.int64), true_counts)
        pairs.append(block_pairs)
        shared.append(block_shared)
    all_pairs, inverse = np.unique(np.concatenate(pairs, axis=1), axis=1, return_inverse=True)
    intersections = np.bincount(inverse.ravel(), weights=np.concatenate(shared), minlength=all_pairs.shape[1]).astype(np.int64)
    p, t = all_pairs.astype(np.int64)
    return tuple(
        InstanceScores(
            thr, match_instances(pred_sizes, true_sizes, p, t, intersections, thr), int(np.count_nonzero(pred_sizes[1:])), int(np.count_nonzero(true_sizes[1:]))
        )
        for thr in thresholds
    )


def _instance_scores(
    container: Path, predicted: Foreground, labels: LabelSource, reference: Reference, roi: Roi, options: EvaluationOptions, run: RunOptions
) -> tuple[InstanceScores, ...]:
    blocks = plan_blocks(roi, options.block_voxels, (0, 0, 0), roi.offset)
    true = Foreground(container, labels.dataset, "segmentation")
    with tempfile.TemporaryDirectory(prefix="incasem-evaluate-", dir=options.scratch_dir) as scratch:
        maps = (
            _components(predicted, blocks, roi, Path(scratch) / "predicted", options.min_size_voxels, run),
            _components(true, blocks, roi, Path(scratch) / "true", 0, run),
        )
        task = BlockwiseTask(
            f"match instances of {labels.dataset}",
            blocks,
            partial(_overlap_block, maps),
            partial(_open_instance_sources, predicted, true, reference),
        )
        return _match(maps, run_blockwise(task, run), options.iou_thresholds)


def evaluate(
    container: str | Path,
    prediction: str,
    labels: Sequence[LabelSource] | None = None,
    *,
    mask: str | None = None,
    metric_masks: Sequence[str] | None = None,
    labelled: Sequence[str] | None = None,
    roi: Roi | None = None,
    options: EvaluationOptions = EvaluationOptions(),
    run: RunOptions = RunOptions(),
) -> Evaluation:
    """Evaluate ``prediction`` against ``labels`` of ``container`` over ``roi``.

    Parameters
    ----------
    container
        The .zarr container holding prediction, labels and masks.
    prediction
        A prediction group (``volumes/predictions/<model>/<id>``: its segmentation, and
        its ``prob_maps`` for thresholds and sweeps), a segmentation dataset (class
        ids, or 0 / non-zero for one organelle) or one probability map.
    labels
        Labels datasets with the class id each stands for (1..K); default: every labels
        dataset of the container (:func:`incasem.io.defaults.default_labels`), class ids
        1.. in that order.
    mask, metric_masks
        Cell mask (counts everywhere in it) and metric masks (the exclusion zone); metric
        masks default to ``volumes/metric_masks/<organelle>`` of each labels dataset where
        it exists (:func:`incasem.io.defaults.default_metric_masks`), ``()`` for none.
    labelled
        Labelled masks of partial labels (AND-combined; voxels outside them count
        nowhere); default ``volumes/labelled/<organelle>`` of each labels dataset where it
        exists (:func:`incasem.io.defaults.default_labelled_masks`), ``()`` for none.
    roi
        Region in voxels on the world grid; default: where all datasets overlap.
    options, run
        What to compute (:class:`EvaluationOptions`) and how to run (:class:`~incasem.blockwise.RunOptions`).

    Raises
    ------
    IncasemError
        One line naming the dataset or option at fault: a missing dataset (with those
        that exist), different voxel sizes, no overlap, probabilities outside [0, 1].
    """
    check_run(run)
    container = Path(container)
    if labels is None:
        labels = tuple(LabelSource(dataset, number) for number, dataset in enumerate(default_labels(container), start=1))
    labels = tuple(labels)
    if not labels:
        raise InvalidValueError("no labels to evaluate against: name a labels dataset (e.g. volumes/labels/mito)")
    if metric_masks is None:
        metric_masks = default_metric_masks(container, [label.dataset for label in labels])
    metric_masks = tuple(metric_masks)
    if labelled is None:
        labelled = default_labelled_masks(container, [label.dataset for label in labels])
    labelled = tuple(labelled)
    class_ids = sorted({label.class_id for label in labels})
    predicted = resolve_prediction(container, prediction, class_ids, options)
    datasets = [f.dataset for f in predicted.foregrounds.values()] + [label.dataset for label in labels]
    datasets += [f.dataset for f in predicted.probabilities.values()] + [n for n in (mask, *metric_masks, *labelled) if n]
    roi = _check_geometry(container, datasets, roi)
    task = BlockwiseTask(
        f"evaluate {prediction}",
        plan_blocks(roi, options.block_voxels, (0, 0, 0), roi.offset),
        partial(_score_block, options.bins),
        partial(_open_block_sources, predicted, container, labels, mask, metric_masks, labelled),
    )
    sums: dict[int, dict[str, list]] = {c: {r: [ConfusionCounts(), None] for r in REGIONS} for c in class_ids}
    for block_result in run_blockwise(task, run):
        for c, regions in block_result.items():
            for region, (counts, histogram) in regions.items():
                total = sums[c][region]
                total[0] = total[0] + counts
                total[1] = histogram if total[1] is None else total[1] + histogram
    reference = Reference.of(container, labels, mask, metric_masks, labelled)
    classes = []
    for label in sorted(labels, key=lambda item: item.class_id):
        c = label.class_id
        regions = {r: RegionScores(*sums[c][r]) for r in REGIONS if r == "plain" or metric_masks}
        instances = _instance_scores(container, predicted.foregrounds[c], label, reference, roi, options, run) if options.instances else ()
        classes.append(ClassEvaluation(organelle_of(label.dataset), c, regions, instances))
    return Evaluation(container, prediction, roi, predicted.source, tuple(classes), labelled)


def evaluate_entry(entry: RoiEntry, prediction: str, options: EvaluationOptions = EvaluationOptions(), run: RunOptions = RunOptions()) -> Evaluation:
    """:func:`evaluate` over a data-config entry's region, labels, mask and metric masks."""
    return evaluate(
        entry.container,
        prediction,
        entry.labels,
        mask=entry.mask,
        metric_masks=entry.metric_masks,
        labelled=_labelled(entry),
        roi=entry.roi,
        options=options,
        run=run,
    )


def _labelled(entry: RoiEntry) -> tuple[str, ...]:
    return () if entry.labelled is None else (entry.labelled,)


def evaluate_segmentation(container: str | Path, segmentation: str, entry: RoiEntry, run: RunOptions = RunOptions()) -> dict[int, ConfusionCounts]:
    """Confusion counts per class id of segmentation dataset ``segmentation`` over ``entry``'s region,
    inside its mask ∧ metric masks (what ``incasem predict`` reports)."""
    result = evaluate(
        container, segmentation, entry.labels, mask=entry.mask, metric_masks=entry.metric_masks, labelled=_labelled(entry), roi=entry.roi, run=run
    )
    region = "exclusion_zone" if entry.metric_masks else "plain"
    return {c.class_id: c.regions[region].counts for c in result.classes}
