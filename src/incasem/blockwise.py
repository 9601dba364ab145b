"""One blockwise engine for every job that walks a volume: plan, run on Dask, record.

A job is a :class:`BlockwiseTask`: the region to write (voxel units on the world
grid), the block shape (chosen to match the output's chunks, so that parallel
writers never share a chunk), the context each block reads around its write region,
a per-worker ``setup`` (open datasets, load a model: once per worker process) and a
per-block ``process``. Finished blocks are recorded as empty files in a folder next
to the output, so an interrupted job started again skips them.

The default engine is Dask's local threaded scheduler (all cores, nothing to set
up); ``scheduler="tcp://host:8786"`` runs the same task on an existing Dask cluster.
Functions given as ``setup``/``process`` must be picklable for a cluster: use
module-level functions and :func:`functools.partial`.
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

from incasem.errors import InvalidValueError, SchedulerError
from incasem.geometry import Roi, Triple, as_triple

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


def plan_blocks(
    write_roi: Roi, block_shape: Triple, context: Triple = (0, 0, 0), grid_origin: Triple | None = None
) -> list[Block]:
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
    """

    name: str
    blocks: list[Block]
    process: Callable[[Block, Any], Any]
    setup: Callable[[], Any] = _no_setup
    done: DoneRecord | None = None
    token: str = field(default_factory=lambda: uuid.uuid4().hex)


try:
    _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
    _MALLOC_TRIM = None

_WORKER_STATE: dict[str, Any] = {}
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


def check_run_options(scheduler: str | None, num_workers: int | None) -> None:
    """Refuse a malformed scheduler address or worker count; jobs call this before writing anything.

    Raises
    ------
    InvalidValueError
        For ``num_workers`` < 1 or a ``scheduler`` that is not ``tcp://host:port`` (or another
        Dask protocol address).
    """
    if num_workers is not None and (isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1):
        raise InvalidValueError(f"--workers must be a whole number of at least 1, got {num_workers!r}")
    if scheduler is not None and (not isinstance(scheduler, str) or "://" not in scheduler or scheduler.endswith("://")):
        raise InvalidValueError(f"--scheduler needs a Dask scheduler address like tcp://host:8786, got {scheduler!r}")


def run_blockwise(
    task: BlockwiseTask, scheduler: str | None = None, num_workers: int | None = None, progress: bool = True
) -> list[Any]:
    """Run every block of ``task`` that is not recorded as done; return their results.

    The results come in the order of ``task.blocks`` (blocks skipped as done give none).

    Parameters
    ----------
    scheduler
        ``None`` for Dask's local threaded scheduler, or the address of a running
        Dask scheduler (``tcp://host:8786``).
    num_workers
        Threads of the local scheduler (default: all cores).
    progress
        Show a progress bar on stderr.
    """
    check_run_options(scheduler, num_workers)
    todo = [b for b in task.blocks if task.done is None or not task.done.is_done(b)]
    if not todo:
        return []
    run = partial(_run_block, task)
    with tqdm(total=len(todo), desc=task.name, unit="block", disable=not progress, leave=False) as bar:
        if scheduler is None:
            workers = num_workers or os.cpu_count() or 1
            delayed_blocks = [dask.delayed(run, pure=False)(b) for b in todo]
            with _ProgressCallback(bar):
                results = _compute_locally(delayed_blocks, workers)
        else:
            results = _run_on_cluster(run, todo, scheduler, bar)
    with _WORKER_LOCK:
        _WORKER_STATE.pop(task.token, None)
    return results


def _compute_locally(delayed_blocks: list[Any], workers: int) -> list[Any]:
    """Compute on a thread pool of our own that, on any error or Ctrl-C, drops the queued blocks
    and waits for the running ones: when this returns or raises, no block is still writing."""
    pool = ThreadPoolExecutor(workers, thread_name_prefix="incasem-block")
    try:
        return list(dask.compute(*delayed_blocks, scheduler="threads", pool=pool))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _run_on_cluster(run: Callable[[Block], Any], blocks: list[Block], address: str, bar: tqdm) -> list[Any]:
    from distributed import Client, as_completed

    try:
        client = Client(address, set_as_default=False, timeout=SCHEDULER_TIMEOUT)
    except OSError as error:
        raise SchedulerError(
            f"cannot reach the Dask scheduler at {address} ({error}): start it with `dask scheduler` or fix --scheduler"
        ) from None
    with client:
        futures = client.map(run, blocks, pure=False)
        for future in as_completed(futures, loop=client.loop):
            future.result()
            bar.update(1)
        return [future.result() for future in futures]
