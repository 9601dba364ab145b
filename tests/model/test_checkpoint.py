"""Tests of incasem checkpoints: round trip, atomic writes, safety and import."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch

from incasem.errors import CheckpointError
from incasem.model.card import FORMAT_VERSION, ModelCard
from incasem.model.checkpoint import (
    CHECKPOINT_FORMAT,
    checkpoint_sha256,
    import_published_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from incasem.model.unet import UNet, UNetConfig, standard_config

SMALL = UNetConfig(num_fmaps=2, num_classes=3)
OTHER = UNetConfig(num_fmaps=3, num_classes=3)

EXECUTED = []


def _mark_executed() -> None:
    """Would run if a checkpoint were unpickled without weights_only."""
    EXECUTED.append(True)


class Payload:
    """A custom class whose unpickling runs code (calls ``_mark_executed``)."""

    def __reduce__(self):
        return (_mark_executed, ())


class PlainObject:
    """A custom class without any custom pickling."""

    def __init__(self) -> None:
        self.value = 1


def card(config: UNetConfig = SMALL, **overrides) -> ModelCard:
    values = {
        "voxel_size_nm": (5, 5, 5),
        "class_names": ["background", "mito", "er"][: config.num_classes] + [f"c{i}" for i in range(3, config.num_classes)],
        "organelle": "mito",
        "source": "test",
        "architecture": config,
        "preparation": "chemical fixation",
        "training": {"iterations": 10, "loss": "cross_entropy", "lr": 3e-5, "tags": ["a", "b"]},
        "iteration": 10,
        "validation_scores": {"dice": 0.9},
    }
    values.update(overrides)
    return ModelCard(**values)


def small_model(seed: int = 0, config: UNetConfig = SMALL) -> UNet:
    torch.manual_seed(seed)
    return UNet(config).eval()


def test_round_trip(tmp_path: Path) -> None:
    model = small_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(1, 1, 100, 100, 100)
    model(x).sum().backward()
    optimizer.step()
    model.eval()
    metadata = card()
    path = tmp_path / "sub" / "model.pt"

    assert save_checkpoint(path, model, metadata, optimizer=optimizer) == path

    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT
    assert raw["metadata"]["format_version"] == FORMAT_VERSION
    assert "optimizer_state_dict" in raw
    json.dumps(raw["metadata"])  # plain values only

    loaded, loaded_metadata = load_checkpoint(path)
    assert not loaded.training
    assert loaded_metadata == metadata
    assert loaded.config == SMALL
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_overwrite_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(path, small_model(0), card())
    before = path.read_bytes()

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, small_model(1), card())
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]

    monkeypatch.undo()
    save_checkpoint(path, small_model(1), card())
    assert path.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_save_rejects_metadata_of_another_architecture(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="architecture"):
        save_checkpoint(tmp_path / "m.pt", small_model(), card(OTHER))
    assert list(tmp_path.iterdir()) == []


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="does not exist") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint_sha256(path)
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint(tmp_path)


def _truncated(path: Path) -> None:
    save_checkpoint(path, small_model(), card())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _random_bytes(path: Path) -> None:
    path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(7), dtype=torch.uint8).numpy().tobytes())


def _empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [_truncated, _random_bytes, _empty], ids=["truncated", "random", "empty"])
def test_corrupt_files(tmp_path: Path, damage) -> None:
    path = tmp_path / "bad.pt"
    damage(path)
    with pytest.raises(CheckpointError, match="corrupt or truncated") as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


@pytest.mark.parametrize(
    "payload",
    [
        lambda: {"model_state_dict": {}, "extra": Payload()},
        lambda: {"model_state_dict": {}, "extra": PlainObject()},
        lambda: PlainObject(),
    ],
    ids=["reduce", "object", "bare-object"],
)
def test_pickled_code_is_refused(tmp_path: Path, payload) -> None:
    path = tmp_path / "evil.pt"
    torch.save(payload(), path)
    with pytest.raises(CheckpointError, match="contains pickled code") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert EXECUTED == []
    with pytest.raises(CheckpointError, match="contains pickled code"):
        import_published_checkpoint(path, tmp_path / "out.pt", card(standard_config()))
    assert not (tmp_path / "out.pt").exists()


def _write(path: Path, metadata: dict, state: dict) -> None:
    payload = {"format": CHECKPOINT_FORMAT, "metadata": metadata, "model_state_dict": state}
    torch.save(payload, path)


def test_state_dict_of_another_architecture(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    _write(path, card(SMALL).to_dict(), small_model(config=OTHER).state_dict())
    with pytest.raises(CheckpointError, match="does not match architecture") as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "shape mismatches [" in message and "(+" in message

    state = small_model().state_dict()
    del state["final_conv_pass.conv_pass.0.bias"]
    state["unet.extra.weight"] = torch.zeros(1)
    _write(path, card(SMALL).to_dict(), state)
    with pytest.raises(CheckpointError, match=r"missing keys \[final_conv_pass") as info:
        load_checkpoint(path)
    assert "unexpected keys [unet.extra.weight]" in str(info.value)


@pytest.mark.parametrize(
    "payload",
    [
        lambda: torch.zeros(3),
        lambda: {"format": CHECKPOINT_FORMAT, "metadata": {}},
        lambda: {"format": CHECKPOINT_FORMAT, "model_state_dict": {"a": 1}},
    ],
    ids=["tensor", "no-state", "non-tensor-state"],
)
def test_not_a_model_checkpoint(tmp_path: Path, payload) -> None:
    path = tmp_path / "odd.pt"
    torch.save(payload(), path)
    with pytest.raises(CheckpointError, match="model_state_dict") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.update(class_names=["background", "mito"]),
        lambda m: m.update(format_version=FORMAT_VERSION + 1),
        lambda m: m.pop("voxel_size_nm"),
        lambda m: m.update(bogus=1),
        lambda m: m["architecture"].update(num_fmaps=0),
    ],
    ids=["class-count", "newer-format", "missing-key", "unknown-key", "bad-architecture"],
)
def test_invalid_metadata(tmp_path: Path, change) -> None:
    path = tmp_path / "meta.pt"
    metadata = card().to_dict()
    change(metadata)
    _write(path, metadata, small_model().state_dict())
    with pytest.raises(CheckpointError, match="invalid metadata") as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def _published(path: Path, model: UNet) -> None:
    """Write a checkpoint as the original incasem (gunpowder Train node) did."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    torch.save(
        {"model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict()},
        path,
    )


def test_import_published_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    published = UNet(standard_config())
    src = tmp_path / "model_checkpoint_1847"
    _published(src, published)
    metadata = card(standard_config(), class_names=["background", "mito"], source="incasem-published:1847")

    with pytest.raises(CheckpointError, match="incasem models import") as info:
        load_checkpoint(src)
    assert str(src) in str(info.value)

    dst = tmp_path / "models" / "mito.pt"
    digest = import_published_checkpoint(src, dst, metadata)
    assert digest == hashlib.sha256(dst.read_bytes()).hexdigest() == checkpoint_sha256(dst)
    assert "optimizer_state_dict" not in torch.load(dst, weights_only=True)

    model, loaded_metadata = load_checkpoint(dst)
    assert loaded_metadata == metadata
    expected = published.state_dict()
    assert model.state_dict().keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())

    override, override_metadata = load_checkpoint(src, metadata=metadata)
    assert override_metadata is metadata
    assert all(torch.equal(v, expected[k]) for k, v in override.state_dict().items())

    with pytest.raises(CheckpointError, match="already an incasem checkpoint"):
        import_published_checkpoint(dst, tmp_path / "again.pt", metadata)


def test_import_rejects_other_architecture(tmp_path: Path) -> None:
    src = tmp_path / "small_published.pt"
    _published(src, small_model(config=UNetConfig(num_fmaps=2)))
    dst = tmp_path / "out.pt"
    metadata = card(standard_config(), class_names=["background", "mito"])
    with pytest.raises(CheckpointError, match="does not match architecture") as info:
        import_published_checkpoint(src, dst, metadata)
    assert str(src) in str(info.value)
    assert not dst.exists()


def test_model_card_validation_and_dict_round_trip() -> None:
    metadata = card()
    data = json.loads(json.dumps(metadata.to_dict()))
    assert ModelCard.from_dict(data) == metadata
    minimal = ModelCard(voxel_size_nm=(5, 5, 5), class_names=["background", "mito"], organelle="mito", source="x")
    assert minimal.architecture == standard_config()
    assert ModelCard.from_dict(minimal.to_dict()) == minimal
    with pytest.raises(ValueError, match="background"):
        card(class_names=["mito", "background", "er"])
    with pytest.raises(ValueError, match="voxel_size_nm"):
        card(voxel_size_nm=(5, 5))
    with pytest.raises(ValueError, match="input_normalization"):
        card(input_normalization="x/255")
    with pytest.raises(ValueError, match="training"):
        card(training={"optimizer": object()})


def test_checkpoint_sha256(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    data = os.urandom(3 << 20)
    path.write_bytes(data)
    assert checkpoint_sha256(path) == hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------- untrusted checkpoints


def _one_line_naming(info: pytest.ExceptionInfo, path: Path) -> str:
    """The message of a raised ``CheckpointError``, checked to be one short line naming ``path``."""
    message = str(info.value)
    assert str(path) in message and "\n" not in message and len(message) < 1000
    return message


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_non_finite_weights_are_refused(tmp_path: Path, bad: float) -> None:
    state = small_model().state_dict()
    keys = list(state)
    for key in (keys[1], keys[4], keys[6], keys[9]):  # four tensors, listed in file order
        state[key].view(-1)[0] = bad
    path = tmp_path / "diverged.pt"
    _write(path, card().to_dict(), state)
    with pytest.raises(CheckpointError, match="non-finite weights") as info:
        load_checkpoint(path)
    message = _one_line_naming(info, path)
    assert f"[{keys[1]}, {keys[4]}, {keys[6]}] (+1 more)" in message
    assert "diverged" in message and "use an earlier checkpoint" in message

    src = tmp_path / "diverged_published.pt"
    torch.save({"model_state_dict": state}, src)
    dst = tmp_path / "imported.pt"
    with pytest.raises(CheckpointError, match="non-finite weights") as info:
        import_published_checkpoint(src, dst, card())
    _one_line_naming(info, src)
    assert not dst.exists()


@pytest.mark.parametrize(
    ("architecture", "message"),
    [
        ({"num_fmaps": 10**6}, "shape mismatches"),
        (
            {"downsample_factors": [[1, 1, 1]] * 49, "kernel_size_down": None, "kernel_size_up": None},
            "199 convolutions but the file holds only",
        ),
        ({"num_fmaps": 2**62}, "cannot be built"),
        ({"final_kernel_size": [2**40 + 1] * 3}, "cannot be built"),
        ({"num_fmaps": 10**30}, "invalid metadata.*too large for 64 bits"),
        (
            {"downsample_factors": [[1000, 1000, 1000]] * 3},
            r"downsamples by \[1000000000, 1000000000, 1000000000\] \(z, y, x\), more than 1024",
        ),
    ],
    ids=["million-fmaps", "50-levels", "int64-fmaps", "huge-kernel", "bigint-fmaps", "huge-pooling"],
)
def test_absurd_architecture_fails_fast(tmp_path: Path, architecture: dict, message: str) -> None:
    metadata = card().to_dict()
    metadata["architecture"].update(architecture)
    path = tmp_path / "absurd.pt"
    _write(path, metadata, small_model().state_dict())
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert time.perf_counter() - start < 1.0
    _one_line_naming(info, path)


def _expanded(state: dict) -> None:
    """Replace a weight by a stride-0 view: it claims far more bytes than are stored."""
    key = "unet.l_conv.0.conv_pass.0.weight"
    state[key] = torch.zeros(1).expand(state[key].shape)


def _on_meta(state: dict) -> None:
    key = "unet.l_conv.0.conv_pass.0.weight"
    state[key] = torch.empty(state[key].shape, device="meta")


def _integer(state: dict) -> None:
    key = "unet.l_conv.0.conv_pass.0.weight"
    state[key] = torch.zeros(state[key].shape, dtype=torch.int64)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_expanded, "claim more data than the file holds"),
        (_on_meta, "not a mapping of names to dense tensors"),
        (_integer, r"not floating point \[unet.l_conv.0.conv_pass.0.weight \(torch.int64\)\]"),
    ],
    ids=["stride-0-view", "meta-tensor", "integer"],
)
def test_tensors_that_are_not_plain_weights(tmp_path: Path, damage, message: str) -> None:
    state = small_model().state_dict()
    damage(state)
    path = tmp_path / "odd_tensors.pt"
    _write(path, card().to_dict(), state)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    _one_line_naming(info, path)


def _deep(depth: int) -> list:
    value: list = [5]
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.update(format_version=torch.zeros(2)),
        lambda m: m.update({1: "int key", "also": "str key"}),
        lambda m: m["architecture"].update({2: 3, "bogus": 1}),
        lambda m: m.update(voxel_size_nm=_deep(5000)),
        lambda m: m.update(voxel_size_nm=list(range(1, 10**6))),
        lambda m: m.update(iteration=2**64),
    ],
    ids=["tensor-version", "int-key", "int-key-architecture", "deep", "long", "bigint"],
)
def test_hostile_metadata_gives_one_line(tmp_path: Path, change) -> None:
    metadata = card().to_dict()
    change(metadata)
    path = tmp_path / "hostile.pt"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # torch.save recurses per nesting level
    try:
        _write(path, metadata, small_model().state_dict())
    finally:
        sys.setrecursionlimit(limit)
    with pytest.raises(CheckpointError, match="invalid metadata") as info:
        load_checkpoint(path)
    _one_line_naming(info, path)


def test_fractional_voxel_sizes_round_trip(tmp_path: Path) -> None:
    metadata = card(voxel_size_nm=(50, 4.6, 4.6))
    assert metadata.voxel_size_nm == (50, 4.6, 4.6)
    assert [type(v) for v in metadata.voxel_size_nm] == [int, float, float]
    data = json.loads(json.dumps(metadata.to_dict()))
    assert ModelCard.from_dict(data) == metadata
    assert [type(v) for v in ModelCard.from_dict(data).voxel_size_nm] == [int, float, float]

    path = save_checkpoint(tmp_path / "serial.pt", small_model(), metadata)
    loaded = load_checkpoint(path)[1]
    assert loaded == metadata and [type(v) for v in loaded.voxel_size_nm] == [int, float, float]
    assert card(voxel_size_nm=[5.0, 5, 5]).voxel_size_nm == (5.0, 5, 5)

    for bad in [(True, 5, 5), (0, 5, 5), (-4.6, 5, 5), (float("nan"), 5, 5), (float("inf"), 5, 5), ("5", 5, 5), (5, 5), "555", None]:
        with pytest.raises(ValueError, match="voxel_size_nm must be three positive finite numbers"):
            card(voxel_size_nm=bad)


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_saved_checkpoint_has_umask_permissions(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        path = save_checkpoint(tmp_path / "model.pt", small_model(), card())
        overwritten = save_checkpoint(path, small_model(1), card())
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o666 & ~umask
    assert (overwritten.stat().st_mode & 0o777) == 0o666 & ~umask


def test_import_never_writes_over_its_source(tmp_path: Path) -> None:
    src = tmp_path / "published.pt"
    _published(src, small_model())
    link = tmp_path / "hard_link.pt"
    os.link(src, link)
    before = src.read_bytes()
    for dst in (src, link, tmp_path / "." / "published.pt"):
        with pytest.raises(CheckpointError, match="over its source") as info:
            import_published_checkpoint(src, dst, card())
        _one_line_naming(info, src)
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard_link.pt", "published.pt"]
