"""bioimage.io packages (format 0.5) of incasem models: bioimageio.core accepts and runs them, incasem imports them back."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch
import yaml

from incasem.bioimageio import export_model, import_package
from incasem.cli import main
from incasem.errors import CheckpointError, ConfigError
from incasem.geometry import Roi
from incasem.model.checkpoint import load_checkpoint, read_card
from incasem.model.shipped import SHIPPED_FOLDER
from incasem.model.zoo import resolve_model
from incasem.predict.core import predict_array
from tests.helpers import error_line

pytest.importorskip("bioimageio.core")

#: The shipped network at its smallest (fast on a CPU); the full-size one is tested with -m slow.
SMALL = "mito-fibsem-5nm-small"


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return export_model(SMALL, tmp_path_factory.mktemp("bioimageio") / "mito.zip")


def _test_tensors(package) -> tuple[np.ndarray, np.ndarray]:
    with zipfile.ZipFile(package) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
        arrays = []
        for tensor in (rdf["inputs"][0], rdf["outputs"][0]):
            with archive.open(tensor["test_tensor"]["source"]) as stream:
                arrays.append(np.load(stream))
    return arrays[0], arrays[1]


def _passes_bioimageio_test(package) -> None:
    from bioimageio.core import test_model

    summary = test_model(package)
    failed = [detail.name for detail in summary.details if detail.status == "failed"]
    assert summary.status == "passed", failed


def test_the_package_passes_bioimageio_test(package):
    _passes_bioimageio_test(package)


def test_the_packaged_model_predicts_as_incasem_does_on_the_bundled_crop(package):
    from bioimageio.core import load_description, predict

    raw, expected = _test_tensors(package)
    assert raw.dtype == np.uint8 and raw.shape[:2] == (1, 1) and expected.shape[1] == 2
    model, card = load_checkpoint(resolve_model(SMALL))
    context = card.architecture.context
    region = Roi(context, tuple(s - 2 * c for s, c in zip(raw.shape[2:], context)))
    ours = predict_array(model, raw[0, 0], region, precision="fp32", device="cpu")
    assert ours.shape == expected[0].shape and np.allclose(ours, expected[0], atol=1e-5)
    sample = predict(model=load_description(package), inputs={"raw": raw})  # bioimageio.core runs the package itself
    theirs = sample.members["probabilities"].data.to_numpy()
    assert np.allclose(theirs, expected, atol=1e-4)
    with zipfile.ZipFile(package) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
    axes = rdf["inputs"][0]["axes"]
    assert [axis.get("scale") for axis in axes[2:]] == list(card.voxel_size_nm) and all(axis["unit"] == "nanometer" for axis in axes[2:])
    assert rdf["outputs"][0]["axes"][2]["size"]["offset"] == -2 * context[0]
    assert {"pytorch_state_dict", "torchscript"} <= rdf["weights"].keys() and rdf["license"] == "BSD-3-Clause"


def test_a_package_imports_back_with_its_card_and_weights(package, tmp_path, capsys):
    assert main(["models", "import", str(package), "--name", "mito-zoo", "--cache-dir", str(tmp_path)]) == 0, capsys.readouterr().err
    imported = resolve_model("mito-zoo", tmp_path)
    original = SHIPPED_FOLDER / f"{SMALL}.pt"
    assert read_card(imported).voxel_size_nm == read_card(original).voxel_size_nm
    assert read_card(imported).seed_threshold == read_card(original).seed_threshold
    ours, theirs = load_checkpoint(imported)[0].state_dict(), load_checkpoint(original)[0].state_dict()
    assert all(torch.equal(ours[key], theirs[key]) for key in theirs)


def test_bad_packages_and_outputs_are_one_line_errors(package, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"no \.zip name"):
        export_model(SMALL, tmp_path / "mito.tar")
    mine = tmp_path / "mine.zip"
    mine.write_bytes(b"my own archive")
    with pytest.raises(ConfigError, match="exists already"):
        export_model(SMALL, mine, overwrite=True)
    assert mine.read_bytes() == b"my own archive"
    with pytest.raises(CheckpointError, match=r"not a readable bioimage\.io package"):
        import_package(mine, cache_dir=tmp_path / "models")
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(foreign, "w") as copy:
        rdf = yaml.safe_load(source.read("rdf.yaml"))
        rdf.pop("config")  # as another tool writes them
        copy.writestr("rdf.yaml", yaml.safe_dump(rdf))
    assert main(["models", "import", str(foreign), "--cache-dir", str(tmp_path / "models")]) == 1
    assert "not one incasem wrote" in error_line(capsys)
    assert not (tmp_path / "models" / "imported").exists()


@pytest.mark.slow
def test_the_full_size_shipped_model_passes_bioimageio_test(tmp_path):
    _passes_bioimageio_test(export_model("mito-fibsem-5nm", tmp_path / "m.zip"))
