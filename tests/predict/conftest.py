"""Fixtures of the prediction tests."""

import pytest

from tests.helpers import make_checkpoint, write_raw, write_volume


@pytest.fixture
def setup(tmp_path, lucchi_crop):
    """``cell.zarr`` with the real crop as equalized raw and its labels (world offset 10, 20, 0 voxels),
    and a small random model ``tiny.pt``."""
    raw, labels = lucchi_crop
    container = tmp_path / "cell.zarr"
    write_raw(container, raw, offset_nm=(50, 100, 0))
    write_volume(container, "volumes/labels/mito", labels, None, (50, 100, 0))
    return container, make_checkpoint(tmp_path / "tiny.pt")
