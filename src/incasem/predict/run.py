"""``incasem predict``: a model over every ROI of a data config, scored where labels exist."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from incasem.blockwise import RunOptions, check_job
from incasem.errors import ConfigError, option
from incasem.evaluate.evaluate import evaluate_segmentation
from incasem.evaluate.metrics import ConfusionCounts
from incasem.geometry import Roi
from incasem.io.data_config import DataConfig, load_data_config
from incasem.io.layout import EXCLUSION_WIDTHS_VOXELS, RAW_EQUALIZED, organelle_of
from incasem.io.volume import WriteMode, open_volume
from incasem.model.card import ModelCard
from incasem.model.checkpoint import check_checkpoint
from incasem.model.zoo import resolve_model
from incasem.predict.job import PredictionOutput, PredictOptions, check_inputs, predict_roi


@dataclass(frozen=True)
class EntryPrediction:
    """The prediction of one data-config entry and, where it has labels, its scores per class name."""

    entry: str
    output: PredictionOutput
    scores: dict[str, ConfusionCounts]


def check_label_classes(config: DataConfig, card: ModelCard, classes: Mapping[str, str] | None = None) -> None:
    """Refuse to score labels of one organelle as a model class of another (ER labels with a mito model).

    A label dataset named after a known organelle (``volumes/labels/er``) must map to a
    model class of that name, unless ``classes`` says what it stands for
    (``{"er": "mito"}``); labels with other names are taken as the config says.

    Raises
    ------
    ConfigError
        For a class id the model does not have, or a label organelle that differs from
        the model's class of that id.
    """
    mapping = {str(k).lower(): str(v).lower() for k, v in (classes or {}).items()}
    names = [name.lower() for name in card.class_names]
    for entry in config:
        for label in entry.labels:
            where = f"{config.path}: entry '{entry.name}', labels {label.dataset}"
            if label.class_id >= len(names):
                raise ConfigError(
                    f"{where} are class {label.class_id}, but the model has classes 1..{len(names) - 1} "
                    f"({', '.join(card.class_names[1:])}): use class ids of this model"
                )
            organelle = organelle_of(label.dataset).lower()
            stands_for = mapping.get(organelle, organelle)
            if stands_for != names[label.class_id] and (organelle in EXCLUSION_WIDTHS_VOXELS or organelle in mapping):
                model_class = card.class_names[label.class_id]
                mapped = option(f"classes={{{organelle!r}: {model_class!r}}}", f"--classes {organelle}={model_class}")
                raise ConfigError(
                    f"{where} ({organelle}) would be scored as the model's class {label.class_id} '{model_class}': "
                    f"use a model or labels of one organelle, or pass {mapped} to score them anyway"
                )


def predict_config(
    config_path: str | Path,
    model: str,
    options: PredictOptions = PredictOptions(),
    *,
    classes: Mapping[str, str] | None = None,
    data_root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    runs_dir: str | Path | None = None,
    mode: WriteMode = "create",
    run: RunOptions = RunOptions(),
) -> list[EntryPrediction]:
    """Predict every ROI of a data config with ``model`` (checkpoint path, published id or run id).

    The config is validated up front, every entry's raw against the model (data of
    another voxel size within 2× is resampled, :mod:`incasem.predict.resample`). Entries with
    labels are scored inside mask ∧ metric masks; the scores are stored in the
    segmentation's attributes (``scores``) and returned. Labels are checked against
    the model's classes first (:func:`check_label_classes`, with ``classes`` mapping
    label organelles to model classes). ``data_root``: the folder the
    config's ``file`` paths are relative to (default: the config's); ``cache_dir``:
    the models folder; ``runs_dir``: the training runs folder of ``run:ID`` models; ``mode`` and ``run``: as for :func:`~incasem.predict.job.predict_roi`,
    for each entry.
    """
    check_job(mode, run)
    checkpoint = resolve_model(model, cache_dir, runs_dir)
    card = check_checkpoint(checkpoint)  # the weights too: a refused model must leave nothing behind
    config = load_data_config(config_path, data_root=data_root)
    check_label_classes(config, card, classes)
    for entry in config:  # every entry's raw, before the first entry's prediction is written
        raw = open_volume(entry.container, entry.raw)
        check_inputs(raw, card, raw.roi if entry.roi is None else entry.roi)
    results = []
    for entry in config:
        output = predict_roi(
            checkpoint,
            entry.container,
            entry.raw,
            entry.roi,
            options,
            mode=mode,
            run=run,
            extra_provenance={"data_config": str(config.path), "data_config_entry": entry.name},
        )
        scores: dict[str, ConfusionCounts] = {}
        if entry.labels:
            counts = evaluate_segmentation(output.container, output.segmentation, entry, run)
            scores = {card.class_names[c]: counts[c] for c in counts}
            segmentation = open_volume(output.container, output.segmentation, "r+")
            segmentation.array.attrs["scores"] = {name: c.to_json() for name, c in scores.items()}
        results.append(EntryPrediction(entry.name, output, scores))
    return results


def predict_container(
    container: str | Path,
    model: str,
    raw_dataset: str = RAW_EQUALIZED,
    roi: Roi | None = None,
    options: PredictOptions = PredictOptions(),
    *,
    cache_dir: str | Path | None = None,
    runs_dir: str | Path | None = None,
    mode: WriteMode = "create",
    run: RunOptions = RunOptions(),
) -> PredictionOutput:
    """Predict a region (voxels, world grid; default: all) of one raw dataset, no config needed.

    ``cache_dir``: the models folder; ``runs_dir``: the training runs folder of ``run:ID``
    models; ``mode`` and ``run``: see :func:`~incasem.predict.job.predict_roi`.
    """
    check_job(mode, run)
    return predict_roi(resolve_model(model, cache_dir, runs_dir), container, raw_dataset, roi, options, mode=mode, run=run)
