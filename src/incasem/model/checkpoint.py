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
import numbers
import os
import pickle
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from incasem.errors import CheckpointError
from incasem.files import atomic_write
from incasem.model.unet import INPUT_NORMALIZATION, UNet, UNetConfig

CHECKPOINT_FORMAT = "incasem-checkpoint"
"""Value of the ``"format"`` key that marks an incasem checkpoint."""

FORMAT_VERSION = 1
"""Version of the metadata layout written by this incasem."""

MAX_TOTAL_DOWNSAMPLE = 1024
"""Largest product of the pooling factors along an axis that a loaded architecture may
have (the standard network has 8); larger ones need inputs of many thousand voxels per
axis, and finding the valid input sizes would take very long."""

VoxelSize = tuple[float, float, float]
"""A voxel size (z, y, x) in nm: positive finite numbers (ints stay ints)."""

_MAX_DEPTH = 16  # nesting allowed in metadata (lists and dicts)
_INT64 = 1 << 63  # metadata ints must fit in 64 bits
_MAX_MESSAGE = 300  # characters of a cause quoted in an error message
_LISTED = 3  # names listed in an error message before "(+N more)"

_short = reprlib.Repr()
_short.maxlevel, _short.maxlist, _short.maxdict, _short.maxstring, _short.maxother = 3, 6, 6, 60, 60

# Fragments of torch's weights-only unpickler errors that mean the file wants to
# build objects or call functions, as opposed to being damaged.
_CODE_REJECTION_MARKERS = (
    "Unsupported global",
    "unsupported GLOBAL",
    "Trying to call reduce",
    "Can only create new object",
    "Can only build",
)


def _check_plain(value: Any, name: str, depth: int = 0) -> Any:
    """Return a deep copy of ``value`` made of JSON-like types, or raise ``ValueError``.

    Floats must be finite, ints fit in 64 bits, dict keys be strings and nesting be at
    most ``_MAX_DEPTH`` deep, so that untrusted metadata can be validated and quoted in
    messages without recursion errors or giant numbers.
    """
    if depth > _MAX_DEPTH:
        raise ValueError(f"{name} is nested more than {_MAX_DEPTH} levels deep")
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        if not -_INT64 <= value < _INT64:
            raise ValueError(f"{name} is an integer too large for 64 bits")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        return value
    if isinstance(value, (list, tuple)):
        return [_check_plain(v, f"{name}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for key, v in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{name} keys must be strings, got {_short.repr(key)}")
            out[key] = _check_plain(v, f"{name}[{_short.repr(key)}]", depth + 1)
        return out
    raise ValueError(
        f"{name} may hold only str, int, float, bool, None, lists and dicts, "
        f"got {type(value).__name__}"
    )


def _as_voxel_size(value: Any) -> VoxelSize:
    """Return ``value`` as three positive finite numbers (ints kept) or raise ``ValueError``."""
    error = ValueError(
        "voxel_size_nm must be three positive finite numbers (z, y, x), "
        f"got {_short.repr(value)}"
    )
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 3:
        raise error
    sizes = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise error
        v = int(v) if isinstance(v, numbers.Integral) else float(v)
        if not (v > 0 and (isinstance(v, int) or math.isfinite(v))):
            raise error
        sizes.append(v)
    return (sizes[0], sizes[1], sizes[2])


@dataclass(frozen=True)
class ModelCard:
    """Metadata stored inside an incasem checkpoint.

    Parameters
    ----------
    voxel_size_nm : (float, float, float)
        Voxel size (z, y, x) in nanometres the model was trained for: positive finite
        numbers, e.g. ``(50, 4.6, 4.6)``; ints stay ints.
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
    seed_threshold : float, optional
        Two-class models: ``incasem predict`` keeps only the objects of the
        segmentation that reach this foreground probability somewhere (hysteresis,
        :mod:`incasem.postprocess.threshold`); ``None``: every object.
    format_version : int, optional
        Metadata layout version; must be :data:`FORMAT_VERSION`.

    Raises
    ------
    ValueError
        If a field has the wrong type or value.
    """

    voxel_size_nm: VoxelSize
    class_names: tuple[str, ...]
    organelle: str
    source: str
    architecture: UNetConfig = field(default_factory=UNetConfig)
    input_normalization: str = INPUT_NORMALIZATION
    preparation: str | None = None
    training: dict[str, Any] | None = None
    iteration: int | None = None
    validation_scores: dict[str, Any] | None = None
    seed_threshold: float | None = None
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        version = self.format_version
        if isinstance(version, bool) or not isinstance(version, int) or version != FORMAT_VERSION:
            raise ValueError(
                f"metadata format_version {_short.repr(version)} is not supported "
                f"(this incasem reads version {FORMAT_VERSION}); upgrade incasem"
            )
        if not isinstance(self.architecture, UNetConfig):
            raise ValueError(
                f"architecture must be a UNetConfig, got {type(self.architecture).__name__}"
            )
        object.__setattr__(self, "voxel_size_nm", _as_voxel_size(self.voxel_size_nm))
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
        seed = self.seed_threshold
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, (int, float)) or not 0.5 <= seed <= 1:
                raise ValueError(f"seed_threshold must be a probability in [0.5, 1], got {seed!r}")
            if self.architecture.num_classes != 2:
                raise ValueError(f"seed_threshold needs a two-class model, this one has {self.architecture.num_classes} classes")
            object.__setattr__(self, "seed_threshold", float(seed))
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
            "seed_threshold": self.seed_threshold,
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
            If ``data`` is not a mapping of plain JSON-like values, has unknown or missing
            keys or invalid values.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"metadata must be a mapping, got {type(data).__name__}")
        data = _check_plain(data, "metadata")
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
    """First non-empty line of an exception message (or its type name), shortened."""
    for line in str(exc).splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= _MAX_MESSAGE else line[: _MAX_MESSAGE - 3] + "..."
    return type(exc).__name__


def _listed(names: Sequence[str]) -> str:
    """``[a, b, c] (+N more)``: the first few of ``names`` for an error message."""
    more = f" (+{len(names) - _LISTED} more)" if len(names) > _LISTED else ""
    return "[" + ", ".join(names[:_LISTED]) + "]" + more


def _is_incasem_payload(payload: Any) -> bool:
    """Whether a loaded file is marked as an incasem checkpoint."""
    if not isinstance(payload, Mapping):
        return False
    marker = payload.get("format")
    return isinstance(marker, str) and marker == CHECKPOINT_FORMAT


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
    """Return the model state dict of a loaded payload or raise ``CheckpointError``.

    The tensors must be dense CPU tensors whose data the file really holds: views
    that repeat the same bytes (stride 0, overlapping) could claim terabytes.
    """
    if not isinstance(payload, Mapping) or "model_state_dict" not in payload:
        raise CheckpointError(
            f"checkpoint {path} holds no 'model_state_dict': it is not an incasem model checkpoint"
        )
    state = payload["model_state_dict"]
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str)
        and isinstance(v, torch.Tensor)
        and v.layout == torch.strided
        and v.device.type == "cpu"
        for k, v in state.items()
    ):
        raise CheckpointError(
            f"checkpoint {path} has a 'model_state_dict' that is not a mapping of names "
            "to dense tensors: re-export it"
        )
    state = dict(state)
    if _claimed_bytes(state) > _held_bytes(state):
        raise CheckpointError(
            f"checkpoint {path} has tensors that claim more data than the file holds "
            "(overlapping views of the same bytes): re-export it"
        )
    return state


def _claimed_bytes(state: Mapping[str, torch.Tensor]) -> int:
    """Bytes the tensors of ``state`` describe (what copying them would allocate)."""
    return sum(t.numel() * t.element_size() for t in state.values())


def _held_bytes(state: Mapping[str, torch.Tensor]) -> int:
    """Bytes of the distinct storages behind the tensors of ``state``."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in state.values()}
    return sum(storages.values())


def _num_convolutions(config: UNetConfig) -> int:
    """Number of convolutions of a :class:`UNet` (each has at least a weight tensor)."""
    return sum(map(len, config.kernel_size_down)) + sum(map(len, config.kernel_size_up)) + 1


def _check_plausible(state: Mapping[str, torch.Tensor], config: UNetConfig, path: Path) -> None:
    """Refuse architectures that cannot fit ``state`` or whose geometry is intractable.

    Every convolution has at least a weight tensor, so an architecture with more
    convolutions than ``state`` has tensors cannot match it; refusing it first bounds
    the work spent on it by the size of the file. Pooling has no weights, so its
    factors are bounded explicitly: the smallest valid input grows with their product.

    Raises
    ------
    CheckpointError
        If the architecture has too many convolutions or pools too much.
    """
    convolutions = _num_convolutions(config)
    if convolutions > len(state):
        raise CheckpointError(
            f"checkpoint {path} does not match architecture {_describe(config)}: it has "
            f"{convolutions} convolutions but the file holds only {len(state)} tensors: "
            "use the metadata that belongs to these weights"
        )
    if max(config.total_downsample_factor) > MAX_TOTAL_DOWNSAMPLE:
        raise CheckpointError(
            f"checkpoint {path} describes an architecture that downsamples by "
            f"{_short.repr(list(config.total_downsample_factor))} (z, y, x), more than "
            f"{MAX_TOTAL_DOWNSAMPLE}: use the metadata that belongs to these weights"
        )


def _meta_model(config: UNetConfig, path: Path) -> UNet:
    """Build ``UNet(config)`` on the meta device: shapes without memory.

    Raises
    ------
    CheckpointError
        If the architecture cannot be built (sizes beyond what torch can represent).
    """
    try:
        with torch.device("meta"):
            return UNet(config)
    except (RuntimeError, TypeError, ValueError, OverflowError) as exc:
        raise CheckpointError(
            f"checkpoint {path} describes an architecture {_describe(config)} that cannot be "
            f"built ({_first_line(exc)}): use the metadata that belongs to these weights"
        ) from exc


def _check_architecture(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], config: UNetConfig,
    path: Path,
) -> None:
    """Compare names, shapes and dtypes of ``state`` with those of ``expected``.

    Raises
    ------
    CheckpointError
        Listing (the first three) missing and unexpected keys, shape mismatches and
        tensors that are not floating point.
    """
    common = [key for key in expected if key in state]
    problems = []
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{key} {tuple(state[key].shape)} (expected {tuple(expected[key].shape)})"
        for key in common
        if state[key].shape != expected[key].shape
    )
    not_float = [f"{key} ({state[key].dtype})" for key in common if not state[key].is_floating_point()]
    if missing:
        problems.append(f"missing keys {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_listed(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches {_listed(mismatched)}")
    if not_float:
        problems.append(f"tensors that are not floating point {_listed(not_float)}")
    if problems:
        raise CheckpointError(
            f"checkpoint {path} does not match architecture {_describe(config)}: "
            + "; ".join(problems)
            + ": use the metadata that belongs to these weights"
        )


def _check_finite(state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Raise ``CheckpointError`` naming the first tensors of ``state`` with NaN or inf."""
    bad = [key for key, tensor in state.items() if not bool(torch.isfinite(tensor).all())]
    if bad:
        raise CheckpointError(
            f"checkpoint {path} has non-finite weights (NaN or inf) in {_listed(bad)}: "
            "the weights are unusable (a diverged training run?): use an earlier checkpoint"
        )


def _build_model(state: Mapping[str, torch.Tensor], config: UNetConfig, path: Path) -> UNet:
    """Create a :class:`UNet` from ``config`` and load ``state`` into it strictly.

    The architecture is first built on the meta device and compared with ``state``,
    and the weights are checked to be finite; only then is memory allocated, so an
    absurd architecture in untrusted metadata costs nothing.

    Raises
    ------
    CheckpointError
        If the architecture cannot be built, does not match the names, shapes or dtypes
        of ``state``, or ``state`` holds NaN or inf.
    """
    _check_plausible(state, config, path)
    model = _meta_model(config, path)
    _check_architecture(state, model.state_dict(), config, path)
    _check_finite(state, path)
    model.to_empty(device="cpu")
    model.load_state_dict(state)
    return model


def load_checkpoint(
    path: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    metadata: ModelCard | None = None,
) -> tuple[UNet, ModelCard]:
    """Load a checkpoint into a :class:`UNet` in eval mode.

    The file is read with ``torch.load(..., weights_only=True)``, so it can never run
    code. The architecture is compared with the weights before any memory is
    allocated for the model.

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
        metadata, its weights do not match the architecture or hold NaN or inf.
    """
    path = Path(path)
    payload = _read(path)
    state = _state_dict_from(payload, path)
    if metadata is None:
        metadata = _metadata_from(payload, path)
    model = _build_model(state, metadata.architecture, path)
    model.to(torch.device(map_location))
    model.eval()
    return model, metadata


def read_card(path: str | os.PathLike[str]) -> ModelCard:
    """The metadata of an incasem checkpoint, without building the model.

    Raises
    ------
    CheckpointError
        As :func:`load_checkpoint` for an unreadable file or invalid metadata.
    """
    path = Path(path)
    return _metadata_from(_read(path), path)


def read_optimizer_state(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The optimizer state saved with a checkpoint (to resume training), or ``None`` if it has none.

    Raises
    ------
    CheckpointError
        As :func:`load_checkpoint` for an unreadable file.
    """
    payload = _read(Path(path))
    state = payload.get("optimizer_state_dict") if isinstance(payload, Mapping) else None
    return state if isinstance(state, dict) else None


def _metadata_from(payload: Mapping[str, Any], path: Path) -> ModelCard:
    """The metadata stored in a loaded incasem checkpoint, or ``CheckpointError``."""
    if not _is_incasem_payload(payload):
        raise CheckpointError(
            f"checkpoint {path} has no incasem metadata (a published incasem checkpoint?): "
            f"import it first with `incasem models import {path} --organelle ORGANELLE --voxel-size Z,Y,X`"
        )
    try:
        return ModelCard.from_dict(payload.get("metadata"))
    except ValueError as exc:
        raise CheckpointError(
            f"checkpoint {path} has invalid metadata ({_first_line(exc)}): re-export it"
        ) from exc


def save_checkpoint(
    path: str | os.PathLike[str],
    model: UNet,
    metadata: ModelCard,
    optimizer: torch.optim.Optimizer | None = None,
) -> Path:
    """Write ``model`` with its metadata atomically to ``path``.

    The file is first written to a temporary file in the same folder, flushed to disk
    and then renamed over ``path``, so readers never see a partial file. Missing parent
    folders are created. The file gets the usual permissions (``0o666`` less the umask).

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
    return atomic_write(Path(path), lambda stream: torch.save(payload, stream))


def import_published_checkpoint(
    src_path: str | os.PathLike[str],
    dst_path: str | os.PathLike[str],
    metadata: ModelCard,
) -> str:
    """Convert a checkpoint of the original incasem into an incasem checkpoint.

    The weights are checked to load into ``metadata.architecture`` and to be finite;
    the optimizer state of the published file is dropped. The source file is never
    modified.

    Parameters
    ----------
    src_path : str or os.PathLike
        Published checkpoint: a dict with ``model_state_dict`` and no metadata.
    dst_path : str or os.PathLike
        Where to write the converted checkpoint (atomically); must not be the source.
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
        incasem checkpoint, does not match ``metadata.architecture``, holds NaN or inf
        weights, or ``dst_path`` is the source file itself.
    """
    src, dst = Path(src_path), Path(dst_path)
    payload = _read(src)
    if dst.exists() and dst.samefile(src):
        raise CheckpointError(
            f"refusing to write the converted checkpoint over its source {src}: "
            "choose another destination"
        )
    state = _state_dict_from(payload, src)
    if _is_incasem_payload(payload):
        raise CheckpointError(
            f"checkpoint {src} is already an incasem checkpoint: use it directly"
        )
    model = _build_model(state, metadata.architecture, src)
    dst = save_checkpoint(dst, model, metadata)
    return checkpoint_sha256(dst)


def is_incasem_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a readable file written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    bool
        ``False`` for a missing, unreadable, corrupt or original-format file.
    """
    try:
        return _is_incasem_payload(_read(Path(path)))
    except CheckpointError:
        return False


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
