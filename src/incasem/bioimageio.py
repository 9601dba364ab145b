"""incasem models as BioImage Model Zoo packages (bioimage.io, model format 0.5), and back.

:func:`export_model` writes a model (shipped, published, imported, a training run) as a
``.zip`` package that deepImageJ (Fiji), ilastik, BiaPy and bioimageio.core run:

- weights twice: ``pytorch_state_dict`` with the architecture's source (``unet.py``, the
  :class:`~incasem.model.unet.UNet` with its configuration as keyword arguments; it
  imports incasem) and TorchScript (needs only PyTorch; traced, and exact at every
  valid input size);
- the input ``raw``: uint8 after 3D CLAHE (``incasem equalize``), axes batch, channel,
  z, y, x with the model's voxel size as their scale in nm, valid sizes ``min + k·step``
  (the network's downsampling), and the model's input normalisation as preprocessing
  (``x / 255 · 2 − 1``: ``ensure_dtype`` float32, then ``scale_linear``);
- the output ``probabilities``: one channel per class after a softmax, smaller than the
  input by the network's context on every side (a size reference with that offset: the
  valid network predicts only where it sees its whole context);
- test tensors from the bundled FIB-SEM crop (equalised, mirrored in z to a valid size,
  as ``incasem predict`` pads) and its probabilities, a cover picture of them;
- the model card (training data, validation scores, decisions, voxel size) as the
  package's ``config.incasem`` and its documentation, the licence, the citation.

:func:`import_package` reads such a package back into the models folder (``incasem models
import m.zip``), from its card and state dict; packages from other tools are refused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from incasem.blockwise import RunOptions
from incasem.demo import make_example_container
from incasem.errors import CheckpointError, ConfigError, IncasemError
from incasem.geometry import Roi
from incasem.io.layout import RAW_EQUALIZED
from incasem.io.volume import open_volume
from incasem.model import unet as unet_module
from incasem.model.card import ModelCard
from incasem.model.checkpoint import load_checkpoint
from incasem.model.unet import UNet, UNetConfig
from incasem.model.zoo import check_import_name, import_incasem_model, resolve_model
from incasem.predict.core import predict_array

__all__ = ["BIOIMAGEIO_EXTRA", "export_model", "import_package", "test_input"]

#: How to install what :func:`export_model` needs.
BIOIMAGEIO_EXTRA = 'pip install "incasem[bioimageio]"'
#: The licence of incasem's models (the code's).
LICENSE = "BSD-3-Clause"
#: The paper of the original incasem.
CITATION = {
    "text": "Gallusser B, Maltese G, Di Caprio G, et al. Deep neural network automated segmentation of cellular structures in volume electron "
    "microscopy. J Cell Biol 222(2): e202208005 (2023)",
    "doi": "10.1083/jcb.202208005",
}
#: In-plane size of the test input (voxels, before the network's valid sizes round it).
TEST_PLANE_VOXELS = 140


def _spec() -> Any:
    try:
        import bioimageio.spec.model.v0_5 as spec
    except ImportError:
        raise ConfigError(f"writing a bioimage.io package needs bioimageio.spec: {BIOIMAGEIO_EXTRA}") from None
    return spec


def _valid_sizes(config: UNetConfig) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The smallest valid input size and the step between valid sizes, per axis."""
    step = tuple(int(np.prod([factors[axis] for factors in config.downsample_factors])) for axis in range(3))
    return config.min_input_shape, step  # type: ignore[return-value]


def test_input(config: UNetConfig) -> np.ndarray:
    """The bundled crop, equalised as ``incasem equalize`` does, at a valid input size (z mirrored as ``incasem predict`` pads)."""
    with tempfile.TemporaryDirectory(prefix="incasem-bioimageio-") as folder:
        cell = Path(folder) / "crop.zarr"
        make_example_container(cell, run=RunOptions(progress=False), say=lambda _line: None)
        raw = open_volume(cell, RAW_EQUALIZED).read()
    smallest, step = _valid_sizes(config)
    wanted = [max(raw.shape[0], smallest[0]), min(raw.shape[1], TEST_PLANE_VOXELS), min(raw.shape[2], TEST_PLANE_VOXELS)]
    size = [m + -(-max(w - m, 0) // s) * s for w, m, s in zip(wanted, smallest, step)]
    start = [max((r - n) // 2, 0) for r, n in zip(raw.shape, size)]
    region = raw[tuple(slice(b, b + n) for b, n in zip(start, size))]
    padding = [((n - r) // 2, n - r - (n - r) // 2) for r, n in zip(region.shape, size)]
    return np.pad(region, padding, mode="reflect")


def _probabilities(model: UNet, raw: np.ndarray) -> np.ndarray:
    """``incasem predict``'s probabilities (fp32, CPU) of the valid region of ``raw``, with a batch axis."""
    context = model.config.context
    region = Roi(context, tuple(s - 2 * c for s, c in zip(raw.shape, context)))
    return predict_array(model, raw, region, precision="fp32", device="cpu")[None].astype(np.float32)


def _cover(raw: np.ndarray, probabilities: np.ndarray, path: Path) -> None:
    """Input section beside the organelle probability of the same section (2:1, as the zoo shows covers)."""
    from PIL import Image

    context = [(r - p) // 2 for r, p in zip(raw.shape, probabilities.shape[2:])]
    z = probabilities.shape[2] // 2
    section = raw[context[0] + z, context[1] : context[1] + probabilities.shape[3], context[2] : context[2] + probabilities.shape[4]]
    grey = np.repeat(section[..., None], 3, axis=2).astype(np.float32)
    heat = probabilities[0, 1:, z].sum(axis=0)[..., None] * np.array([255, 0, 255], np.float32)
    overlay = 0.5 * grey + 0.5 * heat
    picture = np.concatenate([grey, overlay], axis=1).clip(0, 255).astype(np.uint8)
    Image.fromarray(picture).resize((512, 256), Image.Resampling.NEAREST).save(path)


def _documentation(name: str, card: ModelCard, path: Path) -> None:
    training = card.training or {}
    voxel_size = " x ".join(f"{v:g}" for v in card.voxel_size_nm)
    threshold = json.dumps(training.get("decision_threshold", {}).get("threshold", 0.5))
    text = f"""# {name}: incasem {card.organelle} segmentation

A 3D U-Net of [incasem](https://github.com/kirchhausenlab/incasem) that segments {card.organelle} in volume EM
({card.preparation or "FIB-SEM"}) at {voxel_size} nm (z, y, x).

## Input

uint8 EM after 3D CLAHE with clip limit 0.02 (`incasem equalize`), at the voxel size above; the package's
preprocessing maps it to `x / 255 * 2 - 1`.

## Output

Class probabilities ({", ".join(card.class_names)}), smaller than the input by the network's context on every
side. A voxel is organelle where its probability reaches the model's threshold ({threshold}).

## Training

Source: {card.source}. Training data: {json.dumps(training.get("train_data"))}.
Validation: {json.dumps(training.get("val_data"))}. Validation scores: {json.dumps(card.validation_scores)}.

## Use

`incasem models import PACKAGE.zip` brings it back into incasem; deepImageJ, ilastik and bioimageio.core run it as it is.
"""
    path.write_text(text, encoding="utf-8")


def _axes(spec: Any, card: ModelCard, sizes: list[Any], channels: list[str]) -> list[Any]:
    space = spec.SpaceInputAxis if not isinstance(sizes[0], spec.SizeReference) else spec.SpaceOutputAxis
    return [
        spec.BatchAxis(),
        spec.ChannelAxis(channel_names=channels),
        *(space(id=axis, size=size, scale=float(scale), unit="nanometer") for axis, size, scale in zip("zyx", sizes, card.voxel_size_nm)),
    ]


def export_model(
    model: str,
    output: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    runs_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` (a name, published id, checkpoint path or ``run:ID``) as a bioimage.io package ``output`` (.zip).

    Raises
    ------
    ConfigError
        Without bioimageio.spec (:data:`BIOIMAGEIO_EXTRA`), for an output that is not a .zip name,
        or one that exists (unless ``overwrite`` and it is a bioimage.io package).
    ModelNotFoundError, CheckpointError
        For a model that does not resolve or load.
    """
    spec = _spec()
    from bioimageio.spec import save_bioimageio_package

    target = Path(output)
    if target.suffix.lower() != ".zip":
        raise ConfigError(f"{target} is no .zip name: a bioimage.io package is one zip file, e.g. {target.with_suffix('.zip').name}")
    if target.exists() and not (overwrite and zipfile.is_zipfile(target) and "rdf.yaml" in zipfile.ZipFile(target).namelist()):
        raise ConfigError(
            f"{target} exists already: choose a new name{' (--overwrite replaces only a bioimage.io package)' if overwrite else ', or pass --overwrite'}"
        )
    network, card = load_checkpoint(resolve_model(model, cache_dir, runs_dir))
    assert card.architecture is not None, "load_checkpoint gives every model its architecture"
    network.eval()
    name = Path(model).stem if Path(model).suffix == ".pt" else model.replace(":", "-")
    raw = test_input(card.architecture)
    probabilities = _probabilities(network, raw)
    smallest, step = _valid_sizes(card.architecture)
    context = card.architecture.context
    with tempfile.TemporaryDirectory(prefix="incasem-bioimageio-") as folder:
        files = Path(folder)
        np.save(files / "test_input.npy", raw[None, None])
        np.save(files / "test_output.npy", probabilities)
        torch.save(network.state_dict(), files / "weights.pt")
        with torch.no_grad():
            torch.jit.trace(network, torch.zeros(1, 1, *smallest)).save(str(files / "weights_torchscript.pt"))
        shutil.copyfile(unet_module.__file__, files / "unet.py")
        _cover(raw, probabilities, files / "cover.png")
        _documentation(name, card, files / "README.md")
        sizes_in = [spec.ParameterizedSize(min=int(m), step=int(s)) for m, s in zip(smallest, step)]
        sizes_out = [spec.SizeReference(tensor_id="raw", axis_id=axis, offset=-2 * int(c)) for axis, c in zip("zyx", context)]
        torch_version = torch.__version__.split("+")[0]
        descr = spec.ModelDescr(
            name=f"incasem {card.organelle} {name}",
            description=f"3D U-Net segmenting {card.organelle} in volume EM at {'x'.join(f'{v:g}' for v in card.voxel_size_nm)} nm (incasem).",
            authors=[spec.Author(name="incasem developers")],
            cite=[spec.CiteEntry(**CITATION)],
            license=LICENSE,
            documentation=spec.FileDescr(source=files / "README.md"),
            covers=[spec.FileDescr(source=files / "cover.png")],
            tags=["3d", "electron-microscopy", "fib-sem", "semantic-segmentation", card.organelle, "unet", "incasem"],
            inputs=[
                spec.InputTensorDescr(
                    id="raw",
                    description="uint8 EM after 3D CLAHE (incasem equalize)",
                    axes=_axes(spec, card, sizes_in, ["raw"]),
                    test_tensor=spec.FileDescr(source=files / "test_input.npy"),
                    data=spec.IntervalOrRatioDataDescr(type="float32", range=(-1.0, 1.0)),  # what the network gets, after preprocessing
                    preprocessing=[
                        spec.EnsureDtypeDescr(kwargs=spec.EnsureDtypeKwargs(dtype="float32")),
                        spec.ScaleLinearDescr(kwargs=spec.ScaleLinearKwargs(gain=2 / 255, offset=-1.0)),
                    ],
                )
            ],
            outputs=[
                spec.OutputTensorDescr(
                    id="probabilities",
                    description=f"probability of each class ({', '.join(card.class_names)}); smaller than the input by the network's context",
                    axes=_axes(spec, card, sizes_out, list(card.class_names)),
                    test_tensor=spec.FileDescr(source=files / "test_output.npy"),
                    postprocessing=[spec.SoftmaxDescr(kwargs=spec.SoftmaxKwargs(axis="channel"))],
                )
            ],
            weights=spec.WeightsDescr(
                pytorch_state_dict=spec.PytorchStateDictWeightsDescr(
                    source=files / "weights.pt",
                    architecture=spec.ArchitectureFromFileDescr(source=files / "unet.py", callable="UNet", kwargs={"config": card.architecture.to_dict()}),
                    pytorch_version=torch_version,
                ),
                torchscript=spec.TorchscriptWeightsDescr(source=files / "weights_torchscript.pt", pytorch_version=torch_version, parent="pytorch_state_dict"),
            ),
            config={"incasem": {"card": json.loads(json.dumps(card.to_dict())), "model": name}},
        )
        staging = target.with_name(f".{target.name}.incasem-partial")
        try:
            save_bioimageio_package(descr, output_path=staging)
            os.replace(staging, target)
        finally:
            staging.unlink(missing_ok=True)
    return target


def import_package(package: str | os.PathLike[str], name: str | None = None, *, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Import a bioimage.io package that incasem wrote into the models folder, as ``imported/<name>``.

    Raises
    ------
    CheckpointError
        If ``package`` is no zip with an ``rdf.yaml``, was not written by incasem (no
        ``config.incasem`` card), or its weights do not fit its card.
    """
    path = Path(package)
    check_import_name(name or path.stem)
    try:
        with zipfile.ZipFile(path) as archive:
            rdf = yaml.safe_load(archive.read("rdf.yaml"))
            config = (rdf.get("config") or {}).get("incasem") if isinstance(rdf, dict) else None
            if not isinstance(config, dict) or "card" not in config:
                raise CheckpointError(f"{path} is a bioimage.io package, but not one incasem wrote (no config.incasem card): it cannot be imported")
            weights = rdf["weights"]["pytorch_state_dict"]["source"]
            with tempfile.TemporaryDirectory(prefix="incasem-import-") as folder:
                archive.extract(weights, folder)
                state = torch.load(Path(folder) / weights, map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, yaml.YAMLError) as error:
        raise CheckpointError(f"{path} is not a readable bioimage.io package ({type(error).__name__}: {error}): export it again") from None
    try:
        card = ModelCard.from_dict(config["card"])
        model = UNet(card.architecture)
        model.load_state_dict(state)
    except (ValueError, RuntimeError, TypeError, IncasemError) as error:
        raise CheckpointError(f"the weights in {path} do not fit its card ({str(error).splitlines()[0]})") from None
    return import_incasem_model(model, card, name or path.stem, path, cache_dir=cache_dir)
