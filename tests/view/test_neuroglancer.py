"""``incasem view`` without a browser: layer description, geometry, serving, bad input, the command.

The browser test (tests/view/test_browser.py) checks that the data are drawn where
they belong; here the description of the layers, the data the server hands out and
the errors are checked directly.
"""

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
import zarr

from incasem.cli import main
from incasem.errors import (
    DatasetNotFoundError,
    InvalidValueError,
    NotAContainerError,
    PortInUseError,
)
from incasem.io.volume import create_volume
from incasem.view.neuroglancer import (
    MAX_DOWNSAMPLING,
    MAX_READ_VOXELS,
    default_datasets,
    describe_view,
    open_viewer,
    served_volume,
    start_server,
    stop_server,
)
from tests.helpers import error_line
from tests.view.viewer_cells import (
    CUBE_CENTRE,
    PROB,
    RAW_WORLD,
    SEGMENTATION,
    synthetic_cell,
)


@pytest.fixture(params=[2, 3], ids=["zarr_v2", "zarr_v3"])
def cell(request, tmp_path) -> Path:
    return synthetic_cell(tmp_path / "cell.zarr", request.param)


@pytest.fixture(autouse=True)
def _stop_server_after():
    yield
    stop_server()


def _free_port_in_use():
    """A socket listening on a free port of 127.0.0.1 (the caller closes it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def _files(path: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*")}


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


# --- the layer description ------------------------------------------------------------------


def test_layers_have_their_kind_voxel_size_and_offset(cell):
    spec = describe_view(cell, ["volumes/raw", "volumes/labels/mito", PROB, SEGMENTATION])
    described = [(layer.name, layer.kind, layer.voxel_size, layer.voxel_offset, layer.volume.shape) for layer in spec.layers]
    assert described == [
        ("raw", "image", (10, 4, 4), (4, 10, 6), (20, 60, 80)),
        ("labels/mito", "segmentation", (20, 8, 8), (2, 5, 3), (10, 30, 40)),
        ("predictions/unet/0001/prob_maps/class_1", "probabilities", (10, 4, 4), (4, 18, 14), (20, 40, 60)),
        ("predictions/unet/0001/segmentation", "segmentation", (10, 4, 4), (4, 18, 14), (20, 40, 60)),
    ]
    raw, labels, prob, _ = spec.layers
    assert spec.voxel_size == (10, 4, 4)  # the first dataset's grid
    assert spec.position == (4 + 10, 10 + 30, 6 + 40)  # its centre voxel, world grid
    assert raw.value_range == (0, 255) and "emitGrayscale" in raw.shader
    assert prob.value_range == (0, 1) and "colormapJet" in prob.shader
    assert labels.value_range is None and labels.shader is None


def test_grid_and_position_follow_the_first_dataset(cell):
    spec = describe_view(cell, ["volumes/labels/mito", "volumes/raw"], position=(5, 20, 23))
    assert spec.voxel_size == (20, 8, 8)
    assert spec.position == (5, 20, 23)
    assert describe_view(cell, ["volumes/raw"], position=CUBE_CENTRE).position == CUBE_CENTRE


def test_the_same_dataset_twice_is_one_layer(cell):
    spec = describe_view(cell, ["volumes/raw", "volumes//raw/", "volumes/labels/mito"])
    assert [layer.name for layer in spec.layers] == ["raw", "labels/mito"]


def test_non_uint8_images_get_a_range_from_a_central_sample(tmp_path):
    path = tmp_path / "cell.zarr"
    volume = create_volume(path, "volumes/raw", (8, 200, 200), np.uint16, (5, 5, 5))
    data = np.full(volume.shape, 1000, np.uint16)
    data[:, 68:132, 68:132] = np.linspace(1000, 3000, 64 * 64 * 8).reshape(8, 64, 64).astype(np.uint16)
    data[:, :10, :10] = 60000  # outside the central sample: no influence
    volume.write(volume.roi, data)
    low, high = describe_view(path, ["volumes/raw"]).layers[0].value_range
    assert 1000 <= low < 1100 and 2900 < high <= 3000


# --- default datasets ------------------------------------------------------------------------


def _prediction(path: Path, model: str, prediction_id: str, created: str) -> str:
    name = f"volumes/predictions/{model}/{prediction_id}/segmentation"
    volume = create_volume(path, name, (4, 4, 4), np.uint8, (5, 5, 5))
    record = dict(volume.array.attrs["incasem_provenance"], created=created)
    volume.array.attrs["incasem_provenance"] = record
    return name


def test_default_datasets_are_raw_labels_and_the_latest_prediction(tmp_path):
    path = tmp_path / "cell.zarr"
    for name in ("volumes/raw", "volumes/raw_equalized_0.02", "volumes/labels/mito", "volumes/labels/er", "volumes/mask"):
        create_volume(path, name, (4, 4, 4), np.uint8, (5, 5, 5))
    _prediction(path, "1847", "0001", "2024-05-01T10:00:00+00:00")
    latest = _prediction(path, "1841", "0001", "2024-05-02T10:00:00+00:00")
    _prediction(path, "1847", "0002", "2024-05-01T11:00:00+00:00")
    assert default_datasets(path) == ["volumes/raw_equalized_0.02", "volumes/labels/er", "volumes/labels/mito", latest]
    assert describe_view(path).layers[0].name == "raw_equalized_0.02"


def test_default_datasets_without_equalised_raw_or_anything(tmp_path):
    path = tmp_path / "cell.zarr"
    create_volume(path, "volumes/raw", (4, 4, 4), np.uint8, (5, 5, 5))
    assert default_datasets(path) == ["volumes/raw"]
    empty = tmp_path / "other.zarr"
    create_volume(empty, "volumes/something", (4, 4, 4), np.uint8, (5, 5, 5))
    with pytest.raises(DatasetNotFoundError, match=r"it has: volumes/something\): name datasets with -d"):
        default_datasets(empty)


# --- bad input -------------------------------------------------------------------------------


def test_a_missing_dataset_names_those_that_exist(cell):
    with pytest.raises(DatasetNotFoundError) as caught:
        describe_view(cell, ["volumes/raw", "volumes/labels/er"])
    message = str(caught.value)
    assert "no dataset 'volumes/labels/er'" in message
    for existing in ("volumes/raw", "volumes/labels/mito", PROB, SEGMENTATION):
        assert existing in message


def test_a_folder_that_is_no_container(tmp_path):
    with pytest.raises(NotAContainerError, match="is not a zarr container"):
        describe_view(tmp_path, ["volumes/raw"])


def test_a_position_outside_every_dataset_is_refused(cell):
    with pytest.raises(InvalidValueError, match=r"position 0,0,0 .* lies outside every dataset shown; volumes/raw covers .*leave position out"):
        describe_view(cell, ["volumes/raw"], position=(0, 0, 0))
    # outside the raw but inside the labels is fine
    labels_only_voxel = (RAW_WORLD.end[0] - 1, RAW_WORLD.offset[1], RAW_WORLD.offset[2])
    assert describe_view(cell, ["volumes/raw", "volumes/labels/mito"], position=labels_only_voxel)


def test_a_port_in_use_is_named(cell):
    sock = _free_port_in_use()
    port = sock.getsockname()[1]
    try:
        with pytest.raises(PortInUseError) as caught:
            open_viewer(cell, ["volumes/raw"], port=port)
    finally:
        sock.close()
    assert str(caught.value) == f"port {port} on 127.0.0.1 is in use: pick another with port or leave it out"
    assert caught.value.for_cli() == f"port {port} on 127.0.0.1 is in use: pick another with --port or leave it out"


@pytest.mark.parametrize(
    ("bind", "port", "message", "flag"),
    [
        ("127.0.0.1", 70000, "port must be 0 (a free port) or 1..65535, got 70000", "--port"),
        ("127.0.0.1", -1, "port must be 0", "--port"),
        ("203.0.113.7", 0, "bind_address 203.0.113.7 is not an address of this machine", "--bind"),
    ],
)
def test_bad_port_or_address(bind, port, message, flag):
    with pytest.raises(InvalidValueError, match="^" + re.escape(message)) as caught:
        start_server(bind, port)
    assert caught.value.for_cli().startswith(flag + " ")  # the command line names its flag


# --- serving ---------------------------------------------------------------------------------


def _served(viewer):
    """The URL of the server and the served volumes of ``viewer`` by layer name."""
    base = viewer.get_viewer_url().split("/v/")[0]
    volumes = {}
    for layer in viewer.state.layers:
        key = layer.source[0].url.removeprefix("python://volume/")
        volumes[layer.name] = f"{base}/neuroglancer/info/{key}", f"{base}/neuroglancer/npz/{key}"
    return volumes


def test_the_server_hands_out_the_data_at_its_geometry(cell):
    before = _files(cell)
    viewer = open_viewer(cell, ["volumes/raw", "volumes/labels/mito"], position=CUBE_CENTRE)
    assert viewer.get_viewer_url().startswith("http://127.0.0.1:")
    state = viewer.state
    assert list(state.dimensions.names) == ["z", "y", "x"]
    assert list(state.dimensions.scales) == pytest.approx([10e-9, 4e-9, 4e-9])  # metres
    assert list(state.position) == [13.5, 40.5, 46.5]
    assert list(state.display_dimensions) == ["x", "y", "z"]
    assert [layer.type for layer in state.layers] == ["image", "segmentation"]
    served = _served(viewer)
    info = json.loads(_get(served["labels/mito"][0]))
    assert [int(v) for v in info["voxelOffset"]] == [2, 5, 3] and [int(v) for v in info["shape"]] == [10, 30, 40]
    assert info["coordinateSpace"]["z"] == [pytest.approx(20e-9), "m"]  # 20 nm
    assert info["coordinateSpace"]["x"] == [pytest.approx(8e-9), "m"]
    assert info["volumeType"] == "segmentation" and info["dataType"] == "uint8"
    chunk = np.load(io.BytesIO(zlib.decompress(_get(f"{served['raw'][1]}/1,1,1/4,20,30/14,40,50"))))
    assert chunk.shape == (10, 20, 20) and (chunk == 250).all()  # the cube, local voxels
    assert _files(cell) == before  # nothing written to the container


def test_a_container_of_any_size_is_served_chunk_by_chunk(tmp_path):
    """10**12 voxels (never written, so nothing on disk): opening reads metadata only, a
    zoomed-out chunk reads at most MAX_READ_VOXELS, and larger requests are refused."""
    path = tmp_path / "huge.zarr"
    zarr.open_group(str(path), mode="w", zarr_format=3)
    create_volume(path, "volumes/raw", (10_000, 10_000, 10_000), np.uint8, (5, 5, 5), chunks=(64, 256, 256))
    started = time.perf_counter()
    spec = describe_view(path, ["volumes/raw"])
    assert time.perf_counter() - started < 5
    volume = served_volume(spec.layers[0])
    volume.get_encoded_subvolume("npz", np.array([0, 0, 0]), np.array([1, 512, 512]), "1,8,8")  # a flat chunk
    assert volume.data.largest_read == 4096**2 == MAX_READ_VOXELS
    assert volume.info()["downsamplingLayout"] == "2d" and volume.info()["maxDownsampling"] == MAX_DOWNSAMPLING
    with pytest.raises(ValueError, match="at most 262144 served"):
        volume.get_encoded_subvolume("npz", np.array([0, 0, 0]), np.array([128, 128, 128]), "1,1,1")
    with pytest.raises(ValueError, match="Invalid downsampling factor"):
        volume.get_encoded_subvolume("npz", np.array([0, 0, 0]), np.array([8, 8, 8]), f"{MAX_DOWNSAMPLING},2,1")


def test_meshes_are_not_served(cell):
    viewer = open_viewer(cell, ["volumes/labels/mito"])
    base = viewer.get_viewer_url().split("/v/")[0]
    key = viewer.state.layers[0].source[0].url.removeprefix("python://volume/")
    with pytest.raises(urllib.error.HTTPError) as caught:
        _get(f"{base}/neuroglancer/mesh/{key}/1")
    assert caught.value.code == 405


@pytest.mark.parametrize(
    ("dtype", "kind", "served"),
    [("int16", "volumes/labels/x", "uint16"), ("int64", "volumes/labels/x", "uint64"), ("float64", "volumes/raw", "float32")],
)
def test_data_types_neuroglancer_cannot_draw_are_converted(tmp_path, dtype, kind, served):
    path = tmp_path / "cell.zarr"
    volume = create_volume(path, kind, (4, 4, 4), dtype, (5, 5, 5))
    volume.write(volume.roi, np.full((4, 4, 4), -1 if dtype.startswith("int") else 0.5, dtype))
    source = served_volume(describe_view(path, [kind]).layers[0])
    assert source.data_type == served
    assert source.data[0:1, 0:1, 0:1].dtype == np.dtype(served)


# --- the command -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["-d", "volumes/labels/er"], r"has no dataset 'volumes/labels/er' \(it has: .*volumes/labels/mito.*volumes/raw\)$"),
        (["-d", "volumes/raw", "--position", "1,2"], r"--position needs three integers Z,Y,X"),
        (["-d", "volumes/raw", "--position", "0,0,0"], r"--position 0,0,0 \(voxels z,y,x\) lies outside every dataset"),
        (["--port", "99999"], r"--port must be 0 \(a free port\) or 1..65535, got 99999$"),
    ],
)
def test_cli_bad_input_is_one_line(cell, capsys, arguments, message):
    assert main(["view", str(cell), *arguments]) in (1, 2)
    assert re.search(message, error_line(capsys))


def test_cli_port_in_use_is_one_line(cell, capsys):
    sock = _free_port_in_use()
    port = sock.getsockname()[1]
    try:
        assert main(["view", str(cell), "--port", str(port)]) == 1
    finally:
        sock.close()
    assert error_line(capsys) == f"incasem: error: port {port} on 127.0.0.1 is in use: pick another with --port or leave it out"


def test_cli_not_a_container(tmp_path, capsys):
    assert main(["view", str(tmp_path / "nothing.zarr")]) == 1
    assert "is not a zarr container" in error_line(capsys)


def test_installed_command_prints_the_url_serves_and_stops_on_ctrl_c(tmp_path):
    cell = synthetic_cell(tmp_path / "cell.zarr", 3)
    before = _files(cell)
    command = shutil.which("incasem", path=str(Path(sys.executable).parent)) or "incasem"
    process = subprocess.Popen(
        [command, "view", str(cell), "-d", "volumes/raw", "-d", PROB, "--position", ",".join(map(str, CUBE_CENTRE))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and "/v/" in url, process.stderr.read()
        page = _get(url).decode()
        assert "<html" in page.lower()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 130
    finally:
        process.kill()
    err = process.stderr.read()
    assert "press Ctrl-C to stop" in err and err.strip().endswith("incasem: interrupted"), err
    assert "Traceback" not in err
    with pytest.raises(OSError):
        _get(url)
    assert _files(cell) == before
