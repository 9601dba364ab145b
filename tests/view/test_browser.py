"""``incasem view`` in a real browser: headless Chromium draws the data where they belong.

Headless Chromium (Debian ``chromium`` + ``chromium-driver``, installed by
``bash tests/install_test_tools.sh``) opens the viewer's URL through selenium; WebGL runs
on SwiftShader. neuroglancer's screenshot waits until every visible chunk is loaded
and drawn, so the pixels read back are the data, not a half-loaded view.

The views are 2D cross-sections (x right, y down) on a canvas of odd size, so that
the centre of the canvas, where the viewer's position (a voxel centre) is drawn,
falls on a pixel centre and each voxel edge on a pixel edge: at one pixel per voxel of
the grid, world voxel ``v`` lands on pixel ``v - position + size // 2``.
"""

import shutil
import threading

import numpy as np
import pytest
import zarr

from incasem.cli import main
from incasem.geometry import Roi
from incasem.io.volume import create_volume
from incasem.view.neuroglancer import MAX_READ_VOXELS, open_viewer, stop_server
from tests.helpers import LUCCHI, require
from tests.view.viewer_cells import (
    CUBE_CENTRE,
    CUBE_WORLD,
    PROB,
    RAW_WORLD,
    SEGMENTATION,
    synthetic_cell,
)

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the test extra) drives the browser test")


#: Canvas of the screenshots, pixels (width, height): odd, see the module's docstring.
CANVAS = (201, 161)

#: Headless Chromium as root in a container, with WebGL on the SwiftShader software renderer.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--use-gl=angle",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--window-size=640,480",
)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium under chromedriver; skips the test when they are not installed."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip("headless Chromium / chromedriver not found: run `bash tests/install_test_tools.sh` to install them")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console messages, for CORS errors
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    stop_server()


def _show(browser, viewer, visible=None, scale: float = 1):
    """Load ``viewer`` in the browser as a plain 2D cross-section (no axes, scale bar or
    bounding boxes; black background; ``scale`` voxels per pixel), with only layers ``visible``."""
    with viewer.txn() as state:
        state.layout = "xy"
        state.show_axis_lines = False
        state.show_scale_bar = False
        state.show_default_annotations = False
        state.cross_section_scale = scale
        state.cross_section_background_color = "#000000"
        for layer in state.layers:
            layer.visible = visible is None or layer.name in visible
    if browser.current_url != viewer.get_viewer_url():
        browser.get(viewer.get_viewer_url())


def _screenshot(viewer, timeout: float = 30) -> np.ndarray:
    """The RGB pixels of the canvas once all visible data are drawn (height, width, 3)."""
    result = []
    thread = threading.Thread(target=lambda: result.append(viewer.screenshot(size=list(CANVAS))), daemon=True)
    thread.start()
    thread.join(timeout)
    if not result:
        pytest.fail(f"the browser did not draw the view within {timeout} s")
    return result[0].screenshot.image_pixels[..., :3]


def _expected(region: Roi, position) -> np.ndarray:
    """Where world region ``region`` (voxels) appears on the canvas around ``position`` at its z."""
    mask = np.zeros(CANVAS[::-1], bool)
    if region.offset[0] <= position[0] < region.end[0]:
        rows = [min(max(b - position[1] + CANVAS[1] // 2, 0), CANVAS[1]) for b in (region.offset[1], region.end[1])]
        cols = [min(max(b - position[2] + CANVAS[0] // 2, 0), CANVAS[0]) for b in (region.offset[2], region.end[2])]
        mask[rows[0] : rows[1], cols[0] : cols[1]] = True
    return mask


def _move(viewer, position) -> None:
    with viewer.txn() as state:
        state.position = [p + 0.5 for p in position]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_raw_is_drawn_at_its_voxel_size_and_offset(browser, tmp_path, zarr_format):
    cell = synthetic_cell(tmp_path / "cell.zarr", zarr_format)
    position = (CUBE_CENTRE[0], CUBE_CENTRE[1] - 5, CUBE_CENTRE[2] + 7)  # the cube off the canvas centre
    viewer = open_viewer(cell, ["volumes/raw"], position=position)
    _show(browser, viewer)
    grey = _screenshot(viewer)
    assert (grey[..., 0] == grey[..., 2]).all()  # grey
    np.testing.assert_array_equal(grey[..., 0] > 200, _expected(CUBE_WORLD, position))  # the cube: 250
    np.testing.assert_array_equal(grey[..., 0] > 20, _expected(RAW_WORLD, position))  # the raw: 40, outside: black
    below = (CUBE_WORLD.offset[0] - 1, *position[1:])
    _move(viewer, below)  # the slice below the cube: raw, no cube
    grey = _screenshot(viewer)[..., 0]
    assert not (grey > 200).any()
    np.testing.assert_array_equal(grey > 20, _expected(RAW_WORLD, below))


def test_layers_of_other_grids_overlay_the_raw(browser, tmp_path):
    """Labels on a twice coarser grid, a probability map and a segmentation at another offset
    all cover the raw's bright cube, pixel for pixel; the heat map is red where p = 1, the labels
    green and the prediction magenta (segment 1 of each, told apart)."""
    cell = synthetic_cell(tmp_path / "cell.zarr", 3)
    viewer = open_viewer(cell, ["volumes/raw", "volumes/labels/mito", PROB, SEGMENTATION], position=CUBE_CENTRE)
    cube = _expected(CUBE_WORLD, CUBE_CENTRE)
    heat_map = PROB.removeprefix("volumes/")
    for layer in ("labels/mito", heat_map, SEGMENTATION.removeprefix("volumes/")):
        _show(browser, viewer, visible={layer})
        pixels = _screenshot(viewer).astype(int)
        np.testing.assert_array_equal(pixels.max(-1) > 0, cube, err_msg=layer)
        red, green, blue = np.moveaxis(pixels[cube], -1, 0)
        if layer == heat_map:
            assert (red > 100).all() and not green.any() and not blue.any()
        elif layer == "labels/mito":  # the labels' own colour, green (LABELS_COLOR)
            assert (green > 60).all() and not red.any() and not blue.any()
        else:  # the prediction's, magenta (PREDICTION_COLOR): not the labels' colour for the same segment id
            assert (red > 60).all() and (blue > 60).all() and not green.any()


def test_the_browser_loads_everything_from_the_viewer_itself(browser, tmp_path):
    """No cross-origin request: the page's resources come from its own origin, the data
    through the viewer's server (every dataset is read), and the console reports no error."""
    cell = synthetic_cell(tmp_path / "cell.zarr", 2)
    viewer = open_viewer(cell, position=CUBE_CENTRE)  # the default datasets
    browser.get_log("browser")  # forget the messages of earlier tests
    _show(browser, viewer)
    _screenshot(viewer)
    assert [layer.name for layer in viewer.state.layers] == ["raw", "labels/mito", "predictions/unet/0001/segmentation"]
    origin = viewer.get_viewer_url().split("/v/")[0]
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(url.startswith(f"{origin}/") for url in resources), resources
    assert all(volume.data.largest_read > 0 for volume in viewer.volume_manager.volumes.values())
    log = browser.get_log("browser")  # a blocked cross-origin request would be a SEVERE "... CORS policy" line
    errors = [e["message"] for e in log if e["level"] == "SEVERE" and "/favicon.ico " not in e["message"]]
    assert not errors


def test_a_zoomed_out_view_of_a_huge_dataset_reads_little(browser, tmp_path):
    """A whole 8192 x 8192 plane of a 512 x 8192 x 8192 dataset (never written: nothing on
    disk) on screen: a few requests, each at most MAX_READ_VOXELS, far below the volume."""
    path = tmp_path / "huge.zarr"
    zarr.open_group(str(path), mode="w", zarr_format=3)
    create_volume(path, "volumes/raw", (512, 8192, 8192), np.uint8, (5, 5, 5), chunks=(64, 256, 256))
    viewer = open_viewer(path)
    _show(browser, viewer, scale=64)
    assert not _screenshot(viewer).any()  # all zeros, drawn (the screenshot waits for the data)
    (volume,) = viewer.volume_manager.volumes.values()
    assert 0 < volume.data.largest_read <= MAX_READ_VOXELS
    assert volume.data.voxels_read <= 8 * MAX_READ_VOXELS < 512 * 8192**2 / 100


def test_real_em_and_its_labels_are_drawn_aligned(browser, tmp_path):
    """A crop of the Lucchi++ FIB-SEM (5 nm) converted with `incasem convert`: at the
    default position (the centre) the screen shows the centre slice's raw values and
    mito labels at the same pixels as the TIFFs hold them."""
    import tifffile

    cell = tmp_path / "lucchi.zarr"
    lucchi = require(LUCCHI)
    z, y, x = 0, 16, 96  # a 16 x 128 x 128 crop with mitochondria (Lucchi++ slices 52-67, rows 144-271, columns 320-447)
    crop = ["--z", f"{z}:{z + 16}", "--y", f"{y}:{y + 128}", "--x", f"{x}:{x + 128}", "-q"]
    assert main(["convert", str(lucchi / "image"), str(cell), "--voxel-size", "5", "--offset", "100,200,300", *crop]) == 0
    labels = ["-d", "volumes/labels/mito", "--like", f"{cell}:volumes/raw"]  # its voxel size and offset
    assert main(["convert", str(lucchi / "labels" / "mito"), str(cell), *labels, *crop]) == 0
    viewer = open_viewer(cell)
    position = viewer.state.position
    assert [round(p - 0.5) for p in position] == [20 + z + 8, 40 + y + 64, 60 + x + 64]  # offset + crop + centre
    raw_slice = tifffile.imread(lucchi / "image" / f"{z + 8:04d}.tif")[y : y + 128, x : x + 128]
    labels_slice = tifffile.imread(lucchi / "labels" / "mito" / f"{z + 8:04d}.tif")[y : y + 128, x : x + 128] > 0
    assert labels_slice.any() and not labels_slice.all()
    on_screen = (slice(80 - 64, 80 + 64), slice(100 - 64, 100 + 64))  # the crop around the canvas centre
    _show(browser, viewer, visible={"raw"})
    grey = _screenshot(viewer)[..., 0].astype(int)
    assert np.abs(grey[on_screen] - raw_slice).max() <= 1
    assert not grey[: on_screen[0].start].any() and not grey[on_screen[0].stop :].any()
    _show(browser, viewer, visible={"labels/mito"})
    labels = _screenshot(viewer).max(-1) > 0
    np.testing.assert_array_equal(labels[on_screen], labels_slice)
    assert labels.sum() == labels_slice.sum()
