"""One blockwise engine for every job that walks a volume: plan, run on Dask, record.

A job is a :class:`BlockwiseTask`: the region to write (voxel units on the world
grid), the block shape (chosen to match the output's chunks, so that parallel
writers never share a chunk), the context each block reads around its write region,
a per-worker ``setup`` (open datasets, load a model: once per worker process) and a
per-block ``process``. Finished blocks are recorded as empty files in a folder next
to the output, so an interrupted job started again skips them.

How a job runs is one :class:`RunOptions` value, the same for every job: the
default engine is Dask's local threaded scheduler (all cores, nothing to set up);
``RunOptions(scheduler="tcp://host:8786")`` runs the same task on an existing Dask
cluster. Functions given as ``setup``/``process`` must be picklable for a cluster:
use module-level functions and :func:`functools.partial`.
"""

from __future__ import annotations

import ctypes
import os
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import dask
from dask.callbacks import Callback
from tqdm import tqdm

from incasem.errors import InvalidValueError, SchedulerError, option
from incasem.geometry import Roi, Triple, as_triple
from incasem.io.volume import WriteMode, check_write_mode
from incasem.monitor import JobMonitor, current_monitor

#: How long to wait for a Dask scheduler to answer.
SCHEDULER_TIMEOUT = "10s"

#: Name of the folder, inside an output dataset, that records finished blocks.
DONE_FOLDER = ".incasem_done"


@dataclass(frozen=True)
class Block:
    """One unit of work: the region it writes and the region (with context) it reads."""

    write_roi: Roi
    read_roi: Roi

    @property
    def block_id(self) -> str:
        """Stable name of the block, from the corner of its write region."""
        return "_".join(str(v) for v in self.write_roi.offset)


def plan_blocks(write_roi: Roi, block_shape: Triple, context: Triple = (0, 0, 0), grid_origin: Triple | None = None) -> list[Block]:
    """Cut ``write_roi`` into blocks on a grid anchored at ``grid_origin``.

    The blocks' write regions cover ``write_roi`` exactly once; border blocks are
    clipped. Each read region is its write region grown by ``context`` on every side
    (it may leave the data; the block function pads).
    """
    context = as_triple(context, "context")
    return [Block(tile, tile.grow(context)) for tile in write_roi.tiles(block_shape, grid_origin)]


class DoneRecord:
    """Finished blocks of one job, as empty files named by block id in ``folder``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def is_done(self, block: Block) -> bool:
        """Whether ``block`` finished in an earlier or the current run."""
        return (self.folder / block.block_id).exists()

    def mark_done(self, block: Block) -> None:
        """Record ``block`` as finished (call after its output is written)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / block.block_id).touch()


def done_record_for(container: str | Path, dataset: str) -> DoneRecord:
    """The record of finished blocks kept inside output dataset ``dataset``."""
    return DoneRecord(Path(container) / dataset / DONE_FOLDER)


def _no_setup() -> None:
    return None


def _no_teardown(state: Any) -> None:
    return None


@dataclass(frozen=True)
class BlockwiseTask:
    """A job to run block by block.

    Attributes
    ----------
    name
        Shown on the progress bar.
    blocks
        The blocks to process (see :func:`plan_blocks`).
    process
        ``process(block, state)`` computes and writes one block; what it returns is
        collected by :func:`run_blockwise` (e.g. per-block metric counts to sum).
    setup
        Called once per worker process; its result is passed to ``process`` as ``state``.
    done
        Record of finished blocks; blocks found in it are skipped.
    teardown
        Called with that state on every worker when the job ends (e.g. to hand GPU
        memory back); the state itself is dropped then.
    """

    name: str
    blocks: list[Block]
    process: Callable[[Block, Any], Any]
    setup: Callable[[], Any] = _no_setup
    done: DoneRecord | None = None
    teardown: Callable[[Any], None] = _no_teardown
    token: str = field(default_factory=lambda: uuid.uuid4().hex)


_MALLOC_TRIM: Callable[[int], int] | None
try:
    _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
    _MALLOC_TRIM = None

_WORKER_STATE: dict[str, Any] = {}
_NO_STATE = object()
_WORKER_LOCK = threading.Lock()


def _worker_state(task: BlockwiseTask) -> Any:
    """The task's per-worker state, set up on first use in this process."""
    with _WORKER_LOCK:
        if task.token not in _WORKER_STATE:
            _WORKER_STATE[task.token] = task.setup()
        return _WORKER_STATE[task.token]


def _release_freed_memory() -> None:
    """Hand the memory a block freed back to the operating system.

    After numpy frees a large temporary, glibc raises its mmap threshold, later
    temporaries come from the heap, and the heap fragments: without this, the
    resident memory of a long job grew by ~0.3 MB per 128³ block, without bound.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _run_block(task: BlockwiseTask, block: Block) -> Any:
    result = task.process(block, _worker_state(task))
    if task.done is not None:
        task.done.mark_done(block)
    _release_freed_memory()
    return result


class _ProgressCallback(Callback):
    def __init__(self, bar: tqdm) -> None:
        super().__init__()
        self._bar = bar

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        self._bar.update(1)


@dataclass(frozen=True)
class RunOptions:
    """How a job runs: the same for every blockwise job (``incasem`` options ``--scheduler``,
    ``--workers/-n``, ``--quiet/-q``). Validated on construction, so a job given one has
    nothing left to refuse before it writes.

    Attributes
    ----------
    scheduler
        ``None`` for Dask's local threaded scheduler, or the address of a running
        Dask scheduler (``tcp://host:8786``).
    workers
        Threads of the local scheduler (default: all cores; a prediction keeps a few
        blocks in flight instead).
    progress
        Show a progress bar on stderr.

    Raises
    ------
    InvalidValueError
        For ``workers`` < 1, a malformed ``scheduler`` or a ``progress`` that is not a bool.
    """

    scheduler: str | None = None
    workers: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        workers, scheduler = self.workers, self.scheduler
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise InvalidValueError(f"{option('workers', '--workers')} must be a whole number of at least 1, got {workers!r}")
        if scheduler is not None and (not isinstance(scheduler, str) or "://" not in scheduler or scheduler.endswith("://")):
            raise InvalidValueError(f"{option('scheduler', '--scheduler')} needs a Dask scheduler address like tcp://host:8786, got {scheduler!r}")
        if not isinstance(self.progress, bool):
            raise InvalidValueError(f"progress must be True or False (--quiet turns it off), got {self.progress!r}")


def check_run(run: object) -> RunOptions:
    """Return ``run`` if it is a :class:`RunOptions`; jobs call this before writing anything.

    Raises
    ------
    InvalidValueError
        For anything else (e.g. a scheduler address given where the options go).
    """
    if not isinstance(run, RunOptions):
        raise InvalidValueError(f"run must be RunOptions(scheduler=..., workers=..., progress=...), got {run!r}")
    return run


def check_job(mode: WriteMode, run: RunOptions) -> None:
    """Refuse a bad write mode or run options; every job calls this first, before it writes anything.

    Raises
    ------
    InvalidValueError
        See :func:`incasem.io.volume.check_write_mode` and :func:`check_run`.
    SchedulerError
        If ``run`` names a Dask scheduler that does not answer (:func:`check_scheduler`).
    """
    check_write_mode(mode)
    check_scheduler(check_run(run))


#: Scheduler addresses that answered in this process (checked once each).
_REACHED: set[str] = set()


def check_scheduler(run: RunOptions) -> None:
    """Refuse a Dask scheduler that does not answer, so that a job finds out before it writes its
    output (one connection per address and process; the local scheduler needs none).

    Raises
    ------
    SchedulerError
        Naming the address and how to fix it.
    """
    address = run.scheduler
    if address is None or address in _REACHED:
        return
    with _connect(address):
        pass
    _REACHED.add(address)


def _connect(address: str) -> Any:
    """A :class:`distributed.Client` of the scheduler at ``address``, or :class:`SchedulerError`."""
    from distributed import Client

    try:
        return Client(address, set_as_default=False, timeout=SCHEDULER_TIMEOUT)
    except OSError as error:
        raise SchedulerError(
            f"cannot reach the Dask scheduler at {address} ({error}): start it with `dask scheduler` or fix {option('scheduler', '--scheduler')}"
        ) from None


def run_blockwise(task: BlockwiseTask, options: RunOptions = RunOptions()) -> list[Any]:
    """Run every block of ``task`` that is not recorded as done; return their results.

    The results come in the order of ``task.blocks`` (blocks skipped as done give none).

    Parameters
    ----------
    task
        The blocks and what to do with each.
    options
        Where (local threads or a Dask cluster), on how many local threads, and
        whether to show a progress bar; see :class:`RunOptions`.
    """
    todo = [b for b in task.blocks if task.done is None or not task.done.is_done(b)]
    return run_each(partial(_run_block, task), todo, task.name, options, cleanup=partial(_forget_state, task))


def run_each(
    function: Callable[[Any], Any],
    items: list[Any],
    name: str,
    options: RunOptions = RunOptions(),
    cleanup: Callable[[], None] | None = None,
) -> list[Any]:
    """``function(item)`` for every item, where ``options`` says: local threads or a Dask cluster.

    The results come in the order of ``items``. ``function`` and the items must be
    picklable for a cluster (module-level functions, :func:`functools.partial`).
    ``cleanup`` runs when the run ends, also after an error: here, or on every worker
    of the cluster.
    """
    options = check_run(options)
    if not items:
        return []
    monitor = current_monitor()
    if monitor is not None:
        monitor.raise_if_cancelled()
        monitor.started(name, len(items))
    with tqdm(total=len(items), desc=name, unit="block", disable=not options.progress, leave=False) as bar:
        if options.scheduler is not None:
            return _run_on_cluster(function, items, options.scheduler, bar, cleanup, monitor)
        if monitor is not None:
            function = partial(_watched, monitor, function)
        delayed = [dask.delayed(function, pure=False)(item) for item in items]
        try:
            with _ProgressCallback(bar):
                return _compute_locally(delayed, options.workers or os.cpu_count() or 1)
        finally:
            if cleanup is not None:
                cleanup()


def _watched(monitor: JobMonitor, function: Callable[[Any], Any], item: Any) -> Any:
    """``function(item)`` unless a Cancel came first; then count it as done."""
    monitor.raise_if_cancelled()
    result = function(item)
    monitor.advanced()
    return result


def _compute_locally(delayed_blocks: list[Any], workers: int) -> list[Any]:
    """Compute on a thread pool of our own that, on any error or Ctrl-C, drops the queued blocks
    and waits for the running ones: when this returns or raises, no block is still writing."""
    pool = ThreadPoolExecutor(workers, thread_name_prefix="incasem-block")
    try:
        return list(dask.compute(*delayed_blocks, scheduler="threads", pool=pool))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _forget_state(task: BlockwiseTask) -> None:
    """Drop a finished task's per-worker state in this process, after its ``teardown``."""
    with _WORKER_LOCK:
        state = _WORKER_STATE.pop(task.token, _NO_STATE)
    if state is not _NO_STATE:
        task.teardown(state)
    _release_freed_memory()


def _run_on_cluster(
    run: Callable[[Any], Any], items: list[Any], address: str, bar: tqdm, cleanup: Callable[[], None] | None, monitor: JobMonitor | None
) -> list[Any]:
    from distributed import as_completed

    with _connect(address) as client:
        futures = []
        try:
            futures = client.map(run, items, pure=False)
            for future in as_completed(futures, loop=client.loop):
                future.result()
                bar.update(1)
                if monitor is not None:
                    monitor.advanced()
                    monitor.raise_if_cancelled()
            return [future.result() for future in futures]
        except KeyboardInterrupt:  # Cancel or Ctrl-C: drop the blocks not yet started (running ones finish on their workers)
            client.cancel([future for future in futures if not future.done()])
            raise
        finally:
            if cleanup is not None:  # the workers keep no model or GPU memory after the job
                client.run(cleanup)
