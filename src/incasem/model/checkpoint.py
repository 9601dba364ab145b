"""Self-describing model checkpoints.

An incasem checkpoint is a ``torch.save`` file holding only plain containers and
tensors, so that it loads with ``torch.load(..., weights_only=True)``::

    {
        "format": "incasem-checkpoint",
        "metadata": ModelCard.to_dict(),      # architecture, voxel size, classes, ...
        "model_state_dict": {...},
        "optimizer_state_dict": {...},        # optional
    }

Checkpoints published with the original incasem hold only ``model_state_dict`` (and
``optimizer_state_dict``) without any metadata. :func:`load_checkpoint` refuses them
unless metadata is passed explicitly; :func:`import_published_checkpoint` converts
them once into the format above (``incasem models import``).
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from incasem.errors import CheckpointError
from incasem.model.unet import INPUT_NORMALIZATION, UNet, UNetConfig

CHECKPOINT_FORMAT = "incasem-checkpoint"
"""Value of the ``"format"`` key that marks an incasem checkpoint."""

FORMAT_VERSION = 1
"""Version of the metadata layout written by this incasem."""

# Fragments of torch's weights-only unpickler errors that mean the file wants to
# build objects or call functions, as opposed to being damaged.
_CODE_REJECTION_MARKERS = (
    "Unsupported global",
    "unsupported GLOBAL",
    "Trying to call reduce",
    "Can only create new object",
    "Can only build",
)


def _check_plain(value: Any, name: str) -> Any:
    """Return a deep copy of ``value`` made of JSON-like types, or raise ``ValueError``."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        return value
    if isinstance(value, (list, tuple)):
        return [_check_plain(v, f"{name}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for key, v in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{name} keys must be strings, got {key!r}")
            out[key] = _check_plain(v, f"{name}[{key!r}]")
        return out
    raise ValueError(
        f"{name} may hold only str, int, float, bool, None, lists and dicts, "
        f"got {type(value).__name__}"
    )


@dataclass(frozen=True)
class ModelCard:
    """Metadata stored inside an incasem checkpoint.

    Parameters
    ----------
    voxel_size_nm : (int, int, int)
        Voxel size (z, y, x) in nanometres the model was trained for.
    class_names : sequence of str
        Name of each output channel; index 0 is ``"background"``. Its length must equal
        ``architecture.num_classes``.
    organelle : str
        What the model segments, e.g. ``"mito"``.
    source : str
        Where the weights come from, e.g. ``"incasem-published:1847"`` or a path.
    architecture : UNetConfig, optional
        Network architecture; the standard one by default.
    input_normalization : str, optional
        How raw uint8 data is normalised; only :data:`~incasem.model.unet.INPUT_NORMALIZATION`
        (``"x/255*2-1"``) is supported.
    preparation : str, optional
        Sample preparation the model was trained on (e.g. ``"chemical fixation"``).
    training : dict, optional
        Summary of the training (plain JSON-like values).
    iteration : int, optional
        Training iteration of the weights.
    validation_scores : dict, optional
        Validation metrics, e.g. ``{"dice": 0.91}`` (plain JSON-like values).
    format_version : int, optional
        Metadata layout version; must be :data:`FORMAT_VERSION`.

    Raises
    ------
    ValueError
        If a field has the wrong type or value.
    """

    voxel_size_nm: tuple[int, int, int]
    class_names: tuple[str, ...]
    organelle: str
    source: str
    architecture: UNetConfig = field(default_factory=UNetConfig)
    input_normalization: str = INPUT_NORMALIZATION
    preparation: str | None = None
    training: dict[str, Any] | None = None
    iteration: int | None = None
    validation_scores: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.format_version != FORMAT_VERSION:
            raise ValueError(
                f"metadata format_version {self.format_version!r} is not supported "
                f"(this incasem reads version {FORMAT_VERSION}); upgrade incasem"
            )
        if not isinstance(self.architecture, UNetConfig):
            raise ValueError(
                f"architecture must be a UNetConfig, got {type(self.architecture).__name__}"
            )
        voxel = self.voxel_size_nm
        if (
            isinstance(voxel, (str, bytes))
            or not isinstance(voxel, Sequence)
            or len(voxel) != 3
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in voxel)
        ):
            raise ValueError(
                f"voxel_size_nm must be three positive integers (z, y, x), got {voxel!r}"
            )
        object.__setattr__(self, "voxel_size_nm", tuple(voxel))
        names = self.class_names
        if (
            isinstance(names, (str, bytes))
            or not isinstance(names, Sequence)
            or not all(isinstance(n, str) and n for n in names)
        ):
            raise ValueError(f"class_names must be a list of non-empty strings, got {names!r}")
        if len(names) != self.architecture.num_classes or names[0] != "background":
            raise ValueError(
                f"class_names must list {self.architecture.num_classes} classes starting "
                f"with 'background', got {list(names)}"
            )
        object.__setattr__(self, "class_names", tuple(names))
        for name in ("organelle", "source"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        if self.input_normalization != INPUT_NORMALIZATION:
            raise ValueError(
                f"input_normalization {self.input_normalization!r} is not supported "
                f"(only {INPUT_NORMALIZATION!r})"
            )
        if self.preparation is not None and not isinstance(self.preparation, str):
            raise ValueError(f"preparation must be a string, got {self.preparation!r}")
        if self.iteration is not None and (
            isinstance(self.iteration, bool)
            or not isinstance(self.iteration, int)
            or self.iteration < 0
        ):
            raise ValueError(f"iteration must be a non-negative integer, got {self.iteration!r}")
        for name in ("training", "validation_scores"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, Mapping):
                    raise ValueError(f"{name} must be a dict, got {type(value).__name__}")
                object.__setattr__(self, name, _check_plain(value, name))

    def to_dict(self) -> dict[str, Any]:
        """Return the metadata as plain values (str, int, float, list, dict, None).

        Returns
        -------
        dict
            JSON-serialisable; :meth:`from_dict` inverts it.
        """
        return {
            "format_version": self.format_version,
            "architecture": self.architecture.to_dict(),
            "voxel_size_nm": list(self.voxel_size_nm),
            "class_names": list(self.class_names),
            "input_normalization": self.input_normalization,
            "organelle": self.organelle,
            "preparation": self.preparation,
            "training": _check_plain(self.training, "training"),
            "iteration": self.iteration,
            "validation_scores": _check_plain(self.validation_scores, "validation_scores"),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelCard:
        """Build metadata from :meth:`to_dict` output.

        Parameters
        ----------
        data : Mapping
            As written by :meth:`to_dict`; optional fields may be missing.

        Returns
        -------
        ModelCard

        Raises
        ------
        ValueError
            If ``data`` is not a mapping, has unknown or missing keys or invalid values.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"metadata must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown metadata keys {unknown}")
        missing = sorted(
            name
            for name in ("voxel_size_nm", "class_names", "organelle", "source")
            if name not in data
        )
        if missing:
            raise ValueError(f"missing metadata keys {missing}")
        values = dict(data)
        if "architecture" in values:
            values["architecture"] = UNetConfig.from_dict(values["architecture"])
        return cls(**values)


def _describe(config: UNetConfig) -> str:
    """Short one-line description of an architecture for error messages."""
    return (
        f"UNet(num_fmaps={config.num_fmaps}, fmap_inc_factor={config.fmap_inc_factor}, "
        f"levels={config.num_levels}, in_channels={config.in_channels}, "
        f"num_classes={config.num_classes})"
    )


def _first_line(exc: BaseException) -> str:
    """First non-empty line of an exception message (or its type name)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


def _read(path: Path) -> Any:
    """``torch.load`` a file with ``weights_only=True`` on the CPU, mapping failures.

    Raises
    ------
    CheckpointError
        If the file is missing, unreadable, corrupt or contains pickled code.
    """
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist: check the path")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file: pass the checkpoint file itself")
    try:
        with path.open("rb") as stream:
            stream.read(1)
    except OSError as exc:
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({exc.strerror}): check its permissions"
        ) from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if any(marker in str(exc) for marker in _CODE_REJECTION_MARKERS):
            raise CheckpointError(
                f"checkpoint {path} contains pickled code; incasem only loads plain "
                "weights, refusing to run it"
            ) from exc
        raise CheckpointError(
            f"checkpoint {path} is not a readable checkpoint (corrupt or truncated): "
            "re-download or re-export it"
        ) from exc
    except Exception as exc:  # any other failure to deserialise means a damaged file
        raise CheckpointError(
            f"checkpoint {path} is not a readable checkpoint (corrupt or truncated): "
            "re-download or re-export it"
        ) from exc


def _state_dict_from(payload: Any, path: Path) -> dict[str, torch.Tensor]:
    """Return the model state dict of a loaded payload or raise ``CheckpointError``."""
    if not isinstance(payload, Mapping) or "model_state_dict" not in payload:
        raise CheckpointError(
            f"checkpoint {path} holds no 'model_state_dict': it is not an incasem model checkpoint"
        )
    state = payload["model_state_dict"]
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(
            f"checkpoint {path} has a 'model_state_dict' that is not a mapping of names "
            "to tensors: re-export it"
        )
    return dict(state)


def _build_model(state: Mapping[str, torch.Tensor], config: UNetConfig, path: Path) -> UNet:
    """Create a :class:`UNet` from ``config`` and load ``state`` into it strictly.

    Raises
    ------
    CheckpointError
        Listing (the first three) missing and unexpected keys and shape mismatches.
    """
    model = UNet(config)
    expected = model.state_dict()

    def listed(keys: list[str]) -> str:
        more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
        return "[" + ", ".join(keys[:3]) + "]" + more

    problems = []
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{key} {tuple(state[key].shape)} (expected {tuple(expected[key].shape)})"
        for key in set(expected) & set(state)
        if state[key].shape != expected[key].shape
    )
    if missing:
        problems.append(f"missing keys {listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {listed(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches {listed(mismatched)}")
    if problems:
        raise CheckpointError(
            f"checkpoint {path} does not match architecture {_describe(config)}: "
            + "; ".join(problems)
            + ": use the metadata that belongs to these weights"
        )
    model.load_state_dict(state)
    return model


def load_checkpoint(
    path: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    metadata: ModelCard | None = None,
) -> tuple[UNet, ModelCard]:
    """Load a checkpoint into a :class:`UNet` in eval mode.

    The file is read with ``torch.load(..., weights_only=True)``, so it can never run
    code.

    Parameters
    ----------
    path : str or os.PathLike
        Checkpoint file.
    map_location : str or torch.device, optional
        Device to put the model on.
    metadata : ModelCard, optional
        Metadata to use instead of the one stored in the file. Required for bare
        checkpoints of the original incasem, which carry none; prefer importing those
        once with :func:`import_published_checkpoint`.

    Returns
    -------
    (UNet, ModelCard)
        The model in eval mode on ``map_location`` and its metadata.

    Raises
    ------
    CheckpointError
        If the file is missing, corrupt, contains pickled code, lacks or has invalid
        metadata, or its weights do not match the architecture.
    """
    path = Path(path)
    payload = _read(path)
    state = _state_dict_from(payload, path)
    if metadata is None:
        if payload.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"checkpoint {path} has no incasem metadata (a published incasem checkpoint?): "
                "import it first with `incasem models import`"
            )
        try:
            metadata = ModelCard.from_dict(payload.get("metadata"))
        except ValueError as exc:
            raise CheckpointError(
                f"checkpoint {path} has invalid metadata ({_first_line(exc)}): re-export it"
            ) from exc
    model = _build_model(state, metadata.architecture, path)
    model.to(torch.device(map_location))
    model.eval()
    return model, metadata


def save_checkpoint(
    path: str | os.PathLike[str],
    model: UNet,
    metadata: ModelCard,
    optimizer: torch.optim.Optimizer | None = None,
) -> Path:
    """Write ``model`` with its metadata atomically to ``path``.

    The file is first written to a temporary file in the same folder, flushed to disk
    and then renamed over ``path``, so readers never see a partial file. Missing parent
    folders are created.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    model : UNet
        Model to store (its weights are copied to the CPU).
    metadata : ModelCard
        Metadata; its architecture must equal ``model.config``.
    optimizer : torch.optim.Optimizer, optional
        Optimizer whose state is stored too (to resume training).

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    ValueError
        If ``metadata.architecture`` differs from ``model.config``.
    """
    if metadata.architecture != model.config:
        raise ValueError(
            f"metadata architecture {_describe(metadata.architecture)} differs from the "
            f"model's {_describe(model.config)}"
        )
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "metadata": metadata.to_dict(),
        "model_state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if optimizer is not None:
        payload["optimizer_state_dict"] = optimizer.state_dict()
    return _atomic_save(payload, Path(path))


def _atomic_save(payload: dict[str, Any], path: Path) -> Path:
    """``torch.save`` to a temporary file next to ``path``, fsync and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            torch.save(payload, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def import_published_checkpoint(
    src_path: str | os.PathLike[str],
    dst_path: str | os.PathLike[str],
    metadata: ModelCard,
) -> str:
    """Convert a checkpoint of the original incasem into an incasem checkpoint.

    The weights are checked to load into ``metadata.architecture``; the optimizer
    state of the published file is dropped.

    Parameters
    ----------
    src_path : str or os.PathLike
        Published checkpoint: a dict with ``model_state_dict`` and no metadata.
    dst_path : str or os.PathLike
        Where to write the converted checkpoint (atomically).
    metadata : ModelCard
        Metadata describing the published model (voxel size, organelle, source, ...).

    Returns
    -------
    str
        SHA-256 hex digest of the written file.

    Raises
    ------
    CheckpointError
        If the source is missing, corrupt, contains pickled code, is already an
        incasem checkpoint or does not match ``metadata.architecture``.
    """
    src = Path(src_path)
    payload = _read(src)
    state = _state_dict_from(payload, src)
    if payload.get("format") == CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {src} is already an incasem checkpoint: use it directly"
        )
    model = _build_model(state, metadata.architecture, src)
    dst = save_checkpoint(dst_path, model, metadata)
    return checkpoint_sha256(dst)


def checkpoint_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a checkpoint file.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    str
        64 lowercase hex digits.

    Raises
    ------
    CheckpointError
        If the file does not exist or cannot be read.
    """
    path = Path(path)
    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint {path} does not exist: check the path") from exc
    except OSError as exc:
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({exc.strerror}): check its permissions"
        ) from exc
    return digest.hexdigest()
