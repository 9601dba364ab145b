"""``incasem evaluate``: scores of a prediction against labels, as a table and as JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from incasem.blockwise import RunOptions
from incasem.cli.app import app
from incasem.cli.options import job_options, parse_triple
from incasem.errors import DatasetExistsError, InvalidValueError
from incasem.evaluate.evaluate import (
    Evaluation,
    EvaluationOptions,
    RegionScores,
    evaluate,
    evaluate_entry,
)
from incasem.files import atomic_write_text
from incasem.geometry import Roi
from incasem.io.data_config import LabelSource, load_data_config
from incasem.io.volume import WriteMode, open_container

_REGION_NAMES = {"plain": "all voxels", "exclusion_zone": "exclusion zone"}


def _number(value: float | None) -> str:
    return "     -" if value is None or math.isnan(value) else f"{value:.4f}"


def _region_row(name: str, scores: RegionScores) -> str:
    counts = scores.counts
    row = f"  {_REGION_NAMES[name]:<15} " + "  ".join(_number(v) for v in (counts.f1, counts.iou, counts.precision, counts.recall))
    best = scores.best()
    if best is not None and scores.histogram is not None:  # best() is None without a histogram
        row += f"  {_number(scores.histogram.average_precision())}  {best[0]:.3f} (F1 {best[1].f1:.4f}, IoU {best[1].iou:.4f})"
    return row


def format_evaluation(evaluation: Evaluation) -> str:
    """The evaluation as a table: one block per organelle, one row per region, then instances."""
    lines = [f"{evaluation.container}  {evaluation.source}  region {evaluation.roi}"]
    if evaluation.labelled:
        lines.append(f"partial labels: scored on labelled voxels only ({', '.join(evaluation.labelled)})")
    for organelle in evaluation.classes:
        sweep = any(s.histogram is not None for s in organelle.regions.values())
        header = f"  {'':<15} {'F1':>6}  {'IoU':>6}  {'prec.':>6}  {'recall':>6}" + ("  AP      best threshold" if sweep else "")
        lines += [f"{organelle.name} (class {organelle.class_id})", header]
        lines += [_region_row(name, scores) for name, scores in organelle.regions.items()]
        for scores in organelle.instances:
            c = scores.counts
            lines.append(
                f"  instances IoU ≥ {scores.iou_threshold:g}: F1 {_number(c.f1)}  precision {_number(c.precision)}  "
                f"recall {_number(c.recall)}  ({c.tp} matched; {scores.predicted} predicted, {scores.true} true)"
            )
    return "\n".join(lines)


def _labels(given: list[str]) -> list[LabelSource] | None:
    """``--labels DATASET[=ID]`` (ids 1.. in order by default); none given: the API's default labels."""
    sources = []
    for number, text in enumerate(given, start=1):
        dataset, _, class_id = text.partition("=")
        if class_id and not class_id.isdigit():
            raise InvalidValueError(f"--labels {text}: the class id after '=' must be a whole number")
        sources.append(LabelSource(dataset, int(class_id) if class_id else number))
    return sources or None


def _masks_or_default(given: list[str]) -> list[str] | None:
    """Masks (``--metric-mask``, ``--labelled``) as given, ``none`` for none; none given: the API's default."""
    if not given:
        return None
    return [] if given == ["none"] else given


def _write_json(path: Path, evaluations: list[Evaluation]) -> None:
    data = evaluations[0].to_json() if len(evaluations) == 1 else [e.to_json() for e in evaluations]
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def _iou_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InvalidValueError(f"--iou needs IoU thresholds like 0.5,0.75, got {text!r}") from None


@app.command(name="evaluate")
@job_options(resume=False, overwrite_help="Replace the --json file if it exists.")
def evaluate_command(
    source: Path = typer.Argument(..., help="A .zarr container, or a data config JSON (its ROIs, labels, masks and metric masks)."),
    prediction: str = typer.Option(
        ..., "--prediction", "-p", help="Prediction group volumes/predictions/<model>/<id>, a segmentation dataset, or one probability map."
    ),
    labels: list[str] = typer.Option(
        [], "--labels", "-l", help="Labels dataset[=class id], repeatable (container only; default: every volumes/labels/*, ids 1.. in order)."
    ),
    mask: str | None = typer.Option(None, "--mask", help="Cell mask: count only inside it (container only)."),
    metric_masks: list[str] = typer.Option(
        [],
        "--metric-mask",
        help="Metric mask (exclusion zone), repeatable; default volumes/metric_masks/<organelle> where it exists; 'none' for none (container only).",
    ),
    labelled: list[str] = typer.Option(
        [],
        "--labelled",
        help="Labelled mask of partial labels (voxels outside it count nowhere), repeatable; default volumes/labelled/<organelle> where it exists; "
        "'none' for none (container only).",
    ),
    roi_offset: str | None = typer.Option(None, "--roi-offset", help="Region start in voxels Z,Y,X (container only; default: where all datasets overlap)."),
    roi_shape: str | None = typer.Option(None, "--roi-shape", help="Region shape in voxels Z,Y,X."),
    threshold: float | None = typer.Option(
        None, "--threshold", "-t", help="Score probability maps at this threshold (default: the prediction's segmentation)."
    ),
    sweep: bool = typer.Option(False, "--sweep", help="Also every threshold k/1000: best threshold and average precision (needs probability maps)."),
    instances: bool = typer.Option(False, "--instances", help="Also match connected components (instances) of prediction and labels."),
    iou: str = typer.Option("0.5,0.75", "--iou", help="IoU thresholds of instance matching."),
    min_size: int = typer.Option(0, "--min-size", help="Drop predicted instances smaller than this many voxels."),
    json_path: Path | None = typer.Option(None, "--json", help="Also write the scores as JSON to this file ('-': print JSON instead of the table)."),
    scratch: Path | None = typer.Option(None, "--scratch", help="Folder for temporary instance files (shared by the workers on a cluster)."),
    data_root: Path | None = typer.Option(None, "--data-root", help="Folder the config's 'file' paths are relative to."),
    *,
    mode: WriteMode = "create",
    run: RunOptions = RunOptions(),
) -> None:
    """F1 (Dice), IoU, precision and recall of a prediction against labels, per organelle.

    Scored on all voxels (inside --mask) and inside the exclusion zone (metric masks);
    --sweep adds the best threshold and average precision, --instances matched-instance
    precision / recall / F1. Blockwise, in bounded memory.
    """
    options = EvaluationOptions(threshold, sweep, instances, _iou_list(iou), min_size, scratch_dir=scratch)
    if json_path is not None and str(json_path) != "-" and json_path.exists() and mode != "overwrite":
        raise DatasetExistsError(f"{json_path} exists: give another --json file or --overwrite")
    if source.suffix == ".json":
        config = load_data_config(source, data_root=data_root)
        results = [evaluate_entry(entry, prediction, options, run) for entry in config]
    else:
        open_container(source)
        offset, shape = parse_triple(roi_offset, "--roi-offset"), parse_triple(roi_shape, "--roi-shape")
        if (offset is None) != (shape is None):
            raise typer.BadParameter("give both --roi-offset and --roi-shape, or neither")
        roi = Roi(offset, shape) if offset is not None and shape is not None else None
        results = [
            evaluate(
                source,
                prediction,
                _labels(labels),
                mask=mask,
                metric_masks=_masks_or_default(metric_masks),
                labelled=_masks_or_default(labelled),
                roi=roi,
                options=options,
                run=run,
            )
        ]
    if json_path is not None and str(json_path) == "-":
        data = results[0].to_json() if len(results) == 1 else [r.to_json() for r in results]
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo("\n".join(format_evaluation(result) for result in results))
    if json_path is not None:
        _write_json(json_path, results)
        typer.echo(f"wrote {json_path}")
