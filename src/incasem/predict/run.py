"""``incasem predict``: a model over every ROI of a data config, scored where labels exist."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from incasem.evaluate.evaluate import evaluate_segmentation
from incasem.evaluate.metrics import ConfusionCounts
from incasem.geometry import Roi
from incasem.io.data_config import load_data_config
from incasem.io.volume import open_volume
from incasem.model.checkpoint import load_checkpoint
from incasem.model.zoo import resolve_model
from incasem.predict.job import PredictionOutput, PredictOptions, predict_roi


@dataclass(frozen=True)
class EntryPrediction:
    """The prediction of one data-config entry and, where it has labels, its scores per class name."""

    entry: str
    output: PredictionOutput
    scores: dict[str, ConfusionCounts]


def predict_config(
    config_path: str | Path,
    model: str,
    options: PredictOptions = PredictOptions(),
    data_root: str | Path | None = None,
    resume: bool = False,
    cache_dir: str | Path | None = None,
) -> list[EntryPrediction]:
    """Predict every ROI of a data config with ``model`` (checkpoint path, published id or run id).

    The config is validated up front against the model's voxel size. Entries with
    labels are scored inside mask ∧ metric masks; the scores are stored in the
    segmentation's attributes (``scores``) and returned.
    """
    checkpoint = resolve_model(model, cache_dir)
    _model, card = load_checkpoint(checkpoint)
    config = load_data_config(config_path, data_root=data_root, model_voxel_size=card.voxel_size_nm)
    results = []
    for entry in config:
        output = predict_roi(
            checkpoint, entry.container, entry.raw, entry.roi, options, resume=resume,
            extra_provenance={"data_config": str(config.path), "data_config_entry": entry.name},
        )
        scores: dict[str, ConfusionCounts] = {}
        if entry.labels:
            counts = evaluate_segmentation(output.container, output.segmentation, entry, options.scheduler, options.progress)
            scores = {card.class_names[c]: counts[c] for c in counts if c < len(card.class_names)}
            segmentation = open_volume(output.container, output.segmentation, "r+")
            segmentation.array.attrs["scores"] = {name: c.to_json() for name, c in scores.items()}
        results.append(EntryPrediction(entry.name, output, scores))
    return results


def predict_container(
    container: str | Path,
    model: str,
    raw_dataset: str = "volumes/raw_equalized_0.02",
    roi: Roi | None = None,
    options: PredictOptions = PredictOptions(),
    resume: bool = False,
    cache_dir: str | Path | None = None,
) -> PredictionOutput:
    """Predict a region (voxels, world grid; default: all) of one raw dataset, no config needed."""
    return predict_roi(resolve_model(model, cache_dir), container, raw_dataset, roi, options, resume=resume)
