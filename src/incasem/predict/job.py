"""Blockwise prediction of one region of a zarr dataset with one model.

Each output block reads its input with the network's context around it from the raw
dataset (:func:`~incasem.predict.core.input_roi`); where that context leaves the
dataset it is padded (``reflect`` by default, mirroring the data at its border), so
the whole requested region is predicted. Each block then goes through the in-memory
core as :func:`~incasem.predict.core.predict_tile` does (:func:`~incasem.predict.core.tile_input`,
the network, :meth:`~incasem.predict.core.TileInput.finish`). Blocks are multiples of the
network's total downsampling factor and start on a grid anchored at the region's
corner, so the stitched output equals :func:`~incasem.predict.core.predict_array`
on the whole region (one forward pass, up to float rounding). Data of another voxel
size than the model's is resampled per block (:mod:`incasem.predict.resample`).

Each worker loads the model once and keeps :data:`BLOCKS_IN_FLIGHT` blocks going:
one in the network while the next is read (and resampled) and the last is written,
so a GPU does not wait on zarr.
"""

from __future__ import annotations

import errno
import json
import threading
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from incasem.blockwise import (
    Block,
    BlockwiseTask,
    RunOptions,
    check_job,
    done_record_for,
    run_blockwise,
)
from incasem.errors import (
    DatasetMismatchError,
    IncasemError,
    InputFileError,
    InvalidValueError,
    RoiError,
    option,
)
from incasem.geometry import Roi, Triple, as_positive_triple, check_not_empty, voxels_to_nm
from incasem.io.layout import (
    encode_probability,
    prediction_group,
    probability_map,
    segmentation_of,
)
from incasem.io.padding import PadMode
from incasem.io.volume import (
    Volume,
    WriteMode,
    check_output,
    create_volume,
    open_volume,
    setting_differences,
)
from incasem.model.card import ModelCard
from incasem.model.checkpoint import (
    check_checkpoint,
    checkpoint_sha256,
    load_checkpoint,
)
from incasem.model.unet import UNet, UNetConfig
from incasem.postprocess.foreground import Foreground
from incasem.postprocess.threshold import write_seeded
from incasem.predict.core import (
    PADDINGS,
    PRECISIONS,
    PrecisionChoice,
    check_choice,
    forward_probabilities,
    input_roi,
    prepare_model,
    resolve_precision,
    tile_input,
)
from incasem.predict.device import (
    Precision,
    choose_block_shape,
    output_chunk_shape,
    select_device,
)
from incasem.predict.outputs import claim_prediction_id, find_previous, interrupted_predictions
from incasem.predict.resample import Resampling, resampling_for, set_voxel_size_hint
from incasem.runs import run_model_name

#: Blocks in flight per worker: one in the network while the next is read and the last written.
BLOCKS_IN_FLIGHT = 3


@dataclass(frozen=True)
class PredictOptions:
    """How to run a prediction.

    Attributes
    ----------
    block_shape
        Output block in voxels (z, y, x), rounded down to multiples of the network's
        downsampling factor; ``None`` picks the fewest balanced blocks that fit the
        device memory (:func:`~incasem.predict.device.balanced_block_shape`).
    device
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    precision
        ``auto`` (default: bf16 autocast where the device runs it natively — CUDA, CPUs
        with AVX512-BF16 or AMX — else fp32), ``fp32``, ``bf16`` or ``fp16``.
    padding
        How raw is extended where the context leaves the dataset.
    tta
        Test-time augmentation: each block is predicted mirrored along z, y and x (and
        with y and x swapped where the network allows) and the probabilities averaged;
        8-16 times the time.
    seed_threshold
        Two-class models: keep only the objects of the segmentation (6-connected
        components of probability ≥ 0.5) that reach this probability somewhere
        (hysteresis, :func:`~incasem.postprocess.threshold.write_seeded`). ``"model"``
        (default): the model card's ``seed_threshold`` (the shipped models carry one),
        if any; ``"none"``: keep every object.

    Where and how the job runs (scheduler, threads, progress bar) is the
    :class:`~incasem.blockwise.RunOptions` given to :func:`predict_roi` as ``run``.
    """

    block_shape: Triple | None = None
    device: str = "auto"
    precision: PrecisionChoice = "auto"
    padding: PadMode = "reflect"
    tta: bool = False
    seed_threshold: float | str = "model"

    def __post_init__(self) -> None:
        if self.block_shape is not None:
            object.__setattr__(self, "block_shape", as_positive_triple(self.block_shape, option("block_shape", "--block-size")))
        check_choice(option("precision", "--precision"), self.precision, PRECISIONS)
        check_choice(option("padding", "--padding"), self.padding, PADDINGS)
        if not isinstance(self.device, str) or not self.device:
            raise InvalidValueError(f"{option('device', '--device')} must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if not isinstance(self.tta, bool):
            raise InvalidValueError(f"{option('tta', '--tta')} must be True or False, got {self.tta!r}")
        seed = self.seed_threshold
        if seed not in ("model", "none"):
            try:
                seed = float(seed)
            except (TypeError, ValueError):
                seed = -1.0
            if isinstance(self.seed_threshold, bool) or not 0.5 <= seed <= 1:
                raise InvalidValueError(
                    f"{option('seed_threshold', '--seed-threshold')} must be model, none or a probability in [0.5, 1], got {self.seed_threshold!r}"
                )
            object.__setattr__(self, "seed_threshold", seed)

    def seed_for(self, card: ModelCard) -> float | None:
        """The seed threshold a prediction with ``card``'s model uses (``None``: none)."""
        if self.seed_threshold == "model":
            return card.seed_threshold
        if self.seed_threshold == "none":
            return None
        if card.architecture.num_classes != 2:
            raise InvalidValueError(
                f"{option('seed_threshold', '--seed-threshold')} needs a two-class model, this one has {card.architecture.num_classes} classes: leave it out"
            )
        return float(self.seed_threshold)


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
    resampling: Resampling | None = None


@dataclass
class _WorkerState:
    model: UNet
    device: torch.device
    precision: Precision
    raw: Volume
    probabilities: list[Volume]
    segmentation: Volume
    network: threading.Lock = field(default_factory=threading.Lock)


def _setup(checkpoint: Path, device_name: str, precision: PrecisionChoice, raw: tuple[Path, str], outputs: tuple[Path, tuple[str, ...], str]) -> _WorkerState:
    """Per worker, once: the model on its device and the datasets it reads and writes."""
    device = select_device(device_name)
    model, _card = load_checkpoint(checkpoint, map_location=device)
    container, probability_names, segmentation_name = outputs
    return _WorkerState(
        model=prepare_model(model, device),
        device=device,
        precision=resolve_precision(precision, device),
        raw=open_volume(*raw),
        probabilities=[open_volume(container, name, "r+", require_complete=False) for name in probability_names],
        segmentation=open_volume(container, segmentation_name, "r+", require_complete=False),
    )


def _teardown(state: _WorkerState) -> None:
    """When the job ends on a worker: hand the model's GPU memory back to the device."""
    del state.model
    if state.device.type == "cuda":
        torch.cuda.empty_cache()


def _predict_block(padding: PadMode, tta: bool, resampling: Resampling | None, block: Block, state: _WorkerState) -> None:
    """Read the block's input, put it on the model's grid (:func:`tile_input`), run the network (one
    block at a time per worker: it uses all cores or the GPU), bring its output back and write it;
    reading, resampling and writing overlap the network's work on the other blocks in flight."""
    raw = state.raw.read(block.read_roi, padding=padding)
    output = block.write_roi.relative_to(block.read_roi.offset)
    local = None if resampling is None else resampling.relative_to(block.read_roi.offset)
    prepared = tile_input(state.model.config, raw, output, padding, local)
    with state.network:
        network_output = forward_probabilities(state.model, prepared.data, state.device, state.precision, tta)
    probabilities = prepared.finish(network_output)
    for c, volume in enumerate(state.probabilities, start=1):
        volume.write(block.write_roi, encode_probability(probabilities[c]))
    state.segmentation.write(block.write_roi, np.argmax(probabilities, axis=0).astype(np.uint8))


def check_inputs(raw: Volume, card: ModelCard, roi: Roi) -> Resampling | None:
    """Refuse a raw dataset or region the model cannot predict (dtype, an empty region or one outside,
    voxel sizes more than 2× apart); return how the raw is resampled onto the model's grid
    (``None``: it is on it).
    """
    fix = set_voxel_size_hint(raw.container, raw.name)
    resampling = resampling_for(raw.voxel_size, card.voxel_size_nm, roi, card.architecture.total_downsample_factor, raw.label, fix)
    if raw.dtype != np.uint8:
        raise InputFileError(
            f"{raw.label} is {raw.dtype}; the network reads uint8 raw: equalize it (`incasem equalize {raw.container} -i {raw.name}`) "
            "or convert with --to-uint8"
        )
    check_not_empty(roi)
    if not raw.roi.contains(roi):
        raise RoiError(f"region {roi} (voxels) is not inside {raw.label}, which covers {raw.roi}: choose a region inside it")
    return resampling


def predict_roi(
    checkpoint: str | Path,
    container: str | Path,
    raw_dataset: str,
    roi: Roi | None = None,
    options: PredictOptions = PredictOptions(),
    *,
    prediction_id: str | None = None,
    mode: WriteMode = "create",
    run: RunOptions = RunOptions(),
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
        Block size, device, precision, padding.
    prediction_id
        The prediction to write (``"create"``: claimed, it must be new), finish
        (``"resume"``) or replace (``"overwrite"``). ``None``: a new id is allocated
        under ``volumes/predictions/<model>/``, except as ``mode`` says.
    mode
        ``"create"`` (default) writes a new prediction. ``"resume"`` finishes an
        interrupted one: only missing blocks are computed and the result equals an
        uninterrupted run's. ``"overwrite"`` replaces one (only datasets a prediction
        wrote). Without ``prediction_id`` both take the newest prediction of the same
        model, region and options (``"resume"``: the newest unfinished one), and
        start a new one if there is none.
    run
        Scheduler, local threads (default: :data:`BLOCKS_IN_FLIGHT` blocks at a
        time) and progress bar; see :class:`incasem.blockwise.RunOptions`.
    extra_provenance
        Further fields for the outputs' provenance record (``incasem_provenance``).

    Returns
    -------
    PredictionOutput
        The datasets written: ``prob_maps/class_<c>`` (probability of each organelle
        class c ≥ 1 as uint8, 0..255 = 0..1, like the original's) and ``segmentation`` (uint8, class with the highest
        probability; with a seed threshold, only the objects that reach it) under ``volumes/predictions/<model>/<id>``. Each carries the
        provenance record (model, checkpoint and its SHA-256, voxel size, region, block
        and input shape, padding, precision, device, version, command, time, inputs)
        under ``incasem_provenance``.
    """
    check_job(mode, run)
    checkpoint = Path(checkpoint)
    container = Path(container)
    raw = open_volume(container, raw_dataset)
    card = check_checkpoint(checkpoint)  # the weights too: a refused model must leave no empty prediction behind
    roi = raw.roi if roi is None else roi
    resampling = check_inputs(raw, card, roi)
    device = select_device(options.device)
    precision = resolve_precision(options.precision, device)
    config = card.architecture
    if resampling is None:
        block_shape = choose_block_shape(config, device, precision, roi.shape, options.block_shape)
    else:  # the block is on the data's grid, its network output about the block chosen on the model's
        model_block = choose_block_shape(config, device, precision, resampling.model_output_roi(roi).shape, None)
        requested = options.block_shape or resampling.data_block_shape(model_block)
        block_shape = (min(requested[0], roi.shape[0]), min(requested[1], roi.shape[1]), min(requested[2], roi.shape[2]))
    model_name = run_model_name(checkpoint) or checkpoint.stem
    sha256 = checkpoint_sha256(checkpoint)

    def settings(block_shape: Triple) -> tuple[dict[str, Any], dict[str, Any]]:
        record = dict(
            model=model_name,
            checkpoint=str(checkpoint.absolute()),
            checkpoint_sha256=sha256,
            class_names=list(card.class_names),
            voxel_size=list(raw.voxel_size),
            raw=f"{container}/{raw_dataset}",
            roi_offset_voxels=list(roi.offset),
            roi_shape_voxels=list(roi.shape),
            block_shape=list(block_shape),
            input_shape=list(
                config.input_shape_for_output(block_shape if resampling is None else resampling.model_output_roi(Roi(roi.offset, block_shape)).shape)
            ),
            padding=options.padding,
            tta=options.tta,
            seed_threshold=options.seed_for(card),
            precision=precision,
            device=str(device),
            **({} if resampling is None else {"resampling": resampling.to_json()}),
            **(extra_provenance or {}),
        )
        return record, {"job": "predict", **{key: record[key] for key in (*_SAME_JOB_KEYS, "resampling") if key in record}}

    record, job = settings(block_shape)
    if mode == "resume" and prediction_id is None and find_previous(container, model_name, job, mode) is None:
        kept = _interrupted_block_shape(container, model_name, job, options)
        if kept is not None:  # --block-size auto: finish with the interrupted run's blocks
            block_shape = kept
            record, job = settings(block_shape)
    if mode != "create" and prediction_id is None:
        prediction_id = find_previous(container, model_name, job, mode)
        mode = mode if prediction_id is not None else "create"
    pid = claim_prediction_id(container, model_name, prediction_id, mode)
    group = prediction_group(model_name, pid)
    names = tuple(probability_map(group, c) for c in range(1, config.num_classes))
    segmentation_name = segmentation_of(group)
    chunks = output_chunk_shape(block_shape, config.total_downsample_factor if resampling is None else (1, 1, 1))
    offset_nm = voxels_to_nm(roi.offset, raw.voxel_size)
    for name in (*names, segmentation_name):  # refuse before the first output is created or replaced
        check_output(container, name, mode=mode, job=job, reads=[raw_dataset])

    outputs = [
        create_volume(
            container,
            name,
            roi.shape,
            "uint8",
            raw.voxel_size,
            offset_nm,
            chunks,
            mode=mode,
            job=job,
            reads=[raw_dataset],
            inputs=[record["checkpoint"]],
            details=record,
        )
        for name in (*names, segmentation_name)
    ]
    task = BlockwiseTask(
        name=f"predict {model_name}/{pid}" + ("" if resampling is None else f" (resampled ×{', '.join(f'{s:.3g}' for s in resampling.factors)})"),
        blocks=[Block(tile, _read_roi(config, tile, resampling)) for tile in roi.tiles(block_shape)],
        process=partial(_predict_block, options.padding, options.tta, resampling),
        setup=partial(_setup, checkpoint, str(device), precision, (container, raw_dataset), (container, names, segmentation_name)),
        teardown=_teardown,
        done=done_record_for(container, segmentation_name),
    )
    *probability_maps, segmentation = outputs
    try:
        run_blockwise(task, replace(run, workers=run.workers or BLOCKS_IN_FLIGHT))
        for volume in probability_maps:
            volume.mark_complete()
        if record["seed_threshold"] is not None:
            seeded = Foreground(container, names[0], "probabilities", 0.5, seed_threshold=record["seed_threshold"])
            write_seeded(seeded, segmentation, run)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        raise IncasemError(
            f"no space left on the device holding {container} while predicting {model_name}/{pid}: free space, then rerun the same command with --resume"
        ) from None
    segmentation.mark_complete()
    return PredictionOutput(container, group, pid, roi, names, segmentation_name, block_shape, resampling)


def _read_roi(config: UNetConfig, tile: Roi, resampling: Resampling | None) -> Roi:
    """The raw (data voxels) a block of output ``tile`` reads: its network input, on the data's grid."""
    if resampling is None:
        return input_roi(config, tile)
    return resampling.data_read_roi(input_roi(config, resampling.model_output_roi(tile)))


#: Settings that a resumed prediction must share with the interrupted one.
_SAME_JOB_KEYS = ("checkpoint_sha256", "roi_offset_voxels", "roi_shape_voxels", "block_shape", "padding", "tta", "seed_threshold", "precision")

#: The job keys that make a prediction the same model on the same region; the others are its options.
_REGION_KEYS = ("checkpoint_sha256", "roi_offset_voxels", "roi_shape_voxels")


def _interrupted_block_shape(container: Path, model_name: str, job: dict[str, Any], options: PredictOptions) -> Triple | None:
    """For ``--resume`` without a prediction of exactly these settings: the block shape to finish the
    newest interrupted prediction of the same checkpoint and region with (``--block-size auto``), or
    ``None`` when there is none.

    Raises
    ------
    DatasetMismatchError
        When that prediction was made with other options (an explicit ``--block-size`` among them):
        naming each option and the value the interrupted run used.
    """
    stored_job = json.loads(json.dumps(job))
    for pid, stored in interrupted_predictions(container, model_name):
        if any(stored.get(key) != stored_job[key] for key in _REGION_KEYS):
            continue
        block_shape = stored.get("block_shape")
        kept = block_shape if options.block_shape is None and isinstance(block_shape, list) and len(block_shape) == 3 else None
        if kept is not None:
            stored_job["block_shape"] = kept
        differences = setting_differences(stored, stored_job)
        if differences:
            raise DatasetMismatchError(
                f"cannot resume the interrupted prediction {model_name}/{pid} in {container}: it was made with "
                f"{'; '.join(differences)}: give the same to finish it, or leave --resume out to start a new prediction"
            )
        return as_positive_triple(kept, "--block-size") if kept is not None else None
    return None
