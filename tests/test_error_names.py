"""A bad value is named as its caller gave it: the API parameter from Python, the flag from ``incasem``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from incasem.blockwise import RunOptions
from incasem.cli import main
from incasem.errors import InvalidValueError
from incasem.io.volume import create_volume
from incasem.postprocess.foreground import foreground_of
from incasem.postprocess.instances import InstanceOptions
from incasem.preprocess.pyramid import create_pyramid
from tests.helpers import error_line

QUIET = RunOptions(progress=False)


@pytest.fixture(scope="module")
def cell(tmp_path_factory) -> Path:
    """A small container: uint8 raw and a float probability map."""
    container = tmp_path_factory.mktemp("names") / "cell.zarr"
    raw = create_volume(container, "volumes/raw", (8, 8, 8), "uint8", (5, 5, 5))
    raw.write(raw.roi, np.arange(512, dtype=np.uint8).reshape(8, 8, 8))
    raw.mark_complete()
    probabilities = create_volume(container, "volumes/prob", (8, 8, 8), "float32", (5, 5, 5))
    probabilities.write(probabilities.roi, np.full((8, 8, 8), 0.25, np.float32))
    probabilities.mark_complete()
    return container


CASES = {
    "workers": (
        lambda cell: RunOptions(workers=0),
        lambda cell: ["pyramid", str(cell), "-q", "--workers", "0"],
        "workers must be a whole number of at least 1",
        "--workers must be a whole number of at least 1",
    ),
    "levels": (
        lambda cell: create_pyramid(cell, "volumes/raw", 0, run=QUIET),
        lambda cell: ["pyramid", str(cell), "-q", "--levels", "0"],
        "levels must be a whole number of at least 1",
        "--levels must be a whole number of at least 1",
    ),
    "threshold": (
        lambda cell: foreground_of(cell, "volumes/prob", kind="probabilities", threshold=2.0),
        lambda cell: ["threshold", str(cell), "-q", "-i", "volumes/prob", "--threshold", "2"],
        "threshold must be a probability in [0, 1], got 2.0",
        "--threshold must be a probability in [0, 1], got 2.0",
    ),
    "min size": (
        lambda cell: InstanceOptions(min_size_voxels=-1),
        lambda cell: ["instances", str(cell), "-q", "-i", "volumes/prob", "--min-size", "-1"],
        "min_size_voxels must be a whole number of voxels, at least 0, got -1",
        "--min-size must be a whole number of voxels, at least 0, got -1",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_python_names_the_parameter_and_the_command_line_the_flag(cell, capsys, case):
    call_api, cli_arguments, api_message, cli_message = CASES[case]
    with pytest.raises(InvalidValueError) as caught:
        call_api(cell)
    assert str(caught.value).startswith(api_message), str(caught.value)
    assert caught.value.for_cli().startswith(cli_message), caught.value.for_cli()
    assert main(cli_arguments(cell)) == 1
    assert error_line(capsys).startswith(f"incasem: error: {cli_message}")
