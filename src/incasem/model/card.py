"""The card of a model: what an incasem checkpoint says about itself.

Architecture, voxel size, classes and their organelle names, input normalisation,
training data summary, iteration and scores travel inside the checkpoint
(``"metadata": ModelCard.to_dict()``), so a model is named once. The card validates its
values itself: a checkpoint is untrusted input (:mod:`incasem.model.checkpoint` reads it).
"""

from __future__ import annotations

import math
import numbers
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from incasem.model.unet import INPUT_NORMALIZATION, UNetConfig

__all__ = ["FORMAT_VERSION", "MAX_TOTAL_DOWNSAMPLE", "ModelCard", "VoxelSize", "quoted"]

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

quoted = reprlib.Repr()
"""Short quotes of untrusted values in messages (a few levels, items and characters)."""
quoted.maxlevel, quoted.maxlist, quoted.maxdict, quoted.maxstring, quoted.maxother = 3, 6, 6, 60, 60


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
                raise ValueError(f"{name} keys must be strings, got {quoted.repr(key)}")
            out[key] = _check_plain(v, f"{name}[{quoted.repr(key)}]", depth + 1)
        return out
    raise ValueError(f"{name} may hold only str, int, float, bool, None, lists and dicts, got {type(value).__name__}")


def _as_voxel_size(value: Any) -> VoxelSize:
    """Return ``value`` as three positive finite numbers (ints kept) or raise ``ValueError``."""
    error = ValueError(f"voxel_size_nm must be three positive finite numbers (z, y, x), got {quoted.repr(value)}")
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
            raise ValueError(f"metadata format_version {quoted.repr(version)} is not supported (this incasem reads version {FORMAT_VERSION}); upgrade incasem")
        if not isinstance(self.architecture, UNetConfig):
            raise ValueError(f"architecture must be a UNetConfig, got {type(self.architecture).__name__}")
        object.__setattr__(self, "voxel_size_nm", _as_voxel_size(self.voxel_size_nm))
        names = self.class_names
        if isinstance(names, (str, bytes)) or not isinstance(names, Sequence) or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"class_names must be a list of non-empty strings, got {names!r}")
        if len(names) != self.architecture.num_classes or names[0] != "background":
            raise ValueError(f"class_names must list {self.architecture.num_classes} classes starting with 'background', got {list(names)}")
        object.__setattr__(self, "class_names", tuple(names))
        for name in ("organelle", "source"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        if self.input_normalization != INPUT_NORMALIZATION:
            raise ValueError(f"input_normalization {self.input_normalization!r} is not supported (only {INPUT_NORMALIZATION!r})")
        if self.preparation is not None and not isinstance(self.preparation, str):
            raise ValueError(f"preparation must be a string, got {self.preparation!r}")
        if self.iteration is not None and (isinstance(self.iteration, bool) or not isinstance(self.iteration, int) or self.iteration < 0):
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
    def from_dict(cls, data: Any) -> ModelCard:
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
        missing = sorted(name for name in ("voxel_size_nm", "class_names", "organelle", "source") if name not in data)
        if missing:
            raise ValueError(f"missing metadata keys {missing}")
        values = dict(data)
        if "architecture" in values:
            values["architecture"] = UNetConfig.from_dict(values["architecture"])
        return cls(**values)
