"""``incasem preview`` on real EM: overlays land on the right pixels, side views are drawn to scale."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from scipy.ndimage import binary_erosion
from skimage.measure import label

from incasem.cli.app import main
from incasem.errors import DatasetNotFoundError, InvalidValueError, OutputExistsError, RoiError
from incasem.geometry import Roi
from incasem.io.provenance import PROVENANCE_KEY
from incasem.io.volume import create_volume
from incasem.view.preview import (
    DEFAULT_CROP_PIXELS,
    FILL_ALPHA,
    OVERLAY_COLOURS,
    Preview,
    render_preview,
    view_region,
    write_preview,
)
from tests.helpers import DROSOPHILA, LUCCHI, error_line, read_stack, require

#: A crop of the Lucchi++ test data, world voxels (5 nm): z 8:48, y 16:144, x 64:224 (Lucchi++ slices 60-99,
#: rows 144-271, columns 288-447).
CROP = Roi((8, 16, 64), (40, 128, 160))
LABELS = "volumes/labels/mito"
#: A prediction on a grid twice as coarse (10 nm), covering only this region (world voxels of the 5 nm grid).
PREDICTION_ROI = Roi(tuple(o + d for o, d in zip(CROP.offset, (10, 32, 48))), (20, 64, 80))
PREDICTION = "volumes/predictions/unet/0001/segmentation"
OLDER_PREDICTION = "volumes/predictions/unet/0002/segmentation"
#: A position inside the prediction's region.
POSITION = tuple(o + d for o, d in zip(CROP.offset, (20, 62, 100)))


def _convert(source: Path, container: Path, *options: str) -> None:
    assert main(["convert", str(source), str(container), "-q", *options]) == 0


def _write(container: Path, name: str, data: np.ndarray, voxel_size, offset_nm, created: str) -> None:
    volume = create_volume(container, name, data.shape, data.dtype, voxel_size, offset_nm)
    volume.write(volume.roi, data)
    volume.mark_complete()
    volume.array.attrs[PROVENANCE_KEY] = {**volume.array.attrs[PROVENANCE_KEY], "created": created}


@pytest.fixture(scope="module")
def lucchi(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A converted Lucchi++ crop with mito labels and two predictions; raw and labels read from the TIFFs."""
    lucchi = require(LUCCHI)
    cell = tmp_path_factory.mktemp("lucchi") / "cell.zarr"
    crop = [f"--{axis}={s.start}:{s.stop}" for axis, s in zip("zyx", CROP.to_slices())]
    _convert(lucchi / "image", cell, "--voxel-size", "5,5,5", *crop)
    _convert(lucchi / "labels" / "mito", cell, "-d", LABELS, "--like", str(cell), *crop)
    raw, labels = read_stack(LUCCHI / "image", *CROP.to_slices()), read_stack(LUCCHI / "labels" / "mito", *CROP.to_slices())
    coarse = labels[PREDICTION_ROI.relative_to(CROP.offset).to_slices()][::2, ::2, ::2] * 2
    offset_nm = tuple(5 * o for o in PREDICTION_ROI.offset)
    # 0001 is the newest by creation time, although its id is the lower
    _write(cell, PREDICTION, coarse, (10, 10, 10), offset_nm, "2030-01-02T00:00:00+00:00")
    _write(cell, OLDER_PREDICTION, np.ones_like(coarse), (10, 10, 10), offset_nm, "2030-01-01T00:00:00+00:00")
    return cell, raw, labels


def panel_views(volume: np.ndarray, position: tuple[int, int, int], origin: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """The three planes of ``volume`` (first voxel at world voxel ``origin``) as the panels show them."""
    z, y, x = (p - o for p, o in zip(position, origin))
    return {"z": volume[z], "y": volume[:, y], "x": volume[:, :, x].T}


def coloured(pixels: np.ndarray) -> np.ndarray:
    """Where a pixel is not grey (some overlay is drawn there)."""
    return (pixels[..., 0] != pixels[..., 1]) | (pixels[..., 1] != pixels[..., 2])


def check_overlay(pixels: np.ndarray, raw: np.ndarray, foreground: np.ndarray, colour) -> None:
    """Colour exactly on ``foreground`` (blended fill, or opaque outline), the raw's grey elsewhere."""
    np.testing.assert_array_equal(coloured(pixels), foreground)
    np.testing.assert_array_equal(pixels[~foreground][:, 0], raw[~foreground])
    outline = np.array(colour) * 255
    fill = np.rint((1 - FILL_ALPHA) * raw[..., None] + FILL_ALPHA * outline).astype(np.uint8)
    is_fill = (pixels == fill).all(axis=-1)
    is_outline = (pixels == np.rint(outline).astype(np.uint8)).all(axis=-1)
    assert (is_fill | is_outline)[foreground].all()
    interior = foreground.copy()  # foreground whose 4 neighbours are foreground: never outline
    interior[1:-1, 1:-1] &= foreground[:-2, 1:-1] & foreground[2:, 1:-1] & foreground[1:-1, :-2] & foreground[1:-1, 2:]
    interior[[0, -1], :] = interior[:, [0, -1]] = False
    assert interior.any() and is_fill[interior].all()


def read_png(path: Path, preview: Preview) -> np.ndarray:
    image = iio.imread(path)[..., :3]
    np.testing.assert_array_equal(image, preview.image)
    return image


def test_labels_are_drawn_exactly_on_their_foreground(lucchi, tmp_path):
    cell, raw, labels = lucchi
    output = tmp_path / "preview.png"
    preview = write_preview(cell, output, overlays=[LABELS], position=POSITION)
    image = read_png(output, preview)
    assert preview.overlays == (LABELS,) and preview.raw == "volumes/raw"
    raws, foregrounds = panel_views(raw, POSITION, CROP.offset), panel_views(labels > 0, POSITION, CROP.offset)
    for axis, box in preview.panels.items():
        assert (box.height, box.width) == raws[axis].shape  # 5 nm isotropic, whole crop: one pixel per voxel
        assert foregrounds[axis].any() and not foregrounds[axis].all()
        check_overlay(image[box.slices], raws[axis], foregrounds[axis], OVERLAY_COLOURS[0])
    assert (preview.panels["z"].rows, preview.panels["z"].columns) == ("y", "x")
    assert (preview.panels["x"].rows, preview.panels["x"].columns) == ("y", "z")
    assert preview.panels["z"].row == preview.panels["x"].row  # the L layout shares rows (y) ...
    assert preview.panels["z"].col == preview.panels["y"].col  # ... and columns (x)
    z_panel = preview.panels["z"]  # ticks beside the panel mark the position's row (y) and column (x)
    assert (image[z_panel.row + POSITION[1] - CROP.offset[1], z_panel.col - 3] == 0).all()
    assert (image[z_panel.row + z_panel.height + 3, z_panel.col + POSITION[2] - CROP.offset[2]] == 0).all()


def test_a_prediction_of_a_sub_region_on_a_coarser_grid_is_placed_by_world_coordinates(lucchi, tmp_path):
    cell, raw, labels = lucchi
    preview = write_preview(cell, tmp_path / "p.png", overlays=[PREDICTION], position=POSITION)
    # each 5 nm voxel shows the 10 nm voxel holding its centre: the labels at even world indices
    world = np.indices(CROP.shape) + np.array(CROP.offset)[:, None, None, None]
    inside = np.all([(w >= b) & (w < e) for w, b, e in zip(world, PREDICTION_ROI.offset, PREDICTION_ROI.end)], axis=0)
    starts = zip(world, PREDICTION_ROI.offset, CROP.offset, CROP.shape)
    snapped = [np.clip(w - (w - b) % 2 - o, 0, n - 1) for w, b, o, n in starts]
    expected = inside & (labels[tuple(snapped)] > 0)
    raws, foregrounds = panel_views(raw, POSITION, CROP.offset), panel_views(expected, POSITION, CROP.offset)
    for axis, box in preview.panels.items():
        assert foregrounds[axis].any()
        check_overlay(preview.image[box.slices], raws[axis], foregrounds[axis], OVERLAY_COLOURS[0])


def test_instances_get_a_colour_each(lucchi, tmp_path):
    cell, raw, labels = lucchi
    # ids of the mitochondria sections in each z slice, far apart as in an instance segmentation
    instances = np.stack([(label(section > 0) + 100 * z) * (section > 0) for z, section in enumerate(labels)])
    instances = instances.astype(np.uint32) * 1000
    _write(cell, "volumes/instances/mito", instances, (5, 5, 5), tuple(5 * o for o in CROP.offset), "2030-01-01T00:00:00+00:00")
    preview = render_preview(cell, overlays=["volumes/instances/mito"], position=POSITION)
    box = preview.panels["z"]
    pixels, shown = preview.image[box.slices].astype(float), panel_views(instances, POSITION, CROP.offset)["z"]
    np.testing.assert_array_equal(coloured(preview.image[box.slices]), shown > 0)
    fill = (pixels - (1 - FILL_ALPHA) * panel_views(raw, POSITION, CROP.offset)["z"][..., None]) / FILL_ALPHA
    colours = {}
    for instance in np.unique(shown[shown > 0]):
        inner = binary_erosion(shown == instance)  # not the outline
        assert np.ptp(fill[inner], axis=0).max() < 5  # one colour per id (up to rounding)
        colours[instance] = tuple(np.round(fill[inner].mean(axis=0) / 10))
    assert len(colours) >= 2 and len(set(colours.values())) == len(colours)


def test_default_overlays_are_the_labels_and_the_newest_prediction(lucchi, tmp_path):
    cell, raw, _ = lucchi
    preview = render_preview(cell, position=POSITION)
    assert preview.overlays == (LABELS, PREDICTION)
    bare = render_preview(cell, overlays=(), position=POSITION)  # no overlays: the raw's grey levels only
    for axis, box in bare.panels.items():
        pixels = bare.image[box.slices]
        assert not coloured(pixels).any()
        np.testing.assert_array_equal(pixels[..., 0], panel_views(raw, POSITION, CROP.offset)[axis])


def test_default_position_is_the_centre_and_size_crops_around_it(lucchi):
    cell, raw, _ = lucchi
    z, y, x = CROP.offset
    assert render_preview(cell, overlays=()).position == (z + 20, y + 64, x + 80)
    preview = render_preview(cell, overlays=(), position=(z + 2, y + 10, x + 150), size_voxels=32)
    z_panel = preview.panels["z"]
    assert z_panel.region == Roi((z + 2, y, x + 128), (1, 32, 32))  # centred, shifted to stay inside the raw
    assert preview.panels["y"].region == Roi((z, y + 10, x + 128), (32, 1, 32))
    expected = raw[2, 0:32, 128:160]
    np.testing.assert_array_equal(preview.image[z_panel.slices][..., 0], expected)


def test_view_region_default_crop_rule():
    raw = Roi((0, 0, 0), (300, 1024, 5000))
    region = view_region(raw, (150, 100, 4990))
    assert region == Roi((0, 0, 5000 - DEFAULT_CROP_PIXELS), (300, 1024, DEFAULT_CROP_PIXELS))
    # 50 nm sections at 5 nm are drawn ten times as long: 300 sections are 3000 pixels, so 51 are shown
    assert view_region(raw, (150, 100, 4990), voxel_size=(50, 5, 5)).shape == (51, 1024, DEFAULT_CROP_PIXELS)
    assert view_region(Roi((0, 0, 0), (102, 9, 9)), (0, 0, 0), voxel_size=(50, 5, 5)).shape == (102, 9, 9)
    assert view_region(raw, (150, 600, 2000), (10, 20, 30)) == Roi((145, 590, 1985), (10, 20, 30))
    with pytest.raises(InvalidValueError, match=r"^size_voxels must"):
        view_region(raw, (0, 0, 0), 0)


@pytest.fixture(scope="module")
def drosophila(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A crop of the ssTEM stack (50 × 4.6 × 4.6 nm) with its mito labels, those read from the TIFFs."""
    cell = tmp_path_factory.mktemp("drosophila") / "cell.zarr"
    crop = ["--y", "0:200", "--x", "0:256"]
    _convert(require(DROSOPHILA) / "image", cell, "--voxel-size", "50,4.6,4.6", *crop)
    _convert(DROSOPHILA / "labels" / "mito", cell, "-d", LABELS, "--like", str(cell), *crop)
    return cell, read_stack(DROSOPHILA / "labels" / "mito", slice(None), slice(0, 200), slice(0, 256))


def test_anisotropic_side_views_are_stretched_in_z(drosophila, tmp_path):
    cell, labels = drosophila
    y = int(np.argmax((labels > 0).sum(axis=(0, 2))))
    x = int(np.argmax((labels > 0).sum(axis=(0, 1))))
    preview = write_preview(cell, tmp_path / "d.png", position=(10, y, x))
    stretched = round(20 * 50 / 4.6)  # 217 pixels of 4.6 nm for 20 sections of 50 nm
    assert (preview.panels["z"].height, preview.panels["z"].width) == (200, 256)
    assert (preview.panels["y"].height, preview.panels["y"].width) == (stretched, 256)
    assert (preview.panels["x"].height, preview.panels["x"].width) == (200, stretched)
    section = np.floor((np.arange(stretched) + 0.5) * 20 / stretched).astype(int)  # the section each pixel shows
    expected = {"y": (labels[:, y] > 0)[section], "x": (labels[:, :, x] > 0).T[:, section], "z": labels[10] > 0}
    for axis, box in preview.panels.items():
        np.testing.assert_array_equal(coloured(preview.image[box.slices]), expected[axis])


def test_refuses_an_existing_output_unless_told(lucchi, tmp_path, capsys):
    cell, _, _ = lucchi
    output = tmp_path / "preview.png"
    output.write_bytes(b"mine")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_preview(cell, output)
    assert main(["preview", str(cell), "-o", str(output)]) == 1
    assert str(output) in error_line(capsys) and output.read_bytes() == b"mine"
    assert main(["preview", str(cell), "-o", str(output), "--overwrite", "--size", "16"]) == 0
    centre = ",".join(str(o + s // 2) for o, s in zip(CROP.offset, CROP.shape))
    assert capsys.readouterr().out.startswith(f"wrote {output}: volumes/raw at z,y,x = {centre} with {LABELS}")
    assert iio.imread(output).shape[2] in (3, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preview.png"]  # no temporary file left


def test_bad_input_is_one_line_naming_what_to_fix(lucchi, tmp_path, capsys):
    cell, _, _ = lucchi
    output = tmp_path / "p.png"
    with pytest.raises(DatasetNotFoundError) as missing:
        render_preview(cell, overlays=["volumes/labels/er"])
    assert "volumes/labels/er" in str(missing.value) and f"{LABELS}, " in str(missing.value)
    covers = ", ".join(f"{s.start}:{s.stop}" for s in CROP.to_slices())
    with pytest.raises(RoiError, match=rf"lies outside .*volumes/raw, which covers \[{covers}\]"):
        render_preview(cell, position=(0, 0, 0))
    cases = {
        ("--overlay", "volumes/labels/er"): "has no dataset 'volumes/labels/er' (it has: ",
        ("--raw", "volumes/raw_equalized_0.02"): "has no dataset 'volumes/raw_equalized_0.02'",
        ("--position", "100,200,400"): "position [100, 200, 400] (voxels, z,y,x) lies outside",
        ("--size", "0"): "--size must be positive",
    }
    for options, message in cases.items():
        assert main(["preview", str(cell), "-o", str(output), *options]) == 1
        assert message in error_line(capsys)
    assert main(["preview", str(cell), "-o", str(tmp_path / "p.jpg")]) == 1
    assert "must be a .png file" in error_line(capsys)
    assert not any(tmp_path.iterdir())


def test_floating_point_overlays_are_refused(tmp_path):
    cell = tmp_path / "cell.zarr"
    for name, dtype in (("volumes/raw", np.uint8), ("volumes/probabilities", np.float32)):
        create_volume(cell, name, (4, 8, 8), dtype, (5, 5, 5)).mark_complete()
    with pytest.raises(InvalidValueError, match=r"floating-point .* overlay a label or segmentation dataset"):
        render_preview(cell, overlays=["volumes/probabilities"])


def test_console_script(lucchi, tmp_path):
    cell, _, _ = lucchi
    script = Path(sys.executable).parent / "incasem"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "incasem"]
    output = tmp_path / "out" / "preview.png"
    result = subprocess.run(
        [*command, "preview", str(cell), "-o", str(output), "--overlay", LABELS, "--size", "48"], check=False, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert iio.imread(output).shape[:2] == render_preview(cell, overlays=[LABELS], size_voxels=48).image.shape[:2]
