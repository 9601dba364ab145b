"""The dock widgets: Convert, Predict, Label & fine-tune, Evaluate (magicgui on Qt).

Each is a thin shell over :mod:`incasem.napari.actions`: it reads its fields, runs the
action in a worker thread under a :class:`~incasem.monitor.JobMonitor` (:class:`JobPanel`:
a progress bar, a line of status, live training values, a Cancel button) and adds the
results as layers. An error is one line in napari's notification area, as the command
line prints it; the viewer keeps running. Cancel stops the job before its next block or
iteration: the outputs stay marked incomplete, and pressing the same button again with the
same inputs resumes them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from magicgui.types import FileDialogMode
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
    Table,
)

from incasem.errors import IncasemError, InvalidValueError
from incasem.io.layout import LABELS_GROUP, PREDICTIONS_GROUP
from incasem.io.volume import WriteMode
from incasem.model.zoo import list_models
from incasem.monitor import JobCancelled, JobMonitor, JobState, watching
from incasem.napari import actions
from incasem.napari.layers import source_of
from incasem.napari.regions import DEFAULT_DEPTH_VOXELS, region_of

__all__ = ["ConvertWidget", "EvaluateWidget", "FineTuneWidget", "JobPanel", "PredictWidget", "describe_state"]

#: How often the panel shows the job's progress, ms.
POLL_MS = 200
#: The status line after a Cancel of a job that the same button resumes.
RESUMES = "cancelled: press again to resume"
#: The model the widgets start from.
DEFAULT_MODEL = "mito-fibsem-5nm"


def notify_error(error: BaseException) -> None:
    """One line in napari's notification area, as the command line prints it."""
    from napari.utils.notifications import show_error

    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    show_error(f"incasem: error: {text}" if isinstance(error, IncasemError) else f"incasem: error: {type(error).__name__}: {text}")


def describe_state(state: JobState) -> str:
    """The status line of a job: its step and progress, and the training values where it trains."""
    if not state.step:
        return "starting..."
    text = f"{state.step}: {state.done}/{state.total}"
    metrics = state.metrics
    if "loss" in metrics:
        text += f"  loss {metrics['loss']:.4f}"
    if "val_f1" in metrics:
        shown = [f"{metrics[k]:.3f}" if not math.isnan(metrics[k]) else "undefined" for k in ("val_f1", "best_val_f1")]
        text += f"  validation F1 {shown[0]} (best {shown[1]})"
    return text


class _Cancelled:
    """What a worker returns for a job stopped by Cancel."""


def _watched_call(monitor: JobMonitor, call: Callable[[], Any]) -> Any:
    with watching(monitor):
        try:
            return call()
        except JobCancelled:
            return _Cancelled()


class JobPanel(Container):
    """Progress bar, status line and Cancel of one widget's jobs; one job at a time."""

    def __init__(self) -> None:
        self._bar = ProgressBar(value=0, min=0, max=1, visible=False)
        self._status = Label(value="")
        self._cancel = PushButton(text="Cancel", enabled=False)
        super().__init__(widgets=[self._bar, self._status, self._cancel])
        self._cancel.changed.connect(self.cancel)
        self._monitor: JobMonitor | None = None
        self._cancelled_key: Hashable | None = None
        from qtpy.QtCore import QTimer

        self._timer = QTimer()
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._show_progress)
        self.worker: Any = None

    @property
    def busy(self) -> bool:
        """Whether a job is running."""
        return self._monitor is not None

    def cancel(self) -> None:
        """Ask the running job to stop (it finishes the blocks in flight)."""
        if self._monitor is not None:
            self._monitor.cancel()
            self._status.value = "cancelling: finishing the blocks in flight..."

    def _show_progress(self) -> None:
        if self._monitor is None:
            return
        state = self._monitor.state()
        self._bar.max, self._bar.value = max(state.total, 1), min(state.done, max(state.total, 1))
        if not state.cancelled:
            self._status.value = describe_state(state)

    def start(self, key: Hashable, job: Callable[[WriteMode], Any], done: Callable[[Any], Any], cancelled: str = RESUMES) -> None:
        """Run ``job(mode)`` in a worker thread, then ``done(result)`` here; ``mode`` is ``"resume"``
        where the last job of this panel with the same ``key`` was cancelled, else ``"create"``.
        ``cancelled`` is the status line after a Cancel."""
        from napari.qt.threading import create_worker

        if self.busy:
            notify_error(InvalidValueError("a job of this widget is running: wait for it or cancel it"))
            return
        mode: WriteMode = "resume" if key == self._cancelled_key else "create"
        monitor = self._monitor = JobMonitor()
        self._bar.visible, self._bar.value, self._cancel.enabled = True, 0, True
        self._status.value = "starting..."

        def finished(result: Any) -> None:
            if isinstance(result, _Cancelled):
                self._cancelled_key = key
                self._status.value = cancelled
                return
            self._cancelled_key = None
            self._status.value = "done"
            try:
                done(result)
            except Exception as error:  # a result that cannot be shown must not stop the viewer
                notify_error(error)

        def failed(error: BaseException) -> None:
            self._status.value = "failed"
            notify_error(error)

        def ended() -> None:
            self._timer.stop()
            self._bar.value = self._bar.max
            self._monitor, self._cancel.enabled = None, False

        # errors go to `failed` (a notification), not re-raised in the GUI thread
        connections = {"returned": finished, "errored": failed, "finished": ended}
        worker = create_worker(_watched_call, monitor, lambda: job(mode), _start_thread=False, _connect=connections)
        self.worker = worker
        self._timer.start()
        worker.start()


def _layer_choices(viewer: Any, accept: Callable[[Any], bool]) -> Callable[[Any], list[tuple[str, Any]]]:
    def choices(_widget: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in viewer.layers if accept(layer)]

    return choices


def _is_raw(layer: Any) -> bool:
    source = source_of(layer)
    return source is not None and layer.__class__.__name__ == "Image" and not source.dataset.startswith(f"{PREDICTIONS_GROUP}/")


def _is_shapes(layer: Any) -> bool:
    return layer.__class__.__name__ == "Shapes"


def _model_names() -> list[str]:
    try:
        return [entry.model_id for entry in list_models()]
    except IncasemError:  # an unreadable models folder: the field still takes a name or path
        return [DEFAULT_MODEL]


def _optional_folder(value: Any) -> Path | None:
    text = str(value).strip()
    return None if text in ("", ".") else Path(text)


class _ViewerWidget(Container):
    """A dock widget over ``viewer`` whose layer pickers follow the viewer's layers."""

    def __init__(self, viewer: Any, widgets: list[Any]) -> None:
        self.panel = JobPanel()
        super().__init__(widgets=[*widgets, self.panel])
        self.viewer = viewer
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(lambda _event: self.reset_choices())

    def _region(self, choice: str, layer: Any, shapes: Any, depth: int) -> Any:
        return region_of(choice, self.viewer, layer, shapes, depth)  # type: ignore[arg-type]

    def _guarded(self, action: Callable[[], None]) -> None:
        """Run a quick action of a button here; an error is a notification."""
        try:
            action()
        except IncasemError as error:
            notify_error(error)


def _parse_voxel_size(text: str) -> tuple[float, float, float]:
    parts = [part.strip() for part in text.replace("x", ",").split(",") if part.strip()]
    try:
        values = [float(part) for part in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise InvalidValueError(f"voxel size must be Z,Y,X in nm (e.g. 5,5,5), got {text!r}")
    return values[0], values[1], values[2]


class ConvertWidget(_ViewerWidget):
    """A TIFF folder, MRC, HDF5, N5, OME-Zarr or OME-TIFF volume into a container, then CLAHE; the layers open."""

    def __init__(self, napari_viewer: Any) -> None:
        viewer = napari_viewer
        self.source = FileEdit(
            label="source",
            mode=FileDialogMode.EXISTING_DIRECTORY,
            tooltip="A folder of 2D TIFF sections; or type a multi-page / OME-TIFF, MRC file, FILE.h5:/dataset, CONTAINER.n5/dataset or OME-Zarr image",
        )
        self.voxel_size = LineEdit(label="voxel size (nm)", value="", tooltip="Z,Y,X in nm; empty: the file's own (MRC, HDF5, N5, OME)")
        self.container = FileEdit(label="container (.zarr)", mode=FileDialogMode.OPTIONAL_FILE, filter="*.zarr")
        self.equalize = CheckBox(label="equalise (3D CLAHE)", value=True)
        self.run_button = PushButton(text="Convert")
        super().__init__(viewer, [self.source, self.voxel_size, self.container, self.equalize, self.run_button])
        self.run_button.changed.connect(lambda: self._guarded(self.run))

    def run(self) -> None:
        """Start the conversion."""
        source, container = Path(str(self.source.value)), Path(str(self.container.value))
        voxel_size = _parse_voxel_size(self.voxel_size.value) if self.voxel_size.value.strip() else None
        equalize = self.equalize.value
        if str(container) in ("", "."):
            raise InvalidValueError("name the container to write (a new .zarr folder)")

        def job(mode: WriteMode) -> list[actions.LayerData]:
            datasets = actions.convert_stack(source, container, voxel_size, equalize=equalize, mode=mode)
            return actions.dataset_layers(container, datasets)

        self.panel.start(("convert", source, container, voxel_size, equalize), job, lambda layers: actions.add_layers(self.viewer, layers))


class PredictWidget(_ViewerWidget):
    """Predict organelles in the view, a drawn box or everything, with a shipped, published or trained model."""

    def __init__(self, napari_viewer: Any) -> None:
        viewer = napari_viewer
        self.raw = ComboBox(label="raw", choices=_layer_choices(viewer, _is_raw), tooltip="The equalised raw the model reads")
        self.model = ComboBox(label="model", choices=_model_names(), value=DEFAULT_MODEL)
        self.model_text = LineEdit(label="or", value="", tooltip="run:ID of a training run, a published id or a checkpoint path (wins over the list)")
        self.region = ComboBox(label="region", choices=["view", "box", "all"], value="view")
        self.shapes = ComboBox(label="box layer", choices=_layer_choices(viewer, _is_shapes), nullable=True)
        self.depth = SpinBox(label="sections", value=DEFAULT_DEPTH_VOXELS, min=1, max=100_000, tooltip="Sections (z) of a region from the view or a box")
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda", "mps"], value="auto")
        self.runs_dir = FileEdit(
            label="runs folder", mode=FileDialogMode.EXISTING_DIRECTORY, tooltip="Where run:ID models live (default: $INCASEM_RUNS_DIR or ./runs)"
        )
        self.run_button = PushButton(text="Predict")
        widgets = [self.raw, self.model, self.model_text, self.region, self.shapes, self.depth, self.device, self.runs_dir, self.run_button]
        super().__init__(viewer, widgets)
        self.run_button.changed.connect(lambda: self._guarded(self.run))

    def chosen_model(self) -> str:
        """The model name, id, ``run:ID`` or path the widget predicts with."""
        return self.model_text.value.strip() or str(self.model.value)

    def run(self) -> None:
        """Start the prediction."""
        raw = self.raw.value
        if raw is None:
            raise InvalidValueError("no raw image of an incasem container is open: open a .zarr (File > Open Folder) or the sample")
        roi = self._region(self.region.value, raw, self.shapes.value, self.depth.value)
        model, device, runs_dir = self.chosen_model(), self.device.value, _optional_folder(self.runs_dir.value)
        source = source_of(raw)

        def job(mode: WriteMode) -> list[actions.LayerData]:
            output = actions.predict_layer_region(raw, model, roi, device=device, runs_dir=runs_dir, mode=mode)
            return actions.prediction_layers(output)

        key = ("predict", source, model, roi, device)
        self.panel.start(key, job, lambda layers: actions.add_layers(self.viewer, layers))


def _is_paint(layer: Any) -> bool:
    return actions.PAINT_KEY in getattr(layer, "metadata", {})


class FineTuneWidget(_ViewerWidget):
    """Paint a few sections, save them as partial labels, fine-tune a model on them, predict with the new run."""

    def __init__(self, napari_viewer: Any) -> None:
        viewer = napari_viewer
        self.raw = ComboBox(label="raw", choices=_layer_choices(viewer, _is_raw))
        self.labels_name = LineEdit(label="labels name", value="mito_painted", tooltip="Saved as volumes/labels/<name> and volumes/labelled/<name>")
        self.region = ComboBox(label="region", choices=["view", "box", "all"], value="view")
        self.shapes = ComboBox(label="box layer", choices=_layer_choices(viewer, _is_shapes), nullable=True)
        self.depth = SpinBox(label="sections", value=DEFAULT_DEPTH_VOXELS, min=1, max=100_000)
        self.new_layer = PushButton(text="New paint layer")
        self.help = Label(value="Paint 1 = organelle, 2 = background in a few sections;\nunpainted sections stay unlabelled.")
        self.paint = ComboBox(label="paint layer", choices=_layer_choices(viewer, _is_paint))
        self.save_button = PushButton(text="Save labels")
        self.start_from = LineEdit(label="start from", value=DEFAULT_MODEL, tooltip="Model name, published id, run:ID or checkpoint path")
        self.iterations = SpinBox(label="iterations", value=400, min=1, max=1_000_000)
        self.settings = LineEdit(label="settings", value="", tooltip="More training settings key=value, separated by spaces (as incasem fine-tune takes them)")
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda", "mps"], value="auto")
        self.runs_dir = FileEdit(label="runs folder", mode=FileDialogMode.EXISTING_DIRECTORY, tooltip="Default: the folder 'runs' beside the container")
        self.run_button = PushButton(text="Fine-tune, then predict")
        widgets = [self.raw, self.labels_name, self.region, self.shapes, self.depth, self.new_layer, self.help, self.paint, self.save_button]
        super().__init__(viewer, [*widgets, self.start_from, self.iterations, self.settings, self.device, self.runs_dir, self.run_button])
        self.new_layer.changed.connect(lambda: self._guarded(self.add_paint_layer))
        self.save_button.changed.connect(lambda: self._guarded(self.save))
        self.run_button.changed.connect(lambda: self._guarded(self.run))

    def add_paint_layer(self) -> Any:
        """A new paint layer over the chosen region of the raw."""
        raw = self.raw.value
        if raw is None:
            raise InvalidValueError("no raw image of an incasem container is open: open a .zarr (File > Open Folder) or the sample")
        layer = actions.add_paint_layer(self.viewer, raw, self._region(self.region.value, raw, self.shapes.value, self.depth.value), self.labels_name.value)
        self.paint.value = layer
        return layer

    def _paint_layer(self) -> Any:
        if self.paint.value is None:
            raise InvalidValueError("no paint layer: press 'New paint layer' and paint a few sections")
        return self.paint.value

    def save(self) -> None:
        """Save the painted sections as partial labels."""
        from napari.utils.notifications import show_info

        labels, labelled = actions.save_painted(self._paint_layer())
        show_info(f"incasem: saved {labels.label} and {labelled.label}")

    def run(self) -> None:
        """Save, then fine-tune and predict the painted region with the new run, in the worker."""
        layer = self._paint_layer()
        actions.save_painted(layer)
        target = actions.paint_target(layer)
        start_from, iterations, device = self.start_from.value.strip(), self.iterations.value, self.device.value
        settings = self.settings.value.split()
        runs_dir = _optional_folder(self.runs_dir.value) or target.container.parent / "runs"
        roi = actions.paint_region(layer)

        def job(_mode: WriteMode) -> list[actions.LayerData]:
            run = actions.fine_tune_painted(target, start_from, iterations, settings, device=device, runs_dir=runs_dir)
            output = actions.predict_container_region(target.container, target.raw, f"run:{run.id}", roi, device=device, runs_dir=runs_dir)
            return actions.prediction_layers(output)

        note = f"cancelled: the run in {runs_dir} keeps its checkpoints (incasem train --resume ID --runs-dir {runs_dir} continues it)"
        self.panel.start(("fine-tune", target, start_from, iterations, tuple(settings)), job, lambda layers: actions.add_layers(self.viewer, layers), note)


def _is_prediction(layer: Any) -> bool:
    source = source_of(layer)
    return source is not None and source.dataset.startswith(f"{PREDICTIONS_GROUP}/")


def _is_labels(layer: Any) -> bool:
    source = source_of(layer)
    return source is not None and source.dataset.startswith(f"{LABELS_GROUP}/")


class EvaluateWidget(_ViewerWidget):
    """Scores of a prediction against labels (all voxels, exclusion zone, instances), as a table."""

    def __init__(self, napari_viewer: Any) -> None:
        viewer = napari_viewer
        self.prediction = ComboBox(label="prediction", choices=_layer_choices(viewer, _is_prediction))
        self.labels_layer = ComboBox(label="labels", choices=_layer_choices(viewer, _is_labels))
        self.instances = CheckBox(label="match instances", value=True)
        self.run_button = PushButton(text="Evaluate")
        self.table = Table(value=[])
        super().__init__(viewer, [self.prediction, self.labels_layer, self.instances, self.run_button, self.table])
        self.run_button.changed.connect(lambda: self._guarded(self.run))

    def run(self) -> None:
        """Start the evaluation."""
        prediction, labels, instances = self.prediction.value, self.labels_layer.value, self.instances.value
        if prediction is None or labels is None:
            raise InvalidValueError("choose a prediction and a labels layer of one container (predict first, or open a container with both)")

        def job(_mode: WriteMode) -> list[actions.ScoreRow]:
            return actions.score_rows(actions.evaluate_layers(prediction, labels, instances=instances))

        self.panel.start(("evaluate", id(prediction), id(labels), instances), job, self.show_rows, "cancelled")

    def show_rows(self, rows: list[actions.ScoreRow]) -> None:
        """Fill the table."""
        columns = ("organelle", "region", "F1", "IoU", "precision", "recall")
        values = [[row.organelle, row.region, *(("-" if math.isnan(v) else f"{v:.4f}") for v in (row.f1, row.iou, row.precision, row.recall))] for row in rows]
        self.table.value = {"data": values, "columns": columns}
