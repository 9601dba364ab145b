"""What a training run starts from: the data, the network and its model card, checked up front.

Every check that would otherwise fail hours into a run happens here, with a one-line
:class:`~incasem.errors.ConfigError` naming the file, entry or key: data configs whose
voxel size differs from the model's, class ids outside ``1 .. K-1``, entries without
labels, block shapes the network cannot take, a ``--start-from`` model with another
voxel size or class count.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from incasem.errors import ConfigError, option
from incasem.io.data_config import DataConfig, load_data_config
from incasem.io.layout import organelle_of
from incasem.model.card import ModelCard
from incasem.model.checkpoint import load_checkpoint
from incasem.model.unet import UNet, UNetConfig
from incasem.model.zoo import resolve_model
from incasem.predict.resample import check_voxel_sizes
from incasem.train.config import TrainingConfig

__all__ = [
    "TRAINING_BYTES_PER_INPUT_VOXEL",
    "StartingPoint",
    "check_block_shapes",
    "check_step_memory",
    "class_names_of",
    "load_start",
    "load_training_data",
    "resolve_config",
    "starting_point",
]


@dataclass(frozen=True)
class StartingPoint:
    """The network to train and the card its checkpoints will carry (iteration and scores left empty)."""

    model: UNet
    card: ModelCard


def class_names_of(config: DataConfig, num_classes: int) -> tuple[str, ...]:
    """Class names by id: ``background``, then the organelle each class's labels datasets are named after."""
    names = ["background"]
    for class_id in range(1, num_classes):
        datasets = config.classes.get(class_id, ())
        names.append("+".join(sorted({organelle_of(d) for d in datasets})) or f"class_{class_id}")
    return tuple(names)


def _check_classes(config: DataConfig, num_classes: int, key: str) -> None:
    for entry in config:
        if not entry.labels:
            raise ConfigError(f"{config.path}: entry '{entry.name}' has no 'labels': training needs labels in every ROI")
        for label in entry.labels:
            if not 1 <= label.class_id < num_classes:
                raise ConfigError(
                    f"{config.path}: entry '{entry.name}', labels '{label.dataset}' has class id {label.class_id}, "
                    f"but the model has {num_classes} classes (ids 1..{num_classes - 1} besides background): "
                    f"fix the id or set {key}"
                )


def load_training_data(
    path: str | os.PathLike[str], voxel_size_nm: Sequence[float], num_classes: int, data_root: str | os.PathLike[str] | None, what: str
) -> DataConfig:
    """Load a training or validation data config and check its voxel size, labels and class ids."""
    config = load_data_config(path, data_root=data_root, model_voxel_size=voxel_size_nm)
    _check_classes(config, num_classes, "data.num_classes in the training config")
    if not len(config):
        raise ConfigError(f"{config.path}: the {what} data config has no entries")
    return config


def check_block_shapes(architecture: UNetConfig, training: TrainingConfig, transpose_axes: Sequence[int]) -> None:
    """Refuse input/output block sizes that the network or the transpose augmentation cannot take."""
    section = training.training
    input_shape, output_shape = tuple(section.input_size_voxels), tuple(section.output_size_voxels)
    if not architecture.is_valid_input_shape(input_shape):
        valid = architecture.valid_input_shape_at_least(input_shape)
        raise ConfigError(
            f"key 'training.input_size_voxels' {list(input_shape)} is not a valid input of the network: "
            f"use {list(valid)} (output {list(architecture.output_shape(valid))})"
        )
    expected = architecture.output_shape(input_shape)
    if expected != output_shape:
        raise ConfigError(
            f"key 'training.output_size_voxels' must be {list(expected)} for input {list(input_shape)} with this network, got {list(output_shape)}"
        )
    if len({input_shape[a] for a in transpose_axes}) > 1 and len(transpose_axes) > 1:
        raise ConfigError(
            f"key 'augmentation.transpose_only' {list(transpose_axes)} needs equal input sizes along those axes, "
            f"got {list(input_shape)}: set equal sizes or transpose only y and x ([1, 2])"
        )


#: Peak memory of one training step per input voxel of the standard-width network
#: (32 feature maps), measured at 204³ on the CPU (BENCHMARKS.md): 3.53 GB with bf16
#: autocast, 6.39 GB in fp32; rounded up. Scaled by ``num_fmaps / 32`` and the batch.
TRAINING_BYTES_PER_INPUT_VOXEL = {"bf16": 450, "fp16": 450, "fp32": 800}


def check_step_memory(architecture: UNetConfig, training: TrainingConfig, precision: str, batch_per_process: int, free_bytes: int) -> None:
    """Refuse a training block whose step cannot fit in ``free_bytes`` (instead of an out-of-memory kill hours later)."""
    z, y, x = training.training.input_size_voxels
    needed = z * y * x * TRAINING_BYTES_PER_INPUT_VOXEL[precision] * architecture.num_fmaps / 32 * batch_per_process
    if needed > free_bytes:
        raise ConfigError(
            f"key 'training.input_size_voxels' {[z, y, x]}: a training step of batch {batch_per_process} needs about "
            f"{needed / 1e9:.1f} GB, {free_bytes / 1e9:.1f} GB are free on this device: use a smaller block (and "
            "training.output_size_voxels to match) or a smaller training.batch_size"
        )


def _first_voxel_size(path: str | os.PathLike[str], data_root: str | os.PathLike[str] | None) -> tuple[float, float, float]:
    config = load_data_config(path, data_root=data_root, check_datasets=False)
    if not len(config):
        raise ConfigError(f"{config.path}: the training data config has no entries")
    return config.voxel_size


def resolve_config(
    training: TrainingConfig,
    card: ModelCard | None,
    train_data: str | os.PathLike[str],
    data_root: str | os.PathLike[str] | None,
    start_from: str | None = None,
) -> TrainingConfig:
    """The config with ``data.voxel_size`` and ``data.num_classes`` filled in.

    Keys the user set are kept; ``num_classes`` must agree with a ``--start-from`` model,
    which gives it otherwise. The voxel size is the training data's (unless set): a
    ``--start-from`` model of another voxel size within 2× per axis is fine-tuned to
    the data's, and its new card says so.
    """
    given = training.data.model_fields_set
    data = training.data
    if card is not None:
        if "num_classes" in given and data.num_classes != card.architecture.num_classes:
            raise ConfigError(
                f"{option('start_from', '--start-from')} {start_from}: the model has data.num_classes {card.architecture.num_classes}, the training "
                f"config {data.num_classes}: drop the key (the model's value is used), or start from scratch"
            )
        voxel_size = tuple(data.voxel_size) if "voxel_size" in given else _first_voxel_size(train_data, data_root)
        check_voxel_sizes(
            voxel_size, card.voxel_size_nm, f"the training data ({train_data})", "set it in the data config and with `incasem info` on the datasets"
        )
        data = data.model_copy(update={"voxel_size": voxel_size, "num_classes": card.architecture.num_classes})
    elif "voxel_size" not in given:
        data = data.model_copy(update={"voxel_size": _first_voxel_size(train_data, data_root)})
    return training.model_copy(update={"data": data})


def starting_point(training: TrainingConfig, class_names: tuple[str, ...], start: tuple[UNet, ModelCard] | None) -> StartingPoint:
    """The network to train and its card: fresh from the config's ``model`` section, or a loaded model.

    A loaded (``--start-from``) model keeps its architecture, class names and organelle.
    """
    voxel_size = training.data.voxel_size
    if start is None:
        architecture = UNetConfig(**training.model_kwargs())
        organelle = "+".join(class_names[1:])
        return StartingPoint(UNet(architecture), ModelCard(voxel_size, class_names, organelle, "incasem-train", architecture=architecture))
    model, card = start
    model.train()
    fresh = ModelCard(
        voxel_size,
        card.class_names,
        card.organelle,
        f"fine-tuned from {card.source}",
        architecture=card.architecture,
        preparation=card.preparation,
    )
    return StartingPoint(model, fresh)


def load_start(start_from: str, cache_dir: str | os.PathLike[str] | None = None, runs_dir: str | os.PathLike[str] | None = None) -> tuple[UNet, ModelCard]:
    """The model a ``--start-from`` name (checkpoint file, published id, ``run:ID`` in ``runs_dir``) refers to."""
    model, card = load_checkpoint(resolve_model(start_from, cache_dir, runs_dir))
    return model, card
