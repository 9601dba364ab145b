"""Self-describing model checkpoints: reading them safely, writing them.

A checkpoint is untrusted input: :func:`load_checkpoint` refuses files that want to run
code, hold non-finite or misshapen weights or implausible architectures, before a model
is built. The card it carries is :class:`incasem.model.card.ModelCard`.

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
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from incasem.errors import CheckpointError
from incasem.files import atomic_write
from incasem.model.card import MAX_TOTAL_DOWNSAMPLE, ModelCard, quoted
from incasem.model.unet import UNet, UNetConfig

CHECKPOINT_FORMAT = "incasem-checkpoint"
"""Value of the ``"format"`` key that marks an incasem checkpoint."""

_MAX_MESSAGE = 300  # characters of a cause quoted in an error message
_LISTED = 3  # names listed in an error message before "(+N more)"

# Fragments of torch's weights-only unpickler errors that mean the file wants to
# build objects or call functions, as opposed to being damaged.
_CODE_REJECTION_MARKERS = (
    "Unsupported global",
    "unsupported GLOBAL",
    "Trying to call reduce",
    "Can only create new object",
    "Can only build",
)


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
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc.strerror}): check its permissions") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if any(marker in str(exc) for marker in _CODE_REJECTION_MARKERS):
            raise CheckpointError(f"checkpoint {path} contains pickled code; incasem only loads plain weights, refusing to run it") from exc
        raise CheckpointError(f"checkpoint {path} is not a readable checkpoint (corrupt or truncated): re-download or re-export it") from exc
    except Exception as exc:  # any other failure to deserialise means a damaged file
        raise CheckpointError(f"checkpoint {path} is not a readable checkpoint (corrupt or truncated): re-download or re-export it") from exc


def _state_dict_from(payload: Any, path: Path) -> dict[str, torch.Tensor]:
    """Return the model state dict of a loaded payload or raise ``CheckpointError``.

    The tensors must be dense CPU tensors whose data the file really holds: views
    that repeat the same bytes (stride 0, overlapping) could claim terabytes.
    """
    if not isinstance(payload, Mapping) or "model_state_dict" not in payload:
        raise CheckpointError(f"checkpoint {path} holds no 'model_state_dict': it is not an incasem model checkpoint")
    state = payload["model_state_dict"]
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) and v.layout == torch.strided and v.device.type == "cpu" for k, v in state.items()
    ):
        raise CheckpointError(f"checkpoint {path} has a 'model_state_dict' that is not a mapping of names to dense tensors: re-export it")
    state = dict(state)
    if _claimed_bytes(state) > _held_bytes(state):
        raise CheckpointError(f"checkpoint {path} has tensors that claim more data than the file holds (overlapping views of the same bytes): re-export it")
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
    return sum(map(len, config.kernels_down)) + sum(map(len, config.kernels_up)) + 1


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
            f"{quoted.repr(list(config.total_downsample_factor))} (z, y, x), more than "
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
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    config: UNetConfig,
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
    mismatched = sorted(f"{key} {tuple(state[key].shape)} (expected {tuple(expected[key].shape)})" for key in common if state[key].shape != expected[key].shape)
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
            f"checkpoint {path} does not match architecture {_describe(config)}: " + "; ".join(problems) + ": use the metadata that belongs to these weights"
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


def check_checkpoint(path: str | os.PathLike[str]) -> ModelCard:
    """The metadata of an incasem checkpoint whose weights :func:`load_checkpoint` would accept.

    Everything :func:`load_checkpoint` checks (readable, no pickled code, metadata,
    weights matching the architecture by name, shape and dtype, finite) is checked
    here, without allocating the model: a job calls it before it writes anything, so
    a refused checkpoint leaves no empty output behind.

    Raises
    ------
    CheckpointError
        With the message :func:`load_checkpoint` would give.
    """
    path = Path(path)
    payload = _read(path)
    state = _state_dict_from(payload, path)
    card = _metadata_from(payload, path)
    config = card.architecture
    _check_plausible(state, config, path)
    _check_architecture(state, _meta_model(config, path).state_dict(), config, path)
    _check_finite(state, path)
    return card


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
        raise CheckpointError(f"checkpoint {path} has invalid metadata ({_first_line(exc)}): re-export it") from exc


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
        raise ValueError(f"metadata architecture {_describe(metadata.architecture)} differs from the model's {_describe(model.config)}")
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
        raise CheckpointError(f"refusing to write the converted checkpoint over its source {src}: choose another destination")
    state = _state_dict_from(payload, src)
    if _is_incasem_payload(payload):
        raise CheckpointError(f"checkpoint {src} is already an incasem checkpoint: use it directly")
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
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc.strerror}): check its permissions") from exc
    return digest.hexdigest()
