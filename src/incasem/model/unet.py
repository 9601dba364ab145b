"""The 3D U-Net of incasem.

The network reproduces, layer by layer and with the same state-dict key layout, the
model of the original incasem: a ``funlib.learn.torch`` ``UNet`` (valid convolutions,
ReLU, max-pooling, constant (nearest neighbour) upsampling, translation-equivariance
crops) followed by one valid convolution to the class logits. Published checkpoints
therefore load into :class:`UNet` unchanged.

Geometry
--------
All convolutions are *valid*, so the output is smaller than the input. An input size
is valid when every feature map that is max-pooled has a size divisible by the pooling
factor. After each upsampling the feature map is centre-cropped so that its size minus
the crop of the following convolutions is a multiple of the product of the pooling
factors of all levels below (``crop_factors``); this makes the network translation
equivariant for shifts that are multiples of :attr:`UNetConfig.total_downsample_factor`,
which blockwise prediction relies on. For the standard network a size ``s`` is valid
when ``s % 8 == 4`` and ``s >= 100``; its output is ``s - 94`` (``204 -> 110``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import EllipsisType
from typing import Any, cast, overload

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from incasem.errors import InvalidValueError
from incasem.geometry import as_positive_triple

Triple = tuple[int, int, int]

INPUT_NORMALIZATION = "x/255*2-1"
"""Input normalisation of the original incasem: uint8 ``x`` becomes ``x/255*2-1``."""

_DEFAULT_DOWNSAMPLE: tuple[Triple, ...] = ((2, 2, 2), (2, 2, 2), (2, 2, 2))


def _as_triple(value: Any, name: str, *, odd: bool = False) -> Triple:
    """``value`` as three positive ints (:func:`incasem.geometry.as_positive_triple`), odd if asked;
    raises :class:`~incasem.errors.InvalidValueError` (a ``ValueError``)."""
    try:
        if isinstance(value, numbers.Number):
            raise InvalidValueError(name)
        triple = as_positive_triple(value, name)
    except InvalidValueError:
        raise InvalidValueError(f"{name} must be three positive integers (z, y, x), got {value!r}") from None
    if odd and any(v % 2 == 0 for v in triple):
        raise InvalidValueError(f"{name} must be odd so that outputs stay centred in the input, got {value!r}")
    return triple


def _as_kernel_levels(value: Any, name: str, num_levels: int) -> tuple[tuple[Triple, ...], ...]:
    """Return per-level lists of odd kernel sizes as nested tuples or raise ``ValueError``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{name} must be a list of levels of kernel sizes, got {value!r}")
    if len(value) != num_levels:
        raise ValueError(f"{name} must have {num_levels} levels, got {len(value)}")
    levels = []
    for level, kernels in enumerate(value):
        if isinstance(kernels, (str, bytes)) or not isinstance(kernels, Sequence) or not kernels:
            raise ValueError(f"{name}[{level}] must be a non-empty list of kernel sizes")
        levels.append(tuple(_as_triple(k, f"{name}[{level}][{i}]", odd=True) for i, k in enumerate(kernels)))
    return tuple(levels)


def _as_positive_int(value: Any, name: str) -> int:
    """Return ``value`` as a positive int or raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a :class:`UNet` (immutable, JSON-friendly via :meth:`to_dict`).

    The defaults are the standard incasem network (4 levels, 32 feature maps doubling
    per level, isotropic 2x pooling, 3x3x3 kernels, 2 output classes).

    Parameters
    ----------
    in_channels : int
        Number of input channels.
    num_classes : int
        Number of output channels (class logits; softmax is not part of the model).
    num_fmaps : int
        Feature maps of the top level; level ``l`` has ``num_fmaps*fmap_inc_factor**l``.
    fmap_inc_factor : int
        Factor by which the number of feature maps grows per level.
    downsample_factors : tuple of (int, int, int)
        Max-pooling factor (z, y, x) between consecutive levels; one per pooling step,
        so the network has ``len(downsample_factors) + 1`` levels.
    kernel_size_down : tuple of tuples of (int, int, int), optional
        Kernel sizes of the encoder convolutions, one list per level (top first).
        ``None`` means two 3x3x3 convolutions per level.
    kernel_size_up : tuple of tuples of (int, int, int), optional
        Kernel sizes of the decoder convolutions, one list per level below the bottom
        (top first). ``None`` means two 3x3x3 convolutions per level.
    final_kernel_size : (int, int, int)
        Kernel size of the final convolution to the class logits.

    Raises
    ------
    ValueError
        If a value is not a positive integer, a kernel size is even or the number of
        kernel lists does not match the number of levels.
    """

    in_channels: int = 1
    num_classes: int = 2
    num_fmaps: int = 32
    fmap_inc_factor: int = 2
    downsample_factors: tuple[Triple, ...] = _DEFAULT_DOWNSAMPLE
    kernel_size_down: tuple[tuple[Triple, ...], ...] | None = None
    kernel_size_up: tuple[tuple[Triple, ...], ...] | None = None
    final_kernel_size: Triple = (3, 3, 3)

    def __post_init__(self) -> None:
        for name in ("in_channels", "num_classes", "num_fmaps", "fmap_inc_factor"):
            object.__setattr__(self, name, _as_positive_int(getattr(self, name), name))
        factors = self.downsample_factors
        if isinstance(factors, (str, bytes)) or not isinstance(factors, Sequence) or not factors:
            raise ValueError(f"downsample_factors must be a non-empty list of (z, y, x) factors, got {factors!r}")
        factors = tuple(_as_triple(f, f"downsample_factors[{i}]") for i, f in enumerate(factors))
        object.__setattr__(self, "downsample_factors", factors)
        num_levels = len(factors) + 1
        down = self.kernel_size_down if self.kernel_size_down is not None else [[(3, 3, 3), (3, 3, 3)]] * num_levels
        up = self.kernel_size_up if self.kernel_size_up is not None else [[(3, 3, 3), (3, 3, 3)]] * (num_levels - 1)
        object.__setattr__(self, "kernel_size_down", _as_kernel_levels(down, "kernel_size_down", num_levels))
        object.__setattr__(self, "kernel_size_up", _as_kernel_levels(up, "kernel_size_up", num_levels - 1))
        object.__setattr__(
            self,
            "final_kernel_size",
            _as_triple(self.final_kernel_size, "final_kernel_size", odd=True),
        )

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as plain JSON-friendly values (ints and lists).

        Returns
        -------
        dict
            Keys are the field names; :meth:`from_dict` inverts it.
        """
        return {
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "num_fmaps": self.num_fmaps,
            "fmap_inc_factor": self.fmap_inc_factor,
            "downsample_factors": [list(f) for f in self.downsample_factors],
            "kernel_size_down": [[list(k) for k in level] for level in self.kernels_down],
            "kernel_size_up": [[list(k) for k in level] for level in self.kernels_up],
            "final_kernel_size": list(self.final_kernel_size),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UNetConfig:
        """Build a configuration from :meth:`to_dict` output (missing keys take defaults).

        Parameters
        ----------
        data : Mapping
            Field names to values; lists are accepted where tuples are expected.

        Returns
        -------
        UNetConfig

        Raises
        ------
        ValueError
            If ``data`` is not a mapping, has unknown keys or invalid values.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"a U-Net architecture must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown U-Net architecture keys {unknown}")
        return cls(**data)

    # ------------------------------------------------------------------ geometry

    @property
    def num_levels(self) -> int:
        """Number of resolution levels (``len(downsample_factors) + 1``)."""
        return len(self.downsample_factors) + 1

    @property
    def kernels_down(self) -> tuple[tuple[Triple, ...], ...]:
        """``kernel_size_down`` as construction filled it in (never ``None``)."""
        assert self.kernel_size_down is not None, "__post_init__ fills in kernel_size_down"
        return self.kernel_size_down

    @property
    def kernels_up(self) -> tuple[tuple[Triple, ...], ...]:
        """``kernel_size_up`` as construction filled it in (never ``None``)."""
        assert self.kernel_size_up is not None, "__post_init__ fills in kernel_size_up"
        return self.kernel_size_up

    @property
    def crop_factors(self) -> tuple[Triple, ...]:
        """Per decoder level, the product of the downsample factors of it and all levels below.

        After upsampling to level ``l`` the feature map is cropped so that its size minus
        the crop of the following convolutions is a multiple of ``crop_factors[l]``.
        """
        return tuple(
            (math.prod(f[0] for f in below), math.prod(f[1] for f in below), math.prod(f[2] for f in below))
            for below in (self.downsample_factors[level:] for level in range(self.num_levels - 1))
        )

    @property
    def total_downsample_factor(self) -> Triple:
        """Product of all downsample factors: the step of valid sizes and of equivariant shifts."""
        return self.crop_factors[0]

    def _trace_axis(self, size: int, axis: int) -> tuple[int, int]:
        """Follow one spatial axis through the network.

        Parameters
        ----------
        size : int
            Input size along ``axis``.
        axis : int
            0, 1 or 2 for z, y, x.

        Returns
        -------
        (int, int)
            Output size, and offset of the first output voxel in the input (in voxels).

        Raises
        ------
        ValueError
            Naming the axis, level and reason if ``size`` is not a valid input size.
        """
        name = "zyx"[axis]
        offset = 0  # start of the current feature map in input voxels
        scale = 1  # voxel size of the current level in input voxels

        def convolve(size: int, kernels: tuple[Triple, ...], where: str) -> int:
            nonlocal offset
            for k in kernels:
                size -= k[axis] - 1
                offset += scale * ((k[axis] - 1) // 2)
            if size < 1:
                raise ValueError(f"axis {name}: the feature map vanishes in the {where}")
            return size

        skip_sizes = []
        for level, factors in enumerate(self.downsample_factors):
            size = convolve(size, self.kernels_down[level], f"encoder level {level}")
            if size % factors[axis]:
                raise ValueError(f"axis {name}: size {size} at encoder level {level} is not divisible by the downsample factor {factors[axis]}")
            skip_sizes.append(size)
            size //= factors[axis]
            scale *= factors[axis]
        size = convolve(size, self.kernels_down[-1], "bottom level")
        for level in reversed(range(self.num_levels - 1)):
            factor = self.downsample_factors[level][axis]
            size *= factor
            scale //= factor
            conv_crop = sum(k[axis] - 1 for k in self.kernels_up[level])
            crop_factor = self.crop_factors[level][axis]
            target = (size - conv_crop) // crop_factor * crop_factor + conv_crop
            if target <= conv_crop:
                raise ValueError(f"axis {name}: the upsampled feature map at decoder level {level} is too small for a translation-equivariant crop")
            offset += scale * ((size - target) // 2)
            size = convolve(target, self.kernels_up[level], f"decoder level {level}")
        return convolve(size, (self.final_kernel_size,), "final convolution"), offset

    def _check_shape(self, shape: Sequence[int], name: str) -> Triple:
        """Return ``shape`` as three positive ints or raise ``ValueError`` naming it."""
        try:
            return _as_triple(tuple(shape), name)
        except TypeError as exc:
            raise ValueError(f"{name} must be three positive integers, got {shape!r}") from exc

    def output_shape(self, input_shape: Sequence[int]) -> Triple:
        """Spatial output shape for a spatial input shape.

        Parameters
        ----------
        input_shape : sequence of int
            Input (z, y, x) size in voxels.

        Returns
        -------
        (int, int, int)
            Output (z, y, x) size in voxels.

        Raises
        ------
        ValueError
            If ``input_shape`` is not valid; the message names the shape, the reason and
            the nearest valid input shape.
        """
        shape = self._check_shape(input_shape, "input shape")
        try:
            out = [self._trace_axis(s, axis)[0] for axis, s in enumerate(shape)]
        except ValueError as exc:
            raise ValueError(
                f"input shape {shape} is not valid for this U-Net ({exc}); the nearest valid input shape is {self.valid_input_shape_at_least(shape)}"
            ) from None
        return (out[0], out[1], out[2])

    def is_valid_input_shape(self, shape: Sequence[int]) -> bool:
        """Whether ``shape`` (z, y, x) can be fed to the network.

        Parameters
        ----------
        shape : sequence of int
            Input (z, y, x) size in voxels.

        Returns
        -------
        bool
        """
        try:
            self.output_shape(shape)
        except ValueError:
            return False
        return True

    def _smallest_valid_size(self, axis: int, at_least: int, min_output: int) -> int:
        """Smallest valid input size ``>= at_least`` along ``axis`` with output ``>= min_output``.

        Valid sizes exist for every architecture (all sizes large enough and in the right
        residue class modulo the total downsample factor), so the scan terminates.
        """
        size = max(at_least, 1)
        while True:
            try:
                if self._trace_axis(size, axis)[0] >= min_output:
                    return size
            except ValueError:
                pass
            size += 1

    def valid_input_shape_at_least(self, shape: Sequence[int]) -> Triple:
        """Smallest valid input shape that is at least ``shape`` along every axis.

        Parameters
        ----------
        shape : sequence of int
            Requested input (z, y, x) size in voxels.

        Returns
        -------
        (int, int, int)
        """
        shape = self._check_shape(shape, "shape")
        z, y, x = (self._smallest_valid_size(axis, s, 1) for axis, s in enumerate(shape))
        return (z, y, x)

    def input_shape_for_output(self, output_shape: Sequence[int]) -> Triple:
        """Smallest valid input shape whose output is at least ``output_shape``.

        Parameters
        ----------
        output_shape : sequence of int
            Requested output (z, y, x) size in voxels.

        Returns
        -------
        (int, int, int)
        """
        shape = self._check_shape(output_shape, "output shape")
        z, y, x = (self._smallest_valid_size(axis, s, s) for axis, s in enumerate(shape))
        return (z, y, x)

    @property
    def min_input_shape(self) -> Triple:
        """Smallest valid input shape (``(100, 100, 100)`` for the standard network)."""
        return self.valid_input_shape_at_least((1, 1, 1))

    @property
    def context(self) -> Triple:
        """Context in voxels per axis: offset of the first output voxel in the input.

        Equals ``(input - output) / 2`` (47 for the standard network); the same for
        every valid input shape.
        """
        z, y, x = (self._trace_axis(s, axis)[1] for axis, s in enumerate(self.min_input_shape))
        return (z, y, x)


def standard_config() -> UNetConfig:
    """The architecture of the published incasem models.

    Returns
    -------
    UNetConfig
        ``UNetConfig()``: 1 input channel, 2 classes, 32 feature maps doubling over
        4 levels, 2x2x2 pooling, 3x3x3 kernels; 5,837,730 parameters.
    """
    return UNetConfig()


class _Conv3d(nn.Conv3d):
    """``nn.Conv3d`` (same parameters and state-dict keys) that keeps a channels-last network
    channels-last on the CPU.

    For a batch of one, torch gives oneDNN only maps whose ``N·C·D·H`` exceeds 20480 and
    runs the others with its direct convolution, which returns channels-first maps: the
    first layer (one channel: 2x the time of oneDNN there) and the small maps at the bottom
    of the network, each then converted back by the next layer and again in the backward
    pass. A zero second input channel with a zero second weight channel gives the first
    layer the same sums on oneDNN's path (the weight gradient reaches ``self.weight``
    through the concatenation); the small maps are handed on channels-last.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution of ``x`` (batch, channels, z, y, x)."""
        weight = self.weight
        if x.device.type != "cpu" or not _is_channels_last(weight):
            return super().forward(x)
        if self.in_channels == 1:
            x = torch.cat([x, torch.zeros_like(x)], dim=1).contiguous(memory_format=torch.channels_last_3d)
            weight = torch.cat([weight, torch.zeros_like(weight)], dim=1)
        return F.conv3d(x, weight, self.bias).contiguous(memory_format=torch.channels_last_3d)


class ConvPass(nn.Module):
    """Valid 3D convolutions, each optionally followed by a ReLU.

    Parameters
    ----------
    in_channels : int
        Channels of the input.
    out_channels : int
        Channels of every convolution's output.
    kernel_sizes : sequence of (int, int, int)
        One kernel size per convolution.
    activation : bool
        Whether a ReLU follows each convolution.

    Notes
    -----
    The layers live in ``self.conv_pass`` (an ``nn.Sequential``), so with activations
    the convolutions have indices 0, 2, ... as in ``funlib.learn.torch``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_sizes: Sequence[Triple],
        activation: bool,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for kernel_size in kernel_sizes:
            layers.append(_Conv3d(in_channels, out_channels, kernel_size))
            if activation:
                layers.append(nn.ReLU(inplace=True))
            in_channels = out_channels
        self.conv_pass = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the convolutions.

        Parameters
        ----------
        x : torch.Tensor
            ``(batch, channels, z, y, x)``.

        Returns
        -------
        torch.Tensor
        """
        return self.conv_pass(x)


def _center_crop(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Centre-crop the three spatial axes of ``x`` to ``shape`` (offset ``(a-b)//2``)."""
    slices = tuple(slice((a - b) // 2, (a - b) // 2 + b) for a, b in zip(x.shape[-3:], shape))
    index: tuple[EllipsisType | slice, ...] = (..., *slices)
    return x[index]


def _is_channels_last(tensor: torch.Tensor) -> bool:
    """Whether a 5D map or convolution weight is laid out channels-last, read from its strides
    (``is_contiguous`` cannot tell: a one-channel tensor is contiguous in both layouts)."""
    return tensor.stride(1) == 1 and tensor.stride(-1) == tensor.shape[1]


def _concatenate_like(like: torch.Tensor, *maps: torch.Tensor) -> torch.Tensor:
    """Concatenate ``maps`` along the channels in the memory layout of ``like``.

    A concatenation of cropped views comes out channels-first; a network running
    channels-last (the CPU) would have oneDNN convert it for the next convolution and its
    gradient back again.
    """
    layout = torch.channels_last_3d if _is_channels_last(like) else torch.contiguous_format
    return torch.cat(maps, dim=1).contiguous(memory_format=layout)


def _in_input_dtype(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply ``module`` in ``x``'s dtype even under autocast.

    Max-pooling is exact in any dtype, but CPU autocast runs it in fp32: a full-size fp32
    copy of the bf16 feature map, kept for the backward pass. Outside autocast it pools
    the bf16 map itself (same values, less time and memory).
    """
    if not torch.is_autocast_enabled(x.device.type):
        return module(x)
    with torch.autocast(x.device.type, enabled=False):
        return module(x)


class _UNetBody(nn.Module):
    """The ``funlib.learn.torch`` U-Net (one head, constant upsampling, valid padding)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        fmaps = [config.num_fmaps * config.fmap_inc_factor**level for level in range(config.num_levels)]
        self.l_conv = nn.ModuleList(
            ConvPass(
                config.in_channels if level == 0 else fmaps[level - 1],
                fmaps[level],
                config.kernels_down[level],
                activation=True,
            )
            for level in range(config.num_levels)
        )
        self.l_down = nn.ModuleList(nn.MaxPool3d(factors, stride=factors) for factors in config.downsample_factors)
        self.r_up = nn.ModuleList(nn.Upsample(scale_factor=factors, mode="nearest") for factors in config.downsample_factors)
        self.r_conv = nn.ModuleList(
            [
                nn.ModuleList(
                    ConvPass(
                        fmaps[level] + fmaps[level + 1],
                        fmaps[level],
                        config.kernels_up[level],
                        activation=True,
                    )
                    for level in range(config.num_levels - 1)
                )
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder, decoder with translation-equivariance crops and skip connections."""
        skips = []
        for level in range(self.config.num_levels - 1):
            x = self.l_conv[level](x)
            skips.append(x)
            x = _in_input_dtype(self.l_down[level], x)
        x = self.l_conv[-1](x)
        for level in reversed(range(self.config.num_levels - 1)):
            up = self.r_up[level](x)
            conv_crop = [sum(k[d] - 1 for k in self.config.kernels_up[level]) for d in range(3)]
            target = [(s - c) // f * f + c for s, c, f in zip(up.shape[-3:], conv_crop, self.config.crop_factors[level])]
            up = _center_crop(up, target)
            skip = _center_crop(skips[level], target)
            x = cast(nn.ModuleList, self.r_conv[0])[level](_concatenate_like(skips[level], skip, up))
        return x


class UNet(nn.Module):
    """The incasem 3D U-Net: the ``funlib`` U-Net followed by a convolution to logits.

    Parameters
    ----------
    config : UNetConfig or mapping, optional
        Architecture (or its :meth:`UNetConfig.to_dict`); the standard one by default.

    Notes
    -----
    The state-dict keys are those of the original incasem model:
    ``unet.l_conv.{level}.conv_pass.{0,2}.*``, ``unet.r_conv.0.{level}.conv_pass.{0,2}.*``
    and ``final_conv_pass.conv_pass.0.*``. The output are logits; apply a softmax over
    the channel axis for probabilities. Inputs are expected normalised with
    :func:`normalize_raw`.
    """

    def __init__(self, config: UNetConfig | Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if isinstance(config, Mapping):  # as keyword arguments from JSON (the bioimage.io package's architecture)
            config = UNetConfig.from_dict(config)
        self.config = config if config is not None else standard_config()
        self.unet = _UNetBody(self.config)
        self.final_conv_pass = ConvPass(
            self.config.num_fmaps,
            self.config.num_classes,
            [self.config.final_kernel_size],
            activation=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict class logits.

        Parameters
        ----------
        x : torch.Tensor
            ``(batch, in_channels, z, y, x)`` float tensor with a valid spatial shape.

        Returns
        -------
        torch.Tensor
            ``(batch, num_classes, *config.output_shape((z, y, x)))`` logits.

        Raises
        ------
        ValueError
            If ``x`` is not 5D, has the wrong number of channels or an invalid
            spatial shape.
        """
        if not torch.jit.is_tracing():  # traced (TorchScript export), the sizes are symbolic: checked where the trace runs
            if x.ndim != 5 or x.shape[1] != self.config.in_channels:
                raise ValueError(f"U-Net input must be shaped (batch, {self.config.in_channels}, z, y, x), got {tuple(x.shape)}")
            self.config.output_shape(x.shape[-3:])
        return self.final_conv_pass(self.unet(x))

    def set_foreground_threshold(self, threshold: float) -> None:
        """Move a two-class model's decision to ``softmax(logits)[1] >= threshold`` of the model as it is now.

        Adds ``log(threshold / (1 - threshold))`` to the background bias of the final
        convolution, so argmax (the segmentation ``incasem predict`` writes) is that
        threshold and the probabilities shift with it. For a model trained with the
        class-balanced loss, which calls a rare class wherever it is moderately likely.

        Raises
        ------
        ValueError
            If the model does not have two classes or ``threshold`` is not in (0, 1).
        """
        if self.config.num_classes != 2:
            raise ValueError(f"a foreground threshold needs a two-class model, this one has {self.config.num_classes} classes")
        if not 0 < threshold < 1:
            raise ValueError(f"the foreground threshold must be strictly between 0 and 1, got {threshold}")
        with torch.no_grad():
            conv = cast(nn.Conv3d, self.final_conv_pass.conv_pass[0])
            assert conv.bias is not None  # ConvPass convolutions have a bias
            conv.bias[0] += math.log(threshold / (1 - threshold))


def count_parameters(model: nn.Module) -> int:
    """Total number of parameters (trainable or not) of ``model``.

    Parameters
    ----------
    model : torch.nn.Module

    Returns
    -------
    int
    """
    return sum(p.numel() for p in model.parameters())


@overload
def normalize_raw(raw: np.ndarray) -> np.ndarray: ...


@overload
def normalize_raw(raw: torch.Tensor) -> torch.Tensor: ...


def normalize_raw(raw: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Normalise uint8 EM intensities to float32 in [-1, 1] as the original incasem did.

    The original pipeline divided by 255 (gunpowder ``Normalize``) and then applied
    ``x*2 - 1`` (``IntensityScaleShift(2, -1)``), i.e. :data:`INPUT_NORMALIZATION`.

    Parameters
    ----------
    raw : numpy.ndarray or torch.Tensor
        uint8 intensities.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        float32, same type and shape as ``raw``; 0 maps to -1 and 255 to 1.

    Raises
    ------
    TypeError
        If ``raw`` is not a uint8 array or tensor.
    """
    if isinstance(raw, torch.Tensor):
        if raw.dtype != torch.uint8:
            raise TypeError(f"normalize_raw expects uint8 data, got a {raw.dtype} tensor")
        return raw.to(torch.float32) * (1.0 / 255.0) * 2.0 - 1.0
    if isinstance(raw, np.ndarray):
        if raw.dtype != np.uint8:
            raise TypeError(f"normalize_raw expects uint8 data, got a {raw.dtype} array")
        return raw.astype(np.float32) * np.float32(1.0 / 255.0) * np.float32(2.0) - np.float32(1.0)
    raise TypeError(f"normalize_raw expects a numpy array or torch tensor, got {type(raw).__name__}")
