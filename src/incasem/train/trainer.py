"""``incasem train``: train or fine-tune a U-Net, validate it, keep the best checkpoint (DESIGN §6).

A run lives in its own folder (:mod:`incasem.runs`): the config, copies of the data
configs, metrics as JSON lines and TensorBoard events (:mod:`incasem.train.tracking`),
checkpoints and snapshots. Every ``intervals.save_every`` iterations, at the end, at a
new best validation F1 and on Ctrl-C a self-describing checkpoint (weights, model card,
optimizer state) is written atomically, so a killed run loses at most the iterations since
its last checkpoint; :func:`resume_training` continues it on the same data stream
(sample ``i`` depends only on the seed and ``i``; Adam with a constant learning rate has
no scheduler state beyond the optimizer's).

One training step: a batch of augmented samples (:mod:`incasem.train.data`), the
class-balanced masked cross entropy (:mod:`incasem.train.loss`) averaged over the
samples, Adam. bf16 autocast where the device runs it natively (``precision="auto"``);
channels-last memory on the CPU.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from incasem.errors import ConfigError, RunError, option
from incasem.io.data_config import DataConfig
from incasem.model.card import ModelCard
from incasem.model.checkpoint import (
    load_checkpoint,
    read_optimizer_state,
    save_checkpoint,
)
from incasem.model.unet import UNet, UNetConfig
from incasem.monitor import current_monitor
from incasem.predict.core import PRECISIONS, PrecisionChoice, check_choice, resolve_precision
from incasem.predict.device import free_memory_bytes, select_device
from incasem.predict.resample import format_voxel_size
from incasem.runs import RunFolder, create_run, open_run, runs_dir
from incasem.train.calibrate import make_run_model
from incasem.train.config import TrainingConfig, load_training_config
from incasem.train.data import SampleStream, TrainingSamples
from incasem.train.distributed import Distributed, start_distributed
from incasem.train.loss import balanced_masked_cross_entropy
from incasem.train.setup import (
    check_block_shapes,
    check_step_memory,
    class_names_of,
    load_start,
    load_training_data,
    resolve_config,
    starting_point,
)
from incasem.train.snapshots import write_snapshot
from incasem.train.tracking import Tracker, check_tracking
from incasem.train.validate import ValidationResult, validate

__all__ = ["RESUMABLE_KEYS", "TrainOptions", "resume_training", "train"]

#: Config keys a resumed run may change (how long, how it is logged), by prefix.
RESUMABLE_KEYS = ("training.iterations", "training.num_workers", "intervals.")

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class TrainOptions:
    """How and where a run trains (not part of the model's recipe, so not in the config).

    Attributes
    ----------
    device : str
        ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    precision : str
        ``auto`` (bf16 autocast where native), ``fp32``, ``bf16`` or ``fp16``.
    runs_dir : path, optional
        Folder of the run folders (default ``$INCASEM_RUNS_DIR`` or ``./runs``).
    data_root : path, optional
        Folder the data configs' ``file`` paths are relative to (default: each config's folder).
    cache_dir : path, optional
        Models folder for ``start_from`` names (see :func:`incasem.model.zoo.models_dir`).
    mlflow : bool, optional
        Log to MLflow too: ``None`` = when installed.
    tracking_uri : str, optional
        MLflow store (default: ``sqlite:///<runs_dir>/mlflow.db``).
    log : callable, optional
        Receives one line per event (validation, checkpoint, interruption); ``None``: silent.
    progress : bool
        Show a progress bar of the iterations.
    """

    device: str = "auto"
    precision: str = "auto"
    runs_dir: str | os.PathLike[str] | None = None
    data_root: str | os.PathLike[str] | None = None
    cache_dir: str | os.PathLike[str] | None = None
    mlflow: bool | None = None
    tracking_uri: str | None = None
    log: Callable[[str], None] | None = None
    progress: bool = False


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C back while weights or a checkpoint are half-written; it arrives right after."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


#: Widest first level (``model.num_fmaps``) that trains faster channels-last in fp32 on the CPU.
CHANNELS_LAST_FP32_MAX_FMAPS = 20


def training_memory_format(config: TrainingConfig, device: torch.device, precision: str) -> torch.memory_format:
    """The memory layout the network trains in: channels-last on the CPU where it is faster.

    Measured on 2 CPU cores (BENCHMARKS.md, Training): with bf16 autocast channels-last
    (26 s per 204³ step on an AVX512-BF16 CPU); in fp32 its backward convolutions are faster
    for narrow networks (140³ blocks: 12 feature maps 2.1 against 3.0 s, 20 maps 5.1 against
    5.7 s) and slower for wide ones (32 maps: 12.5 against 9.7 s; the standard 204³ step 65
    against 50 s), so fp32 trains channels-last up to :data:`CHANNELS_LAST_FP32_MAX_FMAPS`.
    On a GPU channels-first, as the original.
    """
    if device.type != "cpu":
        return torch.contiguous_format
    if precision != "fp32" or config.model.num_fmaps <= CHANNELS_LAST_FP32_MAX_FMAPS:
        return torch.channels_last_3d
    return torch.contiguous_format


def _as_uint8(raw: torch.Tensor) -> np.ndarray:
    """Network input in [-1, 1] back to uint8."""
    return ((raw.float().cpu().numpy() + 1.0) * 127.5 + 0.5).clip(0, 255).astype(np.uint8)


@dataclass
class _Progress:
    """What a run has done so far (rank 0's view)."""

    iteration: int
    last_saved: int | None
    best_f1: float | None


class _Trainer:
    """One process's training loop (see the module docstring)."""

    def __init__(
        self,
        config: TrainingConfig,
        model: UNet,
        card: ModelCard,
        samples: TrainingSamples,
        val_config: DataConfig | None,
        run: RunFolder | None,
        progress: _Progress,
        optimizer_state: dict[str, Any] | None,
        options: TrainOptions,
        dist: Distributed,
        device: torch.device,
    ) -> None:
        self.config, self.card, self.run, self.progress, self.options, self.dist, self.device = (
            config,
            card,
            run,
            progress,
            options,
            dist,
            device,
        )
        self.precision = resolve_precision(cast(PrecisionChoice, options.precision), device)  # checked by check_options
        self.memory_format = training_memory_format(config, device, self.precision)
        # torch's stubs lack Module.to(memory_format=...), which nn.Module.to accepts
        self.model = model.to(device).to(memory_format=self.memory_format)  # type: ignore[call-overload]
        self.model.train()
        self.network = dist.wrap(self.model, device)
        optimizer_config = config.optimizer
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=optimizer_config.lr, weight_decay=optimizer_config.weight_decay)
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)
        section = config.training
        self.stream = SampleStream(samples, device, section.batch_size, progress.iteration, section.num_workers, dist.rank, dist.world_size)
        self.val_config = val_config
        self.last_validation: tuple[int | None, Mapping[str, Any]] = (None, {})
        self.shown_validation: dict[str, str] = {}  # the progress bar's latest and best validation F1
        record = run.record() if run is not None else {}
        self.training_summary = {  # what every checkpoint's card says of its training
            "run": None if run is None else run.id,
            "train_data": record.get("train_data"),
            "val_data": record.get("val_data"),
            "config": config.to_dict(),
        }
        self.monitor = current_monitor()  # a GUI's progress and Cancel (incasem.monitor)
        self.tracker = (
            Tracker(run, start_iteration=progress.iteration, mlflow=options.mlflow, tracking_uri=options.tracking_uri)
            if run is not None and dist.is_main
            else None
        )

    @property
    def _run(self) -> RunFolder:
        """The run folder: only rank 0 (``dist.is_main``) has one, and only it writes there."""
        assert self.run is not None, "only rank 0 has the run folder"
        return self.run

    @property
    def _tracker(self) -> Tracker:
        """The run's tracker: only rank 0 (``dist.is_main``) logs."""
        assert self.tracker is not None, "only rank 0 tracks the run"
        return self.tracker

    # -- one step -----------------------------------------------------------------------

    def _step(self, batch: Mapping[str, torch.Tensor]) -> tuple[float, torch.Tensor]:
        raw = batch["raw"].contiguous(memory_format=self.memory_format)
        dtype = _AUTOCAST.get(self.precision)
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = self.network(raw)
        clip = (self.config.loss.clip_min, self.config.loss.clip_max)
        logits = logits.float()
        loss = torch.stack(
            [balanced_masked_cross_entropy(logits[i : i + 1], batch["labels"][i : i + 1], batch["mask"][i : i + 1], clip) for i in range(logits.shape[0])]
        ).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        with _interrupts_deferred():
            self.optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise RunError(
                f"training loss became {value} at iteration {self.progress.iteration + 1}: lower optimizer.lr or use "
                "precision fp32; the last checkpoint is intact"
            )
        return value, logits.detach()

    # -- the loop -----------------------------------------------------------------------

    def run_loop(self) -> None:
        """Train up to ``training.iterations``; save, validate, snapshot and log on the way."""
        total = self.config.training.iterations
        intervals = self.config.intervals
        if self.progress.iteration == 0 and self.val_config is not None:
            self._validate(0)
        bar = self._progress_bar(total)
        window: list[tuple[float, float, float]] = []
        if self.monitor is not None:
            self.monitor.started(f"train run {self.run.id if self.run is not None else ''}".rstrip(), total, self.progress.iteration)
        try:
            while self.progress.iteration < total:
                if self.monitor is not None:
                    self.monitor.raise_if_cancelled()
                started = time.perf_counter()
                batch = self.stream.next_batch()
                loaded = time.perf_counter()
                loss, logits = self._step(batch)
                self.progress.iteration += 1
                done = self.progress.iteration
                window.append((loss, loaded - started, time.perf_counter() - started))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", **self.shown_validation)
                if self.monitor is not None:
                    self.monitor.advanced()
                    self.monitor.record({"iteration": done, "loss": loss})
                if done % intervals.log_every == 0 or done == total:
                    self._log_train(done, window)
                    window = []
                if done % intervals.snapshot_every == 0 and self.dist.is_main:
                    self._snapshot_train(done, batch, logits)
                improved = False
                if self.val_config is not None and (done % intervals.validate_every == 0 or done == total):
                    improved = self._validate(done)
                if done % intervals.save_every == 0 or done == total or improved:
                    self._save(done, improved)
        finally:
            if bar is not None:
                bar.close()

    def _progress_bar(self, total: int) -> Any:
        if not (self.options.progress and self.dist.is_main):
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=self.progress.iteration, desc=f"train run {self._run.id}", unit="it")

    def _say(self, message: str) -> None:
        if self.options.log is not None and self.dist.is_main:
            self.options.log(message)

    def _log_train(self, iteration: int, window: list[tuple[float, float, float]]) -> None:
        if self.tracker is None or not window:
            return
        losses, waits, totals = zip(*window)
        self.tracker.log_train(
            iteration,
            {
                "loss": float(np.mean(losses)),
                "seconds_per_iteration": float(np.mean(totals)),
                "data_wait_fraction": float(sum(waits) / max(sum(totals), 1e-12)),
            },
        )

    def _validate(self, iteration: int) -> bool:
        """Validate (rank 0; the others wait); whether the F1 is a new best."""
        improved = False
        if self.dist.is_main:
            assert self.val_config is not None, "run_loop validates only with validation data"
            result = validate(self.model, self.val_config, self.card.class_names, device=self.device, precision=self.precision)
            self.model.train()
            self._tracker.log_validation(iteration, result.per_roi, result.summary)
            if result.example is not None and iteration % self.config.intervals.snapshot_every == 0:
                example = result.example
                name = f"iteration_{iteration:07d}_validation"
                picture = write_snapshot(self._run.snapshots_dir, name, example.raw, example.labels, example.probability)
                self._tracker.log_image("snapshot/validation", iteration, picture)
            improved = self._record_validation(iteration, result)
        self.dist.barrier()
        return bool(self.dist.broadcast(improved))

    def _record_validation(self, iteration: int, result: ValidationResult) -> bool:
        self.last_validation = (iteration, result.summary)
        f1 = result.f1
        shown = "undefined" if f1 is None else f"{f1:.4f}"
        improved = iteration > 0 and f1 is not None and (self.progress.best_f1 is None or f1 > self.progress.best_f1)
        loss = result.summary.get("loss")
        loss_text = "undefined" if loss is None else f"{loss:.4f}"
        self._say(f"iteration {iteration}: validation F1 {shown}, loss {loss_text}" + ("  (best so far)" if improved else ""))
        if iteration == 0:
            self._run.update(initial_validation=result.summary)
        if improved:
            self.progress.best_f1 = f1
        best = self.progress.best_f1
        self.shown_validation = {"val_f1": shown, "best_f1": "-" if best is None else f"{best:.4f}"}
        if self.monitor is not None:
            self.monitor.record({"val_iteration": iteration, "val_f1": math.nan if f1 is None else f1, "best_val_f1": math.nan if best is None else best})
        return improved

    def _save(self, iteration: int, best: bool = False) -> None:
        """Write the checkpoint of ``iteration`` (rank 0), atomically, Ctrl-C held back."""
        if not self.dist.is_main or self.progress.last_saved == iteration:
            return
        validated_at, summary = self.last_validation
        scores = dict(summary) if validated_at == iteration else None
        card = replace(self.card, iteration=iteration, validation_scores=scores, training=self.training_summary)
        path = self._run.checkpoint_path(iteration)
        try:
            with _interrupts_deferred():
                save_checkpoint(path, self.model, card, self.optimizer)
        except OSError as error:
            previous = "none yet" if self.progress.last_saved is None else str(self._run.checkpoint_path(self.progress.last_saved))
            raise RunError(
                f"could not write checkpoint {path} ({error.strerror or error}): the previous checkpoint ({previous}) is "
                f"intact: free space, then continue with `incasem train --resume {self._run.id} --runs-dir {self._run.path.parent}`"
            ) from error
        self._run.add_checkpoint(iteration, path, scores)
        if best:
            assert scores is not None, "a new best comes from this iteration's validation"
            self._run.set_best(iteration, scores)
        self._run.update(iteration=iteration)
        self.progress.last_saved = iteration
        self._say(f"iteration {iteration}: checkpoint {path}" + ("  (best)" if best else ""))

    def _snapshot_train(self, iteration: int, batch: Mapping[str, torch.Tensor], logits: torch.Tensor) -> None:
        output = tuple(batch["labels"].shape[1:])
        raw = batch["raw"][0, 0]
        starts = [(r - o) // 2 for r, o in zip(raw.shape, output)]
        raw = raw[tuple(slice(s, s + o) for s, o in zip(starts, output))]
        probability = torch.softmax(logits[0], dim=0)[1:].sum(dim=0).cpu().numpy()
        picture = write_snapshot(self._run.snapshots_dir, f"iteration_{iteration:07d}_train", _as_uint8(raw), batch["labels"][0].cpu().numpy(), probability)
        self._tracker.log_image("snapshot/train", iteration, picture)

    def stop(self, error: BaseException | None) -> None:
        """Record how the run ended; on Ctrl-C save the last finished iteration first."""
        self.stream.close()
        if not self.dist.is_main:
            return
        try:
            if error is None:
                self._run.update(status="finished", iteration=self.progress.iteration)
            elif isinstance(error, Exception):
                self._run.update(status="failed", error=str(error).splitlines()[0] if str(error) else type(error).__name__)
            else:
                if self.progress.iteration > 0:
                    self._save(self.progress.iteration)
                self._run.update(status="interrupted")
                self._say(
                    f"interrupted at iteration {self.progress.iteration}; continue with "
                    f"`incasem train --resume {self._run.id} --runs-dir {self._run.path.parent}`"
                )
        finally:
            if self.tracker is not None:
                self.tracker.__exit__(type(error) if error else None, error, None)


def _check_memory(architecture: UNetConfig, config: TrainingConfig, options: TrainOptions, device: torch.device, dist: Distributed) -> None:
    batch = config.training.batch_size // dist.world_size
    precision = resolve_precision(cast(PrecisionChoice, options.precision), device)  # checked by check_options
    check_step_memory(architecture, config, precision, batch, free_memory_bytes(device))


def check_options(options: TrainOptions) -> None:
    """Refuse bad options before any data is read or a run folder exists."""
    check_choice(option("precision", "--precision"), options.precision, PRECISIONS)
    select_device(options.device)
    runs_dir(options.runs_dir)
    check_tracking(options.mlflow, options.tracking_uri)


def _run_trainer(trainer_arguments: dict[str, Any]) -> None:
    trainer = _Trainer(**trainer_arguments)
    try:
        trainer.run_loop()
    except BaseException as error:
        trainer.stop(error)
        raise
    trainer.stop(None)


def _train_then_model(trainer_arguments: dict[str, Any]) -> None:
    """Train; then (rank 0) make the run's model with its decisions chosen on the validation data,
    also after Ctrl-C (from the best checkpoint so far; a second Ctrl-C skips it)."""
    run, val_config, options = trainer_arguments["run"], trainer_arguments["val_config"], trainer_arguments["options"]
    try:
        _run_trainer(trainer_arguments)
    except KeyboardInterrupt:
        if run is not None and val_config is not None and run.checkpoints():
            if options.log is not None:
                options.log("choosing the decisions of the best checkpoint so far (Ctrl-C again to skip)")
            _make_model(run, val_config, trainer_arguments["device"], options)
        raise
    _make_model(run, val_config, trainer_arguments["device"], options)


def _make_model(run: RunFolder | None, val_config: DataConfig | None, device: torch.device, options: TrainOptions) -> None:
    if run is not None and val_config is not None:
        precision = resolve_precision(cast(PrecisionChoice, options.precision), device)
        make_run_model(run, val_config, device=device, precision=precision, log=options.log)


def _samples(config: TrainingConfig, train_config: DataConfig, device: torch.device) -> TrainingSamples:
    """The training samples, with the sampler's up-front checks run (ROI sizes, raw dtype, foreground)."""
    section = config.training
    assert section.seed is not None, "train gives a run its seed (_seeded), a resumed run has it in its config"
    samples = TrainingSamples(
        train_config,
        config.augmentation,
        section.input_size_voxels,
        section.output_size_voxels,
        config.sampler_kwargs(),
        section.seed,
        augment_here=device.type == "cpu",
    )
    samples.check()
    return samples


def _seeded(config: TrainingConfig) -> TrainingConfig:
    if config.training.seed is not None:
        return config
    section = config.training.model_copy(update={"seed": secrets.randbelow(2**31)})
    return config.model_copy(update={"training": section})


def _data_root(path: Path, data_root: str | os.PathLike[str] | None) -> str:
    return str(Path(data_root).resolve() if data_root is not None else path.resolve().parent)


def train(
    train_data: str | os.PathLike[str],
    val_data: str | os.PathLike[str] | None = None,
    config: TrainingConfig | None = None,
    *,
    start_from: str | None = None,
    options: TrainOptions = TrainOptions(),
    command: Sequence[str] = (),
) -> RunFolder | None:
    """Train a new run; return its folder (``None`` on the non-main ranks of a ``torchrun`` job).

    Parameters
    ----------
    train_data, val_data : path
        Data configs (DESIGN §3) of the training ROIs and of the validation ROIs (validated
        every ``intervals.validate_every`` iterations; ``None``: no validation, no best).
    config : TrainingConfig, optional
        From :func:`incasem.train.config.load_training_config` (default: the original's defaults).
    start_from : str, optional
        Fine-tune this model (checkpoint file, published id or ``run:ID``): its weights,
        architecture, voxel size and classes.
    options : TrainOptions
        Device, precision, folders, tracking, messages.
    command : sequence of str
        The command line, recorded in the run.

    Raises
    ------
    ConfigError, RunError, CheckpointError, ...
        One-line errors before anything is written for bad data, config or model; a
        :class:`~incasem.errors.RunError` if saving a checkpoint fails (the previous one
        stays valid).
    """
    check_options(options)
    config = config if config is not None else load_training_config(None)
    train_path = Path(train_data)
    start = load_start(start_from, options.cache_dir, options.runs_dir) if start_from is not None else None
    config = resolve_config(config, start[1] if start else None, train_path, options.data_root, start_from)
    if start is not None and tuple(config.data.voxel_size) != tuple(start[1].voxel_size_nm) and options.log is not None:
        old, new = format_voxel_size(start[1].voxel_size_nm), format_voxel_size(config.data.voxel_size)
        options.log(f"note: {start_from} was trained at {old} nm; fine-tuned on this {new} nm data, the new model expects {new} nm")
    device = select_device(options.device)
    dist, device = start_distributed(device, config.training.batch_size)
    config = dist.broadcast(_seeded(config))  # one seed for every rank
    data = config.data
    train_config = load_training_data(train_path, data.voxel_size, data.num_classes, options.data_root, "training")
    val_config = None if val_data is None else load_training_data(val_data, data.voxel_size, data.num_classes, options.data_root, "validation")
    torch.manual_seed(config.training.seed)  # the fresh network's weights depend on the seed only
    point = starting_point(config, class_names_of(train_config, data.num_classes), start)
    check_block_shapes(point.model.config, config, config.augmentation.transpose_only)
    _check_memory(point.model.config, config, options, device, dist)
    samples = _samples(config, train_config, device)
    run = None
    if dist.is_main:
        run = create_run(
            options.runs_dir,
            config=config.to_dict(),
            train_data=train_path,
            val_data=None if val_data is None else Path(val_data),
            command=list(command),
            start_from=start_from,
        )
        run.update(
            train_data_root=_data_root(train_path, options.data_root),
            val_data_root=None if val_data is None else _data_root(Path(val_data), options.data_root),
            architecture=point.model.config.to_dict(),
            class_names=list(point.card.class_names),
        )
    with run.claim() if run is not None else contextlib.nullcontext():
        _train_then_model(
            {
                "config": config,
                "model": point.model,
                "card": point.card,
                "samples": samples,
                "val_config": val_config,
                "run": run,
                "progress": _Progress(0, None, None),
                "optimizer_state": None,
                "options": options,
                "dist": dist,
                "device": device,
            }
        )
    return run


def _changed_keys(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            yield from _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            yield f"{prefix}{key}"


def _resumed_config(run: RunFolder, overrides: Sequence[str]) -> TrainingConfig:
    """The run's stored config with ``overrides`` applied; only :data:`RESUMABLE_KEYS` may change."""
    stored = load_training_config(run.config_path)
    changed = load_training_config(run.config_path, overrides)
    for key in _changed_keys(stored.to_dict(), changed.to_dict()):
        if not key.startswith(RESUMABLE_KEYS):
            start = option(f"start_from='run:{run.id}'", f"--start-from run:{run.id}")
            raise ConfigError(
                f"key '{key}' differs from run {run.id}'s config ({_value(stored.to_dict(), key)} there): a resumed run "
                f"keeps its recipe (only {', '.join(RESUMABLE_KEYS)} may change); to train with the new value start a "
                f"new run with {start}"
            )
    return changed


def _value(data: Mapping[str, Any], dotted: str) -> Any:
    value: Any = data
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def resume_training(
    run_id: int | str,
    overrides: Sequence[str] = (),
    *,
    options: TrainOptions = TrainOptions(),
    command: Sequence[str] = (),
) -> RunFolder | None:
    """Continue a stopped run from its latest checkpoint, with its optimizer state and data stream.

    Parameters
    ----------
    run_id : int or str
        The run's id in ``options.runs_dir``.
    overrides : sequence of str
        ``key=value`` changes to the run's config: only :data:`RESUMABLE_KEYS` (e.g.
        more ``training.iterations``); anything else is refused.
    options, command
        As for :func:`train` (``data_root`` is ignored: the run knows its data).

    Raises
    ------
    RunError
        If the run does not exist, has already reached its iterations or is being
        trained by another live process.
    ConfigError
        If ``config`` changes the recipe.
    """
    check_options(options)
    run = open_run(options.runs_dir, run_id)
    record = run.record()
    config = _resumed_config(run, overrides)
    checkpoints = record.get("checkpoints") or []
    iteration = checkpoints[-1]["iteration"] if checkpoints else 0
    if iteration >= config.training.iterations:
        raise RunError(
            f"run {run.id} has already trained {iteration} of {config.training.iterations} iterations: raise "
            f"training.iterations (e.g. `incasem train --resume {run.id} training.iterations={2 * iteration}`)"
        )
    device = select_device(options.device)
    dist, device = start_distributed(device, config.training.batch_size)
    data = config.data
    train_config = load_training_data(run.data_dir / "train.json", data.voxel_size, data.num_classes, record["train_data_root"], "training")
    val_config = None
    if record.get("val_data_root") is not None:
        val_config = load_training_data(run.data_dir / "val.json", data.voxel_size, data.num_classes, record["val_data_root"], "validation")
    if checkpoints:
        path = run.path / checkpoints[-1]["file"]
        model, card = load_checkpoint(path)
        optimizer_state = read_optimizer_state(path)
        card = replace(card, iteration=None, validation_scores=None, training=None)
    else:
        start = load_start(record["start_from"], options.cache_dir, options.runs_dir) if record.get("start_from") else None
        point = starting_point(config, tuple(record["class_names"]), start)
        model, card, optimizer_state = point.model, point.card, None
    best = (record.get("best") or {}).get("scores") or {}
    _check_memory(model.config, config, options, device, dist)
    samples = _samples(config, train_config, device)
    with run.claim() if dist.is_main else contextlib.nullcontext():  # one process trains a run at a time
        if dist.is_main:
            run.update(status="running", iteration=iteration, iterations=config.training.iterations)
            run.write_config(config.to_dict())  # resumable keys may have changed
        _train_then_model(
            {
                "config": config,
                "model": model,
                "card": card,
                "samples": samples,
                "val_config": val_config,
                "run": run if dist.is_main else None,
                "progress": _Progress(iteration, iteration if checkpoints else None, best.get("f1")),
                "optimizer_state": optimizer_state,
                "options": options,
                "dist": dist,
                "device": device,
            }
        )
    return run if dist.is_main else None
