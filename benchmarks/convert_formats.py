"""Benchmark ``incasem convert`` from each file format it reads, beside the TIFF path.

Real EM (../shared/data/lucchi_pp_fibsem, 768 x 1024 sections, mirrored in z where more
are needed) is saved, in a temporary folder, at two depths 8x apart (160 and 1280
sections: 126 Mvoxels and 1 Gvoxel; both several chunk depths, so that the memory of a
converter whose blocks are slabs should not grow between them) as

- a folder of TIFF slices (the path the other formats are measured against),
- a multi-page OME-TIFF,
- an MRC file (IMOD-style unsigned bytes),
- an HDF5 dataset, chunked 64 x 128 x 128 with gzip (as ilastik writes) and contiguous,
- an N5 dataset, blocks 64 x 128 x 128 with gzip (as Janelia's tools write; tensorstore),
- an OME-Zarr image, chunks 64 x 128 x 128 with Blosc (zarr-python's default).

Each is converted by ``incasem.preprocess.convert.tiff_to_zarr`` with its defaults
(64 x 128 x 128 chunks, all cores) in a fresh subprocess, ``--repeats`` times: the
printed throughput (Mvoxels/s of the call) is the median, the peak memory the
process's ``VmHWM`` (the largest), next to that of a process that only imports
incasem. The converted values are checked against the source.

Usage::

    python benchmarks/convert_formats.py [--repeats 3] [--tmp DIR]

Disk use: about 3 GB in DIR (default: the system temp folder), removed at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

LUCCHI = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "lucchi_pp_fibsem" / "image"
DEPTHS = (160, 1280)
BLOCK = (64, 128, 128)

_CHILD = """
import json, re, sys, time
from pathlib import Path
import numpy as np
from incasem.blockwise import RunOptions
from incasem.preprocess.convert import ConvertOptions, tiff_to_zarr
if sys.argv[1] != "--imports-only":
    start = time.perf_counter()
    volume = tiff_to_zarr(sys.argv[1], sys.argv[2], options=ConvertOptions(voxel_size=(5, 5, 5)), run=RunOptions(progress=False))
    seconds = time.perf_counter() - start
    assert volume.complete
    check = np.load(sys.argv[3])
    assert np.array_equal(volume.array[::37, ::97, ::101], check), "values differ from the source"  # a strided sample, read chunk by chunk
else:
    seconds = 0.0
peak_kib = int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1))
print(json.dumps({"seconds": seconds, "peak_gb": peak_kib * 1024 / 1e9}))
"""


def em_volume(depth: int) -> np.ndarray:
    """``depth`` sections of the Lucchi++ EM, mirrored back and forth in z."""
    import tifffile

    files = sorted(LUCCHI.glob("*.tif"))
    stack = np.stack([tifffile.imread(path) for path in files])
    n = len(files)
    order = [k if k < n else 2 * n - 1 - k for k in (i % (2 * n) for i in range(depth))]
    return np.ascontiguousarray(stack[order])


def save_tiff_folder(data: np.ndarray, folder: Path) -> str:
    import tifffile

    slices = folder / "slices"
    slices.mkdir()
    for z, section in enumerate(data):
        tifffile.imwrite(slices / f"{z:04d}.tif", section)
    return str(slices)


def save_ome_tiff(data: np.ndarray, folder: Path) -> str:
    import tifffile

    path = folder / "cell.ome.tif"
    tifffile.imwrite(path, data, ome=True, bigtiff=True, metadata={"axes": "ZYX", "PhysicalSizeZ": 0.005, "PhysicalSizeY": 0.005, "PhysicalSizeX": 0.005})
    return str(path)


def save_mrc(data: np.ndarray, folder: Path) -> str:
    import mrcfile

    from incasem.io.sources import IMOD_STAMP

    path = folder / "cell.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data.view(np.int8))
        mrc.voxel_size = 50.0
        extra = bytearray(mrc.header.extra2.tobytes())
        extra[40:48] = np.array([IMOD_STAMP, 0], dtype="<i4").tobytes()
        mrc.header.extra2 = np.frombuffer(bytes(extra), dtype=mrc.header.extra2.dtype)
    return str(path)


def _save_hdf5(data: np.ndarray, folder: Path, chunked: bool) -> str:
    import h5py

    path = folder / "cell.h5"
    with h5py.File(path, "w") as file:
        dataset = file.create_dataset("raw", data=data, chunks=tuple(min(b, s) for b, s in zip(BLOCK, data.shape)) if chunked else None, compression="gzip" if chunked else None)
        dataset.attrs["resolution"] = [5, 5, 5]
    return f"{path}:/raw"


def save_hdf5_chunked(data: np.ndarray, folder: Path) -> str:
    return _save_hdf5(data, folder, True)


def save_hdf5_contiguous(data: np.ndarray, folder: Path) -> str:
    return _save_hdf5(data, folder, False)


def save_n5(data: np.ndarray, folder: Path) -> str:
    import tensorstore

    z, y, x = data.shape
    metadata = {"dimensions": [x, y, z], "blockSize": list(BLOCK[::-1]), "dataType": "uint8", "compression": {"type": "gzip"}}
    spec = {"driver": "n5", "kvstore": {"driver": "file", "path": str(folder / "cell.n5")}, "path": "raw", "metadata": metadata, "create": True}
    store = tensorstore.open(spec).result()
    store.T[...] = data
    attributes = folder / "cell.n5" / "raw" / "attributes.json"
    attributes.write_text(json.dumps({**json.loads(attributes.read_text()), "pixelResolution": {"dimensions": [5, 5, 5], "unit": "nm"}}))
    return str(folder / "cell.n5" / "raw")


def save_ome_zarr(data: np.ndarray, folder: Path) -> str:
    import zarr

    group = zarr.open_group(str(folder / "cell.ome.zarr"), mode="w", zarr_format=2)
    group.create_array("0", data=data, chunks=BLOCK)
    axes = [{"name": axis, "type": "space", "unit": "nanometer"} for axis in "zyx"]
    group.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [5, 5, 5]}]}]}]
    return str(folder / "cell.ome.zarr")


FORMATS: dict[str, Callable[[np.ndarray, Path], str]] = {
    "TIFF folder": save_tiff_folder,
    "OME-TIFF (multi-page)": save_ome_tiff,
    "MRC": save_mrc,
    "HDF5 chunked, gzip": save_hdf5_chunked,
    "HDF5 contiguous": save_hdf5_contiguous,
    "N5, gzip (tensorstore)": save_n5,
    "OME-Zarr, Blosc": save_ome_zarr,
}


def run_child(*args: str) -> dict[str, float]:
    result = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tmp", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="incasem-bench-formats-", dir=args.tmp))
    try:
        imports = run_child("--imports-only")["peak_gb"]
        print(f"a process that only imports incasem: {imports:.2f} GB peak")
        print(f"{'format':<24} {'sections':>8} {'Mvox':>6} {'Mvox/s (median)':>16} {'peak GB':>8}")
        for depth in DEPTHS:
            data = em_volume(depth)
            check = work / "check.npy"
            np.save(check, data[::37, ::97, ::101])
            for name, save in FORMATS.items():
                folder = work / f"{depth}-{list(FORMATS).index(name)}"
                folder.mkdir()
                source = save(data, folder)
                results = []
                for repeat in range(args.repeats):
                    out = folder / f"out{repeat}.zarr"
                    results.append(run_child(source, str(out), str(check)))
                    shutil.rmtree(out)
                speed = statistics.median(data.size / r["seconds"] / 1e6 for r in results)
                peak = max(r["peak_gb"] for r in results)
                print(f"{name:<24} {depth:>8} {data.size / 1e6:>6.0f} {speed:>16.0f} {peak:>8.2f}", flush=True)
                shutil.rmtree(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
