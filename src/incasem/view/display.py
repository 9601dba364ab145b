"""How a dataset is drawn, whatever draws it: the rules the neuroglancer viewer and the napari plugin share.

A dataset's kind (:func:`incasem.io.layout.dataset_kind`) says whether it is drawn as grey
levels, a heat map of probabilities or coloured segments. This module adds the display
range of images and heat maps (:func:`display_range`, without reading more than a small
sample) and the colour of segments: labels in green, predictions in magenta, so that the
two are told apart where they overlap; instances and other segmentations keep a colour
per id.
"""

from __future__ import annotations

import numpy as np

from incasem.io.layout import LABELS_GROUP, PREDICTIONS_GROUP, DatasetKind
from incasem.io.metadata import JOB_KEY
from incasem.io.volume import Volume

__all__ = ["LABELS_COLOR", "PREDICTION_COLOR", "RANGE_SAMPLE", "display_range", "is_instances", "segment_color"]

#: Colour of the segments of labels layers (``volumes/labels/*``): ground truth in green.
LABELS_COLOR = "#00ff00"
#: Colour of the segments of prediction layers (``volumes/predictions/*``): magenta, distinct from the labels'.
PREDICTION_COLOR = "#ff00ff"
#: Voxels per axis of the central sample that sets the grey range of non-uint8 images.
RANGE_SAMPLE = 64


def is_instances(volume: Volume) -> bool:
    """Whether ``volume`` holds object ids (``incasem instances``), each of which keeps its own colour."""
    job = volume.array.attrs.get(JOB_KEY)
    return (isinstance(job, dict) and job.get("job") == "instances") or volume.name.endswith("instances")


def segment_color(volume: Volume, kind: DatasetKind) -> str | None:
    """The one colour of every segment of a labels (:data:`LABELS_COLOR`) or prediction
    (:data:`PREDICTION_COLOR`) dataset; ``None`` (a colour per id) for other segmentations,
    instances among them, and for images."""
    if kind != "segmentation" or is_instances(volume):
        return None
    if volume.name.startswith(f"{PREDICTIONS_GROUP}/"):
        return PREDICTION_COLOR
    if volume.name.startswith(f"{LABELS_GROUP}/"):
        return LABELS_COLOR
    return None


def display_range(volume: Volume, kind: DatasetKind) -> tuple[float, float] | None:
    """The data values drawn from darkest to brightest (``None`` for segmentations).

    uint8 and probabilities use the value range of their type (probabilities stored as
    floats are 0..1); other images the 0.5 and 99.5 percentiles of a central sample of
    at most :data:`RANGE_SAMPLE` voxels per axis.
    """
    if kind == "segmentation":
        return None
    if volume.dtype == np.uint8:
        return (0.0, 255.0)
    if kind == "probabilities":
        return (0.0, 1.0) if volume.dtype.kind == "f" else (0.0, float(np.iinfo(volume.dtype).max))
    start = [max(0, (s - RANGE_SAMPLE) // 2) for s in volume.shape]
    region = tuple(slice(b, b + RANGE_SAMPLE) for b in start)
    sample = np.asarray(volume.array[region], dtype=np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return (0.0, 1.0)
    low, high = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
    return (low, high if high > low else low + 1.0)
