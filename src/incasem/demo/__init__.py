"""``incasem demo``: the whole workflow on the bundled real FIB-SEM crop, in minutes, nothing to download.

The bundled example (``lucchi_crop/``: 48 × 192 × 192 voxels of the Lucchi++ FIB-SEM
at 5 nm with its manual mitochondria labels; see its SOURCE.md) lies in the part of
the data that the shipped FIB-SEM model did not train on. :func:`run_demo` converts it
to zarr, equalises it, makes the metric mask, predicts with a shipped model, scores
the prediction against the labels (all voxels and the exclusion zone, instances),
writes a preview picture and says how to browse the result.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from incasem.blockwise import RunOptions
from incasem.errors import OutputExistsError, VoxelSizeError
from incasem.evaluate.evaluate import Evaluation, EvaluationOptions, evaluate
from incasem.io.data_config import LabelSource
from incasem.io.layout import (
    RAW,
    RAW_EQUALIZED,
    labels_dataset,
    metric_mask_dataset,
    segmentation_of,
)
from incasem.io.volume import WriteMode
from incasem.model.checkpoint import check_checkpoint
from incasem.model.zoo import resolve_model
from incasem.predict import PredictOptions, predict_container
from incasem.predict.device import select_device
from incasem.preprocess.convert import ConvertOptions, tiff_to_zarr
from incasem.preprocess.equalize import equalize_volume
from incasem.preprocess.masks import MetricMaskOptions, create_metric_mask
from incasem.view.preview import write_preview

#: The bundled example: ``image/*.tif`` and ``labels/mito/*.tif``.
EXAMPLE = Path(__file__).with_name("lucchi_crop")

#: Voxel size of the bundled example, nm.
EXAMPLE_VOXEL_SIZE_NM = (5, 5, 5)

#: The model the demo uses by default: a shipped FIB-SEM mitochondria model.
DEFAULT_MODEL = "mito-fibsem-5nm"

#: Marks a folder as the demo's own output, which a later demo may replace.
MARKER = "incasem-demo.json"


@dataclass(frozen=True)
class DemoResult:
    """What the demo made: the container, the prediction, its scores and the picture."""

    container: Path
    prediction: str
    evaluation: Evaluation
    preview: Path


def make_example_container(cell: str | Path, *, mode: WriteMode = "create", run: RunOptions = RunOptions(), say: Callable[[str], None] = print) -> str:
    """Convert the bundled example into container ``cell``: raw, labels, equalised raw, metric mask.

    Steps 1-3 of the demo (also napari's sample data). Returns the labels dataset.
    """
    cell = Path(cell)
    say(f"1/6 convert the bundled FIB-SEM crop (48 x 192 x 192 voxels, 5 nm) and its labels -> {cell}")
    tiff_to_zarr(EXAMPLE / "image", cell, options=ConvertOptions(voxel_size=EXAMPLE_VOXEL_SIZE_NM), mode=mode, run=run)
    labels = labels_dataset("mito")
    tiff_to_zarr(EXAMPLE / "labels" / "mito", cell, labels, options=ConvertOptions(like=(cell, RAW)), mode=mode, run=run)
    say(f"2/6 equalise (3D CLAHE) -> {RAW_EQUALIZED}")
    equalize_volume(cell, mode=mode, run=run)
    say("3/6 metric mask (exclusion zone of 4 voxels around the labelled mitochondria)")
    create_metric_mask(cell, labels, options=MetricMaskOptions(4, 4), mode=mode, run=run)
    return labels


def _check_folder(folder: Path) -> None:
    """The folder must be new, empty, or an earlier demo's output."""
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not (folder / MARKER).is_file())):
        raise OutputExistsError(f"{folder} exists and is not the output of an earlier `incasem demo`: give a new folder")


def run_demo(
    folder: str | Path = "incasem-demo",
    model: str = DEFAULT_MODEL,
    *,
    device: str = "auto",
    run: RunOptions = RunOptions(),
    say: Callable[[str], None] = print,
) -> DemoResult:
    """Run the workflow on the bundled example into ``folder``.

    Parameters
    ----------
    folder
        Output folder: new, empty, or an earlier demo's (whose outputs are replaced).
    model
        Model name (default: the shipped FIB-SEM mitochondria model).
    device
        Device for prediction (``auto``, ``cpu``, ``cuda``, ...).
    run
        Run options of the blockwise jobs.
    say
        Called with a line for each step.
    """
    folder = Path(folder)
    _check_folder(folder)
    select_device(device)
    checkpoint = resolve_model(model)
    card = check_checkpoint(checkpoint)  # a model the prediction would refuse is refused before anything is written
    if tuple(card.voxel_size_nm) != EXAMPLE_VOXEL_SIZE_NM:
        raise VoxelSizeError(
            f"model {model} was trained at voxel size {list(card.voxel_size_nm)} nm, the example has "
            f"{list(EXAMPLE_VOXEL_SIZE_NM)} nm: use a model for 5 nm voxels (see `incasem models list`)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text(json.dumps({"example": "lucchi_crop", "model": model}) + "\n")
    cell = folder / "demo.zarr"
    labels = make_example_container(cell, mode="overwrite", run=run, say=say)
    say(f"4/6 predict with {model}")
    output = predict_container(cell, str(checkpoint), options=PredictOptions(device=device), run=run)
    say("5/6 evaluate against the manual labels")
    evaluation = evaluate(
        cell, output.group, [LabelSource(labels, 1)], metric_masks=[metric_mask_dataset(labels)], options=EvaluationOptions(instances=True), run=run
    )
    preview = folder / "preview.png"
    say(f"6/6 preview picture -> {preview}")
    write_preview(cell, preview, overlays=[labels, segmentation_of(output.group)], overwrite=True)
    return DemoResult(cell, output.group, evaluation, preview)
