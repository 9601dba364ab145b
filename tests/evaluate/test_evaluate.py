"""``incasem evaluate`` on a real prediction of real FIB-SEM: blockwise scores equal the whole-volume computation."""

import json
from pathlib import Path

import numpy as np
import pytest

from incasem.cli import main
from incasem.evaluate import metrics
from incasem.evaluate.evaluate import EvaluationOptions, evaluate
from incasem.io.data_config import LabelSource
from incasem.io.volume import create_volume, open_volume
from incasem.model.shipped import SHIPPED_FOLDER
from incasem.postprocess.instances import instances_in_memory
from incasem.predict import PredictOptions, predict_container
from incasem.preprocess.equalize import equalize_volume
from incasem.preprocess.masks import create_metric_mask, metric_mask_array
from tests.helpers import LUCCHI, QUIET, error_line, read_stack

DEMO_MODEL = SHIPPED_FOLDER / "mito-fibsem-5nm-small.pt"
OFFSET_NM = (100, 50, 25)
LABELS = [LabelSource("volumes/labels/mito", 1)]


def write(container: Path, name: str, data: np.ndarray, voxel_size=(5, 5, 5), offset_nm=OFFSET_NM) -> None:
    volume = create_volume(container, name, data.shape, data.dtype, voxel_size, offset_nm, (16, 64, 64))
    volume.write(volume.roi, data)
    volume.mark_complete()


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """Real raw and labels (Lucchi++ sections 60-91, 160 x 176 voxels: rows 180-339, columns 250-425; held
    out from the demo model's training), the demo model's prediction of the CLAHE-equalised raw, a metric mask."""
    region = (slice(8, 40), slice(52, 212), slice(26, 202))
    raw, labels = read_stack(LUCCHI / "image", *region), read_stack(LUCCHI / "labels" / "mito", *region)
    container = tmp_path_factory.mktemp("evaluate") / "cell.zarr"
    write(container, "volumes/raw", raw)
    write(container, "volumes/labels/mito", labels)
    create_metric_mask(container, "volumes/labels/mito", run=QUIET)
    equalize_volume(container, run=QUIET)
    output = predict_container(container, str(DEMO_MODEL), options=PredictOptions(device="cpu", precision="fp32"), run=QUIET)
    probabilities = open_volume(container, output.probabilities[0]).read()
    segmentation = open_volume(container, output.segmentation).read()
    return container, output.group, labels, probabilities, segmentation, metric_mask_array(labels, 4, 4)


def test_scores_equal_the_whole_volume_computation(predicted):
    container, group, labels, probabilities, segmentation, zone = predicted
    options = EvaluationOptions(sweep=True, instances=True, min_size_voxels=20, block_voxels=(12, 50, 70))
    result = evaluate(container, group, LABELS, metric_masks=["volumes/metric_masks/mito"], options=options, run=QUIET)
    mito = result.classes[0]
    assert mito.name == "mito" and result.source.endswith("/segmentation")
    assert mito.regions["plain"].counts == metrics.confusion_counts(segmentation, labels)
    assert mito.regions["exclusion_zone"].counts == metrics.confusion_counts(segmentation, labels, zone)
    for region, mask in (("plain", None), ("exclusion_zone", zone)):
        whole = metrics.ProbabilityHistogram.from_arrays(probabilities, labels, mask)
        np.testing.assert_array_equal(mito.regions[region].histogram.positives, whole.positives)
        assert mito.regions[region].histogram.average_precision() == pytest.approx(whole.average_precision())
    assert 0.3 < mito.regions["exclusion_zone"].counts.f1 < 1, "a real, imperfect prediction"
    predicted_objects = instances_in_memory(segmentation != 0, 20)
    for scores in mito.instances:
        assert scores.counts == metrics.instance_counts(predicted_objects, labels != 0, scores.iou_threshold)
        assert scores.true == int(instances_in_memory(labels != 0).max())


def test_threshold_scores_the_probabilities(predicted):
    container, group, labels, probabilities, _, zone = predicted
    options = EvaluationOptions(threshold=0.8, block_voxels=(32, 64, 64))
    result = evaluate(container, group, LABELS, metric_masks=["volumes/metric_masks/mito"], options=options, run=QUIET)
    counts = result.classes[0].regions["exclusion_zone"]
    assert counts.counts == metrics.scores_from_probabilities(probabilities, labels, zone, 0.8)
    assert counts.histogram is None, "no sweep asked"


def test_best_threshold_of_the_sweep_is_the_best(predicted):
    container, group, labels, probabilities, _, _ = predicted
    result = evaluate(container, group, LABELS, options=EvaluationOptions(sweep=True), run=QUIET)
    threshold, best = result.classes[0].regions["plain"].best()
    for other in (0.3, 0.5, 0.7, threshold):
        assert metrics.scores_from_probabilities(probabilities, labels, None, other).f1 <= best.f1 + 1e-12
    assert best == metrics.scores_from_probabilities(probabilities, labels, None, threshold)


def test_region_and_cell_mask(predicted, tmp_path):
    container, group, labels, _, segmentation, _ = predicted
    cell = np.zeros(labels.shape, np.uint8)
    cell[:, 40:, :100] = 255
    write(container, "volumes/mask_test", cell)
    roi = open_volume(container, "volumes/labels/mito").roi
    inner = type(roi)((roi.offset[0] + 4, roi.offset[1] + 10, roi.offset[2] + 20), (20, 100, 120))
    result = evaluate(container, f"{group}/segmentation", LABELS, mask="volumes/mask_test", metric_masks=(), roi=inner, run=QUIET)
    crop = inner.relative_to(roi.offset).to_slices()
    assert result.classes[0].regions["plain"].counts == metrics.confusion_counts(segmentation[crop], labels[crop], cell[crop])
    assert set(result.classes[0].regions) == {"plain"}, "no metric masks: no exclusion-zone row"


def test_python_without_labels_scores_like_the_cli(predicted, capsys):
    """The API's defaults are the CLI's: every labels dataset, the metric mask of each where it exists."""
    container, group, labels, _, segmentation, zone = predicted
    result = evaluate(container, group, run=QUIET)
    assert main(["evaluate", str(container), "-p", group, "--json", "-", "-q"]) == 0
    assert result.to_json() == json.loads(capsys.readouterr().out)
    counts = result.classes[0].regions["exclusion_zone"].counts
    assert counts == metrics.confusion_counts(segmentation, labels, zone)


def test_cli_table_and_json(predicted, tmp_path, capsys):
    container, group, labels, _, segmentation, zone = predicted
    out = tmp_path / "scores.json"
    assert main(["evaluate", str(container), "-p", group, "--instances", "--json", str(out), "-q"]) == 0
    table = capsys.readouterr().out
    assert "mito (class 1)" in table and "exclusion zone" in table and "instances IoU ≥ 0.5" in table
    scores = json.loads(out.read_text())["classes"]["mito"]
    assert scores["exclusion_zone"]["f1"] == pytest.approx(metrics.confusion_counts(segmentation, labels, zone).f1)
    assert [entry["iou_threshold"] for entry in scores["instances"]] == [0.5, 0.75]
    assert main(["evaluate", str(container), "-p", group, "--json", str(out), "-q"]) == 1
    assert "exists" in error_line(capsys)
    assert main(["evaluate", str(container), "-p", group, "--json", "-", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["classes"]["mito"]["plain"]["tp"] > 0


def test_evaluation_with_a_data_config(predicted, tmp_path, capsys):
    container, group, labels, _, segmentation, zone = predicted
    roi = open_volume(container, "volumes/labels/mito").roi
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "crop": {
                    "file": str(container),
                    "offset": list(roi.offset),
                    "shape": list(roi.shape),
                    "voxel_size": [5, 5, 5],
                    "raw": "volumes/raw",
                    "labels": {"volumes/labels/mito": 1},
                    "metric_masks": ["volumes/metric_masks/mito"],
                }
            }
        )
    )
    assert main(["evaluate", str(config), "-p", group, "--json", "-", "-q"]) == 0
    scores = json.loads(capsys.readouterr().out)["classes"]["mito"]
    assert scores["exclusion_zone"]["tp"] == metrics.confusion_counts(segmentation, labels, zone).tp


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "volumes/predictions/none/0001"], "volumes/predictions/none/0001"),
        (["-p", "{group}", "--labels", "volumes/labels/er"], "volumes/labels/er"),
        (["-p", "{group}/segmentation", "--sweep"], "--sweep needs a probability map"),
        (["-p", "{group}", "--threshold", "1.5"], "--threshold must be a probability in [0, 1]"),
        (["-p", "{group}", "--iou", "0,0.5"], "--iou must be IoU thresholds in (0, 1]"),
        (["-p", "volumes/coarse_prediction"], "voxel size"),
        (["-p", "volumes/far_prediction"], "do not overlap"),
        (["-p", "volumes/bad_probabilities"], "probabilities must lie in [0, 1]"),
    ],
)
def test_bad_input_is_one_line(predicted, capsys, args, message):
    container, group, labels, *_ = predicted
    if not (container / "volumes" / "far_prediction").exists():
        write(container, "volumes/coarse_prediction", np.zeros((4, 4, 4), np.uint8), voxel_size=(10, 10, 10), offset_nm=(100, 50, 20))
        write(container, "volumes/far_prediction", np.zeros((4, 4, 4), np.uint8), offset_nm=(10_000, 0, 0))
        write(container, "volumes/bad_probabilities", np.full(labels.shape, 1.5, np.float32))
    before = sorted(p.name for p in container.rglob("*"))
    assert main(["evaluate", str(container), *[a.format(group=group) for a in args], "-q"]) != 0
    line = error_line(capsys)
    assert message in line, line
    assert sorted(p.name for p in container.rglob("*")) == before, "evaluation writes nothing into the container"


def test_missing_dataset_lists_what_exists(predicted, capsys):
    container, *_ = predicted
    assert main(["evaluate", str(container), "-p", "volumes/predictions/none", "-q"]) == 1
    line = error_line(capsys)
    assert "volumes/labels/mito" in line or "volumes/predictions" in line, line


def test_default_labels_leave_out_what_incasem_derived_from_them(predicted, capsys):
    """Without --labels, every labels dataset is scored, but not the instances or pyramid levels made from one."""
    from incasem.io.defaults import label_datasets
    from incasem.postprocess.foreground import foreground_of
    from incasem.postprocess.instances import label_instances

    container, group, *_ = predicted
    label_instances(foreground_of(container, "volumes/labels/mito"), run=QUIET)
    assert label_datasets(container) == ["volumes/labels/mito"]
    assert main(["evaluate", str(container), "-p", group, "--json", "-", "-q"]) == 0
    assert list(json.loads(capsys.readouterr().out)["classes"]) == ["mito"]
