"""Benchmark ``incasem equalize`` (out-of-core 3D CLAHE) against scikit-image in memory.

Builds a 200 x 1024 x 1024 uint8 volume by mirroring the real Lucchi++ FIB-SEM stack
(``../shared/data/lucchi_pp_fibsem``) and writes it as zarr (128³ chunks). Then, each
in a fresh subprocess (so peak RSS is the job's own):

- ``incasem``: :func:`incasem.preprocess.equalize.equalize_volume` with the defaults
  (kernel 128³, clip limit 0.02, 256 bins), all cores;
- ``incasem`` on a volume ``--scale`` times larger along z: memory must stay flat;
- ``skimage``: ``img_as_ubyte(equalize_adapthist(volume, 128, 0.02, 256))`` on the
  whole volume in memory (timed without reading the volume); it also compares its
  result with incasem's output.

Prints voxels/s and peak RSS (``/usr/bin/time``) of each, and the yardsticks of
DESIGN §10 (original incasem 0.41 Mvox/s, 2.8 GB; skimage in memory 2.4 Mvox/s, 15 GB).

Usage: ``python benchmarks/bench_equalize.py [--workdir DIR] [--scale 3] [--no-skimage]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile

from incasem.io.volume import create_volume

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "lucchi_pp_fibsem" / "image"
SHAPE = (200, 1024, 1024)


def build_volume(container: Path, depth: int) -> None:
    """Write a ``depth`` x 1024 x 1024 uint8 volume: the Lucchi++ stack mirrored to size."""
    stack = np.stack([tifffile.imread(path) for path in sorted(DATA.glob("*.tif"))])
    plane = np.pad(stack, ((0, 0), (0, SHAPE[1] - stack.shape[1]), (0, SHAPE[2] - stack.shape[2])), mode="symmetric")
    period = np.concatenate([plane, plane[::-1]])
    volume = create_volume(container, "volumes/raw", (depth, *SHAPE[1:]), np.uint8, (5, 5, 5), chunks=(128, 128, 128))
    for z in range(0, depth, 128):
        rows = np.arange(z, min(z + 128, depth)) % len(period)
        volume.array[z : z + len(rows)] = period[rows]
    volume.mark_complete()


def _measure(code: str) -> dict:
    """Run ``code`` in a fresh Python under ``/usr/bin/time``; it may leave figures in ``result``.

    Peak RSS comes from ``/usr/bin/time`` (a child's own ``getrusage`` would also count
    this process, whose memory Linux carries over into the child's high-water mark).
    """
    wrapper = f"""
import json, time
start = time.perf_counter()
result = {{}}
{code}
result.setdefault("seconds", time.perf_counter() - start)
print(json.dumps(result))
"""
    out = subprocess.run(
        ["/usr/bin/time", "-f", "%M", sys.executable, "-c", wrapper], check=True, capture_output=True, text=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["peak_rss_gb"] = int(out.stderr.strip().splitlines()[-1]) / 2**20
    return result


def run_incasem(container: Path) -> dict:
    return _measure(
        f"from incasem.blockwise import RunOptions\n"
        f"from incasem.preprocess.equalize import equalize_volume\n"
        f"equalize_volume({str(container)!r}, run=RunOptions(progress=False))"
    )


def run_skimage(container: Path) -> dict:
    return _measure(
        f"""
import numpy as np
from skimage.exposure import equalize_adapthist
from skimage.util import img_as_ubyte
from incasem.io.volume import open_volume
volume = open_volume({str(container)!r}, "volumes/raw").read()
start = time.perf_counter()  # time the in-memory call alone, not the reading
reference = img_as_ubyte(equalize_adapthist(volume, kernel_size=128, clip_limit=0.02, nbins=256))
result["seconds"] = time.perf_counter() - start
del volume
ours = open_volume({str(container)!r}, "volumes/raw_equalized_0.02").read()
difference = np.abs(ours.astype(np.int16) - reference)
result["equal_fraction"] = float((difference == 0).mean())
result["within_1_fraction"] = float((difference <= 1).mean())
"""
    )


def report(name: str, voxels: int, result: dict) -> dict:
    extra = {k: v for k, v in result.items() if k not in ("seconds", "peak_rss_gb")}
    print(
        f"{name:<46} {voxels / result['seconds'] / 1e6:6.2f} Mvox/s  {result['seconds']:7.1f} s  "
        f"peak RSS {result['peak_rss_gb']:5.2f} GB  {extra or ''}",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None, help="Folder for the containers (default: a temp dir).")
    parser.add_argument("--scale", type=int, default=3, help="Depth factor of the larger volume (0 skips it).")
    parser.add_argument("--no-skimage", action="store_true", help="Skip the in-memory scikit-image run (needs ~15 GB).")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"missing {DATA}: the benchmark needs the shared Lucchi++ data")
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        print("yardsticks (DESIGN §10): original incasem 0.41 Mvox/s 2.8 GB; skimage in memory 2.4 Mvox/s 15 GB")
        base = Path(workdir) / "base.zarr"
        build_volume(base, SHAPE[0])
        voxels = int(np.prod(SHAPE))
        ours = report(f"incasem equalize {SHAPE}", voxels, run_incasem(base))
        if args.scale:
            large = Path(workdir) / "large.zarr"
            build_volume(large, SHAPE[0] * args.scale)
            report(f"incasem equalize {(SHAPE[0] * args.scale, *SHAPE[1:])}", voxels * args.scale, run_incasem(large))
        if not args.no_skimage:
            theirs = report(f"skimage equalize_adapthist {SHAPE}", voxels, run_skimage(base))
            print(
                f"incasem vs skimage in memory: {theirs['seconds'] / ours['seconds']:.1f}x faster, "
                f"{theirs['peak_rss_gb'] / ours['peak_rss_gb']:.1f}x less memory"
            )


if __name__ == "__main__":
    main()
