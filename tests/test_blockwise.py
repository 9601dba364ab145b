"""The blockwise engine: plan, run on Dask, skip finished blocks."""

from functools import partial

import numpy as np
import pytest

from incasem.blockwise import (
    BlockwiseTask,
    RunOptions,
    done_record_for,
    plan_blocks,
    run_blockwise,
)
from incasem.errors import InvalidValueError
from incasem.geometry import Roi
from incasem.io.volume import create_volume, open_volume


def _add_one(source, target, block, state):
    """Read with context, write the block: out = in + 1 (state counts setups)."""
    data = state["source"].read(block.write_roi)
    state["target"].write(block.write_roi, data + 1)


def _setup(container, calls):
    calls.append(1)
    return {"source": open_volume(container, "in"), "target": open_volume(container, "out", "r+", require_complete=False)}


def test_plan_blocks_with_context():
    blocks = plan_blocks(Roi((0, 0, 0), (10, 10, 10)), (4, 4, 4), (1, 2, 3))
    assert len(blocks) == 27
    first = blocks[0]
    assert first.write_roi == Roi((0, 0, 0), (4, 4, 4))
    assert first.read_roi == Roi((-1, -2, -3), (6, 8, 10))
    assert blocks[-1].write_roi == Roi((8, 8, 8), (2, 2, 2))


def test_run_writes_every_block_once_and_resumes(tmp_path):
    container = tmp_path / "c.zarr"
    data = np.arange(10 * 12 * 14, dtype=np.int32).reshape(10, 12, 14)
    source = create_volume(container, "in", data.shape, data.dtype, (1, 1, 1), chunks=(4, 4, 4))
    source.write(source.roi, data)
    source.mark_complete()
    target = create_volume(container, "out", data.shape, data.dtype, (1, 1, 1), chunks=(4, 5, 6))
    calls: list[int] = []
    blocks = plan_blocks(target.roi, target.chunks, grid_origin=target.roi.offset)
    done = done_record_for(container, "out")
    done.mark_done(blocks[0])  # pretend an earlier run finished the first block
    task = BlockwiseTask("add", blocks, partial(_add_one, None, None), partial(_setup, container, calls), done)
    assert len(run_blockwise(task, RunOptions(workers=2, progress=False))) == len(blocks) - 1
    result = target.read()
    first = blocks[0].write_roi.to_slices()
    assert (result[first] == 0).all(), "a block recorded as done must not be recomputed"
    rest = np.ones(data.shape, bool)
    rest[first] = False
    np.testing.assert_array_equal(result[rest], data[rest] + 1)
    assert len(calls) == 1, "setup runs once per worker process"
    assert run_blockwise(task, RunOptions(progress=False)) == []


def test_block_errors_propagate(tmp_path):
    def fail(block, state):
        raise ValueError(f"bad block {block.block_id}")

    task = BlockwiseTask("fail", plan_blocks(Roi((0, 0, 0), (2, 2, 2)), (2, 2, 2)), fail)
    with pytest.raises(ValueError, match="bad block 0_0_0"):
        run_blockwise(task, RunOptions(progress=False))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"workers": 0}, "^workers must be a whole number of at least 1"),
        ({"workers": 2.5}, "^workers"),
        ({"workers": True}, "^workers"),
        ({"scheduler": "localhost:8786"}, "^scheduler needs a Dask scheduler address"),
        ({"scheduler": "tcp://"}, "^scheduler"),
        ({"progress": "no"}, "progress must be True or False"),
    ],
)
def test_bad_run_options_are_one_line_errors(fields, message):
    with pytest.raises(InvalidValueError, match=message) as error:
        RunOptions(**fields)
    assert "\n" not in str(error.value)


def test_a_job_refuses_bad_run_or_mode_before_it_writes(tmp_path):
    """Each job checks ``mode`` and ``run`` first: nothing exists afterwards."""
    from incasem.preprocess.convert import tiff_to_zarr

    for keywords, message in (({"run": "tcp://host:8786"}, "run must be RunOptions"), ({"mode": "append"}, "write mode")):
        with pytest.raises(InvalidValueError, match=message):
            tiff_to_zarr(tmp_path / "stack", tmp_path / "c.zarr", **keywords)
    with pytest.raises(InvalidValueError, match="run must be RunOptions"):
        run_blockwise(BlockwiseTask("x", [], _add_one), "tcp://host:8786")  # the old positional scheduler
    assert list(tmp_path.iterdir()) == []


def test_a_cancel_stops_a_job_on_a_dask_cluster_between_blocks(dask_cluster):
    import time

    from incasem.blockwise import run_each
    from incasem.monitor import JobCancelled, JobMonitor, watching

    class CancelAfterOne(JobMonitor):
        def advanced(self, units: int = 1) -> None:
            super().advanced(units)
            self.cancel()

    monitor = CancelAfterOne()
    with pytest.raises(JobCancelled), watching(monitor):  # time.sleep: a block any worker can run (stdlib, pickled by name)
        run_each(time.sleep, [0.2] * 40, "wait", RunOptions(scheduler=dask_cluster, progress=False))
    state = monitor.state()
    assert state.step == "wait" and state.total == 40 and state.done < 40 and state.cancelled
