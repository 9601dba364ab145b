"""Evaluation and metric masks of partial labels on real Lucchi++ labels: unlabelled voxels count nowhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from incasem.cli import main
from incasem.evaluate import metrics
from incasem.evaluate.evaluate import evaluate
from incasem.io.volume import create_volume, open_volume
from incasem.preprocess.masks import create_metric_mask, metric_mask_array
from tests.helpers import LUCCHI, QUIET, read_stack

REGION = (slice(8, 40), slice(52, 212), slice(26, 202))
SECTIONS = (5, 17, 18, 29)


def _write(container: Path, name: str, data: np.ndarray) -> None:
    volume = create_volume(container, name, data.shape, data.dtype, (5, 5, 5), (0, 0, 0), (16, 64, 64))
    volume.write(volume.roi, data)
    volume.mark_complete()


@pytest.fixture(scope="module")
def sparse(tmp_path_factory) -> dict:
    """Real labels labelled on 4 of 32 sections (two of them adjacent), inverted off them; an imperfect
    prediction (the true labels shifted by 2 columns)."""
    mito = (read_stack(LUCCHI / "labels" / "mito", *REGION) != 0).astype(np.uint8)
    labelled = np.zeros_like(mito)
    labelled[list(SECTIONS)] = 1
    container = tmp_path_factory.mktemp("partial_eval") / "cell.zarr"
    prediction = np.roll(mito, 2, axis=2)
    _write(container, "volumes/labels/mito", np.where(labelled != 0, mito, 1 - mito).astype(np.uint8))
    _write(container, "volumes/labelled/mito", labelled)
    _write(container, "prediction", prediction)
    create_metric_mask(container, "volumes/labels/mito", run=QUIET)
    return {"container": container, "mito": mito, "labelled": labelled.astype(bool), "prediction": prediction}


def test_scores_count_labelled_voxels_only(sparse):
    result = evaluate(sparse["container"], "prediction", run=QUIET)
    assert result.labelled == ("volumes/labelled/mito",)
    counts = result.classes[0].regions["plain"].counts
    assert counts == metrics.confusion_counts(sparse["prediction"], sparse["mito"], sparse["labelled"])
    everywhere = evaluate(sparse["container"], "prediction", labelled=(), run=QUIET).classes[0].regions["plain"].counts
    assert everywhere.f1 < counts.f1 - 0.3  # the inverted labels off the sections would count


def _band_2d(section: np.ndarray, width: int) -> np.ndarray:
    cross = ndimage.generate_binary_structure(2, 1)
    objects = section != 0
    dilated = ndimage.binary_dilation(objects, cross, width, border_value=0)
    eroded = ndimage.binary_erosion(objects, cross, width, border_value=0)
    return dilated & ~eroded


def test_a_lone_labelled_section_gets_the_band_of_its_outlines(sparse):
    """Sections 5 and 29 stand alone: their exclusion band is the in-plane band, not the whole object (which a
    3D erosion against the unlabelled neighbours would exclude). Sections 17-18 are a 3D slab of two."""
    stored = open_volume(sparse["container"], "volumes/metric_masks/mito").read()
    assert open_volume(sparse["container"], "volumes/metric_masks/mito").array.attrs["incasem_job"]["labelled"] == ["volumes/labelled/mito"]
    for z in (5, 29):
        np.testing.assert_array_equal(stored[z] == 0, _band_2d(sparse["mito"][z], 4))
    slab = np.zeros_like(sparse["labelled"])
    slab[17:19] = True
    expected = metric_mask_array(np.where(slab, sparse["mito"], 0), 4, 4, slab)
    np.testing.assert_array_equal(stored[17:19], expected[17:19])
    assert (stored[17:19] == 255).sum() > (stored[17:19] == 0).sum()


def test_cli_says_it_scored_labelled_voxels_only(sparse, capsys):
    assert main(["evaluate", str(sparse["container"]), "-p", "prediction"]) == 0
    out = capsys.readouterr().out
    assert "partial labels: scored on labelled voxels only (volumes/labelled/mito)" in out
    assert main(["evaluate", str(sparse["container"]), "-p", "prediction", "--labelled", "none"]) == 0
    assert "partial labels" not in capsys.readouterr().out


def test_labels_labelled_everywhere_get_the_original_metric_mask(sparse):
    mito = sparse["mito"]
    np.testing.assert_array_equal(metric_mask_array(mito, 4, 2, np.ones_like(mito)), metric_mask_array(mito, 4, 2))
