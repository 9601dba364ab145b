"""Tests of the incasem 3D U-Net: geometry, key layout, numerics and equivariance."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from incasem.model.unet import (
    INPUT_NORMALIZATION,
    UNet,
    UNetConfig,
    count_parameters,
    normalize_raw,
    standard_config,
)

SMALL = UNetConfig(num_fmaps=4, num_classes=3)
ANISOTROPIC = UNetConfig(
    in_channels=2,
    num_fmaps=3,
    fmap_inc_factor=2,
    downsample_factors=((1, 2, 2), (1, 2, 2), (2, 2, 2)),
    kernel_size_down=(
        ((1, 3, 3), (1, 3, 3)),
        ((1, 3, 3), (1, 3, 3)),
        ((3, 3, 3), (3, 3, 3)),
        ((3, 3, 3), (3, 3, 3)),
    ),
    kernel_size_up=(
        ((1, 3, 3), (1, 3, 3)),
        ((1, 3, 3), (1, 3, 3)),
        ((3, 3, 3), (3, 3, 3)),
    ),
    final_kernel_size=(1, 3, 3),
)


def random_state(config: UNetConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the published key layout, He-scaled so that every level of the
    network contributes visibly to the output (default init lets deep levels fade)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in UNet(config).state_dict().items():
        if key.endswith("weight"):
            fan_in = value[0].numel()
            state[key] = torch.randn(value.shape, generator=generator) * math.sqrt(2.0 / fan_in)
        else:
            state[key] = torch.rand(value.shape, generator=generator) * 0.2 - 0.1
    return state


def seeded_model(config: UNetConfig, seed: int = 0) -> UNet:
    """A model in eval mode with the weights of :func:`random_state`."""
    model = UNet(config).eval()
    model.load_state_dict(random_state(config, seed), strict=True)
    return model


def predict(model: UNet, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def expected_published_keys(num_levels: int = 4) -> set[str]:
    """The state-dict keys of the original incasem model."""
    keys = set()
    for level in range(num_levels):
        for conv in (0, 2):
            for kind in ("weight", "bias"):
                keys.add(f"unet.l_conv.{level}.conv_pass.{conv}.{kind}")
                if level < num_levels - 1:
                    keys.add(f"unet.r_conv.0.{level}.conv_pass.{conv}.{kind}")
    keys |= {"final_conv_pass.conv_pass.0.weight", "final_conv_pass.conv_pass.0.bias"}
    return keys


# --------------------------------------------------------------------- reference


def reference_forward(state: dict[str, torch.Tensor], config: UNetConfig, x: torch.Tensor) -> torch.Tensor:
    """The original network written out with torch.nn.functional (the spec)."""

    def conv_pass(prefix: str, h: torch.Tensor, relu: bool = True) -> torch.Tensor:
        conv = 0
        while f"{prefix}.conv_pass.{conv}.weight" in state:
            h = F.conv3d(h, state[f"{prefix}.conv_pass.{conv}.weight"], state[f"{prefix}.conv_pass.{conv}.bias"])
            if relu:
                h = F.relu(h)
            conv += 2
        return h

    def center_crop(h: torch.Tensor, shape: list[int]) -> torch.Tensor:
        for d, target in enumerate(shape):
            start = (h.shape[2 + d] - target) // 2
            h = h.narrow(2 + d, start, target)
        return h

    factors = config.downsample_factors
    levels = len(factors) + 1
    skips = []
    h = x
    for level in range(levels - 1):
        h = conv_pass(f"unet.l_conv.{level}", h)
        skips.append(h)
        h = F.max_pool3d(h, kernel_size=factors[level], stride=factors[level])
    h = conv_pass(f"unet.l_conv.{levels - 1}", h)
    for level in reversed(range(levels - 1)):
        for d in range(3):
            h = h.repeat_interleave(factors[level][d], dim=2 + d)
        crop_factor = [math.prod(f[d] for f in factors[level:]) for d in range(3)]
        conv_crop = [sum(k[d] - 1 for k in config.kernel_size_up[level]) for d in range(3)]
        target = [((h.shape[2 + d] - conv_crop[d]) // crop_factor[d]) * crop_factor[d] + conv_crop[d] for d in range(3)]
        h = center_crop(h, target)
        h = torch.cat([center_crop(skips[level], target), h], dim=1)
        h = conv_pass(f"unet.r_conv.0.{level}", h)
    return conv_pass("final_conv_pass", h, relu=False)


# --------------------------------------------------------------------- standard net


def test_standard_parameter_count() -> None:
    assert count_parameters(UNet(standard_config())) == 5_837_730


def test_state_dict_keys_match_published_layout() -> None:
    state = UNet().state_dict()
    assert set(state) == expected_published_keys()
    assert state["unet.l_conv.0.conv_pass.0.weight"].shape == (32, 1, 3, 3, 3)
    assert state["unet.l_conv.3.conv_pass.2.weight"].shape == (256, 256, 3, 3, 3)
    assert state["unet.r_conv.0.2.conv_pass.0.weight"].shape == (128, 384, 3, 3, 3)
    assert state["unet.r_conv.0.0.conv_pass.0.weight"].shape == (32, 96, 3, 3, 3)
    assert state["final_conv_pass.conv_pass.0.weight"].shape == (2, 32, 3, 3, 3)


def test_standard_geometry() -> None:
    config = standard_config()
    assert config.output_shape((204, 204, 204)) == (110, 110, 110)
    assert config.output_shape((212, 196, 100)) == (118, 102, 6)
    assert config.context == (47, 47, 47)
    assert config.min_input_shape == (100, 100, 100)
    assert config.total_downsample_factor == (8, 8, 8)
    valid = [s for s in range(1, 400) if config.is_valid_input_shape((s, s, s))]
    assert valid == list(range(100, 400, 8))
    for s in valid:
        assert config.output_shape((s, 100, 100))[0] == s - 94
    assert config.input_shape_for_output((110, 110, 110)) == (204, 204, 204)
    assert config.input_shape_for_output((111, 1, 6)) == (212, 100, 100)
    assert config.valid_input_shape_at_least((205, 50, 100)) == (212, 100, 100)


@pytest.mark.parametrize("shape", [(206, 204, 204), (204, 204, 99), (92, 92, 92), (0, 204, 204)])
def test_invalid_input_shapes_raise(shape: tuple[int, int, int]) -> None:
    config = standard_config()
    assert not config.is_valid_input_shape(shape)
    with pytest.raises(ValueError, match=str(shape).replace("(", r"\(").replace(")", r"\)")):
        config.output_shape(shape)


def test_standard_forward_204() -> None:
    """The one full-size forward pass (channels-last is ~1.5x faster on CPU)."""
    model = UNet().eval().to(memory_format=torch.channels_last_3d)
    x = torch.zeros(1, 1, 204, 204, 204).to(memory_format=torch.channels_last_3d)
    out = predict(model, x)
    assert out.shape == (1, 2, 110, 110, 110)


def test_forward_rejects_bad_inputs() -> None:
    model = seeded_model(SMALL)
    with pytest.raises(ValueError, match="not valid"):
        model(torch.zeros(1, 1, 106, 100, 100))
    with pytest.raises(ValueError, match=r"channels|shaped"):
        model(torch.zeros(1, 2, 100, 100, 100))
    with pytest.raises(ValueError, match="shaped"):
        model(torch.zeros(1, 100, 100, 100))


# --------------------------------------------------------------------- numerics


@pytest.mark.parametrize(
    ("config", "shape"),
    [
        (SMALL, (100, 108, 116)),
        (UNetConfig(num_fmaps=2, in_channels=2, fmap_inc_factor=3), (108, 100, 100)),
        (ANISOTROPIC, ANISOTROPIC.input_shape_for_output((5, 6, 14))),
        (standard_config(), (100, 100, 100)),
    ],
    ids=["small", "inc3", "anisotropic", "standard"],
)
def test_matches_reference_forward(config: UNetConfig, shape: tuple[int, int, int]) -> None:
    """Load random weights with the published key layout; compare to the functional spec."""
    state = random_state(config, seed=1)
    model = UNet(config).eval()
    model.load_state_dict(state, strict=True)
    torch.manual_seed(1)
    x = torch.randn(1, config.in_channels, *shape)
    out = predict(model, x)
    with torch.no_grad():
        expected = reference_forward(state, config, x)
    assert out.shape == (1, config.num_classes, *config.output_shape(shape))
    assert expected.shape == out.shape
    assert expected.abs().max() > 1e-3  # not a degenerate all-zero comparison
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config", [SMALL, ANISOTROPIC], ids=["small", "anisotropic"])
def test_output_shape_arithmetic_matches_forward(config: UNetConfig) -> None:
    model = seeded_model(config)
    base = config.min_input_shape
    step = config.total_downsample_factor
    shapes = [
        base,
        tuple(b + s for b, s in zip(base, step)),
        (base[0] + 2 * step[0], base[1], base[2] + 3 * step[2]),
    ]
    for shape in shapes:
        assert config.is_valid_input_shape(shape)
        out = predict(model, torch.zeros(1, config.in_channels, *shape))
        assert out.shape[2:] == config.output_shape(shape)
        context = config.context
        assert all(i - o == 2 * c for i, o, c in zip(shape, out.shape[2:], context))
    bad = (base[0], base[1] + 1, base[2])
    assert not config.is_valid_input_shape(bad)
    with pytest.raises(ValueError):
        model(torch.zeros(1, config.in_channels, *bad))


def test_anisotropic_geometry() -> None:
    assert ANISOTROPIC.total_downsample_factor == (2, 8, 8)
    assert ANISOTROPIC.crop_factors == ((2, 8, 8), (2, 4, 4), (2, 2, 2))
    z, y, x = ANISOTROPIC.min_input_shape
    assert not ANISOTROPIC.is_valid_input_shape((z + 1, y, x))
    assert ANISOTROPIC.is_valid_input_shape((z + 2, y + 8, x + 16))
    # z has fewer convolutions along it than y and x, so less context
    cz, cy, cx = ANISOTROPIC.context
    assert cz < cy == cx


@pytest.mark.parametrize("config", [SMALL, ANISOTROPIC], ids=["small", "anisotropic"])
def test_translation_equivariance(config: UNetConfig) -> None:
    """Predicting a large block equals stitching two overlapping shifted sub-blocks."""
    model = seeded_model(config)
    step = config.total_downsample_factor
    sub = config.min_input_shape
    shift = tuple(2 * s for s in step)
    big = tuple(b + s for b, s in zip(sub, shift))
    torch.manual_seed(3)
    x = torch.randn(1, config.in_channels, *big)
    out_big = predict(model, x)
    out_a = predict(model, x[..., : sub[0], : sub[1], : sub[2]])
    out_b = predict(model, x[..., shift[0] :, shift[1] :, shift[2] :])
    stitched = torch.zeros_like(out_big)
    oa = out_a.shape[2:]
    stitched[..., : oa[0], : oa[1], : oa[2]] = out_a
    stitched[..., shift[0] :, shift[1] :, shift[2] :] = out_b
    assert out_b.shape[2:] == tuple(o - s for o, s in zip(out_big.shape[2:], shift))
    # together the two blocks cover the corners of the big output; compare both
    torch.testing.assert_close(stitched[..., : oa[0], : oa[1], : oa[2]], out_a)
    torch.testing.assert_close(out_big[..., : oa[0], : oa[1], : oa[2]], out_a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        out_big[..., shift[0] :, shift[1] :, shift[2] :],
        stitched[..., shift[0] :, shift[1] :, shift[2] :],
        rtol=1e-5,
        atol=1e-5,
    )


def test_shift_off_the_pooling_grid_breaks_equivariance() -> None:
    """Sanity check of the equivariance test: a shift of 4 (not a multiple of 8) differs."""
    model = seeded_model(SMALL)
    torch.manual_seed(4)
    x = torch.randn(1, 1, 104, 100, 100)
    out_0 = predict(model, x[..., :100, :, :])
    out_4 = predict(model, x[..., 4:, :, :])
    # out_4 would equal out_0 shifted by 4 voxels along z if the net were fully equivariant
    assert not torch.allclose(out_0[..., 4:, :, :], out_4[..., :2, :, :], atol=1e-4)


# --------------------------------------------------------------------- config and helpers


def test_config_dict_round_trip() -> None:
    for config in (standard_config(), ANISOTROPIC):
        data = json.loads(json.dumps(config.to_dict()))
        assert UNetConfig.from_dict(data) == config
    assert standard_config().to_dict()["downsample_factors"] == [[2, 2, 2]] * 3
    assert UNetConfig.from_dict({}) == standard_config()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_fmaps": 0},
        {"num_classes": True},
        {"downsample_factors": ()},
        {"downsample_factors": ((2, 2),)},
        {"final_kernel_size": (2, 3, 3)},
        {"kernel_size_up": (((3, 3, 3),),)},
        {"kernel_size_down": (((3, 3, 3),), ((3, 3, 3),), ((3, 3, 3),), ((3, 4, 3),))},
    ],
)
def test_invalid_config_raises(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        UNetConfig(**kwargs)


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="num_fmap"):
        UNetConfig.from_dict({"num_fmap": 32})


def test_normalize_raw() -> None:
    raw = np.array([0, 128, 255], dtype=np.uint8)
    out = normalize_raw(raw)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, [-1.0, 128 / 255 * 2 - 1, 1.0], rtol=0, atol=1e-7)
    tensor = normalize_raw(torch.from_numpy(raw))
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32
    np.testing.assert_array_equal(tensor.numpy(), out)
    assert INPUT_NORMALIZATION == "x/255*2-1"
    with pytest.raises(TypeError):
        normalize_raw(raw.astype(np.float32))
    with pytest.raises(TypeError):
        normalize_raw(torch.zeros(3))


def test_max_pooling_stays_in_bf16_under_cpu_autocast():
    """CPU autocast would pool in fp32 (a full-size fp32 copy of each skip map kept for backward);
    the network pools its bf16 maps as they are, with the same values."""
    model = UNet(UNetConfig(num_fmaps=4))
    pooled = []
    for pool in model.unet.l_down:
        pool.register_forward_hook(lambda module, inputs, output: pooled.append((inputs[0], output)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(1, 1, 108, 108, 108))
    assert len(pooled) == 3
    for before, after in pooled:
        assert before.dtype == after.dtype == torch.bfloat16
        assert torch.equal(after, torch.nn.functional.max_pool3d(before.float(), 2).bfloat16())


def test_one_channel_first_layer_trains_like_torchs_convolution() -> None:
    """The first layer takes oneDNN's path on the CPU (a zero second channel); its output and
    the gradients of its weight and bias are those of ``nn.Conv3d``."""
    model = UNet(UNetConfig(num_fmaps=4)).to(memory_format=torch.channels_last_3d)
    first = model.unet.l_conv[0].conv_pass[0]
    plain = torch.nn.Conv3d(1, 4, 3)
    plain.load_state_dict(first.state_dict())
    x = torch.randn(2, 1, 14, 15, 16)
    ours, theirs = first(x), plain(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    upstream = torch.randn_like(theirs)
    (ours * upstream).sum().backward()
    (theirs * upstream).sum().backward()
    torch.testing.assert_close(first.weight.grad, plain.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(first.bias.grad, plain.bias.grad, rtol=1e-4, atol=1e-4)


def test_channels_last_network_keeps_every_convolution_channels_last() -> None:
    """On the CPU the trainer and predict run the network channels-last; every convolution gets
    its input in that layout (no conversion in and out of oneDNN), with the same output."""
    config = UNetConfig(num_fmaps=4)
    model = seeded_model(config)
    layouts = []
    for module in model.modules():
        if isinstance(module, torch.nn.Conv3d) and module.in_channels > 1:
            module.register_forward_hook(lambda module, inputs, output: layouts.append(inputs[0].is_contiguous(memory_format=torch.channels_last_3d)))
    x = torch.randn(1, 1, 108, 108, 108)
    with torch.no_grad():
        expected = model(x)
        layouts.clear()
        fast = model.to(memory_format=torch.channels_last_3d)(x.contiguous(memory_format=torch.channels_last_3d))
    assert layouts and all(layouts)
    torch.testing.assert_close(fast, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("quantile", [0.2, 0.5, 0.9])
def test_foreground_threshold_moves_the_argmax_to_that_threshold(quantile: float) -> None:
    torch.manual_seed(3)
    model = UNet(UNetConfig(num_fmaps=4, num_classes=2, downsample_factors=((2, 2, 2), (2, 2, 2)))).eval()
    x = torch.randn(1, 1, *model.config.valid_input_shape_at_least((64, 64, 64)))
    with torch.no_grad():
        before = torch.softmax(model(x), dim=1)[0, 1]
        threshold = float(before.quantile(quantile))
        model.set_foreground_threshold(threshold)
        segmentation = model(x)[0].argmax(dim=0)
    decisive = (before - threshold).abs() > 1e-6  # float rounding at the boundary itself
    expected = (before >= threshold)[decisive]
    assert 0 < int(expected.sum()) < expected.numel()
    assert torch.equal(segmentation[decisive].bool(), expected)


@pytest.mark.parametrize(("classes", "threshold"), [(3, 0.5), (2, 0.0), (2, 1.0), (2, float("nan"))])
def test_foreground_threshold_refuses_what_it_cannot_mean(classes: int, threshold: float) -> None:
    model = UNet(UNetConfig(num_fmaps=2, num_classes=classes))
    bias = model.final_conv_pass.conv_pass[0].bias.clone()
    with pytest.raises(ValueError, match=r"two-class|between 0 and 1"):
        model.set_foreground_threshold(threshold)
    assert torch.equal(model.final_conv_pass.conv_pass[0].bias, bias)
