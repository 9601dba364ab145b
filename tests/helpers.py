"""Helpers shared by the test modules: where the real test data lies, small models, job fakes.

Fixtures live in the conftest.py files; this module holds plain functions and constants, so that
no test module imports from another one.
"""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from incasem.blockwise import RunOptions
from incasem.io.volume import create_volume
from incasem.model.card import ModelCard
from incasem.model.checkpoint import save_checkpoint
from incasem.model.unet import UNet, UNetConfig

#: Run options of a job in a test: no progress bar.
QUIET = RunOptions(progress=False)

# ---------------------------------------------------------------------- real data

#: Small crops of real EM with manual labels, kept in the repository (each folder's SOURCE.md says
#: where it comes from, its terms and the exact region): image/NNNN.tif, labels/<class>/NNNN.tif.
TEST_DATA = Path(__file__).resolve().parent / "data"
#: Lucchi++ FIB-SEM, 5 x 5 x 5 nm, mito labels: 64 x 224 x 224 (z, y, x), slices 52-115, rows 128-351,
#: columns 224-447 of the whole training volume; it holds the bundled demo crop (see ``LUCCHI_DEMO_REGION``).
LUCCHI = TEST_DATA / "lucchi_pp_fibsem"
#: Drosophila VNC ssTEM, 50 x 4.6 x 4.6 nm, mito/membrane/synapse/glia_extracellular labels:
#: 20 x 224 x 320, all sections, rows 0-223, columns 0-319.
DROSOPHILA = TEST_DATA / "drosophila_vnc_sstem"
#: CDeep3M SBEM (voxel size unknown), mito labels: 20 x 128 x 128, all sections, rows 256-383, columns 128-255.
CDEEP3M = TEST_DATA / "cdeep3m_mito_sbem"
#: The bundled demo crop (``incasem demo``: slices 60-107, rows 160-351, columns 256-447 of Lucchi++),
#: in the coordinates of ``LUCCHI``: held out from the training of the shipped demo model.
LUCCHI_DEMO_REGION = (slice(8, 56), slice(32, 224), slice(32, 224))

#: The whole data sets beside the checkout (../shared/data): only slow tests read them.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def in_ci() -> bool:
    """True where the environment variable CI says so (CI must run every test, never skip one for data)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def require(folder: Path) -> Path:
    """``folder`` if it is there; otherwise skip the calling test, or fail it where ``CI=true``."""
    if not folder.is_dir():
        message = f"test data not found at {folder}"
        if in_ci():
            pytest.fail(f"{message} (CI=true: missing data is an error, not a skip)", pytrace=False)
        pytest.skip(message)
    return folder


def read_stack(folder: Path, z: slice = slice(None), y: slice = slice(None), x: slice = slice(None)) -> np.ndarray:
    """Read slices ``z`` of a folder of numbered TIFFs and crop them to ``y``, ``x``."""
    files = sorted(require(folder).glob("*.tif"))[z]
    return np.stack([tifffile.imread(f)[y, x] for f in files])


def stack_shape(folder: Path) -> tuple[int, int, int]:
    """(z, y, x) of a folder of numbered TIFFs, read from the files (not assumed)."""
    files = sorted(require(folder).glob("*.tif"))
    return (len(files), *tifffile.imread(files[0]).shape)


# ---------------------------------------------------------------------- checks


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


# ---------------------------------------------------------------------- volumes


def write_volume(container: Path, name: str, data: np.ndarray, chunks=(16, 40, 48), offset_nm=(15, 10, 5), voxel_size=(5, 5, 5)):
    """A complete dataset holding ``data`` (5 nm voxels unless told)."""
    volume = create_volume(container, name, data.shape, data.dtype, voxel_size, offset_nm, chunks)
    volume.write(volume.roi, data)
    volume.mark_complete()
    return volume


def write_raw(container: Path, data: np.ndarray, voxel_size=(5, 5, 5), name="volumes/raw_equalized_0.02", offset_nm=(0, 0, 0)):
    """An (equalized) raw dataset in chunks of 16 x 32 x 32."""
    return write_volume(container, name, data, (16, 32, 32), offset_nm, voxel_size)


def write_mito_config(folder: Path, name: str, container: str, roi: tuple[tuple[int, int, int], tuple[int, int, int]], voxel_size, **extra) -> Path:
    """``folder/<name>.json``: a data config of one ROI (offset, shape in voxels) named ``name``,
    over ``container``'s ``volumes/raw`` and mitochondria labels ``volumes/labels/mito``."""
    offset, shape = roi
    entry = {
        "file": container,
        "offset": list(offset),
        "shape": list(shape),
        "voxel_size": list(voxel_size),
        "raw": "volumes/raw",
        "labels": {"volumes/labels/mito": 1},
        **extra,
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps({name: entry}))
    return path


# ---------------------------------------------------------------------- models

#: The standard architecture's depth (4 levels), narrow: for the equality with a whole pass.
TINY = UNetConfig(num_fmaps=4)
#: Three levels (context 21), fast enough for tests that run hundreds of blocks.
SMALL = UNetConfig(num_fmaps=4, downsample_factors=((2, 2, 2), (2, 2, 2)))
#: For anisotropic stacks: no pooling along z and 1x3x3 kernels.
ANISOTROPIC = UNetConfig(
    num_fmaps=4,
    downsample_factors=((1, 2, 2), (1, 2, 2)),
    kernel_size_down=(((1, 3, 3), (1, 3, 3)),) * 3,
    kernel_size_up=(((1, 3, 3), (1, 3, 3)),) * 2,
)


def make_checkpoint(path: Path, config=SMALL, voxel_size=(5, 5, 5), seed: int = 0) -> Path:
    """A model with He-initialised random weights, so every level shapes the output."""
    torch.manual_seed(seed)
    model = UNet(config)
    for name, parameter in model.named_parameters():
        if name.endswith("weight"):
            torch.nn.init.kaiming_normal_(parameter, nonlinearity="relu")
        else:
            torch.nn.init.normal_(parameter, std=0.1)
    card = ModelCard(voxel_size_nm=voxel_size, class_names=("background", "mito"), organelle="mito", source="test", architecture=config)
    return save_checkpoint(path, model, card)


#: Training overrides for a tiny network and short blocks: a few hundred iterations take seconds.
TINY_TRAINING = [
    "training.input_size_voxels=[44,44,44]",
    "training.output_size_voxels=[26,26,26]",
    "training.num_workers=0",
    "training.seed=7",
    "model.num_fmaps=4",
    "model.downsample_factors=[[2,2,2]]",
    "optimizer.lr=0.001",
    "intervals.log_every=1",
]


# ---------------------------------------------------------------------- interrupted jobs


class Crash(Exception):
    """A job killed in the middle."""


def fail_after(monkeypatch, module, name: str, calls: int) -> None:
    """Make ``module.name`` raise :class:`Crash` from its call number ``calls + 1`` on."""
    original, count = getattr(module, name), [0]

    def failing(*args, **kwargs):
        count[0] += 1
        if count[0] > calls:
            raise Crash
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)


def ctrl_c_at_step(monkeypatch, step: int) -> None:
    """Make training step number ``step`` (1-based) of the next runs raise ``KeyboardInterrupt``, as Ctrl-C does."""
    from incasem.train.trainer import _Trainer

    original, calls = _Trainer._step, [0]

    def interrupted(self, batch):
        calls[0] += 1
        if calls[0] == step:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(_Trainer, "_step", interrupted)
