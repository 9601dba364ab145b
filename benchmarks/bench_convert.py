"""Benchmark ``incasem convert``: TIFF slices -> zarr, throughput and peak memory.

Builds, in a temporary folder, a stack of 200 slices of 1024 x 1024 uint8 (real EM
from ../shared/data/lucchi_pp_fibsem tiled 2 x 2, or random texture when it is
missing) and a stack 8 times larger (1600 slices). For each it measures

- the floor: plain ``tifffile.imread`` of every slice, one after the other, into
  nothing (voxels/s);
- the disk-write floor: slices already in memory written with ``ndarray.tofile``
  as uncompressed chunk files (voxels/s) -- what any converter must also do;
- the zarr ceiling: the same in-memory slices written into a zarr array of the
  same chunks and compressor (voxels/s) -- the best a converter built on
  zarr-python can do;
- ``incasem.preprocess.convert.tiff_to_zarr`` with its defaults (64 x 128 x 128 chunks,
  Blosc lz4, all cores), in a fresh subprocess: voxels/s of the call and the
  process's peak resident memory (``VmHWM`` of /proc/self/status: unlike
  ``getrusage``'s ``ru_maxrss`` it does not inherit the parent's peak across
  fork + exec), next to the peak of a process that only imports incasem.

Usage::

    python benchmarks/bench_convert.py [--repeats 3] [--tmp DIR]

Disk use: about 3.5 GB in DIR (default: the system temp folder), removed at the end.
The original incasem's figures (2 cores): 24 Mvox/s and 0.36 GB peak memory, with a
tifffile floor of ~290 Mvox/s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import zarr

from incasem.preprocess.convert import CHUNKS

SLICE = (1024, 1024)
DEPTH = 200
LUCCHI = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "lucchi_pp_fibsem" / "image"

_CHILD = """
import json, re, sys, time
from pathlib import Path
from incasem.blockwise import RunOptions
from incasem.preprocess.convert import tiff_to_zarr
if sys.argv[1] != "--imports-only":
    start = time.perf_counter()
    volume = tiff_to_zarr(sys.argv[1], sys.argv[2], run=RunOptions(progress=False))
    seconds = time.perf_counter() - start
    assert volume.complete
else:
    seconds = 0.0
peak_kib = int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1))
print(json.dumps({"seconds": seconds, "peak_bytes": peak_kib * 1024}))
"""


def _source_planes() -> list[np.ndarray]:
    """Real EM slices tiled to the slice size, or random texture without the shared data."""
    files = sorted(LUCCHI.glob("*.tif"))[:50]
    if not files:
        rng = np.random.default_rng(0)
        return [rng.integers(0, 256, SLICE, dtype=np.uint8) for _ in range(8)]
    return [np.tile(tifffile.imread(f), (2, 2))[: SLICE[0], : SLICE[1]] for f in files]


def make_stack(folder: Path, depth: int, planes: list[np.ndarray]) -> None:
    """Write ``depth`` TIFF slices (uncompressed, like microscope exports) into ``folder``."""
    folder.mkdir(parents=True)
    for z in range(depth):
        tifffile.imwrite(folder / f"slice_{z:05d}.tif", planes[z % len(planes)])


def read_floor(folder: Path) -> float:
    """Voxels/s of reading every slice with tifffile, discarding the data."""
    files = sorted(folder.iterdir())
    start = time.perf_counter()
    voxels = sum(tifffile.imread(f).size for f in files)
    return voxels / (time.perf_counter() - start)


def write_floors(folder: Path, out: Path) -> tuple[float, float]:
    """Voxels/s of writing in-memory slices as raw chunk files, and into a zarr array."""
    depth, height, width = CHUNKS
    slab = np.stack([tifffile.imread(f) for f in sorted(folder.iterdir())[: 2 * depth]])
    out.mkdir()
    start = time.perf_counter()
    for z in range(0, slab.shape[0], depth):
        for y in range(0, slab.shape[1], height):
            for x in range(0, slab.shape[2], width):
                chunk = slab[z : z + depth, y : y + height, x : x + width]
                np.ascontiguousarray(chunk).tofile(out / f"{z}.{y}.{x}")
    raw_seconds = time.perf_counter() - start
    group = zarr.open_group(str(out / "ceiling.zarr"), mode="w", zarr_format=2)
    array = group.create_array("raw", shape=slab.shape, chunks=CHUNKS, dtype=slab.dtype)
    array = array.with_config({"write_empty_chunks": True})
    start = time.perf_counter()
    array[:] = slab
    zarr_seconds = time.perf_counter() - start
    shutil.rmtree(out)
    return slab.size / raw_seconds, slab.size / zarr_seconds


def run_child(*args: str) -> dict[str, float]:
    """Run the conversion (or only the imports) in a fresh interpreter; seconds and peak memory."""
    result = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def convert(folder: Path, work: Path, repeats: int) -> tuple[float, float]:
    """Best voxels/s and largest peak memory (bytes) of ``repeats`` conversions into fresh containers."""
    voxels = len(list(folder.iterdir())) * SLICE[0] * SLICE[1]
    rates, peaks = [], []
    for repeat in range(repeats):
        container = work / f"out_{folder.name}_{repeat}.zarr"
        run = run_child(str(folder), str(container))
        shutil.rmtree(container)
        rates.append(voxels / run["seconds"])
        peaks.append(run["peak_bytes"])
    return max(rates), max(peaks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="conversions of the 200-slice stack (best counts)")
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the temporary stacks")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_convert_", dir=args.tmp))
    try:
        planes = _source_planes()
        small, large = work / "stack_200", work / "stack_1600"
        make_stack(small, DEPTH, planes)
        make_stack(large, 8 * DEPTH, planes)
        imports = run_child("--imports-only")["peak_bytes"]
        floor = max(read_floor(small) for _ in range(args.repeats))
        disk, ceiling = np.max([write_floors(small, work / "chunks") for _ in range(args.repeats)], axis=0)
        rate, peak = convert(small, work, args.repeats)
        large_floor = read_floor(large)
        large_rate, large_peak = convert(large, work, 1)
    finally:
        shutil.rmtree(work)
    source = "lucchi_pp_fibsem tiled 2x2" if LUCCHI.is_dir() else "random texture"
    chunks = "x".join(map(str, CHUNKS))
    print(f"TIFF -> zarr, uint8 slices {SLICE[0]}x{SLICE[1]} ({source}), chunks {chunks} Blosc lz4, default workers")
    print(f"python + incasem imports alone: peak {imports / 1e9:.2f} GB")
    for depth, read, conv, mem in ((DEPTH, floor, rate, peak), (8 * DEPTH, large_floor, large_rate, large_peak)):
        print(
            f"{depth:5d} slices: tifffile floor {read / 1e6:7.0f} Mvox/s | incasem convert {conv / 1e6:5.0f} Mvox/s "
            f"= {100 * conv / read:3.0f} % of the floor | peak {mem / 1e9:.2f} GB"
        )
    print(f"disk-write floor (in-memory slices -> uncompressed {chunks} chunk files): {disk / 1e6:.0f} Mvox/s")
    print(f"zarr ceiling (in-memory slices -> zarr, same chunks and compressor): {ceiling / 1e6:.0f} Mvox/s; "
          f"convert reaches {100 * rate / ceiling:.0f} % of it")
    print(f"8x the voxels: peak memory {100 * (large_peak / peak - 1):+.1f} %")
    print(f"original incasem: 24 Mvox/s, 0.36 GB; convert here: {rate / 24e6:.1f}x its throughput")


if __name__ == "__main__":
    main()
