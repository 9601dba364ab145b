"""The training configuration of ``incasem train --config config.yaml [key=value ...]`` (DESIGN §6).

A YAML (or JSON) file with nested sections; every key is optional and defaults to the
original incasem's ``config_training.yaml``::

    training:
        iterations: 200000          # fine-tuning: 5000-15000
        batch_size: 1
        input_size_voxels: [204, 204, 204]
        output_size_voxels: [110, 110, 110]
        num_workers: 8              # data loader worker processes
        seed: null
    optimizer:                      # Adam
        lr: 3.0e-5
        weight_decay: 3.0e-5
    data:
        voxel_size: [5, 5, 5]       # nm (z, y, x)
        num_classes: 2
    reject:                         # incasem.train.sampling.TrainingSampler
        min_masked: 0.75
        mask_reject_probability: 0.95
        min_foreground: 0.05
        foreground_reject_probability: 0.9
        min_labelled: 0.0           # partial labels: blocks with at most this labelled share are skipped
        max_attempts: 1000
    augmentation:                   # AugmentConfig (incasem.train.augment applies it)
        control_point_spacing: [32, 32, 32]
        jitter_sigma: [2, 2, 2]
        rotation_interval: [0, 1.5707963267948966]
        prob_shift: 0.05
        max_misalign: 2
        scale_min: 0.85
        ...
    model:                          # incasem.model.unet.UNetConfig
        num_fmaps: 32
        fmap_inc_factor: 2
        downsample_factors: [[2, 2, 2], [2, 2, 2], [2, 2, 2]]
    loss:
        clip_min: 0.01              # class-balancing fraction clip
        clip_max: 0.99
    intervals:
        save_every: 1000
        validate_every: 1000
        snapshot_every: 1000
        log_every: 1

Overrides ``section.key=value`` (value parsed as a YAML scalar or list, e.g.
``optimizer.lr=1e-4`` or ``training.input_size_voxels=[132,132,132]``) win over the file.
:func:`load_training_config` validates everything up front and raises a one-line
:class:`~incasem.errors.ConfigError` that names the file (or the override), the dotted
key and what it must hold; an unknown key gets the nearest valid key suggested.

The config is the single source of the augmentation settings
(its ``augmentation`` section *is* the :class:`AugmentConfig` that training applies) and the sampler's rejection settings
(:meth:`TrainingConfig.sampler_kwargs`).
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from incasem.errors import ConfigError, InvalidValueError
from incasem.io.data_config import no_duplicate_keys

__all__ = [
    "AugmentConfig",
    "DataSection",
    "IntervalsSection",
    "LossSection",
    "ModelSection",
    "OptimizerSection",
    "RejectSection",
    "TrainingConfig",
    "TrainingSection",
    "dotted_keys",
    "load_training_config",
    "shipped_configs",
]

_Int = Annotated[int, Field(strict=True)]
_PosInt = Annotated[int, Field(strict=True, gt=0)]
_NonNegInt = Annotated[int, Field(strict=True, ge=0)]
_Float = Annotated[float, Field(strict=True, allow_inf_nan=False)]
_PosFloat = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
_NonNegFloat = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
_Fraction = Annotated[float, Field(strict=True, ge=0, le=1, allow_inf_nan=False)]
_PosTriple = tuple[_PosInt, _PosInt, _PosInt]
_Axis = Annotated[int, Field(strict=True, ge=0, le=2)]

_TRIPLE = "3 whole numbers >= 1 [z, y, x]"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingSection(_Section):
    iterations: _PosInt = Field(200_000, description="a whole number of iterations >= 1 (fine-tuning: 5000-15000)")
    batch_size: _PosInt = Field(1, description="a whole number >= 1")
    input_size_voxels: _PosTriple = Field((204, 204, 204), description=f"{_TRIPLE} (network input, voxels)")
    output_size_voxels: _PosTriple = Field((110, 110, 110), description=f"{_TRIPLE} (network output, voxels)")
    num_workers: _NonNegInt = Field(8, description="a whole number of data loader worker processes >= 0")
    seed: _NonNegInt | None = Field(None, description="a whole number >= 0, or null for a random seed")


class OptimizerSection(_Section):
    lr: _PosFloat = Field(3e-5, description="a number > 0 (Adam learning rate)")
    weight_decay: _NonNegFloat = Field(3e-5, description="a number >= 0 (Adam weight decay)")


class DataSection(_Section):
    voxel_size: tuple[_PosFloat, _PosFloat, _PosFloat] = Field((5, 5, 5), description="3 numbers > 0 [z, y, x] (nm)")
    num_classes: Annotated[int, Field(strict=True, ge=2)] = Field(2, description="a whole number >= 2 (background included)")


class RejectSection(_Section):
    min_masked: _Fraction = Field(0.75, description="a fraction in [0, 1] (share of the block inside the cell mask)")
    mask_reject_probability: _Fraction = Field(0.95, description="a probability in [0, 1]")
    min_foreground: _Fraction = Field(0.05, description="a fraction in [0, 1] (share of foreground in the block)")
    foreground_reject_probability: _Fraction = Field(0.9, description="a probability in [0, 1]")
    min_labelled: _Fraction = Field(0.0, description="a fraction in [0, 1] (share of labelled voxels in the block, partial labels)")
    max_attempts: _PosInt = Field(1000, description="a whole number >= 1 (consecutive rejections before giving up)")


class _AugmentationKeyError(InvalidValueError):
    """A bad ``augmentation`` value: the key, what it must hold, and the keys it was checked against."""

    def __init__(self, key: str, requirement: str, related: tuple[str, ...] = ()) -> None:
        super().__init__(f"augmentation key '{key}' {requirement}")
        self.key, self.requirement, self.related = key, requirement, related


class AugmentConfig(_Section):
    """The augmentations of training (``augmentation`` section; :mod:`incasem.train.augment` applies them).

    The one schema of these settings: read from a config file as the ``augmentation``
    section, or built in Python (``AugmentConfig(prob_slip=0.1)``), where a bad value raises
    a one-line :class:`~incasem.errors.InvalidValueError` naming the key.

    Attributes
    ----------
    mirror_only
        Spatial axes (0 = z, 1 = y, 2 = x) that are each flipped with probability 0.5; empty: none.
    transpose_only
        Spatial axes that are randomly permuted among each other (anisotropic data: ``(1, 2)``);
        fewer than two: none. The crop must have the same size along these axes.
    control_point_spacing, jitter_sigma
        Distance of the elastic control points and the standard deviation of their offsets, voxels (z, y, x).
    rotation_interval
        Range of the random rotation about the z axis (in the y-x plane), radians.
    prob_slip, prob_shift, max_misalign
        Probability that a single z-section (``slip``), or a section and all following ones
        (``shift``), is shifted in y and x, by at most ``max_misalign`` voxels per axis.
    scale_min, scale_max, shift_min, shift_max
        Intensity ``a' = mean + (a - mean) * s + t``: range of ``s``, and of ``t`` in units of
        the full intensity range [0, 1].
    """

    mirror_only: tuple[_Axis, ...] = Field((0, 1, 2), description="a list of distinct axes among 0 (z), 1 (y), 2 (x)")
    transpose_only: tuple[_Axis, ...] = Field((0, 1, 2), description="a list of distinct axes among 0 (z), 1 (y), 2 (x)")
    control_point_spacing: _PosTriple = Field((32, 32, 32), description=f"{_TRIPLE} (voxels)")
    jitter_sigma: tuple[_NonNegFloat, _NonNegFloat, _NonNegFloat] = Field((2.0, 2.0, 2.0), description="3 numbers >= 0 [z, y, x] (voxels)")
    rotation_interval: tuple[_Float, _Float] = Field((0.0, 0.5 * math.pi), description="2 numbers [min, max] with min <= max (radians)")
    prob_slip: _Fraction = Field(0.0, description="a probability in [0, 1]")
    prob_shift: _Fraction = Field(0.05, description="a probability in [0, 1]")
    max_misalign: _NonNegInt = Field(2, description="a whole number of voxels >= 0")
    scale_min: _NonNegFloat = Field(0.85, description="a number >= 0, at most scale_max")
    scale_max: _NonNegFloat = Field(1.15, description="a number >= 0, at least scale_min")
    shift_min: _Float = Field(-0.15, description="a number, at most shift_max")
    shift_max: _Float = Field(0.15, description="a number, at least shift_min")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as error:
            first = error.errors()[0]
            key = str(first["loc"][0]) if first["loc"] else "augmentation"
            field = type(self).model_fields.get(key)
            if field is None:
                raise _AugmentationKeyError(key, f"is not a key of augmentation{_suggest(f'augmentation.{key}')}") from None
            detail = f" ({first['msg'][0].lower()}{first['msg'][1:]})" if len(first["loc"]) > 1 else ""
            raise _AugmentationKeyError(key, f"must be {field.description}, got {_show(values.get(key))}{detail}") from None
        for key, message, related in self.inconsistencies():
            raise _AugmentationKeyError(key, message, related)

    def inconsistencies(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """Rules across keys: (key, what is wrong, related keys) for each one broken."""
        found: list[tuple[str, str, tuple[str, ...]]] = []
        for name in ("mirror_only", "transpose_only"):
            axes = getattr(self, name)
            if len(set(axes)) != len(axes):
                found.append((name, f"must be a list of distinct axes among 0 (z), 1 (y), 2 (x), got {list(axes)}", ()))
        if self.rotation_interval[0] > self.rotation_interval[1]:
            found.append(("rotation_interval", f"must be [min, max] with min <= max (radians), got {list(self.rotation_interval)}", ()))
        if self.prob_slip + self.prob_shift > 1:
            found.append(("prob_shift", f"plus prob_slip must be at most 1, got {self.prob_shift} + {self.prob_slip}", ("prob_slip",)))
        if self.scale_min > self.scale_max:
            found.append(("scale_min", f"must be at most scale_max ({self.scale_max}), got {self.scale_min}", ("scale_max",)))
        if self.shift_min > self.shift_max:
            found.append(("shift_min", f"must be at most shift_max ({self.shift_max}), got {self.shift_min}", ("shift_max",)))
        return found


_Kernels = tuple[tuple[_PosTriple, ...], ...]


class ModelSection(_Section):
    num_fmaps: _PosInt = Field(32, description="a whole number >= 1")
    fmap_inc_factor: _PosInt = Field(2, description="a whole number >= 1")
    downsample_factors: tuple[_PosTriple, ...] = Field(((2, 2, 2), (2, 2, 2), (2, 2, 2)), description="a non-empty list of [z, y, x] factors >= 1")
    kernel_size_down: _Kernels | None = Field(None, description="null or one list of odd [z, y, x] kernel sizes per level (levels = downsample factors + 1)")
    kernel_size_up: _Kernels | None = Field(None, description="null or one list of odd [z, y, x] kernel sizes per level below the bottom")


class LossSection(_Section):
    clip_min: _Fraction = Field(0.01, description="a fraction in [0, 1], at most clip_max (class-balancing clip)")
    clip_max: _Fraction = Field(0.99, description="a fraction in [0, 1], at least clip_min (class-balancing clip)")


class IntervalsSection(_Section):
    save_every: _PosInt = Field(1000, description="a whole number of iterations >= 1")
    validate_every: _PosInt = Field(1000, description="a whole number of iterations >= 1")
    snapshot_every: _PosInt = Field(1000, description="a whole number of iterations >= 1")
    log_every: _PosInt = Field(1, description="a whole number of iterations >= 1")


class TrainingConfig(_Section):
    """A validated training configuration (immutable); see the module docstring."""

    training: TrainingSection = Field(default_factory=TrainingSection, description="a mapping of keys")
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection, description="a mapping of keys")
    data: DataSection = Field(default_factory=DataSection, description="a mapping of keys")
    reject: RejectSection = Field(default_factory=RejectSection, description="a mapping of keys")
    augmentation: AugmentConfig = Field(default_factory=AugmentConfig, description="a mapping of keys")
    model: ModelSection = Field(default_factory=ModelSection, description="a mapping of keys")
    loss: LossSection = Field(default_factory=LossSection, description="a mapping of keys")
    intervals: IntervalsSection = Field(default_factory=IntervalsSection, description="a mapping of keys")

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-ready nested dict (lists for tuples) that :func:`load_training_config` reads back."""
        return self.model_dump(mode="json")

    def sampler_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~incasem.train.sampling.TrainingSampler` for block rejection."""
        return self.reject.model_dump()

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~incasem.model.unet.UNetConfig` (architecture and classes)."""
        return {**self.model.model_dump(), "num_classes": self.data.num_classes}


def _leaf_keys(model: type[BaseModel], prefix: str = "") -> dict[str, str]:
    """Dotted key -> description of every leaf key of ``model``."""
    keys: dict[str, str] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.update(_leaf_keys(annotation, f"{prefix}{name}."))
        else:
            keys[f"{prefix}{name}"] = field.description or "a valid value"
    return keys


_KEYS = _leaf_keys(TrainingConfig)
_SECTIONS = tuple(TrainingConfig.model_fields)


def dotted_keys() -> tuple[str, ...]:
    """Every valid dotted key (``section.key``), in definition order."""
    return tuple(_KEYS)


# --------------------------------------------------------------------------- reading


class _Loader(yaml.SafeLoader):
    """Safe YAML loader that reads ``1e-4`` as a float (YAML 1.2) and refuses duplicate keys."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)[eE][-+]?[0-9]+
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"key '{key}' appears twice in the same mapping (line {key_node.start_mark.line + 1}): give each key once")
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"training config {path} does not exist: give the path of a .yaml or .json file or a shipped config ({', '.join(shipped_configs())})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8) file: give a training config .yaml or .json file") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror or error})") from None
    try:
        # _Loader is a SafeLoader subclass
        data = json.loads(text, object_pairs_hook=no_duplicate_keys) if path.suffix.lower() == ".json" else yaml.load(text, Loader=_Loader)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{at}: {problem}") from None
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections ({', '.join(_SECTIONS)}), got {_show(data)}")
    return data


def _show(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _suggest(key: str) -> str:
    candidates = list(_KEYS) if "." in key else [*_SECTIONS, *_KEYS]
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if not close:  # compare the last part alone (a key in the wrong section, or a typo in it)
        last = key.rsplit(".", 1)[-1]
        by_last = {k.rsplit(".", 1)[-1]: k for k in _KEYS}
        by_last.update({s: s for s in _SECTIONS})
        names = difflib.get_close_matches(last, list(by_last), n=1, cutoff=0.6)
        close = [by_last[names[0]]] if names else []
    if close:
        return f": did you mean '{close[0]}'?"
    section = key.split(".", 1)[0]
    if section in _SECTIONS:
        keys = [k.split(".", 1)[1] for k in _KEYS if k.startswith(section + ".")]
        return f": the keys of '{section}' are {', '.join(keys)}"
    return f": the sections are {', '.join(_SECTIONS)}"


def _parse_override(override: str) -> tuple[str, Any]:
    if not isinstance(override, str) or "=" not in override:
        raise ConfigError(f"override {override!r}: must be key=value with a dotted key, e.g. 'optimizer.lr=1e-4'")
    key, _, text = override.partition("=")
    key = key.strip()
    if key not in _KEYS:
        if key in _SECTIONS:
            raise ConfigError(
                f"override '{override}': '{key}' is a section: set its keys one by one, e.g. '{next(k for k in _KEYS if k.startswith(key + '.'))}=...'"
            )
        raise ConfigError(f"override '{override}': unknown key '{key}'{_suggest(key)}")
    try:
        value = yaml.load(text, Loader=_Loader) if text.strip() else None  # _Loader is a SafeLoader subclass
    except (yaml.YAMLError, ConfigError) as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"override '{override}': key '{key}': the value is not valid YAML ({problem})") from None
    if isinstance(value, dict):
        raise ConfigError(f"override '{override}': key '{key}' must be {_KEYS[key]}, got a mapping")
    return key, value


#: Folder of the configs shipped with incasem, usable by name (``--config anisotropic``).
SHIPPED_CONFIGS = Path(__file__).resolve().parent / "configs"


def shipped_configs() -> tuple[str, ...]:
    """Names of the shipped training configs (``standard``, ``anisotropic``)."""
    return tuple(sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml")))


def _config_file(path: str | Path) -> Path:
    """``path`` itself, or the shipped config of that name when no such file exists."""
    given = Path(path).expanduser().absolute()
    if not given.is_file() and str(path) in shipped_configs():
        return SHIPPED_CONFIGS / f"{path}.yaml"
    return given


def load_training_config(path: str | Path | None, overrides: Sequence[str] = (), base: Mapping[str, Any] | None = None) -> TrainingConfig:
    """Read a training config file, apply ``key=value`` overrides and validate the result.

    Parameters
    ----------
    path
        A YAML (or ``.json``) file of nested sections, the name of a shipped config
        (:func:`shipped_configs`), or ``None`` for the defaults.
    overrides
        ``section.key=value`` strings, applied in order after the file; the value is
        parsed as YAML (``1e-4``, ``[132, 132, 132]``, ``null``).
    base
        Nested sections to start from instead of a file (``path`` must be ``None``), e.g. a
        model's recipe from its card.

    Raises
    ------
    ConfigError
        One line naming the file (or the override), the dotted key and what it must hold,
        for a missing or unreadable file, invalid YAML/JSON, an unknown key (with the
        nearest valid key), a wrong type or range, or inconsistent values.
    """
    file = None if path is None else _config_file(path)
    source = "defaults" if file is None and base is None else "the model's recipe" if file is None else str(file)
    data: dict[str, Any] = dict(base or {}) if file is None else _read(file)
    if isinstance(overrides, str):
        overrides = [overrides]
    origin: dict[str, str] = {}  # dotted key -> the override that set it
    merged: dict[str, Any] = dict(data)
    for override in overrides:
        key, value = _parse_override(override)
        section, name = key.split(".", 1)
        current = merged.get(section)
        if current is None:
            current = {}
        elif not isinstance(current, dict):
            raise ConfigError(f"{source}: key '{section}' must be a mapping of keys, got {_show(current)}")
        merged[section] = {**current, name: value}
        origin[key] = f"override '{override}'"
    try:
        config = TrainingConfig.model_validate(merged)
    except ValidationError as error:
        raise ConfigError(_translate(source, merged, origin, error)) from None
    _check(config, source, origin)
    return config


def _dotted(loc: tuple[Any, ...]) -> tuple[str, str]:
    """(dotted key of the field, dotted key with indices) for a pydantic error location."""
    names = [str(part) for part in loc if isinstance(part, str)]
    field = ".".join(names[:2])
    full = field + "".join(f"[{part}]" for part in loc[2:] if isinstance(part, int))
    return field, full


def _value_at(data: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _translate(source: str, data: dict[str, Any], origin: dict[str, str], error: ValidationError) -> str:
    problems = error.errors()
    first = problems[0]
    loc = tuple(first["loc"])
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    field, full = _dotted(loc)
    where = origin.get(field, source)
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, _AugmentationKeyError):  # AugmentConfig checks its own keys
        keys = [f"augmentation.{name}" for name in (cause.key, *cause.related)]
        where = next((origin[key] for key in keys if key in origin), source)
        return f"{where}: key '{keys[0]}' {cause.requirement}{more}"
    if first["type"] == "extra_forbidden":
        return f"{where}: unknown key '{field}'{_suggest(field)}{more}"
    if field in _SECTIONS:
        section_keys = ", ".join(k.split(".", 1)[1] for k in _KEYS if k.startswith(field + "."))
        return f"{where}: key '{field}' must be a mapping of keys ({section_keys}), got {_show(_value_at(data, loc[:1]))}{more}"
    got = _show(_value_at(data, loc[:2]))
    item = f" ({full}: {first['msg'][0].lower()}{first['msg'][1:]})" if full != field else ""
    return f"{where}: key '{field}' must be {_KEYS.get(field, 'a valid value')}, got {got}{item}{more}"


def _check(config: TrainingConfig, source: str, origin: dict[str, str]) -> None:
    """Checks across keys that pydantic's per-field types do not express."""

    def fail(key: str, message: str, *related: str) -> None:
        where = next((origin[k] for k in (key, *related) if k in origin), source)
        raise ConfigError(f"{where}: key '{key}' {message}")

    t = config.training
    for axis, (i, o) in enumerate(zip(t.input_size_voxels, t.output_size_voxels)):
        if o > i or (i - o) % 2:
            fail(
                "training.output_size_voxels",
                f"must be at most training.input_size_voxels {list(t.input_size_voxels)} and differ from it by an "
                f"even number of voxels per axis (context on both sides), got {list(t.output_size_voxels)} (axis {axis})",
                "training.input_size_voxels",
            )
    if config.loss.clip_min > config.loss.clip_max:
        fail("loss.clip_min", f"must be at most loss.clip_max ({config.loss.clip_max}), got {config.loss.clip_min}", "loss.clip_max")
    if config.loss.clip_min <= 0:
        fail("loss.clip_min", f"must be > 0 (the balancing weight is 1/(K*fraction)), got {config.loss.clip_min}")
    m = config.model
    if not m.downsample_factors:
        fail("model.downsample_factors", "must be a non-empty list of [z, y, x] factors >= 1, got []")
    for name, levels in (("kernel_size_down", len(m.downsample_factors) + 1), ("kernel_size_up", len(m.downsample_factors))):
        kernels = getattr(m, name)
        if kernels is None:
            continue
        if len(kernels) != levels or any(not level for level in kernels):
            fail(f"model.{name}", f"must have {levels} non-empty lists of kernel sizes (one per level), got {len(kernels)}", "model.downsample_factors")
        if any(k % 2 == 0 for level in kernels for kernel in level for k in kernel):
            fail(f"model.{name}", "must hold odd kernel sizes (outputs stay centred in the input)")
