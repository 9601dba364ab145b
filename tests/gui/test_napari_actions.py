"""What the plugin's widgets do, on napari's ViewerModel (no Qt), on the bundled real FIB-SEM crop."""

from __future__ import annotations

import numpy as np
import pytest

from incasem.cli import main
from incasem.errors import DatasetExistsError, InvalidValueError, VoxelSizeError
from incasem.geometry import Roi
from incasem.io.volume import create_volume, open_volume
from incasem.model.shipped import SHIPPED_FOLDER
from incasem.monitor import JobCancelled, JobMonitor, watching
from incasem.napari import actions
from incasem.napari.layers import container_layers
from incasem.napari.regions import box_region, camera_of, region_of, view_region
from incasem.preprocess.convert import ConvertOptions, tiff_to_zarr
from incasem.runs import open_run
from incasem.train.finetune import split_labelled
from tests.helpers import LUCCHI, QUIET, read_stack, write_raw

RAW = "raw_equalized_0.02"
#: The demo model's network with its smallest useful block: fast on 2 cores (as tests/train/test_fine_tune.py).
DEMO_MODEL = str(SHIPPED_FOLDER / "mito-fibsem-5nm-small.pt")
SMALL_BLOCK = ["training.input_size_voxels=[108,108,108]", "training.output_size_voxels=[14,14,14]", "training.num_workers=0"]


def _viewer(container):
    from napari.components import ViewerModel

    viewer = ViewerModel()
    actions.add_layers(viewer, container_layers(container))
    return viewer


def test_predict_from_the_widget_equals_the_command_line(sample_cell, capsys):
    viewer = _viewer(sample_cell)
    roi = Roi((8, 0, 96), (16, 96, 96))  # where the mitochondria are
    output = actions.predict_layer_region(viewer.layers[RAW], "mito-fibsem-5nm", roi, device="cpu")
    added = actions.add_layers(viewer, actions.prediction_layers(output))
    assert [layer.name for layer in added] == ["predictions/mito-fibsem-5nm/0001/prob_maps/class_1", "predictions/mito-fibsem-5nm/0001/segmentation"]
    segmentation = added[1]
    assert tuple(segmentation.translate) == tuple(5.0 * o for o in roi.offset) and tuple(segmentation.scale) == (5, 5, 5)
    args = ["predict", str(sample_cell), "-m", "mito-fibsem-5nm", "--device", "cpu", "-q", "--roi-offset", "8,0,96", "--roi-shape", "16,96,96"]
    assert main(args) == 0, capsys.readouterr().err
    by_cli = open_volume(sample_cell, "volumes/predictions/mito-fibsem-5nm/0002/segmentation").read()
    assert np.array_equal(np.asarray(segmentation.data), by_cli) and by_cli.any()
    probabilities = open_volume(sample_cell, "volumes/predictions/mito-fibsem-5nm/0002/prob_maps/class_1").read()
    assert np.allclose(np.asarray(added[0].data), probabilities / 255.0, atol=1e-6)


def test_regions_from_the_view_a_drawn_box_and_everything(sample_cell):
    viewer = _viewer(sample_cell)
    raw = viewer.layers[RAW]
    assert region_of("all", viewer, raw) == Roi((0, 0, 0), (48, 192, 192))
    viewer.dims.set_point(0, 20 * 5.0)  # section 20
    camera_of(viewer).center = (100.0, 50 * 5.0, 60 * 5.0)
    camera_of(viewer).zoom = 10.0  # 10 screen pixels per nm: the canvas shows canvas size / 10 nm
    height, width = viewer.canvas.size
    region = view_region(viewer, raw, depth_voxels=8)
    assert region.offset[0] == 16 and region.shape[0] == 8
    assert abs(region.shape[1] - height / 10 / 5) <= 2 and abs(region.shape[2] - width / 10 / 5) <= 2
    assert abs(region.offset[1] + region.shape[1] / 2 - 50) <= 1 and abs(region.offset[2] + region.shape[2] / 2 - 60) <= 1
    shapes = viewer.add_shapes([np.array([[20 * 5, 10 * 5, 30 * 5], [20 * 5, 10 * 5, 90 * 5], [20 * 5, 70 * 5, 90 * 5], [20 * 5, 70 * 5, 30 * 5]])])
    assert box_region(shapes, raw, depth_voxels=4) == Roi((18, 10, 30), (4, 60, 60))
    far = viewer.add_shapes([np.array([[0, 1000 * 5, 1000 * 5], [0, 1000 * 5, 1100 * 5], [0, 1100 * 5, 1100 * 5], [0, 1100 * 5, 1000 * 5]])])
    with pytest.raises(InvalidValueError, match="does not overlap"):
        box_region(far, raw)


def test_two_painted_sections_round_trip_into_the_container_as_partial_labels(sample_cell):
    viewer = _viewer(sample_cell)
    truth = (np.asarray(viewer.layers["labels/mito"].data) != 0).astype(np.uint8)
    paint = actions.add_paint_layer(viewer, viewer.layers[RAW], Roi((0, 0, 0), (48, 192, 192)), "mito_painted")
    paint.data[12] = truth[12]  # the organelle as labelled, the rest of the section background
    paint.data[36] = np.where(truth[36] != 0, 1, 2)  # background painted on purpose counts as background
    labels, labelled = actions.save_painted(paint)
    assert labels.name == "volumes/labels/mito_painted" and labelled.name == "volumes/labelled/mito_painted"
    assert labels.complete and labelled.complete and labels.voxel_size == (5, 5, 5) and labels.roi == Roi((0, 0, 0), (48, 192, 192))
    mask = labelled.read()
    assert [int(z) for z in np.flatnonzero(mask.any(axis=(1, 2)))] == [12, 36] and mask[[12, 36]].all()
    assert np.array_equal(labels.read()[[12, 36]], truth[[12, 36]]) and not labels.read()[np.r_[0:12, 13:36, 37:48]].any()
    data = split_labelled(sample_cell, "mito", labels=labels.name, labelled=labelled.name)
    assert data.labelled_sections == 2
    paint.data[20, 5:9, 5:9] = 1  # a later save replaces the earlier one
    assert actions.save_painted(paint)[1].read()[20].all()
    clash = actions.add_paint_layer(viewer, viewer.layers[RAW], Roi((0, 0, 0), (48, 192, 192)), "mito")  # the manual labels' name
    clash.data[3, :4, :4] = 1
    with pytest.raises(DatasetExistsError, match="volumes/labels/mito"):
        actions.save_painted(clash)
    assert open_volume(sample_cell, "volumes/labels/mito").read().any()  # the manual labels untouched


def test_fine_tune_from_two_painted_sections_with_live_loss_and_validation_f1_then_predict_with_the_run(sample_cell, tmp_path):
    viewer = _viewer(sample_cell)
    truth = (np.asarray(viewer.layers["labels/mito"].data) != 0).astype(np.uint8)
    paint = actions.add_paint_layer(viewer, viewer.layers[RAW], Roi((0, 0, 0), (48, 192, 192)), "mito_painted")
    paint.data[[12, 36]] = truth[[12, 36]]
    actions.save_painted(paint)
    target = actions.paint_target(paint)
    seen = []

    class Watching(JobMonitor):
        def record(self, values):
            super().record(values)
            seen.append(dict(values))

    monitor = Watching()
    with watching(monitor):
        run = actions.fine_tune_painted(target, DEMO_MODEL, 2, [*SMALL_BLOCK, "intervals.validate_every=1"], device="cpu", runs_dir=tmp_path / "runs")
        output = actions.predict_container_region(target.container, target.raw, f"run:{run.id}", Roi((8, 40, 40), (16, 64, 64)), runs_dir=tmp_path / "runs")
    record = open_run(tmp_path / "runs", run.id).record()
    assert record["status"] == "finished" and record["iteration"] == 2
    assert [values["iteration"] for values in seen if "loss" in values] == [1, 2] and all(np.isfinite(v["loss"]) for v in seen if "loss" in v)
    assert [values["val_iteration"] for values in seen if "val_f1" in values] == [0, 1, 2]
    assert output.group.startswith(f"volumes/predictions/run-{run.id}/") and open_volume(sample_cell, output.segmentation).complete


def test_evaluate_scores_the_layers_as_counted_from_the_arrays(sample_cell):
    viewer = _viewer(sample_cell)
    output = actions.predict_layer_region(viewer.layers[RAW], "mito-fibsem-5nm", Roi((8, 0, 64), (32, 128, 128)), device="cpu")
    (_probabilities, segmentation) = actions.add_layers(viewer, actions.prediction_layers(output))
    rows = actions.score_rows(actions.evaluate_layers(segmentation, viewer.layers["labels/mito"]))
    assert [row.region for row in rows] == ["all voxels", "exclusion zone", "instances, IoU ≥ 0.5", "instances, IoU ≥ 0.75"]
    predicted = np.asarray(segmentation.data) != 0
    true = open_volume(sample_cell, "volumes/labels/mito").read(output.roi) != 0
    tp, fp, fn = (predicted & true).sum(), (predicted & ~true).sum(), (~predicted & true).sum()
    assert rows[0].iou == pytest.approx(tp / (tp + fp + fn)) and rows[0].f1 == pytest.approx(2 * tp / (2 * tp + fp + fn))
    scored = open_volume(sample_cell, "volumes/metric_masks/mito").read(output.roi) != 0
    tp, fp, fn = (predicted & true & scored).sum(), (predicted & ~true & scored).sum(), (~predicted & true & scored).sum()
    assert rows[1].iou == pytest.approx(tp / (tp + fp + fn)) and rows[1].iou > rows[0].iou > 0.5
    with pytest.raises(InvalidValueError, match="does not show a dataset"):
        actions.evaluate_layers(viewer.add_labels(np.zeros((4, 4, 4), np.uint8)), viewer.layers["labels/mito"])


class _CancelAfter(JobMonitor):
    """Presses Cancel once ``blocks`` blocks are done, as a user would in the middle of a job."""

    def __init__(self, blocks: int) -> None:
        super().__init__()
        self.blocks = blocks

    def advanced(self, units: int = 1) -> None:
        super().advanced(units)
        if self.state().done >= self.blocks:
            self.cancel()


def test_cancel_stops_a_job_cleanly_and_the_same_job_resumes_to_identical_bytes(tmp_path):
    source, options = LUCCHI / "image", ConvertOptions(voxel_size=(5, 5, 5), chunks=(8, 64, 64))
    with pytest.raises(JobCancelled), watching(_CancelAfter(2)):
        tiff_to_zarr(source, tmp_path / "cancelled.zarr", options=options, run=QUIET)
    unfinished = open_volume(tmp_path / "cancelled.zarr", "volumes/raw", require_complete=False)
    assert not unfinished.complete
    tiff_to_zarr(source, tmp_path / "cancelled.zarr", options=options, mode="resume", run=QUIET)
    tiff_to_zarr(source, tmp_path / "whole.zarr", options=options, run=QUIET)
    assert np.array_equal(open_volume(tmp_path / "cancelled.zarr", "volumes/raw").read(), open_volume(tmp_path / "whole.zarr", "volumes/raw").read())


def test_a_model_of_another_voxel_size_and_bad_paint_are_one_line_errors_with_nothing_written(tmp_path):
    from napari.components import ViewerModel

    cell = tmp_path / "cell.zarr"
    write_raw(cell, np.zeros((16, 64, 64), np.uint8), voxel_size=(15, 15, 15))
    viewer = ViewerModel()
    actions.add_layers(viewer, container_layers(cell))
    with pytest.raises(VoxelSizeError) as error:
        actions.predict_layer_region(viewer.layers[RAW], "mito-fibsem-5nm", device="cpu")
    assert "\n" not in str(error.value) and not (cell / "volumes" / "predictions").exists()
    paint = actions.add_paint_layer(viewer, viewer.layers[RAW], Roi((0, 0, 0), (16, 64, 64)), "mito")
    with pytest.raises(InvalidValueError, match="nothing is painted"):
        actions.save_painted(paint)
    paint.data[2, 0, 0] = 7
    with pytest.raises(InvalidValueError, match="values \\[7\\]"):
        actions.save_painted(paint)
    assert not (cell / "volumes" / "labels").exists()
    with pytest.raises(InvalidValueError, match="labels name"):
        actions.add_paint_layer(viewer, viewer.layers[RAW], Roi((0, 0, 0), (16, 64, 64)), "a/b")
    big = tmp_path / "big.zarr"  # 10⁹ voxels: painting over all of it would take a GB of memory
    create_volume(big, "volumes/raw", (1000, 1000, 1000), "uint8", (5, 5, 5), (0, 0, 0), (64, 128, 128)).mark_complete()
    (raw_layer,) = actions.add_layers(viewer, container_layers(big))
    with pytest.raises(InvalidValueError, match="the view or a box"):
        actions.add_paint_layer(viewer, raw_layer, region_of("all", viewer, raw_layer), "mito")


def test_a_published_model_is_fetched_the_first_time_it_is_chosen(tmp_path, monkeypatch):
    import shutil

    import torch

    from incasem.model.unet import UNet, standard_config
    from incasem.model.zoo import CHECKPOINT_PREFIX, resolve_model
    from tests.fake_bucket import Bucket, serve

    folder = tmp_path / "bucket" / CHECKPOINT_PREFIX
    folder.mkdir(parents=True)
    original = tmp_path / "model_checkpoint_1847_mito_CF.pt"  # as the original wrote it: state dicts only
    torch.save({"model_state_dict": UNet(standard_config()).state_dict()}, original)
    shutil.copy(original, folder / original.name)
    bucket = Bucket(tmp_path / "bucket")
    with serve(bucket) as base_url:
        monkeypatch.setenv("INCASEM_BASE_URL", base_url)
        monitor = JobMonitor()
        with watching(monitor):
            actions.ensure_model("1847", tmp_path / "models")
        assert monitor.state().step == "fetch published model 1847"
        assert resolve_model("1847", tmp_path / "models").is_file()
        fetched = bucket.downloads(CHECKPOINT_PREFIX)
        actions.ensure_model("1847", tmp_path / "models")  # cached: not downloaded again
        actions.ensure_model("mito-fibsem-5nm", tmp_path / "models")  # shipped: nothing to fetch
        assert bucket.downloads(CHECKPOINT_PREFIX) == fetched == 1


def test_convert_a_tiff_folder_then_equalise_and_open_it(tmp_path):
    from incasem.demo import EXAMPLE

    viewer = _viewer_empty()
    cell = tmp_path / "cell.zarr"
    datasets = actions.convert_stack(EXAMPLE / "image", cell, (8.0, 4.0, 4.0))
    assert datasets == ["volumes/raw", "volumes/raw_equalized_0.02"]
    raw, equalized = actions.add_layers(viewer, actions.dataset_layers(cell, datasets))
    assert tuple(raw.scale) == (8, 4, 4) and tuple(equalized.scale) == (8, 4, 4)
    assert np.array_equal(np.asarray(raw.data), read_stack(EXAMPLE / "image"))  # values exact
    assert open_volume(cell, "volumes/raw_equalized_0.02").complete
    with pytest.raises(DatasetExistsError):  # a second conversion into the same container refuses, writes nothing
        actions.convert_stack(EXAMPLE / "image", cell, (8.0, 4.0, 4.0))


def _viewer_empty():
    from napari.components import ViewerModel

    return ViewerModel()
