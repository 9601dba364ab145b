"""Segmentation metrics of a binary organelle prediction, additive over blocks.

Everything is evaluated only inside a mask (pass ``mask & metric_mask``; ``None``
means everywhere). Labels and predictions are binary: non-zero = organelle.

The semantic scores come from :class:`ConfusionCounts`, and average precision from
:class:`ProbabilityHistogram`; both add up (``+``, ``sum(parts, ConfusionCounts())``),
so a blockwise evaluation counts each block and sums, with the same result as one
pass over the whole volume and memory bounded by the block.

Undefined ratios are ``nan``: a score whose denominator is zero (precision with
nothing predicted, recall with nothing labelled, F1 and IoU with neither) is
``nan``, not 0 or 1, so an empty region never looks perfect or failed. The original
incasem reported F1 (Dice, from ``scipy.spatial.distance.dice``) as ``nan`` in that
case too, but IoU as 1.0 and precision/recall as 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from skimage.segmentation import relabel_sequential

from incasem.io.layout import decode_probability

#: Default number of equal-width probability bins of a :class:`ProbabilityHistogram`.
DEFAULT_BINS = 1000


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")


@dataclass(frozen=True)
class ConfusionCounts:
    """Voxel counts of a binary prediction against labels (organelle = positive).

    Counts add up: ``a + b`` is the count over the union of two disjoint regions.
    ``ConfusionCounts()`` is zero, the start value for ``sum``.

    Attributes
    ----------
    tp, fp, fn, tn
        True positives, false positives, false negatives, true negatives (voxels).
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: ConfusionCounts) -> ConfusionCounts:
        if not isinstance(other, ConfusionCounts):
            return NotImplemented
        return ConfusionCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @property
    def precision(self) -> float:
        """tp / (tp + fp); ``nan`` when nothing is predicted."""
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        """tp / (tp + fn); ``nan`` when nothing is labelled."""
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        """F1 = Dice = 2 tp / (2 tp + fp + fn); ``nan`` when nothing is predicted or labelled."""
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def iou(self) -> float:
        """IoU = Jaccard = tp / (tp + fp + fn); ``nan`` when nothing is predicted or labelled."""
        return _ratio(self.tp, self.tp + self.fp + self.fn)

    def scores(self) -> dict[str, float]:
        """``f1``, ``iou``, ``precision`` and ``recall`` by name."""
        return {"f1": self.f1, "iou": self.iou, "precision": self.precision, "recall": self.recall}

    def to_json(self) -> dict[str, int | float | None]:
        """Scores and counts as strict JSON values: an undefined score is ``None`` (``null``), never NaN."""
        scores = {name: None if math.isnan(value) else value for name, value in self.scores().items()}
        return {**scores, "tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn}

    def undefined(self) -> list[str]:
        """Why each undefined score is undefined, e.g. ``"precision (nothing predicted)"``."""
        reasons = {
            "precision": (self.tp + self.fp == 0, "nothing predicted"),
            "recall": (self.tp + self.fn == 0, "nothing labelled"),
            "f1": (self.tp + self.fp + self.fn == 0, "nothing predicted or labelled"),
            "iou": (self.tp + self.fp + self.fn == 0, "nothing predicted or labelled"),
        }
        return [f"{name} ({why})" for name, (is_undefined, why) in reasons.items() if is_undefined]


def _same_shape(first: NDArray, second: NDArray, names: tuple[str, str]) -> None:
    if first.shape != second.shape:
        raise ValueError(f"{names[0]} has shape {first.shape} but {names[1]} has shape {second.shape}")


def _inside(mask: ArrayLike | None, labels: NDArray) -> NDArray[np.bool_] | None:
    """The mask as booleans (non-zero = inside), checked against the labels' shape."""
    if mask is None:
        return None
    inside = np.asarray(mask) != 0
    _same_shape(inside, labels, ("mask", "labels"))
    return inside


def confusion_counts(prediction: ArrayLike, labels: ArrayLike, mask: ArrayLike | None = None) -> ConfusionCounts:
    """Count true/false positives/negatives of a binary prediction inside a mask.

    Parameters
    ----------
    prediction
        Predicted segmentation, non-zero = organelle.
    labels
        Ground truth, non-zero = organelle (any integer dtype).
    mask
        Where to count, non-zero = inside (e.g. ``mask & metric_mask``); ``None``:
        everywhere. Same shape as ``labels``.
    """
    pred, truth = np.asarray(prediction) != 0, np.asarray(labels) != 0
    _same_shape(pred, truth, ("prediction", "labels"))
    inside = _inside(mask, truth)
    codes = 2 * truth.astype(np.uint8) + pred
    tn, fp, fn, tp = np.bincount((codes if inside is None else codes[inside]).ravel(), minlength=4)
    return ConfusionCounts(int(tp), int(fp), int(fn), int(tn))


def scores_from_probabilities(probabilities: ArrayLike, labels: ArrayLike, mask: ArrayLike | None = None, threshold: float = 0.5) -> ConfusionCounts:
    """Counts of the prediction ``probabilities >= threshold`` (as the original thresholds).

    Parameters
    ----------
    probabilities
        Organelle probability per voxel: floats in [0, 1], or uint8 0..255 (read as /255).
    labels, mask
        As for :func:`confusion_counts`.
    threshold
        Probability from which a voxel counts as organelle, in [0, 1].
    """
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    return confusion_counts(decode_probability(probabilities) >= threshold, labels, mask)


@dataclass(frozen=True)
class ProbabilityHistogram:
    """Histograms of the predicted probability of labelled and unlabelled voxels.

    With ``bins`` equal-width bins over [0, 1] (the last one closed), it gives the
    counts at every threshold ``k / bins``, the precision-recall curve and average
    precision, in memory independent of the volume size. Histograms of blocks add up.

    Attributes
    ----------
    positives, negatives
        Voxel counts per probability bin, of voxels labelled organelle / not (inside the mask).
    """

    positives: NDArray[np.int64]
    negatives: NDArray[np.int64]

    def __post_init__(self) -> None:
        for name in ("positives", "negatives"):
            counts = np.array(getattr(self, name), dtype=np.int64)
            counts.flags.writeable = False
            object.__setattr__(self, name, counts)
        if self.positives.shape != self.negatives.shape or self.positives.ndim != 1:
            raise ValueError(f"positives {self.positives.shape} and negatives {self.negatives.shape} must be 1D and alike")

    @classmethod
    def from_arrays(cls, probabilities: ArrayLike, labels: ArrayLike, mask: ArrayLike | None = None, bins: int = DEFAULT_BINS) -> ProbabilityHistogram:
        """Histogram of one block: probabilities (floats in [0, 1] or uint8 0..255), labels, mask."""
        values, truth = decode_probability(probabilities), np.asarray(labels) != 0
        _same_shape(values, truth, ("probabilities", "labels"))
        inside = _inside(mask, truth)
        selected = truth if inside is None else truth & inside
        rest = ~truth if inside is None else ~truth & inside
        positives, _ = np.histogram(values[selected], bins=bins, range=(0.0, 1.0))
        negatives, _ = np.histogram(values[rest], bins=bins, range=(0.0, 1.0))
        return cls(positives, negatives)

    def __add__(self, other: ProbabilityHistogram) -> ProbabilityHistogram:
        if not isinstance(other, ProbabilityHistogram):
            return NotImplemented
        if other.bins != self.bins:
            raise ValueError(f"cannot add histograms of {self.bins} and {other.bins} bins")
        return ProbabilityHistogram(self.positives + other.positives, self.negatives + other.negatives)

    @property
    def bins(self) -> int:
        """Number of probability bins."""
        return len(self.positives)

    @property
    def thresholds(self) -> NDArray[np.float64]:
        """The thresholds ``k / bins``, k = 0 .. bins - 1, ascending (the lower bin edges)."""
        return np.linspace(0.0, 1.0, self.bins + 1)[:-1]

    def _predicted(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """tp and fp at each threshold: positives and negatives in the bins from that threshold's on."""
        return np.cumsum(self.positives[::-1])[::-1], np.cumsum(self.negatives[::-1])[::-1]

    def counts_at(self, threshold: float) -> ConfusionCounts:
        """Counts of the prediction ``probability >= threshold``; ``threshold`` must be one of :attr:`thresholds`."""
        k = round(threshold * self.bins)
        if not (0 <= k < self.bins and np.isclose(k / self.bins, threshold)):
            raise ValueError(f"threshold {threshold} is not a multiple of 1/{self.bins} in [0, 1)")
        tp, fp = (int(c[k]) for c in self._predicted())
        return ConfusionCounts(tp, fp, int(self.positives.sum()) - tp, int(self.negatives.sum()) - fp)

    def precision_recall_curve(self) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Precision, recall and their thresholds (ascending), one value per bin.

        Precision is ``nan`` where nothing reaches the threshold; recall is ``nan``
        everywhere if nothing is labelled.
        """
        tp, fp = self._predicted()
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = tp / (tp + fp)
            recall = tp / self.positives.sum()
        return precision, recall, self.thresholds

    def best_threshold(self) -> float:
        """The threshold of highest F1 (the lowest of ties); 0 when F1 is undefined everywhere."""
        tp, fp = self._predicted()
        fn = self.positives.sum() - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = 2 * tp / (2 * tp + fp + fn)
        return float(self.thresholds[np.nanargmax(f1)]) if not np.all(np.isnan(f1)) else 0.0

    def average_precision(self) -> float:
        """Average precision: sum over thresholds (descending) of precision x recall gained.

        The step-wise definition of scikit-learn's ``average_precision_score`` (which
        the original used), over the bin thresholds. It is exact when no bin holds two
        different probabilities (uint8 maps with 1000 bins, for instance); otherwise
        ties within a bin make it an approximation to the bin width. ``nan`` if
        nothing is labelled.
        """
        precision, recall, _ = self.precision_recall_curve()
        if not self.positives.sum():
            return float("nan")
        gained = -np.diff(recall, append=0.0)
        return float(np.sum(np.where(gained > 0, gained * precision, 0.0)))


def average_precision(probabilities: ArrayLike, labels: ArrayLike, mask: ArrayLike | None = None, bins: int = DEFAULT_BINS) -> float:
    """Average precision of ``probabilities`` against ``labels`` inside ``mask`` (see :class:`ProbabilityHistogram`)."""
    return ProbabilityHistogram.from_arrays(probabilities, labels, mask, bins).average_precision()


def _instances(segmentation: ArrayLike, name: str) -> NDArray[np.intp]:
    """Instance ids 1..n: boolean arrays are split into 6-connected components, ids are made consecutive."""
    values = np.asarray(segmentation)
    if values.dtype == np.bool_:
        return ndimage.label(values)[0].astype(np.intp, copy=False)
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{name} must be integer instance ids or a boolean mask, got dtype {values.dtype}")
    return relabel_sequential(values)[0].astype(np.intp, copy=False)


def instance_counts(pred_instances: ArrayLike, gt_instances: ArrayLike, iou_threshold: float = 0.5, mask: ArrayLike | None = None) -> ConfusionCounts:
    """Match predicted to true instances one-to-one; count matched and unmatched ones.

    Pairs with IoU >= ``iou_threshold`` are candidates; the matching maximises the
    summed IoU (Hungarian algorithm; for thresholds above 0.5 every candidate pair is
    matched). The result has tp = matched pairs, fp = unmatched predicted instances,
    fn = unmatched true instances and tn = 0 (only ``f1``, ``precision``, ``recall``
    are meaningful). Counts of separate volumes add up; counts of blocks of one
    volume do not (instances cross blocks).

    Parameters
    ----------
    pred_instances, gt_instances
        Instance ids (0 = background), or boolean masks (split into 6-connected components).
    iou_threshold
        Least IoU of a matched pair, in (0, 1].
    mask
        Where to evaluate (non-zero = inside); instances are cut to it. ``None``: everywhere.
    """
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must lie in (0, 1], got {iou_threshold}")
    pred, truth = _instances(pred_instances, "pred_instances"), _instances(gt_instances, "gt_instances")
    _same_shape(pred, truth, ("pred_instances", "gt_instances"))
    inside = _inside(mask, truth)
    if inside is not None:
        pred, truth = np.where(inside, pred, 0), np.where(inside, truth, 0)
    pred_sizes = np.bincount(pred.ravel())
    true_sizes = np.bincount(truth.ravel())
    overlap = (pred != 0) & (truth != 0)
    pairs, intersection = np.unique(pred[overlap] * len(true_sizes) + truth[overlap], return_counts=True)
    p, t = np.divmod(pairs, len(true_sizes))
    return match_instances(pred_sizes, true_sizes, p, t, intersection, iou_threshold)


def match_instances(
    pred_sizes: NDArray[np.integer],
    true_sizes: NDArray[np.integer],
    pred_ids: NDArray[np.integer],
    true_ids: NDArray[np.integer],
    intersections: NDArray[np.integer],
    iou_threshold: float,
) -> ConfusionCounts:
    """Instance counts from sizes and overlaps (see :func:`instance_counts`); what a blockwise evaluation sums up.

    ``pred_sizes[i]`` / ``true_sizes[j]``: voxels of predicted instance i / true
    instance j (index 0 = background, ignored; a size of 0 means no such instance);
    ``intersections[k]``: voxels shared by ``pred_ids[k]`` and ``true_ids[k]`` (each
    pair once, ids ≥ 1).
    """
    n_pred, n_true = int(np.count_nonzero(pred_sizes[1:])), int(np.count_nonzero(true_sizes[1:]))
    p, t = np.asarray(pred_ids, np.int64), np.asarray(true_ids, np.int64)
    iou = intersections / (pred_sizes[p] + true_sizes[t] - intersections)
    keep = iou >= iou_threshold
    p, t, iou = p[keep], t[keep], iou[keep]
    rows, p = np.unique(p, return_inverse=True)
    cols, t = np.unique(t, return_inverse=True)
    weights = np.zeros((len(rows), len(cols)))
    weights[p, t] = iou
    matched_rows, matched_cols = linear_sum_assignment(weights, maximize=True)
    matched = int(np.count_nonzero(weights[matched_rows, matched_cols]))
    return ConfusionCounts(tp=matched, fp=n_pred - matched, fn=n_true - matched, tn=0)


def matched_instance_f1(pred_instances: ArrayLike, gt_instances: ArrayLike, iou_threshold: float = 0.5, mask: ArrayLike | None = None) -> float:
    """Instance F1: 2 matched / (predicted + true instances); see :func:`instance_counts`."""
    return instance_counts(pred_instances, gt_instances, iou_threshold, mask).f1
