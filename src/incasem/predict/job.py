"""Blockwise prediction of one region with one model.

Each output block reads its input with the network's context around it from the raw
dataset; where that context leaves the dataset it is padded (``reflect`` by default,
mirroring the data at its border), so the whole requested region is predicted.
Blocks are multiples of the network's total downsampling factor and start on a grid
anchored at the region's corner, so the stitched output equals one forward pass over
the whole region (the U-Net is translation-equivariant on that grid) up to float
rounding.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from incasem.blockwise import Block, BlockwiseTask, check_run_options, done_record_for, plan_blocks, run_blockwise
from incasem.errors import IncasemError, InputFileError, InvalidValueError, RoiError, VoxelSizeError
from incasem.geometry import Roi, Triple, as_positive_triple, voxels_to_nm
from incasem.io.volume import PadMode, Volume, create_volume, open_volume
from incasem.model.checkpoint import ModelCard, checkpoint_sha256, load_checkpoint
from incasem.model.unet import UNet, normalize_raw
from incasem.predict.device import Precision, auto_block_shape, output_chunk_shape, select_device
from incasem.predict.outputs import claim_prediction_id, find_resumable, prediction_group, provenance

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

#: Accepted values of :attr:`PredictOptions.precision` and :attr:`PredictOptions.padding`.
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
PADDINGS: tuple[str, ...] = ("reflect", "symmetric", "edge", "constant")


@dataclass(frozen=True)
class PredictOptions:
    """How to run a prediction.

    Attributes
    ----------
    block_shape
        Output block in voxels (z, y, x), rounded down to multiples of the network's
        downsampling factor; ``None`` picks the largest that fits the device memory.
    device
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    precision
        ``fp32``, or ``bf16``/``fp16`` autocast (faster, probabilities differ by ~1e-2).
    padding
        How raw is extended where the context leaves the dataset.
    scheduler
        Address of a Dask scheduler, or ``None`` to run here.
    progress
        Show a progress bar.
    """

    block_shape: Triple | None = None
    device: str = "auto"
    precision: Precision = "fp32"
    padding: PadMode = "reflect"
    scheduler: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.block_shape is not None:
            object.__setattr__(self, "block_shape", as_positive_triple(self.block_shape, "--block-size"))
        for option, value, allowed in (
            ("--precision", self.precision, PRECISIONS),
            ("--padding", self.padding, PADDINGS),
        ):
            if value not in allowed:
                raise InvalidValueError(f"{option} must be one of {', '.join(allowed)}, got {value!r}")
        if not isinstance(self.device, str) or not self.device:
            raise InvalidValueError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        check_run_options(self.scheduler, None)


@dataclass(frozen=True)
class PredictionOutput:
    """Where a prediction was written."""

    container: Path
    group: str
    prediction_id: str
    roi: Roi
    probabilities: tuple[str, ...]
    segmentation: str
    block_shape: Triple


@dataclass
class _WorkerState:
    model: UNet
    device: torch.device
    raw: Volume
    probabilities: list[Volume]
    segmentation: Volume


def _setup(checkpoint: Path, device_name: str, raw: tuple[Path, str], outputs: tuple[Path, tuple[str, ...], str]) -> _WorkerState:
    device = select_device(device_name)
    model, _card = load_checkpoint(checkpoint, map_location=device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last_3d)
    container, probability_names, segmentation_name = outputs
    return _WorkerState(
        model=model,
        device=device,
        raw=open_volume(*raw),
        probabilities=[open_volume(container, name, "r+", require_complete=False) for name in probability_names],
        segmentation=open_volume(container, segmentation_name, "r+", require_complete=False),
    )


def forward_probabilities(model: UNet, raw: np.ndarray, device: torch.device, precision: Precision) -> np.ndarray:
    """Class probabilities (classes, z, y, x; float32) of the network on uint8 ``raw``."""
    x = normalize_raw(torch.from_numpy(np.ascontiguousarray(raw)))[None, None].to(device)
    if device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last_3d)
    dtype = _AUTOCAST_DTYPES.get(precision)
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        logits = model(x)
    return torch.softmax(logits.float(), dim=1)[0].cpu().numpy()


def probability_to_uint8(probability: np.ndarray) -> np.ndarray:
    """Store a probability in [0, 1] as uint8 0..255 (rounded), as the original did."""
    return np.rint(probability * 255).astype(np.uint8)


def _predict_block(input_shape: Triple, context: Triple, precision: Precision, padding: PadMode, block: Block, state: _WorkerState) -> None:
    corner = tuple(o - c for o, c in zip(block.write_roi.offset, context))
    raw = state.raw.read(Roi(corner, input_shape), padding=padding)
    probabilities = forward_probabilities(state.model, raw, state.device, precision)
    probabilities = probabilities[(slice(None), *Roi((0, 0, 0), block.write_roi.shape).to_slices())]
    for c, volume in enumerate(state.probabilities, start=1):
        volume.write(block.write_roi, probability_to_uint8(probabilities[c]))
    state.segmentation.write(block.write_roi, np.argmax(probabilities, axis=0).astype(np.uint8))


def _check_inputs(raw: Volume, card: ModelCard, roi: Roi) -> None:
    if raw.voxel_size != tuple(card.voxel_size_nm):
        raise VoxelSizeError(
            f"the model was trained at voxel size {list(card.voxel_size_nm)} nm but {raw.label} has "
            f"{list(raw.voxel_size)} nm: use a model for this voxel size (see `incasem models list`)"
        )
    if raw.dtype != np.uint8:
        raise InputFileError(
            f"{raw.label} is {raw.dtype}; the network reads uint8 raw: equalize it (`incasem equalize`) "
            "or convert with --to-uint8"
        )
    if roi.empty or not raw.roi.contains(roi):
        raise RoiError(f"region {roi} (voxels) is not inside {raw.label}, which covers {raw.roi}: choose a region inside it")


def _block_shape(options: PredictOptions, card: ModelCard, device: torch.device, roi: Roi) -> Triple:
    """The output block: as requested (rounded down to the downsampling grid) or the auto choice,
    never larger than the region needs (rounded up to the grid), so no block reads far past the data."""
    step = card.architecture.total_downsample_factor
    if options.block_shape is None:
        return auto_block_shape(card.architecture, device, options.precision, roi.shape)
    needed = [-(-r // s) * s for r, s in zip(roi.shape, step)]
    rounded = tuple(min(max(s, (b // s) * s), n) for b, s, n in zip(options.block_shape, step, needed))
    return (rounded[0], rounded[1], rounded[2])


def predict_roi(
    checkpoint: str | Path,
    container: str | Path,
    raw_dataset: str,
    roi: Roi | None = None,
    options: PredictOptions = PredictOptions(),
    prediction_id: str | None = None,
    resume: bool = False,
    extra_provenance: dict[str, Any] | None = None,
) -> PredictionOutput:
    """Predict organelle probabilities and a segmentation for a region of a raw dataset.

    Parameters
    ----------
    checkpoint
        An incasem checkpoint file (see :mod:`incasem.model.zoo` to name models).
    container, raw_dataset
        The zarr container and its uint8 raw dataset (usually ``volumes/raw_equalized_0.02``).
    roi
        Region to predict, in voxels on the world grid; default: the whole dataset.
    options
        Block size, device, precision, padding, scheduler.
    prediction_id
        With ``resume``: the prediction to finish. Otherwise a new id is allocated
        (or the given one is claimed) under ``volumes/predictions/<model>/``.
    resume
        Finish an interrupted prediction: only missing blocks are computed and the
        result equals an uninterrupted run's. Without ``prediction_id`` the newest
        unfinished prediction of the same model, region and options is resumed (a
        new one is started if there is none).

    Returns
    -------
    PredictionOutput
        The datasets written: ``prob_maps/class_<c>`` (probability of each organelle
        class c ≥ 1 as uint8, 0..255 = 0..1, like the original's) and ``segmentation`` (uint8, class with the highest
        probability) under ``volumes/predictions/<model>/<id>``.
    """
    checkpoint = Path(checkpoint)
    container = Path(container)
    raw = open_volume(container, raw_dataset)
    _model, card = load_checkpoint(checkpoint)
    roi = raw.roi if roi is None else roi
    _check_inputs(raw, card, roi)
    device = select_device(options.device)
    block_shape = _block_shape(options, card, device, roi)
    config = card.architecture
    input_shape = config.input_shape_for_output(block_shape)
    model_name = checkpoint.stem
    record = provenance(
        model=model_name,
        checkpoint=str(checkpoint.absolute()),
        checkpoint_sha256=checkpoint_sha256(checkpoint),
        class_names=list(card.class_names),
        voxel_size=list(raw.voxel_size),
        raw=f"{container}/{raw_dataset}",
        roi_offset_voxels=list(roi.offset),
        roi_shape_voxels=list(roi.shape),
        block_shape=list(block_shape),
        input_shape=list(input_shape),
        padding=options.padding,
        precision=options.precision,
        device=str(device),
        **(extra_provenance or {}),
    )
    job = {"job": "predict", **{key: record[key] for key in _SAME_JOB_KEYS}}
    if resume and prediction_id is None:
        prediction_id = find_resumable(container, model_name, job)
        resume = prediction_id is not None
    pid = claim_prediction_id(container, model_name, prediction_id, resume)
    group = prediction_group(model_name, pid)
    names = tuple(f"{group}/prob_maps/class_{c}" for c in range(1, config.num_classes))
    segmentation_name = f"{group}/segmentation"
    chunks = output_chunk_shape(block_shape, config.total_downsample_factor)
    offset_nm = voxels_to_nm(roi.offset, raw.voxel_size)

    outputs = [
        create_volume(container, name, roi.shape, "uint8", raw.voxel_size, offset_nm, chunks, resume=resume, attributes=record, job=job)
        for name in (*names, segmentation_name)
    ]
    task = BlockwiseTask(
        name=f"predict {model_name}/{pid}",
        blocks=plan_blocks(roi, block_shape, grid_origin=roi.offset),
        process=partial(_predict_block, input_shape, config.context, options.precision, options.padding),
        setup=partial(_setup, checkpoint, options.device, (container, raw_dataset), (container, names, segmentation_name)),
        done=done_record_for(container, segmentation_name),
    )
    try:
        run_blockwise(task, options.scheduler, num_workers=1, progress=options.progress)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        raise IncasemError(
            f"no space left on the device holding {container} while predicting {model_name}/{pid}: "
            f"free space, then rerun with --resume {pid}"
        ) from None
    for volume in outputs:
        volume.mark_complete()
    return PredictionOutput(container, group, pid, roi, names, segmentation_name, block_shape)



#: Settings that a resumed prediction must share with the interrupted one.
_SAME_JOB_KEYS = ("checkpoint_sha256", "roi_offset_voxels", "roi_shape_voxels", "block_shape", "padding", "precision")
