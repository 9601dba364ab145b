"""Fixtures of the napari plugin's tests: the plugin's sample container, built once per session."""

import shutil
from pathlib import Path

import pytest

from incasem.demo import make_example_container
from tests.helpers import QUIET


@pytest.fixture(scope="session")
def sample_cell_once(tmp_path_factory) -> Path:
    """The bundled crop converted as the plugin's sample data is (raw, equalised raw, labels, metric mask)."""
    container = tmp_path_factory.mktemp("napari_sample") / "lucchi_crop.zarr"
    make_example_container(container, run=QUIET, say=lambda _line: None)
    return container


@pytest.fixture
def sample_cell(sample_cell_once, tmp_path) -> Path:
    """A copy of the sample container of this test's own."""
    copy = tmp_path / "lucchi_crop.zarr"
    shutil.copytree(sample_cell_once, copy)
    return copy
