"""Training run folders: a short integer id per run and everything about it in one folder.

Every ``incasem train`` gets the next free id in the *runs folder* (``--runs-dir``, else
the ``INCASEM_RUNS_DIR`` environment variable, else ``./runs``)::

    <runs folder>/
        mlflow.db                      MLflow's local store of all runs (with incasem[mlflow])
        12/
            run.json                   the record: command, status, iteration, checkpoints with scores, best
            config.yaml                the training configuration as run
            data/train.json            byte copies of the data configs
            data/val.json
            metrics.jsonl              one JSON object per line: losses, timings, validation scores
            checkpoints/iteration_0001000.pt
            snapshots/
            tensorboard/               TensorBoard event files

``incasem runs list`` / ``incasem runs show 12`` read these folders, and the model name
``run:12`` (``run:12@5000``) names the best (a given) checkpoint of a run. Ids are
allocated with ``os.mkdir``, so concurrent trainings never share a folder. Nothing here
ever deletes anything: ``run.json`` is replaced atomically and everything else is
written once.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import shlex
import shutil
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from incasem.errors import ConfigError, InputFileError, RunError, option
from incasem.files import atomic_write_text, configured_folder

DEFAULT_RUNS_DIR = "runs"
"""The runs folder when neither ``--runs-dir`` nor ``INCASEM_RUNS_DIR`` is given (relative to the current directory)."""

RUNS_DIR_ENV = "INCASEM_RUNS_DIR"
"""Environment variable that sets the runs folder."""

_RUN_NAME = re.compile(r"[1-9][0-9]*")  # a run folder's name: its id, without leading zeros
_SPEC = re.compile(r"([0-9]+)(?:@([0-9]+))?")  # RUN or RUN@ITERATION


def runs_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The runs folder (not created here).

    Parameters
    ----------
    path : str or os.PathLike, optional
        Explicit folder; wins over ``INCASEM_RUNS_DIR`` and the default ``./runs``.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    RunError
        If that path exists and is not a folder.
    """
    return configured_folder(path, RUNS_DIR_ENV, Path(DEFAULT_RUNS_DIR), "runs folder", option("runs_dir", "--runs-dir"), RunError)


def _list_hint(root: Path) -> str:
    return f"see `incasem runs list --runs-dir {shlex.quote(str(root))}`"


# ---------------------------------------------------------------------- files


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as indented JSON (no NaN or infinity) atomically to ``path``."""
    try:
        text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as error:
        raise RunError(f"cannot record {sorted(data)} in {path}: {error}; record only plain finite values") from None
    atomic_write_text(path, text)


def _score(name: str, value: object) -> float | None:
    """A score as stored: a float, or ``None`` for an undefined (missing or non-finite) score."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RunError(f"score {name!r} must be a number or None, got {value!r}")
    return float(value) if math.isfinite(value) else None


def _scores(scores: Mapping[str, float | None] | None) -> dict[str, float | None]:
    return {str(name): _score(str(name), value) for name, value in (scores or {}).items()}


def _iteration(iteration: object) -> int:
    if isinstance(iteration, bool) or not isinstance(iteration, numbers.Integral) or iteration < 0:
        raise RunError(f"iteration must be a whole number >= 0, got {iteration!r}")
    return int(iteration)


# ---------------------------------------------------------------------- a run folder


@dataclass(frozen=True)
class RunFolder:
    """The folder of one training run.

    Parameters
    ----------
    id : int
        The run id (the folder's name).
    path : pathlib.Path
        ``<runs folder>/<id>``.
    """

    id: int
    path: Path

    @property
    def record_path(self) -> Path:
        """``run.json``: the run's record."""
        return self.path / "run.json"

    @property
    def config_path(self) -> Path:
        """``config.yaml``: the training configuration."""
        return self.path / "config.yaml"

    @property
    def data_dir(self) -> Path:
        """``data/``: copies of the data configs (``train.json``, ``val.json``)."""
        return self.path / "data"

    @property
    def metrics_path(self) -> Path:
        """``metrics.jsonl``: one JSON object per logged step."""
        return self.path / "metrics.jsonl"

    @property
    def checkpoints_dir(self) -> Path:
        """``checkpoints/``."""
        return self.path / "checkpoints"

    @property
    def snapshots_dir(self) -> Path:
        """``snapshots/``."""
        return self.path / "snapshots"

    @property
    def tensorboard_dir(self) -> Path:
        """``tensorboard/``: TensorBoard event files."""
        return self.path / "tensorboard"

    @property
    def lock_path(self) -> Path:
        """``.lock``: present while a process trains the run (its pid and host)."""
        return self.path / ".lock"

    def trainer(self) -> str | None:
        """The live process training this run (``"pid 123 on host"``), or ``None``.

        A lock left by a process of this host that no longer runs (killed with SIGKILL,
        a crash) does not count; one from another host is taken as live.
        """
        try:
            holder = json.loads(self.lock_path.read_text(encoding="utf-8"))
            pid, host = int(holder["pid"]), str(holder["host"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return f"an unknown process (unreadable {self.lock_path}; delete it if no training of run {self.id} runs)"
        if host == socket.gethostname():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return None
            except PermissionError:
                pass
        return f"process {pid} on {host}"

    @contextmanager
    def claim(self) -> Iterator[None]:
        """Train this run in this process only: hold ``.lock`` meanwhile.

        Raises
        ------
        RunError
            If another live process trains the run.
        """
        holder = self.trainer()
        if holder is not None:
            raise RunError(f"run {self.id} is being trained by {holder}: wait for it or stop it (Ctrl-C saves a checkpoint), then resume")
        self.lock_path.unlink(missing_ok=True)  # a stale lock of a dead process
        try:
            fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            raise RunError(f"run {self.id} was just claimed by another process: wait for it, then resume") from None
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump({"pid": os.getpid(), "host": socket.gethostname()}, stream)
        try:
            yield
        finally:
            self.lock_path.unlink(missing_ok=True)

    @property
    def model_path(self) -> Path:
        """``run-<id>.pt``: the run's model, its best checkpoint with the decisions chosen on the
        validation data (:mod:`incasem.train.calibrate`); predictions are filed under its name."""
        return self.path / f"run-{self.id}.pt"

    def set_model(self, iteration: int, decisions: Mapping[str, Any]) -> None:
        """Record :attr:`model_path` as the run's model, made from the checkpoint of ``iteration``.

        Raises
        ------
        RunError
            If the file is missing or a value is not plain finite JSON.
        """
        self.update(model={"iteration": _iteration(iteration), "file": self._relative(self.model_path), **decisions})

    def checkpoint_path(self, iteration: int) -> Path:
        """Where the checkpoint of ``iteration`` goes: ``checkpoints/iteration_0001000.pt``.

        Parameters
        ----------
        iteration : int
            A whole number >= 0.

        Returns
        -------
        pathlib.Path
        """
        return self.checkpoints_dir / f"iteration_{_iteration(iteration):07d}.pt"

    def record(self) -> dict[str, Any]:
        """The parsed ``run.json``.

        Returns
        -------
        dict

        Raises
        ------
        RunError
            If ``run.json`` is missing, unreadable or not a JSON object.
        """
        try:
            record = json.loads(self.record_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunError(f"{self.path} has no run.json, so it is not a run (or its creation broke off): {_list_hint(self.path.parent)}") from None
        except (OSError, ValueError) as error:
            raise RunError(f"the record {self.record_path} of run {self.id} is unreadable ({error})") from None
        if not isinstance(record, dict):
            raise RunError(f"the record {self.record_path} of run {self.id} is not a JSON object")
        return record

    def update(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into ``run.json`` (replaced atomically).

        Parameters
        ----------
        **fields
            Keys and JSON-serialisable values, e.g. ``status="finished", iteration=5000``.

        Returns
        -------
        dict
            The new record.

        Raises
        ------
        RunError
            If ``run.json`` is unreadable or a value is not plain finite JSON.
        """
        record = {**self.record(), **fields}
        _write_json(self.record_path, record)
        return record

    def checkpoints(self) -> list[dict[str, Any]]:
        """The checkpoints in the record, by iteration: ``{"iteration", "file", "scores"}``.

        Returns
        -------
        list of dict

        Raises
        ------
        RunError
            If the record is unreadable or its ``checkpoints`` list is damaged.
        """
        return _entries(self, self.record())

    def _relative(self, file: str | os.PathLike[str]) -> str:
        """``file`` (absolute, or relative to the current directory) relative to the run folder."""
        path = Path(file)
        if not path.is_file():
            raise RunError(f"checkpoint {path} does not exist: save it before adding it to run {self.id}")
        try:
            return path.resolve().relative_to(self.path.resolve()).as_posix()
        except ValueError:
            raise RunError(f"checkpoint {path} is not inside the folder {self.path} of run {self.id}: save it under {self.checkpoints_dir}") from None

    def add_checkpoint(self, iteration: int, file: str | os.PathLike[str], scores: Mapping[str, float | None] | None = None) -> None:
        """Record a saved checkpoint (replacing an entry of the same iteration).

        Parameters
        ----------
        iteration : int
            Iteration the checkpoint was saved at.
        file : str or os.PathLike
            The checkpoint file, inside the run folder (e.g. :meth:`checkpoint_path`).
        scores : mapping, optional
            Its validation scores, e.g. ``{"f1": 0.83, "loss": 0.12}``; non-finite or
            missing scores are stored as ``null``.

        Raises
        ------
        RunError
            If the file is missing or outside the run folder, or a score is not a number.
        """
        entry = {"iteration": _iteration(iteration), "file": self._relative(file), "scores": _scores(scores)}
        kept = [other for other in self.checkpoints() if other["iteration"] != entry["iteration"]]
        self.update(checkpoints=sorted([*kept, entry], key=lambda other: other["iteration"]))

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Replace the run's ``config.yaml`` atomically (a resumed run that trains longer)."""
        atomic_write_text(self.config_path, _config_yaml(config))

    def set_best(self, iteration: int, scores: Mapping[str, float | None]) -> None:
        """Mark the recorded checkpoint of ``iteration`` as the run's best.

        Parameters
        ----------
        iteration : int
            Iteration of a checkpoint added with :meth:`add_checkpoint`.
        scores : mapping
            The scores that made it the best.

        Raises
        ------
        RunError
            If no checkpoint of ``iteration`` is recorded.
        """
        iteration = _iteration(iteration)
        checkpoints = self.checkpoints()
        entry = next((c for c in checkpoints if c["iteration"] == iteration), None)
        if entry is None:
            listed = ", ".join(str(c["iteration"]) for c in checkpoints) or "none yet"
            raise RunError(
                f"run {self.id} has no checkpoint of iteration {iteration} to mark as best (checkpoints: {listed}): add it with add_checkpoint first"
            )
        self.update(best={"iteration": iteration, "file": entry["file"], "scores": _scores(scores)})


def _is_entry(entry: object) -> bool:
    """Whether ``entry`` is a checkpoint entry of a record: a dict with an int iteration and a str file."""
    return isinstance(entry, dict) and isinstance(entry.get("iteration"), int) and isinstance(entry.get("file"), str)


def _entries(run: RunFolder, record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The checkpoint entries of ``record``, by iteration."""
    entries = record.get("checkpoints") or []
    if not isinstance(entries, list) or not all(_is_entry(entry) for entry in entries):
        raise RunError(f"the checkpoint list in {run.record_path} is damaged: each entry needs an iteration and a file")
    return sorted(entries, key=lambda entry: entry["iteration"])


# ---------------------------------------------------------------------- runs folder


def _run_ids(root: Path) -> list[int]:
    """Ids of the entries of ``root`` named like a run (folders or not), ascending."""
    if not root.is_dir():
        return []
    return sorted(int(entry.name) for entry in os.scandir(root) if _RUN_NAME.fullmatch(entry.name))


def _training_iterations(config: Mapping[str, Any]) -> int:
    """``config["training"]["iterations"]``, a whole number >= 1."""
    training = config.get("training") if isinstance(config, Mapping) else None
    iterations = training.get("iterations") if isinstance(training, Mapping) else None
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ConfigError(f"the run's config needs training.iterations, a whole number >= 1, got {iterations!r}")
    return iterations


class _ConfigDumper(yaml.SafeDumper):
    """Block style for sections, flow style for lists: ``input_size_voxels: [204, 204, 204]``."""


_ConfigDumper.add_representer(list, lambda dumper, value: dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True))


def _config_yaml(config: Mapping[str, Any]) -> str:
    try:
        return yaml.dump(dict(config), Dumper=_ConfigDumper, sort_keys=False, width=1000)
    except yaml.YAMLError as error:
        raise ConfigError(f"the run's config holds a value YAML cannot store ({error}): pass plain data (TrainingConfig.to_dict())") from None


def _data_file(path: str | os.PathLike[str], role: str) -> Path:
    data = Path(path).expanduser()
    if not data.is_file():
        raise InputFileError(f"{role} data config {data} is not a file: give the JSON file of the {role} ROIs")
    return data


def _allocate(root: Path) -> RunFolder:
    """Make the folder of the next free id (``max + 1``), retrying when another process took it."""
    while True:
        run_id = max(_run_ids(root), default=0) + 1
        try:
            os.mkdir(root / str(run_id))
        except FileExistsError:
            continue
        return RunFolder(run_id, root / str(run_id))


def create_run(
    root: str | os.PathLike[str] | None,
    *,
    config: Mapping[str, Any],
    train_data: str | os.PathLike[str],
    val_data: str | os.PathLike[str] | None,
    command: Sequence[str],
    start_from: str | None = None,
) -> RunFolder:
    """Create the folder of a new run under the next free id.

    Everything is checked before the folder is made; ``run.json`` is written last, so
    a creation that breaks off leaves a folder that no listing shows as a run.

    Parameters
    ----------
    root : str or os.PathLike or None
        Runs folder (see :func:`runs_dir`); created if missing, nothing else in it is touched.
    config : mapping
        The training configuration (plain data, e.g. ``TrainingConfig.to_dict()``) with
        ``training.iterations``; stored as ``config.yaml``.
    train_data, val_data : str or os.PathLike
        Data config files of the training and validation ROIs (``val_data`` may be
        ``None``); copied byte for byte to ``data/train.json`` and ``data/val.json``.
    command : sequence of str
        The command line that started the run.
    start_from : str, optional
        The model the run was fine-tuned from, as given.

    Returns
    -------
    RunFolder
        The run, status ``"running"`` at iteration 0.

    Raises
    ------
    ConfigError
        If the config lacks ``training.iterations`` or is not plain data.
    InputFileError
        If a data config is not a file.
    RunError
        If the runs folder is a file.
    """
    iterations = _training_iterations(config)
    sources = {"train": _data_file(train_data, "training")}
    if val_data is not None:
        sources["val"] = _data_file(val_data, "validation")
    config_text = _config_yaml(config)
    root = runs_dir(root)
    root.mkdir(parents=True, exist_ok=True)
    run = _allocate(root)
    run.data_dir.mkdir()
    for name, source in sources.items():
        shutil.copyfile(source, run.data_dir / f"{name}.json")
    for folder in (run.checkpoints_dir, run.snapshots_dir, run.tensorboard_dir):
        folder.mkdir()
    atomic_write_text(run.config_path, config_text)
    _write_json(
        run.record_path,
        {
            "id": run.id,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": [str(word) for word in command],
            "status": "running",
            "iteration": 0,
            "iterations": iterations,
            "train_data": str(sources["train"].resolve()),
            "val_data": str(sources["val"].resolve()) if "val" in sources else None,
            "start_from": None if start_from is None else str(start_from),
            "checkpoints": [],
            "best": None,
        },
    )
    return run


def _parse_id(run_id: int | str, root: Path) -> int:
    if isinstance(run_id, bool) or not isinstance(run_id, (int, str)) or not re.fullmatch(r"[0-9]+", str(run_id)):
        raise RunError(f"run id {run_id!r} is not a whole number: runs are numbered 1, 2, 3, ... ({_list_hint(root)})")
    return int(run_id)


def open_run(root: str | os.PathLike[str] | None, run_id: int | str) -> RunFolder:
    """The run ``run_id`` of the runs folder ``root``.

    Parameters
    ----------
    root : str or os.PathLike or None
        Runs folder (see :func:`runs_dir`).
    run_id : int or str
        The run id, e.g. ``12`` or ``"12"``.

    Returns
    -------
    RunFolder

    Raises
    ------
    RunError
        If the id is not a whole number, or the run's folder or record is missing or unreadable.
    """
    root = runs_dir(root)
    number = _parse_id(run_id, root)
    run = RunFolder(number, root / str(number))
    if not run.path.is_dir():
        ids = ", ".join(str(other.id) for other in list_runs(root))
        there = f"runs there: {ids}" if ids else "no runs there"
        raise RunError(f"run {number} not found in {root}/ ({there}): {_list_hint(root)}")
    run.record()
    return run


def list_runs(root: str | os.PathLike[str] | None = None) -> list[RunFolder]:
    """The runs in the runs folder, by id.

    Parameters
    ----------
    root : str or os.PathLike, optional
        Runs folder (see :func:`runs_dir`); a missing one holds no runs.

    Returns
    -------
    list of RunFolder
        Folders named by a number that hold a readable ``run.json``; others are skipped.
    """
    root = runs_dir(root)
    runs = []
    for run_id in _run_ids(root):
        run = RunFolder(run_id, root / str(run_id))
        try:
            run.record()
        except RunError:
            continue
        runs.append(run)
    return runs


def _best_or_latest(run: RunFolder, record: Mapping[str, Any]) -> dict[str, Any]:
    best = record.get("best")
    if best is not None:
        if not _is_entry(best):
            raise RunError(f"the best checkpoint in {run.record_path} is damaged: it needs an iteration and a file")
        return best
    checkpoints = _entries(run, record)
    if not checkpoints:
        raise RunError(
            f"run {run.id} has no checkpoint yet (status {record.get('status')}, iteration "
            f"{record.get('iteration')} of {record.get('iterations')}): wait for its first checkpoint "
            f"(see `incasem runs show {run.id} --runs-dir {shlex.quote(str(run.path.parent))}`)"
        )
    return checkpoints[-1]


def _at_iteration(run: RunFolder, record: Mapping[str, Any], iteration: int) -> dict[str, Any]:
    checkpoints = _entries(run, record)
    entry = next((c for c in checkpoints if c["iteration"] == iteration), None)
    if entry is None:
        listed = ", ".join(str(c["iteration"]) for c in checkpoints) or "none yet"
        raise RunError(f"run {run.id} has no checkpoint of iteration {iteration} (checkpoints: {listed}): name one of those, or the run alone for its best")
    return entry


def resolve_run_checkpoint(spec: str, root: str | os.PathLike[str] | None = None) -> Path:
    """The checkpoint file a run checkpoint name refers to.

    Parameters
    ----------
    spec : str
        ``"12"``: the model of run 12 (``run-12.pt``, its best checkpoint with the decisions
        chosen on the validation data) where it was made from the best checkpoint, else the
        best checkpoint (while none is marked best, its latest); ``"12@5000"``: its
        checkpoint of iteration 5000.
    root : str or os.PathLike, optional
        Runs folder (see :func:`runs_dir`).

    Returns
    -------
    pathlib.Path
        The checkpoint file, ``<runs folder>/<id>/checkpoints/...``.

    Raises
    ------
    RunError
        If ``spec`` is malformed, the run does not exist, has no (such) checkpoint, or
        the recorded file is missing.
    """
    match = _SPEC.fullmatch(spec.strip())
    if match is None:
        raise RunError(f"{spec!r} does not name a run checkpoint: give RUN or RUN@ITERATION, e.g. 12 or 12@5000")
    run = open_run(root, match[1])
    record = run.record()
    entry = _best_or_latest(run, record) if match[2] is None else _at_iteration(run, record, int(match[2]))
    model = record.get("model")
    if match[2] is None and isinstance(model, dict) and _is_entry(model) and model["iteration"] == entry["iteration"] and (run.path / model["file"]).is_file():
        entry = model
    path = run.path / entry["file"]
    if not path.is_file():
        raise RunError(
            f"checkpoint {path} of run {run.id} (iteration {entry['iteration']}) is recorded but missing: "
            "restore the file or name another checkpoint of the run"
        )
    return path


def run_model_name(checkpoint: str | os.PathLike[str]) -> str | None:
    """The name predictions of a run's checkpoint are filed under: ``run-12`` for the run's model,
    ``run-12@5000`` for its checkpoint of iteration 5000; ``None`` for a file outside a run folder."""
    path = Path(checkpoint)
    folder = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    if not folder.name.isdigit() or not (folder / "run.json").is_file():
        return None
    if path.parent.name == "checkpoints":
        iteration = re.fullmatch(r"iteration_(\d+)\.pt", path.name)
        return f"run-{int(folder.name)}@{int(iteration[1])}" if iteration else None
    return path.stem if path.name == f"run-{int(folder.name)}.pt" else None


def metrics_lines(run: RunFolder) -> list[tuple[int, str, dict[str, Any] | None]]:
    """``(line number, text, parsed object or None)`` of each line of ``metrics.jsonl``."""
    if not run.metrics_path.is_file():
        return []
    result = []
    for number, text in enumerate(run.metrics_path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        result.append((number, text, parsed if isinstance(parsed, dict) else None))
    return result


def read_metrics(run: RunFolder) -> list[dict[str, Any]]:
    """The lines of a run's ``metrics.jsonl``, parsed.

    Parameters
    ----------
    run : RunFolder

    Returns
    -------
    list of dict
        In the order written; empty if nothing was logged yet. A truncated last line
        (a run killed while writing it) is left out.

    Raises
    ------
    RunError
        If a line other than the last is not a JSON object.
    """
    lines = metrics_lines(run)
    for number, text, parsed in lines[:-1]:
        if parsed is None:
            raise RunError(f"line {number} of {run.metrics_path} is not a JSON object ({text[:60]!r}): fix or remove that line")
    return [parsed for _, _, parsed in lines if parsed is not None]
