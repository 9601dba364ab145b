"""The plugin in a real napari window on a virtual display (Xvfb, Mesa's software OpenGL, Qt's xcb).

Qt's ``offscreen`` platform gives napari's canvas no OpenGL context, so this test starts
Xvfb itself (installed by ``bash tests/install_test_tools.sh``; skipped without it) and
runs Qt on it. With ``INCASEM_SCREENSHOT=path.png`` set it also writes the README's
picture of the plugin (``docs/napari-plugin.png``).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from incasem.io.volume import open_volume

SECTION = 24


def _die_with_parent() -> None:
    """In the child: be sent SIGTERM when the test process ends (Linux prctl PR_SET_PDEATHSIG)."""
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)


@pytest.fixture(scope="session")
def virtual_display():
    """An Xvfb display for this process's Qt (``QT_QPA_PLATFORM=xcb``)."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb not found: run `bash tests/install_test_tools.sh` to install it")
    read_end, write_end = os.pipe()
    command = ["Xvfb", "-displayfd", str(write_end), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"]
    # the server lives as long as this process (Qt's application outlives the fixtures), then dies with it
    server = subprocess.Popen(command, pass_fds=[write_end], stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    os.close(write_end)
    written = b""
    while not written.endswith(b"\n"):  # the number, then a newline, once the server accepts clients
        chunk = os.read(read_end, 16)  # (closing the pipe before the newline is written kills the server)
        if not chunk:
            break
        written += chunk
    os.close(read_end)
    number = written.decode().strip()
    if not number:
        server.kill()
        pytest.skip("Xvfb did not start")
    saved = {key: os.environ.get(key) for key in ("DISPLAY", "QT_QPA_PLATFORM")}
    os.environ.update(DISPLAY=f":{number}", QT_QPA_PLATFORM="xcb")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def qapp(virtual_display):
    """pytest-qt's application, on the virtual display."""
    from qtpy.QtWidgets import QApplication

    return QApplication.instance() or QApplication([])


def _magenta(pixels: np.ndarray) -> np.ndarray:
    red, green, blue = (pixels[..., i].astype(int) for i in range(3))
    return (red > 120) & (blue > 120) & (green < 80)


def test_the_plugin_predicts_the_sample_through_its_worker_and_draws_it(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    import napari

    from incasem.napari.regions import camera_of

    viewer = napari.Viewer(show=True)
    try:
        viewer.window._qt_window.resize(1500, 950)
        viewer.open_sample("incasem", "lucchi_crop")
        docks = {name: viewer.window.add_plugin_dock_widget("incasem", name)[1] for name in ("Convert", "Label & fine-tune", "Evaluate", "Predict")}
        predict = docks["Predict"]
        assert [layer.name for layer in predict.raw.choices] == ["raw", "raw_equalized_0.02"]
        predict.raw.value = viewer.layers["raw_equalized_0.02"]
        predict.region.value = "all"
        predict.device.value = "cpu"
        predict.run_button.native.click()
        segmentation_name = "predictions/mito-fibsem-5nm/0001/segmentation"
        qtbot.waitUntil(lambda: not predict.panel.busy, timeout=180_000)
        assert segmentation_name in viewer.layers, predict.panel._status.value
        assert "prob_maps/class_1" in " ".join(layer.name for layer in docks["Evaluate"].prediction.choices)

        container = Path(viewer.layers["raw"].metadata["incasem"]["container"])
        predicted = open_volume(container, "volumes/predictions/mito-fibsem-5nm/0001/segmentation").read()[SECTION] != 0
        labelled = open_volume(container, "volumes/labels/mito").read()[SECTION] != 0
        for layer in viewer.layers:
            layer.visible = layer.name == segmentation_name
        viewer.layers[segmentation_name].opacity = 1.0
        viewer.dims.set_point(0, SECTION * 5.0)
        height, width = viewer.canvas.size
        camera_of(viewer).center = (SECTION * 5.0, 95.5 * 5.0, 95.5 * 5.0)
        camera_of(viewer).zoom = min(height, width) / (192 * 5.0)
        shot = viewer.screenshot(canvas_only=True, flash=False)
        zoom = camera_of(viewer).zoom
        voxels = np.arange(192) * 5.0 - 95.5 * 5.0
        rows = np.clip(np.round(shot.shape[0] / 2 + voxels * zoom).astype(int), 0, shot.shape[0] - 1)
        columns = np.clip(np.round(shot.shape[1] / 2 + voxels * zoom).astype(int), 0, shot.shape[1] - 1)
        drawn = _magenta(shot[np.ix_(rows, columns)])
        assert (drawn == predicted).mean() > 0.97  # the prediction's colour exactly where it predicted
        assert (drawn & labelled).sum() / (drawn | labelled).sum() > 0.7  # which is where the mitochondria are

        picture = os.environ.get("INCASEM_SCREENSHOT")
        if picture:
            for layer in viewer.layers:
                layer.visible = layer.name in ("raw_equalized_0.02", segmentation_name)
            viewer.layers[segmentation_name].opacity = 0.5
            viewer.reset_view()
            Path(picture).parent.mkdir(parents=True, exist_ok=True)
            from PIL import Image

            Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save(picture)
    finally:
        viewer.close()


def _sleepy(item: int) -> int:
    import time

    time.sleep(0.05)
    return item


def test_cancel_in_the_middle_stops_the_job_and_the_same_button_resumes_it(qtbot):
    from incasem.blockwise import RunOptions, run_each
    from incasem.napari.widgets import RESUMES, JobPanel

    panel, modes, results = JobPanel(), [], []

    def job(mode):
        modes.append(mode)
        return run_each(_sleepy, list(range(200)), "count", RunOptions(workers=1, progress=False))

    panel.start("count", job, results.append)
    qtbot.waitUntil(lambda: panel._monitor is not None and panel._monitor.state().done >= 2, timeout=30_000)
    panel._cancel.native.click()
    qtbot.waitUntil(lambda: not panel.busy, timeout=30_000)
    assert panel._status.value == RESUMES and results == []  # nothing shown as if done
    panel.start("count", job, results.append)
    qtbot.waitUntil(lambda: not panel.busy, timeout=60_000)
    assert modes == ["create", "resume"] and results == [list(range(200))] and panel._status.value == "done"


def test_a_bad_model_is_one_line_in_the_notification_area_and_the_widget_keeps_working(qtbot, sample_cell):
    from napari.components import ViewerModel
    from napari.utils.notifications import notification_manager

    from incasem.napari import actions
    from incasem.napari.layers import container_layers
    from incasem.napari.widgets import PredictWidget

    viewer = ViewerModel()
    actions.add_layers(viewer, container_layers(sample_cell))
    widget = PredictWidget(viewer)
    shown = []
    notification_manager.notification_ready.connect(shown.append)
    try:
        widget.raw.value = viewer.layers["raw_equalized_0.02"]
        widget.model_text.value = "run:99"
        widget.run_button.native.click()
        qtbot.waitUntil(lambda: not widget.panel.busy and bool(shown), timeout=30_000)
        message = str(shown[-1].message)
        assert message.startswith("incasem: error: ") and "run 99" in message and "\n" not in message
        assert not (sample_cell / "volumes" / "predictions").exists()
        widget.region.value = "box"  # no box layer: refused before any job starts
        widget.run_button.native.click()
        assert "shapes layer" in str(shown[-1].message) and not widget.panel.busy
    finally:
        notification_manager.notification_ready.disconnect(shown.append)


def test_the_label_and_fine_tune_widget_trains_from_two_painted_sections_and_predicts_with_the_run(qtbot, sample_cell, tmp_path):
    from napari.components import ViewerModel

    from incasem.model.shipped import SHIPPED_FOLDER
    from incasem.napari import actions
    from incasem.napari.layers import container_layers
    from incasem.napari.widgets import FineTuneWidget

    viewer = ViewerModel()
    actions.add_layers(viewer, container_layers(sample_cell))
    widget = FineTuneWidget(viewer)
    widget.raw.value = viewer.layers["raw_equalized_0.02"]
    corners = [[24, 0, 96], [24, 0, 192], [24, 96, 192], [24, 96, 96]]  # a box drawn on section 24 where the mitochondria are
    widget.shapes.value = viewer.add_shapes([np.array(corners) * 5.0], shape_type="rectangle")
    widget.region.value, widget.depth.value = "box", 48
    widget.new_layer.native.click()
    paint = widget.paint.value
    assert paint is not None and paint.data.shape == (48, 96, 96) and tuple(paint.translate) == (0, 0, 96 * 5.0)
    truth = np.asarray(viewer.layers["labels/mito"].data)[:, :96, 96:] != 0
    paint.data[[12, 36]] = truth[[12, 36]]
    widget.start_from.value = str(SHIPPED_FOLDER / "mito-fibsem-5nm-small.pt")  # the shipped network at its smallest block: fast on a CPU
    widget.iterations.value = 2
    widget.settings.value = "training.input_size_voxels=[108,108,108] training.output_size_voxels=[14,14,14] training.num_workers=0 intervals.validate_every=1"
    widget.device.value = "cpu"
    widget.runs_dir.value = tmp_path / "runs"
    lines = []

    def finished() -> bool:
        lines.append(widget.panel._status.value)  # the status line, as the user sees it while waiting
        return not widget.panel.busy

    widget.run_button.native.click()
    qtbot.waitUntil(finished, timeout=240_000)
    assert widget.panel._status.value == "done", lines
    assert any(line.startswith("train run 1: ") and "loss" in line and "validation F1" in line for line in lines), set(lines)  # live
    assert open_volume(sample_cell, "volumes/labelled/mito_painted").read().any(axis=(1, 2)).sum() == 2
    assert "predictions/run-1/0001/segmentation" in viewer.layers
