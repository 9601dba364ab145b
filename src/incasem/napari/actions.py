"""What the dock widgets do, on napari's viewer model only (no Qt): each action is one API call.

The widgets (:mod:`incasem.napari.widgets`) run the calls that take long (convert,
predict, fine-tune, evaluate) in a worker thread under a :class:`~incasem.monitor.JobMonitor`
and hand their results to the ``add_*`` functions here in the GUI thread. Tests drive the
same functions on a :class:`napari.components.ViewerModel`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from incasem.blockwise import RunOptions
from incasem.errors import InvalidValueError
from incasem.evaluate.evaluate import Evaluation, EvaluationOptions, evaluate
from incasem.evaluate.metrics import ConfusionCounts
from incasem.geometry import NmTriple, Roi, as_triple
from incasem.io.bucket import DEFAULT_BASE_URL
from incasem.io.data_config import LabelSource
from incasem.io.layout import RAW, RAW_EQUALIZED, SEGMENTATION, labelled_mask_dataset, labels_dataset
from incasem.io.volume import Volume, WriteMode, open_volume
from incasem.model.zoo import PUBLISHED_MODELS, fetch_published_model
from incasem.monitor import current_monitor
from incasem.napari.layers import METADATA_KEY, LayerData, LayerSource, layer_data, source_of
from incasem.predict import PredictOptions, predict_container
from incasem.predict.job import PredictionOutput
from incasem.preprocess.convert import ConvertOptions, tiff_to_zarr
from incasem.preprocess.equalize import equalize_volume
from incasem.preprocess.painted import write_partial_labels
from incasem.runs import RunFolder
from incasem.train.finetune import fine_tune
from incasem.train.trainer import TrainOptions

__all__ = [
    "PAINT_KEY",
    "PaintTarget",
    "ScoreRow",
    "add_layers",
    "add_paint_layer",
    "convert_stack",
    "dataset_layers",
    "ensure_model",
    "evaluate_layers",
    "fine_tune_painted",
    "paint_region",
    "paint_target",
    "predict_container_region",
    "predict_layer_region",
    "prediction_layers",
    "save_painted",
    "score_rows",
]

#: The API's jobs run from the plugin show no progress bar of their own (the widget has one).
QUIET = RunOptions(progress=False)

#: Environment variable of the bucket's address, as for ``incasem models fetch --base-url``.
BASE_URL_ENV = "INCASEM_BASE_URL"

#: The most voxels a paint layer holds (it lives in memory, one byte per voxel).
MAX_PAINT_VOXELS = 1 << 28

#: Metadata key of a paint layer: where its labels go (:class:`PaintTarget`).
PAINT_KEY = "incasem_paint"


def _source(layer: Any, what: str) -> LayerSource:
    source = source_of(layer)
    if source is None:
        raise InvalidValueError(f"layer {getattr(layer, 'name', layer)!r} does not show a dataset of an incasem container: choose a {what} opened from a .zarr")
    return source


def dataset_layers(container: str | Path, datasets: Sequence[str]) -> list[LayerData]:
    """The named datasets of ``container`` as layer data."""
    return [layer_data(open_volume(container, name, require_complete=False)) for name in datasets]


def add_layers(viewer: Any, layers: Sequence[LayerData]) -> list[Any]:
    """Add layer data to ``viewer``; a layer of the same dataset already shown is replaced in place."""
    from napari.layers import Layer

    added = []
    for data, options, kind in layers:
        for old in list(viewer.layers):
            if old.metadata.get(METADATA_KEY) == options["metadata"][METADATA_KEY]:
                viewer.layers.remove(old)
        layer = Layer.create(data, options, kind)
        viewer.add_layer(layer)
        added.append(layer)
    return added


# -- convert --------------------------------------------------------------------------------


def convert_stack(
    source: str | Path, container: str | Path, voxel_size_nm: NmTriple | None = None, *, equalize: bool = True, mode: WriteMode = "create"
) -> list[str]:
    """Convert a volume (TIFF folder, MRC, HDF5, N5, OME-Zarr, OME-TIFF) into ``container`` (``volumes/raw``), then CLAHE;
    the datasets made. ``voxel_size_nm``: ``None`` takes the file's own."""
    tiff_to_zarr(source, container, options=ConvertOptions(voxel_size=voxel_size_nm), mode=mode, run=QUIET)
    if not equalize:
        return [RAW]
    equalize_volume(container, mode=mode, run=QUIET)
    return [RAW, RAW_EQUALIZED]


# -- models ---------------------------------------------------------------------------------


def ensure_model(model: str, cache_dir: str | os.PathLike[str] | None = None, base_url: str | None = None) -> None:
    """Fetch a published model the first time it is chosen (``incasem models fetch ID``); other names are used as they are.

    ``base_url``: the bucket or a mirror (default ``$INCASEM_BASE_URL``, else the original's bucket).
    """
    if model not in PUBLISHED_MODELS:
        return
    monitor = current_monitor()
    if monitor is not None:
        monitor.started(f"fetch published model {model}", 1)
    fetch_published_model(model, cache_dir, base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL, progress=False)


# -- predict --------------------------------------------------------------------------------


def predict_container_region(
    container: str | Path,
    raw: str,
    model: str,
    roi: Roi | None = None,
    *,
    device: str = "auto",
    runs_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    mode: WriteMode = "create",
) -> PredictionOutput:
    """``incasem predict CONTAINER --raw RAW --model MODEL`` over ``roi`` (voxels; default all), quietly;
    a published model is fetched first."""
    ensure_model(model, cache_dir)
    return predict_container(container, model, raw, roi, PredictOptions(device=device), cache_dir=cache_dir, runs_dir=runs_dir, mode=mode, run=QUIET)


def predict_layer_region(raw_layer: Any, model: str, roi: Roi | None = None, **options: Any) -> PredictionOutput:
    """:func:`predict_container_region` of the container and raw dataset that ``raw_layer`` shows."""
    source = _source(raw_layer, "raw image")
    return predict_container_region(source.container, source.dataset, model, roi, **options)


def prediction_layers(output: PredictionOutput) -> list[LayerData]:
    """A prediction's probability maps and segmentation as layer data (segmentation on top)."""
    return dataset_layers(output.container, [*output.probabilities, output.segmentation])


# -- label & fine-tune ---------------------------------------------------------------------


@dataclass(frozen=True)
class PaintTarget:
    """Where a paint layer's labels go: the container, the raw whose grid it paints on, the labels' name, its offset."""

    container: Path
    raw: str
    name: str
    offset_voxels: tuple[int, int, int]

    def to_metadata(self) -> dict[str, Any]:
        """The paint layer's ``metadata[PAINT_KEY]``."""
        return {"container": str(self.container), "raw": self.raw, "name": self.name, "offset_voxels": list(self.offset_voxels)}

    @property
    def labels(self) -> str:
        """The labels dataset a save writes."""
        return labels_dataset(self.name)

    @property
    def labelled(self) -> str:
        """The labelled mask a save writes beside them."""
        return labelled_mask_dataset(self.labels)


def paint_target(layer: Any) -> PaintTarget:
    """The :class:`PaintTarget` of a layer made by :func:`add_paint_layer`."""
    record = getattr(layer, "metadata", {}).get(PAINT_KEY)
    if not isinstance(record, dict):
        raise InvalidValueError(f"layer {getattr(layer, 'name', layer)!r} is not an incasem paint layer: make one with 'New paint layer'")
    offset = tuple(int(v) for v in record["offset_voxels"])
    return PaintTarget(Path(record["container"]), record["raw"], record["name"], offset)  # type: ignore[arg-type]


def paint_region(layer: Any) -> Roi:
    """The region a paint layer covers, in voxels of its raw on the world grid."""
    return Roi(paint_target(layer).offset_voxels, as_triple(np.shape(layer.data), "paint layer shape"))


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or "/" in name or name.startswith("."):
        raise InvalidValueError(f"labels name {name!r} must be one word without '/', e.g. mito_painted")
    return name


def add_paint_layer(viewer: Any, raw_layer: Any, roi: Roi, name: str) -> Any:
    """A Labels layer over ``roi`` (voxels of ``raw_layer``) to paint sections of ``name`` on: 1 organelle, 2 background."""
    source = _source(raw_layer, "raw image")
    target = PaintTarget(source.container, source.dataset, _check_name(name), roi.offset)
    if roi.size > MAX_PAINT_VOXELS:
        raise InvalidValueError(
            f"a paint layer over {roi} would hold {roi.size:,} voxels in memory (at most {MAX_PAINT_VOXELS:,}): paint over the view or a box instead"
        )
    scale = tuple(float(v) for v in raw_layer.scale)
    translate = tuple(o * s for o, s in zip(roi.offset, scale))
    layer = viewer.add_labels(
        np.zeros(roi.shape, np.uint8), name=f"paint {target.name}", scale=scale, translate=translate, metadata={PAINT_KEY: target.to_metadata()}
    )
    layer.selected_label = 1
    layer.brush_size = 10
    layer.mode = "paint"
    return layer


def save_painted(layer: Any) -> tuple[Volume, Volume]:
    """Write a paint layer's painted sections as partial labels (:func:`incasem.preprocess.painted.write_partial_labels`).

    A later save replaces what an earlier one wrote; labels of any other origin are refused.
    """
    target = paint_target(layer)
    return write_partial_labels(target.container, np.asarray(layer.data), target.offset_voxels, target.name, raw=target.raw, mode="overwrite")


def fine_tune_painted(
    target: PaintTarget,
    start_from: str,
    iterations: int,
    overrides: Sequence[str] = (),
    *,
    device: str = "auto",
    runs_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> RunFolder:
    """``incasem fine-tune`` of ``start_from`` on the saved painted labels of ``target``; the run.

    ``overrides``: ``key=value`` settings of the training config on top of the fine-tuning defaults.
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise InvalidValueError(f"iterations must be a whole number of at least 1, got {iterations!r}")
    ensure_model(start_from, cache_dir)
    options = TrainOptions(device=device, runs_dir=runs_dir, cache_dir=cache_dir, log=log, mlflow=False)
    run = fine_tune(
        target.container,
        start_from,
        [f"training.iterations={iterations}", *overrides],
        labels=target.labels,
        labelled=target.labelled,
        raw=target.raw,
        options=options,
    )
    assert run is not None, "only torchrun's other ranks get no run"
    return run


# -- evaluate -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreRow:
    """One row of the Evaluate widget's table."""

    organelle: str
    region: str
    f1: float
    iou: float
    precision: float
    recall: float


_REGION_NAMES = {"plain": "all voxels", "exclusion_zone": "exclusion zone"}


def evaluate_layers(prediction_layer: Any, labels_layer: Any, *, instances: bool = True) -> Evaluation:
    """Score the prediction a layer shows against the labels another shows (same container), as ``incasem evaluate``."""
    prediction, labels = _source(prediction_layer, "prediction"), _source(labels_layer, "labels layer")
    if prediction.container.resolve() != labels.container.resolve():
        raise InvalidValueError(
            f"the prediction ({prediction.container}) and the labels ({labels.container}) lie in different containers: choose both from one"
        )
    dataset = prediction.dataset
    group = dataset.rsplit("/", 1)[0] if dataset.endswith(f"/{SEGMENTATION}") else dataset
    return evaluate(prediction.container, group, [LabelSource(labels.dataset, 1)], options=EvaluationOptions(instances=instances), run=QUIET)


def score_rows(evaluation: Evaluation) -> list[ScoreRow]:
    """The table of an evaluation: per organelle, all voxels and the exclusion zone, then matched instances."""
    rows = []
    for scores in evaluation.classes:
        for region, region_scores in scores.regions.items():
            rows.append(ScoreRow(scores.name, _REGION_NAMES.get(region, region), **region_scores.counts.scores()))
        for matched in scores.instances:
            counts: ConfusionCounts = matched.counts
            rows.append(ScoreRow(scores.name, f"instances, IoU ≥ {matched.iou_threshold:g}", counts.f1, math.nan, counts.precision, counts.recall))
    return rows
