"""Fixtures shared across the test suite: the real EM data beside the repository."""

import json
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import tifffile

from incasem.blockwise import RunOptions

#: Run options of a job in a test: no progress bar.
QUIET = RunOptions(progress=False)

#: Real EM with manual labels (see SOURCE.md in each folder), beside the checkout.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LUCCHI = SHARED_DATA / "lucchi_pp_fibsem"


def read_stack(folder: Path, z: slice, y: slice, x: slice) -> np.ndarray:
    """Read slices ``z`` of a folder of numbered TIFFs and crop them to ``y``, ``x``."""
    files = sorted(folder.glob("*.tif"))[z]
    return np.stack([tifffile.imread(f)[y, x] for f in files])


@pytest.fixture(scope="session")
def lucchi_crop() -> tuple[np.ndarray, np.ndarray]:
    """A 40 × 96 × 112 crop of the Lucchi++ FIB-SEM (5 nm isotropic) and its mito labels."""
    if not LUCCHI.is_dir():
        pytest.skip(f"real data not found at {LUCCHI}")
    region = (slice(60, 100), slice(200, 296), slice(300, 412))
    return read_stack(LUCCHI / "image", *region), read_stack(LUCCHI / "labels" / "mito", *region)


def expected_uint8(values: np.ndarray, low: int, high: int) -> np.ndarray:
    """The documented mapping onto uint8 (rounded half up), computed with exact fractions."""
    out = [int(Fraction(255 * (min(max(int(v), low), high) - low), high - low) + Fraction(1, 2)) for v in values.ravel()]
    return np.array(out, dtype=np.uint8).reshape(values.shape)


def error_line(capsys) -> str:
    """The error printed last; the progress bar before it erases itself with carriage returns."""
    err = capsys.readouterr().err.split("\r")[-1].strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("incasem: error: ")
    return err[0]


@pytest.fixture
def dask_cluster(tmp_path):
    """A Dask scheduler and two single-threaded workers on 127.0.0.1, as processes."""
    scheduler_file = tmp_path / "scheduler.json"
    common = {"cwd": tmp_path, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    processes = [
        subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0", "--scheduler-file", str(scheduler_file)], **common)
    ]
    deadline = time.time() + 60
    while not scheduler_file.exists() and time.time() < deadline:
        time.sleep(0.1)
    address = json.loads(scheduler_file.read_text())["address"]
    for _ in range(2):
        processes.append(
            subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--nworkers", "1", "--no-nanny", "--host", "127.0.0.1"], **common)
        )
    from distributed import Client

    with Client(address, timeout="60s") as client:
        client.wait_for_workers(2, timeout=60)
    yield address
    for process in processes:
        process.kill()
        process.wait()
