"""Fixtures shared across the test suite: real EM from the crops in tests/data, a Dask cluster."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import LUCCHI, read_stack


@pytest.fixture(scope="session")
def lucchi_crop() -> tuple[np.ndarray, np.ndarray]:
    """A 40 × 96 × 112 crop of the Lucchi++ FIB-SEM (5 nm isotropic) and its mito labels
    (Lucchi++ slices 60-99, rows 200-295, columns 300-411: inside the bundled demo crop)."""
    region = (slice(8, 48), slice(72, 168), slice(76, 188))
    return read_stack(LUCCHI / "image", *region), read_stack(LUCCHI / "labels" / "mito", *region)


@pytest.fixture
def dask_cluster(tmp_path):
    """A Dask scheduler and two single-threaded workers on 127.0.0.1, as processes."""
    scheduler_file = tmp_path / "scheduler.json"
    common = {"cwd": tmp_path, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--dashboard-address",
                ":0",
                "--scheduler-file",
                str(scheduler_file),
            ],
            **common,
        )
    ]
    deadline = time.time() + 60
    while not scheduler_file.exists() and time.time() < deadline:
        time.sleep(0.1)
    address = json.loads(scheduler_file.read_text())["address"]
    for _ in range(2):
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--nworkers", "1", "--no-nanny", "--host", "127.0.0.1"],
                **common,
            )
        )
    from distributed import Client

    with Client(address, timeout="60s") as client:
        client.wait_for_workers(2, timeout=60)
    yield address
    for process in processes:
        process.kill()
        process.wait()
