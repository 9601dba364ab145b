"""The published incasem models: a table, a download cache and name resolution.

The original incasem published seven trained networks as bare ``torch.save`` files
(``model_state_dict`` only) under ``models/pretrained_checkpoints/`` of the public S3
bucket ``asem-project``. :func:`fetch_published_model` downloads one, checks that it
loads into the standard :class:`~incasem.model.unet.UNet` and stores it, converted
into a self-describing incasem checkpoint, in the *models folder*::

    <models folder>/
        index.json                       what is cached, with SHA-256 digests
        published/<id>_<organelle>_<prep>.pt
        imported/<name>.pt               original-format files imported by the user

The models folder is, in this order, the ``cache_dir`` argument (``--cache-dir``),
the ``INCASEM_CACHE_DIR`` environment variable, ``$XDG_CACHE_HOME/incasem/models``
or ``~/.cache/incasem/models``.

Models shipped inside the package (:mod:`incasem.model.shipped`) need no download.
A model is named once: :func:`resolve_model` turns a checkpoint path, a shipped model's
name (``"mito-fibsem-5nm"``), a published id (``"1847"``), the name of an imported model or a training run (``"run:12"``,
``"run:12@5000"``, see :mod:`incasem.runs`) into the checkpoint file to load.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from incasem.errors import (
    CheckpointError,
    ConfigError,
    DownloadError,
    ModelNotFoundError,
    RunError,
    option,
)
from incasem.files import atomic_write, configured_folder
from incasem.geometry import Triple
from incasem.io.bucket import (
    DEFAULT_BASE_URL,
    check_base_url,
    download,
    list_objects,
    object_url,
)
from incasem.io.layout import RAW_EQUALIZED
from incasem.model.card import ModelCard, VoxelSize
from incasem.model.checkpoint import (
    checkpoint_sha256,
    import_published_checkpoint,
    is_incasem_checkpoint,
    read_card,
    save_checkpoint,
)
from incasem.model.shipped import describe, shipped_models
from incasem.model.unet import UNet, standard_config
from incasem.runs import resolve_run_checkpoint, runs_dir

CHECKPOINT_PREFIX = "models/pretrained_checkpoints/"
"""Key prefix of the published checkpoints in the bucket."""

CACHE_ENV = "INCASEM_CACHE_DIR"
"""Environment variable that sets the models folder."""

TRAINING_RAW = RAW_EQUALIZED
"""Dataset the published models were trained on: CLAHE-equalised raw (clip limit 0.02)."""

PREPARATIONS = {"CF": "chemical fixation", "HPF": "high-pressure freezing"}
"""Sample preparations of the published models, by the code used in their file names."""

_INDEX = "index.json"
_BY_HAND = "or download the file by hand and use `incasem models import FILE --id ID`"


@dataclass(frozen=True)
class PublishedModel:
    """One published incasem model.

    Parameters
    ----------
    model_id : str
        Training run id of the original incasem, e.g. ``"1847"``.
    organelle : str
        Segmented organelle (the name of class 1), e.g. ``"mito"``.
    preparation : str
        Sample preparation code, a key of :data:`PREPARATIONS` (``"CF"`` or ``"HPF"``).
    voxel_size_nm : (int, int, int)
        Voxel size (z, y, x) in nm of the training data.
    bucket_name : str, optional
        File name in the bucket when known; otherwise found by listing the bucket.
    """

    model_id: str
    organelle: str
    preparation: str
    voxel_size_nm: Triple
    bucket_name: str | None = None

    @property
    def cache_name(self) -> str:
        """File name in ``<models folder>/published/``: ``<id>_<organelle>_<prep>.pt``."""
        return f"{self.model_id}_{self.organelle}_{self.preparation}.pt"

    def card(self) -> ModelCard:
        """The metadata stored with the converted checkpoint.

        Returns
        -------
        ModelCard
            Standard U-Net, classes ``[background, <organelle>]``, input ``x/255*2-1``.
        """
        return ModelCard(
            voxel_size_nm=self.voxel_size_nm,
            class_names=("background", self.organelle),
            organelle=self.organelle,
            source=f"incasem-published:{self.model_id}",
            architecture=standard_config(),
            preparation=PREPARATIONS[self.preparation],
            training={"raw_dataset": TRAINING_RAW, "original_run_id": int(self.model_id)},
        )


PUBLISHED_MODELS: dict[str, PublishedModel] = {
    m.model_id: m
    for m in (
        PublishedModel("1847", "mito", "CF", (5, 5, 5), "model_checkpoint_1847_mito_CF.pt"),
        PublishedModel("1837", "golgi", "CF", (5, 5, 5), "model_checkpoint_1837_golgi_CF.pt"),
        PublishedModel("1841", "er", "CF", (5, 5, 5), "model_checkpoint_1841_er_CF.pt"),
        PublishedModel("1675", "mito", "HPF", (4, 4, 4)),
        PublishedModel("1669", "er", "HPF", (4, 4, 4)),
        PublishedModel("1986", "ccp", "HPF", (5, 5, 5)),  # clathrin-coated pits
        PublishedModel("2000", "np", "HPF", (5, 5, 5)),  # nuclear pores
    )
}
"""The published models by id (``ccp``: clathrin-coated pits, ``np``: nuclear pores)."""


@dataclass(frozen=True)
class ModelEntry:
    """A row of :func:`list_models`.

    Parameters
    ----------
    model_id : str
        Published id, or the name of an imported model.
    organelle : str
    preparation : str or None
        Preparation code (``"CF"``, ``"HPF"``) or what the user gave on import.
    voxel_size_nm : (float, float, float)
        Voxel size (z, y, x) in nm (ints where whole).
    file_name : str
        Original file name (``model_checkpoint_1675_*`` while not known).
    path : pathlib.Path or None
        The converted checkpoint in the models folder; ``None`` if not fetched.
    kind : str
        ``"shipped"`` (inside the package), ``"published"`` or ``"imported"``.
    summary : str
        Shipped models: training data, held-out scores, training time and hardware.
    """

    model_id: str
    organelle: str
    preparation: str | None
    voxel_size_nm: VoxelSize
    file_name: str
    path: Path | None
    kind: str = "published"
    summary: str = ""


# ---------------------------------------------------------------------- models folder


def models_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The models folder (it need not exist yet).

    Parameters
    ----------
    cache_dir : str or os.PathLike, optional
        Explicit folder; wins over ``INCASEM_CACHE_DIR`` and the default
        ``$XDG_CACHE_HOME/incasem/models`` (``~/.cache/incasem/models``).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ConfigError
        If that path exists and is not a folder.
    """
    default = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "incasem" / "models"
    return configured_folder(cache_dir, CACHE_ENV, default, "models folder", option("cache_dir", "--cache-dir"), ConfigError)


def _read_index(root: Path) -> dict[str, dict[str, Any]]:
    """The index of ``root``: ``{"published": {id: record}, "imported": {name: record}}``."""
    path = root / _INDEX
    if not path.exists():
        return {"published": {}, "imported": {}}
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"model index {path} is not valid JSON: delete it and fetch or import the models again") from None
    if not isinstance(index, dict) or not all(isinstance(index.get(k), dict) for k in ("published", "imported")):
        raise ConfigError(f"model index {path} is not an incasem model index: delete it and fetch or import the models again")
    return index


def _record(root: Path, section: str, key: str, record: dict[str, Any]) -> None:
    """Add ``record`` to the index of ``root`` and write the index atomically."""
    index = _read_index(root)
    index[section][key] = record
    text = json.dumps(index, indent=2, sort_keys=True)
    atomic_write(root / _INDEX, lambda stream: stream.write(text.encode("utf-8")))


def _check_replaceable(root: Path, section: str, key: str, dst: Path) -> None:
    """Refuse to write ``dst`` over a file that incasem did not write there.

    The models folder may be a folder of the user (``--cache-dir``): a file at ``dst``
    is replaced only if the index records it as the file of ``key``, or it is an
    incasem checkpoint (one written here before the index was lost). The user's own
    files, the source being imported among them, are never touched.

    Raises
    ------
    ConfigError
        If ``dst`` exists and is not such a file.
    """
    if not os.path.lexists(dst):
        return
    record = _read_index(root)[section].get(key)
    recorded = isinstance(record, dict) and record.get("file") == dst.relative_to(root).as_posix()
    if not dst.is_symlink() and dst.is_file() and (recorded or is_incasem_checkpoint(dst)):
        return
    raise ConfigError(
        f"{dst} exists and was not written by incasem, which replaces only its own files in "
        f"the models folder {root}: move that file away or use another {option('cache_dir', '--cache-dir')}"
    )


def _published_model(model_id: str) -> PublishedModel:
    """Table row of ``model_id`` or ``ModelNotFoundError`` listing the known ids."""
    try:
        return PUBLISHED_MODELS[str(model_id)]
    except KeyError:
        raise ModelNotFoundError(
            f"unknown published model id {model_id!r}: the published ids are {', '.join(PUBLISHED_MODELS)} (see `incasem models list`)"
        ) from None


# ---------------------------------------------------------------------- bucket


def _checkpoint_keys(base_url: str) -> list[str]:
    """Keys of all objects under :data:`CHECKPOINT_PREFIX` in the bucket."""
    return [item.key for item in list_objects(base_url, CHECKPOINT_PREFIX, _BY_HAND)]


def _bucket_name(model: PublishedModel, base_url: str) -> str:
    """File name of ``model`` in the bucket: from the table, or the one listed key carrying its id."""
    if model.bucket_name is not None:
        return model.bucket_name
    pattern = re.compile(rf"model_checkpoint_{model.model_id}(?:[_.].*)?")
    names = sorted(name for name in (key.rsplit("/", 1)[-1] for key in _checkpoint_keys(base_url)) if pattern.fullmatch(name))
    where = f"{base_url}/{CHECKPOINT_PREFIX}"
    if len(names) != 1:
        found = f"several ({', '.join(names)})" if names else "none"
        raise DownloadError(
            f"expected one file model_checkpoint_{model.model_id}_* in {where}, found {found}: "
            f"download it by hand and use `incasem models import FILE --id {model.model_id}`"
        )
    return names[0]


# ---------------------------------------------------------------------- public API


def _cached_path(root: Path, model: PublishedModel) -> Path:
    return root / "published" / model.cache_name


def _is_cached(root: Path, model: PublishedModel) -> bool:
    """Whether the converted checkpoint exists and its SHA-256 matches the index."""
    path = _cached_path(root, model)
    record = _read_index(root)["published"].get(model.model_id)
    return path.is_file() and record is not None and record.get("sha256") == checkpoint_sha256(path)


def fetch_published_model(
    model_id: str,
    cache_dir: str | os.PathLike[str] | None = None,
    base_url: str = DEFAULT_BASE_URL,
    progress: bool = True,
) -> Path:
    """Download a published model into the models folder, unless it is there already.

    The file is streamed into a temporary file in the models folder, verified (it must
    load with ``weights_only=True`` into the standard U-Net), converted into an incasem
    checkpoint carrying the model's metadata and renamed into place; the index records
    the SHA-256 of the download and of the converted file. On any failure nothing new
    is left in the models folder.

    Parameters
    ----------
    model_id : str
        A published id, e.g. ``"1847"`` (see :data:`PUBLISHED_MODELS`).
    cache_dir : str or os.PathLike, optional
        Models folder (see :func:`models_dir`).
    base_url : str, optional
        Address of the bucket; a mirror or a local server in tests.
    progress : bool, optional
        Show a progress bar (on stderr) while downloading.

    Returns
    -------
    pathlib.Path
        ``<models folder>/published/<id>_<organelle>_<prep>.pt``.

    Raises
    ------
    ModelNotFoundError
        If ``model_id`` is not a published id.
    DownloadError
        If the bucket cannot be reached, the file is missing, or the download is
        truncated or not a valid published checkpoint.
    """
    model = _published_model(model_id)
    root = models_dir(cache_dir)
    path = _cached_path(root, model)
    if _is_cached(root, model):
        return path
    _check_replaceable(root, "published", model.model_id, path)
    base_url = check_base_url(base_url)
    name = _bucket_name(model, base_url)
    url = object_url(base_url, CHECKPOINT_PREFIX + name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".download", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            label = f"fetch {model.model_id}" if progress else None
            original_sha256 = download(url, stream, hint=_BY_HAND, label=label).sha256
        try:
            sha256 = import_published_checkpoint(tmp, path, model.card())
        except CheckpointError as error:
            raise DownloadError(
                f"the file downloaded from {url} is not a valid published incasem checkpoint "
                f"(corrupt, truncated or of another architecture): fetch again, {_BY_HAND}"
            ) from error
    finally:
        Path(tmp).unlink(missing_ok=True)
    _record(
        root,
        "published",
        model.model_id,
        {
            "file": path.relative_to(root).as_posix(),
            "sha256": sha256,
            "original": name,
            "original_sha256": original_sha256,
            "source": url,
        },
    )
    return path


def check_import_name(name: str) -> None:
    """Refuse a name an imported model cannot take: empty, a path, hidden, or a shipped or published model's.

    Raises
    ------
    ConfigError
        Naming the name and what to give instead.
    """
    if not name or "/" in name or name.startswith(".") or name in shipped_models() or name in PUBLISHED_MODELS:
        raise ConfigError(f"cannot import a model as {name!r}: give a new one-word name (not a shipped or published model's)")


def import_incasem_model(model: UNet, card: ModelCard, name: str, source: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Store ``model`` with its ``card`` in the models folder as ``imported/<name>.pt`` (e.g. from a bioimage.io
    package incasem wrote, ``source``); it is then named ``name``. An earlier import of that name is replaced,
    never a file incasem did not write.

    Raises
    ------
    ConfigError
        For a name that is not one word, or a destination incasem did not write.
    """
    check_import_name(name)
    root = models_dir(cache_dir)
    dst = root / "imported" / f"{name}.pt"
    _check_replaceable(root, "imported", name, dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(dst, model, card)
    src = Path(source)
    record = {"organelle": card.organelle, "voxel_size_nm": list(card.voxel_size_nm), "preparation": card.preparation}
    _record(
        root,
        "imported",
        name,
        {"file": dst.relative_to(root).as_posix(), "sha256": checkpoint_sha256(dst), "original": src.name, "source": str(src.resolve()), **record},
    )
    return dst


def import_model(
    path: str | os.PathLike[str],
    model_id: str | None = None,
    *,
    organelle: str | None = None,
    voxel_size_nm: VoxelSize | None = None,
    preparation: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Convert an original-format checkpoint the user has into the models folder.

    Either the file is a published model (``model_id`` given, or read from a file name
    ``model_checkpoint_<id>_...``), whose metadata comes from :data:`PUBLISHED_MODELS`
    and which then counts as fetched; or ``organelle`` and ``voxel_size_nm`` describe
    any checkpoint of the standard U-Net written by the original incasem, which is
    stored as ``<models folder>/imported/<file stem>.pt`` and can be named by its stem.

    The source file is only read. Importing again replaces the converted file of the
    same id or name, but never a file in the models folder that incasem did not write.

    Parameters
    ----------
    path : str or os.PathLike
        Original-format checkpoint (``model_state_dict`` without metadata).
    model_id : str, optional
        Published id of the file.
    organelle : str, optional
        What the model segments (the name of class 1), for a non-published model.
    voxel_size_nm : (float, float, float), optional
        Voxel size (z, y, x) in nm the model was trained for (positive finite numbers,
        e.g. ``(50, 4.6, 4.6)``), for a non-published model.
    preparation : str, optional
        Sample preparation, for a non-published model.
    cache_dir : str or os.PathLike, optional
        Models folder (see :func:`models_dir`).

    Returns
    -------
    pathlib.Path
        The converted checkpoint.

    Raises
    ------
    ConfigError
        If the arguments mix or lack the two ways of describing the model, or the
        destination in the models folder is a file incasem did not write.
    ModelNotFoundError
        If ``model_id`` is not a published id.
    CheckpointError
        If the file is missing, corrupt, contains code, is an incasem checkpoint already
        or does not fit the standard U-Net.
    """
    src = Path(path)
    described = organelle is not None or voxel_size_nm is not None or preparation is not None
    if model_id is not None and described:
        raise ConfigError(
            f"give either a published id ({option('model_id', '--id')}) or {option('organelle', '--organelle')}/"
            f"{option('voxel_size_nm', '--voxel-size')}/{option('preparation', '--preparation')}, not both"
        )
    if model_id is None and not described:
        match = re.match(r"model_checkpoint_(\d+)_", src.name)
        if match is None:
            raise ConfigError(
                f"cannot tell which model {src} is: give its published id ({option('model_id', '--id')}) or describe it "
                f"with {option('organelle', '--organelle')} and {option('voxel_size_nm', '--voxel-size')}"
            )
        model_id = match.group(1)
    root = models_dir(cache_dir)
    original_sha256 = checkpoint_sha256(src)
    if model_id is not None:
        model = _published_model(model_id)
        section, key, card = "published", model.model_id, model.card()
        dst = _cached_path(root, model)
        extra: dict[str, Any] = {}
    else:
        if organelle is None or voxel_size_nm is None:
            raise ConfigError(f"importing {src} needs both {option('organelle', '--organelle')} and {option('voxel_size_nm', '--voxel-size')}")
        if not organelle.strip():
            raise ConfigError(f"{option('organelle', '--organelle')} must name what {src} segments, e.g. mito")
        try:
            card = ModelCard(
                voxel_size_nm=voxel_size_nm,
                class_names=("background", organelle),
                organelle=organelle,
                source=f"imported:{src.name}",
                preparation=preparation,
            )
        except ValueError as error:
            raise ConfigError(f"cannot import {src}: {error}") from None
        section, key = "imported", src.stem
        dst = root / "imported" / f"{key}.pt"
        extra = {"organelle": organelle, "voxel_size_nm": list(card.voxel_size_nm), "preparation": preparation}
    _check_replaceable(root, section, key, dst)
    sha256 = import_published_checkpoint(src, dst, card)
    _record(
        root,
        section,
        key,
        {
            "file": dst.relative_to(root).as_posix(),
            "sha256": sha256,
            "original": src.name,
            "original_sha256": original_sha256,
            "source": str(src.resolve()),
            **extra,
        },
    )
    return dst


def list_models(cache_dir: str | os.PathLike[str] | None = None) -> list[ModelEntry]:
    """The shipped models, the published ones (fetched or not) and the imported ones.

    Parameters
    ----------
    cache_dir : str or os.PathLike, optional
        Models folder (see :func:`models_dir`).

    Returns
    -------
    list of ModelEntry
        Shipped models by name, published models in table order, then imported models by name.
    """
    root = models_dir(cache_dir)
    index = _read_index(root)
    entries = []
    for name, path in shipped_models().items():
        card = read_card(path)
        entries.append(ModelEntry(name, card.organelle, card.preparation, card.voxel_size_nm, path.name, path, "shipped", describe(card)))
    for model in PUBLISHED_MODELS.values():
        path = _cached_path(root, model)
        record = index["published"].get(model.model_id, {})
        file_name = record.get("original") or model.bucket_name or f"model_checkpoint_{model.model_id}_*"
        entries.append(ModelEntry(model.model_id, model.organelle, model.preparation, model.voxel_size_nm, file_name, path if path.is_file() else None))
    for name, record in sorted(index["imported"].items()):
        path = root / record["file"]
        entries.append(
            ModelEntry(
                name,
                record["organelle"],
                record["preparation"],
                tuple(record["voxel_size_nm"]),
                record["original"],
                path if path.is_file() else None,
                "imported",
            )
        )
    return entries


# ---------------------------------------------------------------------- resolution

Resolver = Callable[[str, Path], Path | None]


def _resolve_file(name: str, root: Path) -> Path | None:
    """A path to an existing checkpoint file (one that looks like a path must exist)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if path.exists():
        raise ModelNotFoundError(f"{path} is not a file: pass the checkpoint file itself")
    if name.endswith(".pt") or os.sep in name or "/" in name:
        raise ModelNotFoundError(f"checkpoint file {path} does not exist: check the path")
    return None


def _resolve_published(name: str, root: Path) -> Path | None:
    """A published id whose checkpoint is in the models folder."""
    model = PUBLISHED_MODELS.get(name)
    if model is None:
        return None
    path = _cached_path(root, model)
    if not path.is_file():
        raise ModelNotFoundError(f"published model {name} ({model.organelle}, {model.preparation}) is not in {root}: run `incasem models fetch {name}` first")
    return path


def _resolve_shipped(name: str, root: Path) -> Path | None:
    """The name of a model shipped inside the package (``incasem models list``)."""
    return shipped_models().get(name)


def _resolve_imported(name: str, root: Path) -> Path | None:
    """The name of a model imported with ``incasem models import --organelle ...``."""
    record = _read_index(root)["imported"].get(name)
    path = root / record["file"] if record else None
    return path if path is not None and path.is_file() else None


RUN_PREFIX = "run:"
"""Prefix of a model name that names a training run's checkpoint: ``run:12``, ``run:12@5000``."""


def _resolve_run(name: str, runs_folder: str | os.PathLike[str] | None) -> Path:
    """``run:ID`` (the run's best checkpoint) or ``run:ID@ITERATION`` in ``runs_folder``
    (default ``$INCASEM_RUNS_DIR``, else ``./runs``: :func:`incasem.runs.runs_dir`)."""
    try:
        return resolve_run_checkpoint(name[len(RUN_PREFIX) :], runs_dir(runs_folder))
    except RunError as error:
        raise ModelNotFoundError(error.args[0]) from None


_RESOLVERS: tuple[Resolver, ...] = (_resolve_file, _resolve_shipped, _resolve_published, _resolve_imported)
"""How :func:`resolve_model` interprets a name that does not start with ``run:`` (which
always names a run), first match wins. Each resolver returns the checkpoint, ``None`` if
the name is not of its kind, or raises ``ModelNotFoundError`` if it is of its kind but unusable."""


def resolve_model(
    name: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    runs_folder: str | os.PathLike[str] | None = None,
) -> Path:
    """The checkpoint file a model name refers to.

    Parameters
    ----------
    name : str or os.PathLike
        A training run's checkpoint (``"run:12"``: the best of run 12, while none is
        marked best its latest; ``"run:12@5000"``: that of iteration 5000, in
        ``runs_folder``), a path to an incasem checkpoint, a
        published id (``"1847"``, fetched before) or the name of an imported model.
    cache_dir : str or os.PathLike, optional
        Models folder (see :func:`models_dir`).
    runs_folder : str or os.PathLike, optional
        Folder of the training runs for ``run:`` names (default ``$INCASEM_RUNS_DIR``,
        else ``./runs``; see :func:`incasem.runs.runs_dir`).

    Returns
    -------
    pathlib.Path
        The checkpoint; load it with :func:`~incasem.model.checkpoint.load_checkpoint`.

    Raises
    ------
    ModelNotFoundError
        If the run or its checkpoint does not exist, the path does not exist, the
        published model is not fetched, or the name means nothing.
    """
    text = os.fspath(name)
    if text.startswith(RUN_PREFIX):
        return _resolve_run(text, runs_folder)
    root = models_dir(cache_dir)
    for resolver in _RESOLVERS:
        path = resolver(text, root)
        if path is not None:
            return path
    raise ModelNotFoundError(
        f"model {text!r} is neither a checkpoint file, a shipped model ({', '.join(shipped_models()) or 'none'}), "
        f"a published id ({', '.join(PUBLISHED_MODELS)}), "
        f"an imported model in {root} nor a training run (run:ID or run:ID@ITERATION): see "
        "`incasem models list` and `incasem runs list`"
    )
