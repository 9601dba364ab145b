"""Blockwise prediction: equals one whole-volume pass, resumes, scores, refuses bad input."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from incasem.blockwise import RunOptions
from incasem.cli import main
from incasem.errors import DatasetExistsError, RoiError, VoxelSizeError
from incasem.evaluate.metrics import confusion_counts
from incasem.geometry import Roi
from incasem.io.layout import encode_probability
from incasem.io.volume import open_volume
from incasem.model.checkpoint import load_checkpoint
from incasem.model.unet import UNetConfig
from incasem.predict import PredictOptions, predict_roi
from incasem.predict.core import input_roi, predict_array
from incasem.predict.device import balanced_block_shape, input_bytes, output_chunk_shape
from incasem.predict.outputs import allocate_prediction_id
from tests.helpers import ANISOTROPIC, QUIET, SMALL, TINY, make_checkpoint


def whole_region_in_memory(checkpoint: Path, container: Path, roi: Roi) -> np.ndarray:
    """The reference: :func:`predict_array` on the whole region, in one tile, input read with its context."""
    model, card = load_checkpoint(checkpoint)
    config = card.architecture
    raw = open_volume(container, "volumes/raw_equalized_0.02")
    whole = Roi(roi.offset, tuple(-(-s // g) * g for s, g in zip(roi.shape, config.total_downsample_factor)))
    read = input_roi(config, whole)
    data = raw.read(read, padding="reflect")
    output = roi.relative_to(read.offset)
    return predict_array(model, data, output, block_shape=whole.shape, precision="fp32", device="cpu")


@pytest.mark.parametrize(
    ("config", "roi", "block"),
    [
        (TINY, Roi((10, 20, 0), (40, 96, 112)), (24, 48, 56)),  # whole dataset, context padded on all sides
        (SMALL, Roi((10, 20, 0), (40, 96, 112)), (16, 32, 40)),
        (SMALL, Roi((13, 27, 5), (21, 37, 45)), (8, 16, 24)),  # inner region, not a multiple of the block
        (SMALL, Roi((10, 20, 0), (9, 50, 30)), (24, 24, 24)),  # region smaller than one block
        (ANISOTROPIC, Roi((11, 21, 3), (13, 45, 70)), (5, 24, 40)),  # (1, 2, 2) pooling, 1x3x3 kernels, odd z block
    ],
)
def test_blockwise_equals_predict_array_on_the_whole_region(setup, tmp_path, config, roi, block):
    container, _ = setup
    checkpoint = make_checkpoint(tmp_path / "tiny.pt", config)
    options = PredictOptions(block, "cpu", "fp32")
    output = predict_roi(checkpoint, container, "volumes/raw_equalized_0.02", roi, options, run=QUIET)
    reference = whole_region_in_memory(checkpoint, container, roi)
    probabilities = open_volume(container, output.probabilities[0]).read()
    segmentation = open_volume(container, output.segmentation).read()
    assert probabilities.shape == roi.shape
    assert np.abs(probabilities.astype(int) - encode_probability(reference[1]).astype(int)).max() <= 1
    decided = np.abs(reference[1] - 0.5) > 1e-4
    np.testing.assert_array_equal(segmentation[decided], np.argmax(reference, axis=0)[decided])
    assert np.ptp(probabilities) > 50 and probabilities.std() > 5, "the test network must not be trivially constant"


def test_cli_predicts_config_prints_and_stores_scores(setup, tmp_path, capsys):
    container, checkpoint = setup
    config = tmp_path / "predict.json"
    crop = {
        "file": container.name,
        "offset": [12, 24, 4],
        "shape": [30, 64, 80],
        "voxel_size": [5, 5, 5],
        "raw": "volumes/raw_equalized_0.02",
        "labels": {"volumes/labels/mito": 1},
    }
    config.write_text(json.dumps({"crop": crop}))
    assert main(["predict", str(config), "--model", str(checkpoint), "--block-size", "16,32,40", "--device", "cpu", "-q"]) == 0
    out = capsys.readouterr().out
    assert "crop: " in out and "mito: F1" in out
    group = "volumes/predictions/tiny/0001"
    segmentation = open_volume(container, f"{group}/segmentation")
    assert segmentation.roi == Roi((12, 24, 4), (30, 64, 80))
    labels = open_volume(container, "volumes/labels/mito").read(segmentation.roi)
    expected = confusion_counts(segmentation.read() == 1, labels)
    stored = segmentation.array.attrs["scores"]["mito"]
    assert (stored["tp"], stored["fp"], stored["fn"]) == (expected.tp, expected.fp, expected.fn)
    assert f"F1 {expected.f1:.4f}" in out
    provenance = segmentation.array.attrs["incasem_provenance"]
    assert provenance["checkpoint_sha256"] and provenance["block_shape"] == [16, 32, 40]
    assert provenance["data_config_entry"] == "crop"
    assert provenance["command"] == " ".join(sys.argv) and provenance["job"]["job"] == "predict"
    assert provenance["inputs"] == [f"{container.resolve()}/volumes/raw_equalized_0.02", str(checkpoint.absolute())]


def test_prediction_ids_never_collide(tmp_path):
    ids: list[str] = []
    threads = [threading.Thread(target=lambda: ids.append(allocate_prediction_id(tmp_path, "m"))) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(ids) == [f"{i:04d}" for i in range(1, 17)]


def test_existing_prediction_id_is_refused(setup):
    container, checkpoint = setup
    options = PredictOptions((16, 16, 16), "cpu")
    roi = Roi((10, 20, 0), (8, 8, 8))
    predict_roi(checkpoint, container, "volumes/raw_equalized_0.02", roi, options, prediction_id="7", run=QUIET)
    with pytest.raises(DatasetExistsError, match="tiny/7 exists"):
        predict_roi(checkpoint, container, "volumes/raw_equalized_0.02", roi, options, prediction_id="7", run=QUIET)


def test_bad_input_gets_one_line_errors(setup, tmp_path, capsys):
    container, checkpoint = setup
    other = make_checkpoint(tmp_path / "at12nm.pt", voxel_size=(12, 12, 12))
    with pytest.raises(VoxelSizeError, match=r"5×5×5 nm and the model 12×12×12 nm: along z that is 0.417 .* outside 0.5–2"):
        predict_roi(other, container, "volumes/raw_equalized_0.02")
    with pytest.raises(RoiError, match="not inside"):
        predict_roi(checkpoint, container, "volumes/raw_equalized_0.02", Roi((0, 0, 0), (20, 20, 20)))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(checkpoint.read_bytes()[:1000])
    cases = [
        (["predict", str(container), "--model", str(corrupt)], "corrupt"),
        (["predict", str(container), "--model", str(checkpoint), "--raw", "volumes/raw"], "no dataset 'volumes/raw'"),
        (["predict", str(tmp_path / "missing.json"), "--model", str(checkpoint)], "missing.json"),
    ]
    for args, message in cases:
        assert main(args) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_no_space_left_then_resume(setup, monkeypatch, capsys):
    container, checkpoint = setup
    options = PredictOptions((16, 48, 56), "cpu")
    reference = predict_roi(checkpoint, container, "volumes/raw_equalized_0.02", None, options, run=QUIET)
    from incasem.io import volume as volume_module

    original_write = volume_module.Volume.write
    calls = {"n": 0}

    def failing_write(self, roi, data):
        calls["n"] += 1
        if calls["n"] > 10:
            raise OSError(28, "No space left on device")
        original_write(self, roi, data)

    monkeypatch.setattr(volume_module.Volume, "write", failing_write)
    args = ["predict", str(container), "--model", str(checkpoint), "--block-size", "16,48,56", "--device", "cpu", "-q"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "no space left" in err and "rerun the same command with --resume" in err
    monkeypatch.setattr(volume_module.Volume, "write", original_write)
    assert main([*args, "--resume"]) == 0
    resumed = open_volume(container, "volumes/predictions/tiny/0002/prob_maps/class_1").read()
    np.testing.assert_array_equal(resumed, open_volume(container, reference.probabilities[0]).read())


def test_killed_run_resumes_to_identical_bytes(setup):
    container, checkpoint = setup
    options = ["--model", str(checkpoint), "--roi-offset", "10,20,0", "--roi-shape", "24,64,64", "--block-size", "8,32,32", "--device", "cpu", "-q"]
    assert main(["predict", str(container), *options]) == 0  # the uninterrupted run: prediction 0001
    done = container / "volumes/predictions/tiny/0002/segmentation/.incasem_done"
    args = [sys.executable, "-m", "incasem", "predict", str(container), *options]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(done.glob("*")) if done.is_dir() else []) < 3:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished_before = len(list(done.glob("*")))
    assert 3 <= finished_before < 3 * 2 * 2, "the run must be killed midway"
    assert not open_volume(container, "volumes/predictions/tiny/0002/segmentation", require_complete=False).complete
    subprocess.run([*args, "--resume"], check=True, capture_output=True)
    for name in ("segmentation", "prob_maps/class_1"):
        first = open_volume(container, f"volumes/predictions/tiny/0001/{name}").read()
        resumed = open_volume(container, f"volumes/predictions/tiny/0002/{name}").read()
        assert first.tobytes() == resumed.tobytes()


def test_auto_block_shape_fits_memory_and_region():
    config = UNetConfig()
    budget = 12 * 2**30
    block = balanced_block_shape(config, torch.device("cpu"), "fp32", (1000, 1000, 1000), memory_bytes=budget)
    assert all(b % 8 == 0 for b in block)  # multiples of the downsampling: blockwise = whole pass
    assert input_bytes(config.input_shape_for_output(block), "fp32") <= budget * 0.5
    assert balanced_block_shape(config, torch.device("cpu"), "fp32", (20, 30, 40), memory_bytes=budget) == (24, 32, 40)
    assert output_chunk_shape((256, 208, 104), (8, 8, 8)) == (128, 104, 104)


def test_dask_cluster_gives_the_same_output(setup, dask_cluster):
    container, checkpoint = setup
    roi = Roi((10, 20, 0), (24, 64, 64))
    options = PredictOptions((8, 32, 32), "cpu")
    local = predict_roi(checkpoint, container, "volumes/raw_equalized_0.02", roi, options, run=QUIET)
    remote = predict_roi(checkpoint, container, "volumes/raw_equalized_0.02", roi, options, run=RunOptions(scheduler=dask_cluster, progress=False))
    for local_name, remote_name in ((local.segmentation, remote.segmentation), (local.probabilities[0], remote.probabilities[0])):
        np.testing.assert_array_equal(open_volume(container, local_name).read(), open_volume(container, remote_name).read())
    from distributed import Client

    with Client(dask_cluster, set_as_default=False) as client:  # the workers hold no model after the job
        held = client.run(lambda: len(__import__("incasem.blockwise", fromlist=["_WORKER_STATE"])._WORKER_STATE))
    assert held and set(held.values()) == {0}, held


def test_unreachable_scheduler_is_one_line(setup, capsys, monkeypatch):
    monkeypatch.setattr("incasem.blockwise.SCHEDULER_TIMEOUT", "1s")
    container, checkpoint = setup
    args = ["predict", str(container), "--model", str(checkpoint), "--device", "cpu", "--scheduler", "tcp://127.0.0.1:9", "-q"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in err and err.count("\n") == 1


def test_next_block_is_read_while_the_network_runs(setup, tmp_path, monkeypatch):
    """Zarr reads overlap the network: while one block is in the network, the next one is read.

    The network stand-in waits until a read of another block has begun since its own
    block's read (or gives up after 30 s and records that none came): with blocks
    processed one after the other it would always give up.
    """
    import incasem.predict.job as job
    from incasem.io.volume import Volume

    container, checkpoint = setup
    reads: list[Roi] = []
    read_started = threading.Condition()
    overlapped: list[bool] = []
    own = threading.local()
    original_read, original_network = Volume.read, job.forward_probabilities

    def read(self, roi=None, *args, **kwargs):
        with read_started:
            own.index = len(reads)
            reads.append(roi)
            read_started.notify_all()
        return original_read(self, roi, *args, **kwargs)

    def network(model, data, *args):
        with read_started:
            read_started.wait_for(lambda: len(reads) > own.index + 1 or len(reads) == 12, timeout=30)
            overlapped.append(len(reads) > own.index + 1)
        return original_network(model, data, *args)

    monkeypatch.setattr(Volume, "read", read)
    monkeypatch.setattr(job, "forward_probabilities", network)
    roi = Roi((10, 20, 0), (24, 64, 64))  # 12 blocks of 8 x 32 x 32
    predict_roi(checkpoint, container, "volumes/raw_equalized_0.02", roi, PredictOptions((8, 32, 32), "cpu"), run=QUIET)
    assert len(overlapped) == 12
    assert sum(overlapped) >= 10, overlapped  # only the last blocks have no next block left to read
