"""Training speed and memory: incasem's training loop vs the original's step, side by side.

Three schemes, each in its own process so that peak memory is its own:

* ``original``: the original incasem step on the standard 204³ → 110³ network: fp32,
  NCDHW memory layout, forward + backward + Adam, one real raw block per iteration
  (already in memory: the original's data workers are not counted in its time), with
  torch's own layers (``nn.Conv3d``, channels-first concatenations), as the original's
  ``funlib`` network runs them.
* ``before``: ``incasem train`` as it was before issue #20's layout work: the same whole
  loop as ``incasem``, channels-last on the CPU whatever the precision and width, with the
  network's two layout fixes switched off (the first layer's one-channel convolution on
  torch's direct path, concatenations channels-first).
* ``incasem``: ``incasem.train.trainer.train`` on the same network and block sizes, the whole
  pipeline: sampling from zarr with rejection, augmentation in loader worker processes,
  bf16 autocast where the CPU runs bf16 natively, the memory layout of
  ``incasem.train.trainer.training_memory_format``; its seconds per
  iteration and the share of time the model waited for data come from the run's metrics.

Peak memory is the peak of the summed resident memory of the process and its children
(loader workers included), sampled every 50 ms.

Usage::

    python benchmarks/bench_train.py [--iterations 6] [--size 204] [--fmaps 32] [--data ../shared/data/lucchi_pp_fibsem]

``--size 140 --fmaps 12`` is the step of the shipped FIB-SEM recipe (``training/mito_fibsem_5nm``).

Prints one line per scheme and the ratios. The first iteration (warm-up) is left out of the timings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "lucchi_pp_fibsem"


class PeakMemory:
    """Peak summed RSS of this process and its children, sampled in a thread."""

    def __init__(self) -> None:
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    pass
            self.peak_bytes = max(self.peak_bytes, total)
            time.sleep(0.05)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _container(data: Path, folder: Path) -> Path:
    """Lucchi++ raw and labels as a zarr container, and a data config over all of it."""
    from incasem.io.volume import create_volume
    from tests.helpers import read_stack

    whole = (slice(None),) * 3
    for name, source in (("volumes/raw", data / "image"), ("volumes/labels/mito", data / "labels" / "mito")):
        array = read_stack(source, *whole)
        volume = create_volume(folder / "cell.zarr", name, array.shape, "uint8", (5, 5, 5), (0, 0, 0))
        volume.write(volume.roi, array if name == "volumes/raw" else (array != 0).astype("uint8"))
        volume.mark_complete()
    shape = list(array.shape)
    config = {
        "all": {"file": "cell.zarr", "offset": [0, 0, 0], "shape": shape, "voxel_size": [5, 5, 5], "raw": "volumes/raw", "labels": {"volumes/labels/mito": 1}}
    }
    (folder / "train.json").write_text(json.dumps(config))
    return folder / "train.json"


def original(size: int, fmaps: int, iterations: int, data: Path) -> dict[str, float]:
    """The original's step: fp32, NCDHW, forward + backward + Adam on a real block."""
    import numpy as np
    import torch

    from incasem.model.unet import UNet, UNetConfig, normalize_raw
    from incasem.train.loss import balanced_masked_cross_entropy
    from tests.helpers import read_stack

    model = UNet(UNetConfig(num_fmaps=fmaps))
    output = model.config.output_shape((size,) * 3)
    raw = read_stack(data / "image", slice(0, 165), slice(0, size), slice(0, size))
    raw = np.pad(raw, ((0, max(0, size - raw.shape[0])), (0, 0), (0, 0)), mode="reflect")[:size]
    labels = read_stack(data / "labels" / "mito", slice(0, 165), slice(0, size), slice(0, size))
    labels = np.pad(labels, ((0, max(0, size - labels.shape[0])), (0, 0), (0, 0)), mode="reflect")[:size]
    start = [(size - o) // 2 for o in output]
    target = torch.from_numpy((labels[tuple(slice(s, s + o) for s, o in zip(start, output))] != 0).astype(np.int64))[None]
    x = normalize_raw(torch.from_numpy(raw))[None, None]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-5, weight_decay=3e-5)
    times = []
    for _ in range(iterations):
        began = time.perf_counter()
        loss = balanced_masked_cross_entropy(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - began)
    return {"seconds_per_iteration": statistics.median(times[1:]), "data_wait_fraction": 0.0}


def ours(size: int, fmaps: int, iterations: int, data: Path) -> dict[str, float]:
    """incasem's whole training loop on the standard network (default workers, precision auto)."""
    from incasem.model.unet import UNetConfig
    from incasem.train.config import load_training_config
    from incasem.train.trainer import TrainOptions, train

    output = UNetConfig(num_fmaps=fmaps).output_shape((size,) * 3)
    with tempfile.TemporaryDirectory() as folder:
        config_path = _container(data, Path(folder))
        config = load_training_config(
            None,
            [
                f"training.iterations={iterations}",
                f"training.input_size_voxels=[{size},{size},{size}]",
                f"training.output_size_voxels=[{output[0]},{output[1]},{output[2]}]",
                "training.seed=1",
                f"model.num_fmaps={fmaps}",
                f"intervals.save_every={iterations}",
                f"intervals.snapshot_every={iterations + 1}",
            ],
        )
        run = train(config_path, None, config, options=TrainOptions(device="cpu", runs_dir=Path(folder) / "runs", mlflow=False))
        lines = [json.loads(line) for line in run.metrics_path.read_text().splitlines() if '"train"' in line]
    steady = lines[1:]
    return {
        "seconds_per_iteration": statistics.median(l["seconds_per_iteration"] for l in steady),
        "data_wait_fraction": sum(l["data_wait_fraction"] * l["seconds_per_iteration"] for l in steady) / sum(l["seconds_per_iteration"] for l in steady),
    }


def _as_before_issue_20() -> None:
    """Run the network with torch's own layers (the original's, and incasem's before issue #20),
    and train channels-last on the CPU whatever the precision and width (incasem before #20)."""
    import torch
    from torch import nn

    from incasem.model import unet
    from incasem.train import trainer

    unet._Conv3d.forward = nn.Conv3d.forward  # type: ignore[method-assign]
    unet._concatenate_like = lambda like, *maps: torch.cat(maps, dim=1)
    trainer.training_memory_format = lambda config, device, precision: torch.channels_last_3d if device.type == "cpu" else torch.contiguous_format


SCHEMES = ("original", "before", "incasem")


def _child(scheme: str, size: int, fmaps: int, iterations: int, data: Path) -> None:
    sys.path.insert(0, str(HERE.parent))
    if scheme != "incasem":
        _as_before_issue_20()
    with PeakMemory() as memory:
        result = (original if scheme == "original" else ours)(size, fmaps, iterations, data)
    print(json.dumps({**result, "peak_gb": memory.peak_bytes / 1e9}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--size", type=int, default=204, help="input block edge (voxels); the output is 94 less")
    parser.add_argument("--fmaps", type=int, default=32, help="feature maps of the first level (model.num_fmaps)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--scheme", choices=SCHEMES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scheme:
        _child(args.scheme, args.size, args.fmaps, args.iterations, args.data)
        return
    results = {}
    for scheme in SCHEMES:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--scheme",
                scheme,
                "--size",
                str(args.size),
                "--fmaps",
                str(args.fmaps),
                "--iterations",
                str(args.iterations),
                "--data",
                str(args.data),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        results[scheme] = json.loads(done.stdout.strip().splitlines()[-1])
        r = results[scheme]
        print(
            f"{scheme:9s} {args.size}³ block, {args.fmaps} feature maps: {r['seconds_per_iteration']:.2f} s/iteration, "
            f"model waiting on data {100 * r['data_wait_fraction']:.1f} %, peak memory (all processes) {r['peak_gb']:.2f} GB"
        )
    for other in ("original", "before"):
        ratio = results[other]["seconds_per_iteration"] / results["incasem"]["seconds_per_iteration"]
        print(f"incasem is {ratio:.2f}x the speed per iteration of {other}")


if __name__ == "__main__":
    main()
