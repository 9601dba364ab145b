"""Tracking a training run without a server (DESIGN §6).

A :class:`Tracker` writes every logged value of a run three ways:

- ``metrics.jsonl`` in the run folder, one JSON object per line (``incasem runs show``
  reads it; :func:`incasem.runs.read_metrics` parses it);
- TensorBoard event files in ``<run>/tensorboard/`` (``tensorboard --logdir runs``);
- MLflow, when installed (``pip install "incasem[mlflow]"``): by default a local SQLite
  store ``<runs folder>/mlflow.db`` that ``mlflow ui --backend-store-uri
  sqlite:///runs/mlflow.db`` shows, or a lab's tracking server.

A resumed run (``start_iteration > 0``, the iteration of the checkpoint it resumes
from) drops what the killed run logged after that checkpoint, since those iterations
are done again: ``metrics.jsonl`` keeps only lines up to ``start_iteration`` and
TensorBoard purges later steps. MLflow cannot forget metric values, so its history
keeps both versions of those steps; the resumed run continues the same MLflow run.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import warnings
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Self

import numpy as np
import yaml

from incasem.errors import ConfigError, InvalidValueError, option
from incasem.files import atomic_write_text
from incasem.runs import RunFolder, metrics_lines

EXPERIMENT = "incasem"
"""Name of the MLflow experiment that all runs are logged to."""

_MLFLOW_MISSING = 'MLflow is not installed: pip install "incasem[mlflow]"'
_BATCH = 100  # MLflow's limit of params per log_batch request


def _finite(value: object) -> float | None:
    """``value`` as a float, ``None`` where it is missing or not finite."""
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


def _flatten(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Leaf keys of a nested mapping as dotted keys: ``("optimizer.lr", 3e-05)``."""
    for key, value in config.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _use_mlflow(enabled: bool | None) -> bool:
    """Whether to log to MLflow: ``enabled``, or where it is ``None`` whether MLflow is installed."""
    if enabled is False:
        return False
    try:
        import mlflow  # noqa: F401
    except ImportError:
        if enabled:
            raise ConfigError(_MLFLOW_MISSING) from None
        return False
    return True


_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S*$")


def check_tracking(mlflow: bool | None, tracking_uri: str | None) -> None:
    """Refuse, before a run starts, MLflow settings it could not honour (one-line errors).

    Raises
    ------
    ConfigError
        If MLflow is required (``mlflow=True`` or a ``tracking_uri``) but not installed, or
        ``tracking_uri`` is given with ``mlflow=False`` or is not a URI.
    """
    if tracking_uri is None:
        _use_mlflow(mlflow)
        return
    if mlflow is False:
        raise ConfigError(f"{option('tracking_uri', '--tracking-uri')} is an MLflow store: drop {option('mlflow=False', '--no-mlflow')} or the URI")
    if not _URI.match(tracking_uri):
        raise ConfigError(
            f"{option('tracking_uri', '--tracking-uri')} {tracking_uri!r} is not an MLflow store URI: give e.g. sqlite:///runs/mlflow.db, "
            "file:///path/mlruns or http://host:5000"
        )
    _use_mlflow(True)


class _MlflowRun:
    """The MLflow run of an incasem run: created once, continued on resume."""

    def __init__(self, run: RunFolder, tracking_uri: str, artifact_location: str | None) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.errors = (MlflowException, OSError)
        """What a failing MLflow call raises."""
        for name in ("mlflow", "alembic"):  # their INFO lines (database migrations) are not the user's business
            logging.getLogger(name).setLevel(logging.WARNING)
        self._client = MlflowClient(tracking_uri)
        self._uri = tracking_uri
        self._artifact_location = artifact_location
        try:
            self.run_id = self._continue(run) or self._create(run)
        except self.errors as error:
            raise ConfigError(
                f"cannot log run {run.id} to MLflow at {tracking_uri} ({_first_line(error)}): check the tracking URI, or train without MLflow"
            ) from None

    def _experiment_id(self) -> str:
        experiment = self._client.get_experiment_by_name(EXPERIMENT)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self._client.create_experiment(EXPERIMENT, artifact_location=self._artifact_location)
        except self.errors:  # created meanwhile by a concurrent training
            created = self._client.get_experiment_by_name(EXPERIMENT)
            assert created is not None, f"MLflow could neither create nor find experiment {EXPERIMENT}"
            return created.experiment_id

    def _continue(self, run: RunFolder) -> str | None:
        """The MLflow run recorded in ``run.json``, set running again; ``None`` if none is there."""
        run_id = run.record().get("mlflow_run_id")
        if not isinstance(run_id, str):
            return None
        try:
            self._client.update_run(run_id, status="RUNNING")
        except self.errors:  # not in this store (another tracking URI): start a new one
            return None
        return run_id

    def _create(self, run: RunFolder) -> str:
        from mlflow.entities import Param

        mlflow_run = self._client.create_run(
            self._experiment_id(),
            run_name=f"run {run.id}",
            tags={"incasem_run_dir": str(run.path.resolve())},
        )
        run_id = mlflow_run.info.run_id
        config = yaml.safe_load(run.config_path.read_text(encoding="utf-8")) if run.config_path.is_file() else {}
        params = [Param(key, str(value)) for key, value in _flatten(config or {})]
        for start in range(0, len(params), _BATCH):
            self._client.log_batch(run_id, params=params[start : start + _BATCH])
        run.update(mlflow_run_id=run_id, mlflow_tracking_uri=self._uri)
        return run_id

    def log(self, iteration: int, values: Mapping[str, float]) -> None:
        """Log ``values`` (metric name -> value) at step ``iteration``."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, iteration) for key, value in values.items()]
        if metrics:
            self._client.log_batch(self.run_id, metrics=metrics)

    def close(self, status: str) -> None:
        self._client.set_terminated(self.run_id, status=status)


def _mlflow_run(run: RunFolder, enabled: bool | None, tracking_uri: str | None) -> _MlflowRun | None:
    """The MLflow run to log to, if any: at ``tracking_uri``, else in ``<runs folder>/mlflow.db``."""
    if not _use_mlflow(enabled):
        return None
    if tracking_uri:
        return _MlflowRun(run, tracking_uri, artifact_location=None)
    root = run.path.parent.resolve()  # artifacts (none yet) beside the store, not in the current directory
    return _MlflowRun(run, f"sqlite:///{root}/mlflow.db", (root / "mlartifacts").as_uri())


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _metric_name(*parts: str) -> str:
    """An MLflow metric name: the parts joined by ``_``, characters MLflow refuses replaced by ``_``."""
    return re.sub(r"[^\w\-. /]", "_", "_".join(parts))


class Tracker:
    """Logs a run's metrics to metrics.jsonl, TensorBoard event files (``run.tensorboard_dir``)
    and, when mlflow is installed and enabled, MLflow.

    Use it as a context manager: on leaving, the MLflow run ends as FINISHED, KILLED
    (Ctrl-C) or FAILED (an exception).

    Parameters
    ----------
    run : RunFolder
        The run (see :func:`incasem.runs.create_run`).
    start_iteration : int, optional
        0 for a new run; for a resumed run the iteration of its checkpoint: what was
        logged after it is dropped (``metrics.jsonl``, TensorBoard).
    mlflow : bool or None, optional
        ``None``: log to MLflow if it is installed; ``False``: never; ``True``: MLflow is required.
    tracking_uri : str, optional
        MLflow tracking URI; default ``sqlite:///<runs folder>/mlflow.db``.

    Raises
    ------
    ConfigError
        If MLflow is required but not installed, or the MLflow store cannot be used.
    InvalidValueError
        If ``start_iteration`` is not a whole number >= 0.
    """

    def __init__(
        self,
        run: RunFolder,
        *,
        start_iteration: int = 0,
        mlflow: bool | None = None,
        tracking_uri: str | None = None,
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if isinstance(start_iteration, bool) or not isinstance(start_iteration, int) or start_iteration < 0:
            raise InvalidValueError(f"start_iteration must be a whole number >= 0, got {start_iteration!r}")
        self.run = run
        self._mlflow = _mlflow_run(run, mlflow, tracking_uri)
        _truncate_metrics(run, start_iteration)
        self._metrics = open(run.metrics_path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self._writer = SummaryWriter(str(run.tensorboard_dir), purge_step=start_iteration + 1)

    def _write_line(self, line: Mapping[str, Any]) -> None:
        self._metrics.write(json.dumps(line, allow_nan=False) + "\n")
        self._metrics.flush()

    def _to_mlflow(self, iteration: int, values: Mapping[str, float]) -> None:
        """Log to MLflow; if that fails, warn once and go on without MLflow."""
        if self._mlflow is None:
            return
        try:
            self._mlflow.log(iteration, values)
        except self._mlflow.errors as error:
            warnings.warn(
                f"MLflow logging failed ({_first_line(error)}); run {self.run.id} goes on with metrics.jsonl and TensorBoard only",
                stacklevel=3,
            )
            self._mlflow = None

    def log_train(self, iteration: int, values: Mapping[str, float]) -> None:
        """Log training values of an iteration.

        Parameters
        ----------
        iteration : int
        values : mapping
            E.g. ``{"loss": 0.4, "seconds_per_iteration": 1.2, "data_wait_fraction": 0.1}``.
            Non-finite values are written as ``null`` and not sent to TensorBoard or MLflow.
        """
        clean = {key: _finite(value) for key, value in values.items()}
        self._write_line({"iteration": iteration, "split": "train", **clean, "time": time.time()})
        defined = {key: value for key, value in clean.items() if value is not None}
        for key, value in defined.items():
            self._writer.add_scalar(f"train/{key}", value, iteration)
        self._to_mlflow(iteration, {_metric_name("train", key): value for key, value in defined.items()})

    def log_validation(
        self,
        iteration: int,
        per_roi: Mapping[str, Mapping[str, float | None]],
        summary: Mapping[str, float | None],
    ) -> None:
        """Log the validation scores of an iteration, per ROI and summarised.

        Parameters
        ----------
        iteration : int
        per_roi : mapping
            ROI name -> scores, e.g. ``{"roi_0": {"loss": 0.3, "f1": 0.8}}``.
        summary : mapping
            Scores over all ROIs. ``None`` (undefined) scores are written as ``null`` and
            not sent to TensorBoard or MLflow.
        """
        now = time.time()
        scalars: dict[str, float] = {}
        for roi, scores in [*per_roi.items(), (None, summary)]:
            clean = {key: _finite(value) for key, value in scores.items()}
            self._write_line({"iteration": iteration, "split": "validation", "roi": roi, **clean, "time": now})
            prefix = ("validation",) if roi is None else ("validation", str(roi))
            scalars.update({"/".join((*prefix, key)): v for key, v in clean.items() if v is not None})
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, value, iteration)
        self._to_mlflow(iteration, {_metric_name(*tag.split("/")): value for tag, value in scalars.items()})

    def log_image(self, tag: str, iteration: int, image_hw_uint8: np.ndarray) -> None:
        """Show a 2D uint8 image (e.g. a section of raw, labels and prediction) in TensorBoard.

        Parameters
        ----------
        tag : str
        iteration : int
        image_hw_uint8 : numpy.ndarray
            Height × width, uint8.

        Raises
        ------
        InvalidValueError
            If the image is not a 2D uint8 array.
        """
        image = np.asarray(image_hw_uint8)
        if image.ndim != 2 or image.dtype != np.uint8:
            raise InvalidValueError(f"image {tag!r} must be a 2D uint8 array, got {image.dtype} of shape {image.shape}")
        self._writer.add_image(tag, image, iteration, dataformats="HW")

    def close(self) -> None:
        """Flush and close the files; end the MLflow run as FINISHED."""
        self._close("FINISHED")

    def _close(self, status: str) -> None:
        if self._metrics.closed:
            return
        self._metrics.close()
        self._writer.close()
        if self._mlflow is not None:
            try:
                self._mlflow.close(status)
            except self._mlflow.errors as error:
                warnings.warn(f"MLflow could not end run {self.run.id} ({_first_line(error)})", stacklevel=3)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None) -> None:
        if kind is None:
            self._close("FINISHED")
        elif issubclass(kind, Exception):
            self._close("FAILED")
        else:  # KeyboardInterrupt, the command line's interrupt, SystemExit
            self._close("KILLED")


def _truncate_metrics(run: RunFolder, start_iteration: int) -> None:
    """Rewrite ``metrics.jsonl`` atomically with only the lines up to ``start_iteration``."""
    lines = metrics_lines(run)
    if not lines:
        return
    kept = [
        text + "\n" for _, text, parsed in lines if parsed is not None and isinstance(parsed.get("iteration"), int) and parsed["iteration"] <= start_iteration
    ]
    atomic_write_text(run.metrics_path, "".join(kept))
