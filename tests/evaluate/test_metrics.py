"""Metrics: hand-computed cases, independent numpy computations on real labels, additivity."""

import numpy as np
import pytest
from scipy import ndimage

from incasem.evaluate.metrics import (
    ConfusionCounts,
    ProbabilityHistogram,
    average_precision,
    confusion_counts,
    instance_counts,
    matched_instance_f1,
    scores_from_probabilities,
)
from incasem.geometry import Roi
from tests.helpers import LUCCHI, read_stack

SIX_CONNECTED = ndimage.generate_binary_structure(3, 1)


@pytest.fixture(scope="module")
def mito():
    """Real manual mitochondria labels (the whole Lucchi++ crop: 64 x 224 x 224): bool (z, y, x)."""
    return read_stack(LUCCHI / "labels" / "mito") != 0


@pytest.fixture(scope="module")
def crop(mito):
    return mito[:32]


def _metric_mask(labels, width):
    """The original's metric mask: NOT (dilate(labels) - erode(labels)), 6-connected."""
    grown = ndimage.binary_dilation(labels, SIX_CONNECTED, iterations=width)
    shrunk = ndimage.binary_erosion(labels, SIX_CONNECTED, iterations=width)
    return ~(grown & ~shrunk)


def test_hand_computed_counts_and_scores():
    prediction = np.array([1, 1, 1, 0, 0, 0, 1, 0], dtype=np.uint8)
    labels = np.array([1, 1, 0, 1, 0, 0, 7, 7], dtype=np.uint16)  # any non-zero label is organelle
    counts = confusion_counts(prediction, labels)
    assert counts == ConfusionCounts(tp=3, fp=1, fn=2, tn=2)
    assert counts.f1 == pytest.approx(6 / 9) and counts.iou == pytest.approx(3 / 6)
    assert counts.precision == pytest.approx(3 / 4) and counts.recall == pytest.approx(3 / 5)
    mask = np.array([1, 1, 0, 0, 1, 1, 255, 0], dtype=np.uint8)
    assert confusion_counts(prediction, labels, mask) == ConfusionCounts(tp=3, fp=0, fn=0, tn=2)


def test_undefined_scores_are_nan_not_zero_or_one():
    nothing = np.zeros((2, 3, 4), dtype=bool)
    empty = confusion_counts(nothing, nothing)
    assert empty == ConfusionCounts(tn=24)
    assert all(np.isnan(value) for value in empty.scores().values())
    missed = confusion_counts(nothing, ~nothing)
    assert np.isnan(missed.precision) and missed.recall == 0 and missed.f1 == 0 and missed.iou == 0
    assert confusion_counts(~nothing, ~nothing, mask=nothing) == ConfusionCounts()


def test_shape_mismatch_names_the_arguments():
    with pytest.raises(ValueError, match=r"prediction has shape \(3,\) but labels has shape \(4,\)"):
        confusion_counts(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="mask has shape"):
        confusion_counts(np.zeros(4), np.zeros(4), np.zeros(5))


def test_scores_on_real_labels_match_numpy_set_formulas(crop):
    """Prediction = labels eroded 3 times; evaluated inside cell mask AND metric mask (width 2)."""
    prediction = ndimage.binary_erosion(crop, SIX_CONNECTED, iterations=3)
    inside = _metric_mask(crop, 2)
    inside[:, :, :40] = False  # a "cell mask" that leaves out a slab
    a, b = crop[inside], prediction[inside]
    counts = confusion_counts(prediction, crop, inside)
    assert counts.f1 == pytest.approx(2 * np.sum(a & b) / (np.sum(a) + np.sum(b)), rel=1e-12)
    assert counts.iou == pytest.approx(np.sum(a & b) / np.sum(a | b), rel=1e-12)
    assert counts.precision == 1.0  # an eroded mask predicts nothing outside the labels
    assert counts.recall == pytest.approx(np.sum(b) / np.sum(a), rel=1e-12)
    assert counts.tp + counts.fp + counts.fn + counts.tn == np.count_nonzero(inside)
    assert 0.3 < counts.f1 < 1.0


def _blocks(shape, block_shape):
    return [roi.to_slices() for roi in Roi((0, 0, 0), shape).tiles(block_shape)]


def test_counts_and_histograms_add_up_over_blocks(crop):
    rng = np.random.default_rng(1)
    probabilities = np.clip(crop * 0.6 + rng.random(crop.shape, dtype=np.float32) * 0.5, 0, 1)
    mask = _metric_mask(crop, 1)
    blocks = _blocks(crop.shape, (16, 100, 70))  # uneven, border blocks clipped
    summed = sum((scores_from_probabilities(probabilities[s], crop[s], mask[s]) for s in blocks), ConfusionCounts())
    assert summed == scores_from_probabilities(probabilities, crop, mask)
    histograms = [ProbabilityHistogram.from_arrays(probabilities[s], crop[s], mask[s]) for s in blocks]
    total = histograms[0]
    for histogram in histograms[1:]:
        total = total + histogram
    whole = ProbabilityHistogram.from_arrays(probabilities, crop, mask)
    np.testing.assert_array_equal(total.positives, whole.positives)
    np.testing.assert_array_equal(total.negatives, whole.negatives)
    assert total.average_precision() == whole.average_precision()
    assert whole.counts_at(0.5) == summed


def test_threshold_is_inclusive_and_uint8_maps_are_read_as_fractions():
    probabilities = np.array([0.0, 0.49, 0.5, 0.51, 1.0])
    labels = np.array([0, 1, 1, 0, 1])
    assert scores_from_probabilities(probabilities, labels) == ConfusionCounts(tp=2, fp=1, fn=1, tn=1)
    as_uint8 = np.array([0, 125, 128, 130, 255], dtype=np.uint8)  # /255: 0, .490, .502, .510, 1
    assert scores_from_probabilities(as_uint8, labels) == ConfusionCounts(tp=2, fp=1, fn=1, tn=1)
    assert scores_from_probabilities(probabilities, labels, threshold=0.0).recall == 1


@pytest.mark.parametrize(
    ("probabilities", "message"),
    [(np.array([0.2, 1.5]), r"in \[0, 1\]"), (np.array([0.2, np.nan]), r"in \[0, 1\]"), (np.array([0, 1]), "dtype int64")],
)
def test_bad_probabilities_are_refused(probabilities, message):
    with pytest.raises(ValueError, match=message):
        scores_from_probabilities(probabilities, np.array([0, 1]))
    with pytest.raises(ValueError, match=message):
        average_precision(probabilities, np.array([0, 1]))


def _reference_average_precision(probabilities, labels):
    """Step-wise AP (scikit-learn's definition) by sorting: sum over distinct thresholds of recall gain x precision."""
    order = np.argsort(-probabilities.astype(np.float64), kind="stable")
    p, y = probabilities[order].astype(np.float64), labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(p)), len(p) - 1]
    tp = np.cumsum(y)[last_of_tie]
    fp = np.cumsum(~y)[last_of_tie]
    recall = tp / y.sum()
    precision = tp / (tp + fp)
    return float(np.sum(np.diff(np.r_[0, recall]) * precision))


def test_average_precision_hand_computed():
    probabilities = np.array([0.9, 0.8, 0.3, 0.1])
    labels = np.array([1, 0, 1, 0])
    assert average_precision(probabilities, labels) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_average_precision_matches_a_sorting_reference_on_real_labels(crop):
    """Probabilities at the centres of the 1000 bins, so the histogram loses nothing."""
    rng = np.random.default_rng(2)
    noisy = np.clip(0.35 * crop + rng.normal(0.3, 0.2, crop.shape), 0, 0.999)
    probabilities = (np.floor(noisy * 1000) + 0.5) / 1000
    mask = _metric_mask(crop, 2)
    expected = _reference_average_precision(probabilities[mask], crop[mask])
    assert average_precision(probabilities, crop, mask) == pytest.approx(expected, rel=1e-9)
    assert 0.2 < expected < 0.99
    as_uint8 = np.round(noisy * 255).astype(np.uint8)  # 256 levels, each in its own bin: exact too
    expected = _reference_average_precision(as_uint8[mask], crop[mask])
    assert average_precision(as_uint8, crop, mask) == pytest.approx(expected, rel=1e-9)


def test_average_precision_of_perfect_and_random_predictors(mito):
    assert average_precision(mito.astype(np.float32), mito) == 1.0
    random = np.random.default_rng(3).random(mito.shape, dtype=np.float32)
    assert average_precision(random, mito) == pytest.approx(mito.mean(), abs=0.005)
    assert average_precision(1 - mito.astype(np.float32), mito) == pytest.approx(mito.mean(), abs=1e-6)


def test_precision_recall_curve_ends(crop):
    probabilities = np.clip(crop * 0.5 + 0.25, 0, 1)
    precision, recall, thresholds = ProbabilityHistogram.from_arrays(probabilities, crop).precision_recall_curve()
    assert thresholds[0] == 0 and thresholds[500] == 0.5 and len(thresholds) == 1000
    assert recall[0] == 1 and precision[0] == pytest.approx(crop.mean())
    assert np.all(np.diff(recall) <= 0)
    assert precision[600] == 1 and recall[600] == 1
    assert np.isnan(precision[-1])  # nothing reaches 0.999


def test_histogram_guards():
    histogram = ProbabilityHistogram.from_arrays(np.array([0.2, 0.7]), np.array([0, 1]), bins=10)
    assert histogram.counts_at(0.5) == ConfusionCounts(tp=1, tn=1)
    with pytest.raises(ValueError, match="multiple of 1/10"):
        histogram.counts_at(0.55)
    with pytest.raises(ValueError, match="10 and 20 bins"):
        histogram + ProbabilityHistogram.from_arrays(np.array([0.2]), np.array([0]), bins=20)
    with pytest.raises(ValueError):
        histogram.positives[0] = 5  # read-only
    assert np.isnan(ProbabilityHistogram.from_arrays(np.array([0.2]), np.array([0])).average_precision())


def _line(*segments):
    """Instance ids along x of a (1, 1, 20) volume: segments (id, start, stop)."""
    ids = np.zeros((1, 1, 20), dtype=np.uint32)
    for instance, start, stop in segments:
        ids[0, 0, start:stop] = instance
    return ids


def test_instance_matching_hand_computed():
    truth = _line((1, 0, 10), (2, 10, 20))
    prediction = _line((5, 0, 9), (9, 10, 13))  # IoU 0.9 with 1; 0.3 with 2
    assert instance_counts(prediction, truth) == ConfusionCounts(tp=1, fp=1, fn=1)
    assert matched_instance_f1(prediction, truth) == pytest.approx(0.5)
    assert instance_counts(prediction, truth, iou_threshold=0.3) == ConfusionCounts(tp=2)
    assert np.isnan(matched_instance_f1(np.zeros((2, 2, 2), int), np.zeros((2, 2, 2), int)))


def test_instance_matching_is_optimal_not_greedy():
    """Greedy would match A with 1 (IoU .43) and leave B; the best one-to-one matching pairs A-2 and B-1."""
    truth = _line((1, 0, 10), (2, 10, 20))
    prediction = _line((7, 4, 14), (8, 0, 4))  # A = 7: IoU 6/14 with 1, 4/16 with 2; B = 8: IoU 4/10 with 1
    assert instance_counts(prediction, truth, iou_threshold=0.2) == ConfusionCounts(tp=2)


def test_instance_matching_labels_boolean_masks_and_cuts_to_mask():
    truth = _line((1, 0, 8), (1, 12, 20))  # one id, two pieces: ids are taken as given
    assert instance_counts(truth != 0, truth) == ConfusionCounts(tp=1, fp=1, fn=0)
    mask = np.ones_like(truth, dtype=bool)
    mask[..., 10:] = False
    assert instance_counts(truth != 0, truth, mask=mask) == ConfusionCounts(tp=1)


def _reference_instance_matches(prediction, truth, threshold):
    """For a threshold above 0.5 a match is unique: count true objects with a prediction of IoU >= threshold."""
    matches = 0
    for t_id in range(1, truth.max() + 1):
        t_mask = truth == t_id
        for p_id in np.unique(prediction[t_mask]):
            if p_id:
                p_mask = prediction == p_id
                if np.sum(p_mask & t_mask) / np.sum(p_mask | t_mask) >= threshold:
                    matches += 1
    return matches


def test_instance_matching_on_real_labels(mito):
    truth, n_true = ndimage.label(mito)
    prediction, n_pred = ndimage.label(ndimage.binary_erosion(mito, SIX_CONNECTED, iterations=2))
    matches = _reference_instance_matches(prediction, truth, 0.6)
    assert instance_counts(prediction, truth, 0.6) == ConfusionCounts(matches, n_pred - matches, n_true - matches)
    assert 0 < matches < n_true
    shuffled = np.where(truth > 0, truth * 1000 + 12345, 0).astype(np.uint64)  # ids need not be consecutive
    assert matched_instance_f1(prediction, shuffled, 0.6) == pytest.approx(2 * matches / (n_pred + n_true))
