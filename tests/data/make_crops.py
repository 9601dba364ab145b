"""Cut the test crops in this folder out of the shared data sets, or check that they still match them.

    python tests/data/make_crops.py [SHARED_DATA]            # write the crops (refuses to overwrite)
    python tests/data/make_crops.py [SHARED_DATA] --check    # compare every voxel with the source

SHARED_DATA defaults to ../shared/data beside the checkout. Each crop's SOURCE.md states the
same regions as ``CROPS`` below; keep the two in step.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import tifffile

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parents[2] / "shared" / "data"

#: name -> (z, y, x) of the source stack (slices of its sorted files, rows, columns) and its label classes.
CROPS: dict[str, tuple[tuple[slice, slice, slice], tuple[str, ...]]] = {
    "lucchi_pp_fibsem": ((slice(52, 116), slice(128, 352), slice(224, 448)), ("mito",)),
    "drosophila_vnc_sstem": (
        (slice(0, 20), slice(0, 224), slice(0, 320)),
        ("mito", "membrane", "synapse", "glia_extracellular"),
    ),
    "cdeep3m_mito_sbem": ((slice(0, 20), slice(256, 384), slice(128, 256)), ("mito",)),
}


def _source_planes(folder: Path, region: tuple[slice, slice, slice]):
    files = sorted(folder.glob("*.tif"))[region[0]]
    for path in files:
        yield path, tifffile.imread(path)[region[1], region[2]]


def _folders(name: str, classes: tuple[str, ...]) -> list[tuple[str, str]]:
    """(sub-folder, compression) of a crop: the image as the source stores it, labels zlib-compressed."""
    return [("image", None)] + [(f"labels/{c}", "zlib") for c in classes]


def write(source: Path) -> None:
    for name, (region, classes) in CROPS.items():
        for sub, compression in _folders(name, classes):
            out = HERE / name / sub
            if out.exists() and any(out.iterdir()):
                sys.exit(f"{out} is not empty: remove it first to cut the crop again")
            out.mkdir(parents=True, exist_ok=True)
            for index, (_, plane) in enumerate(_source_planes(source / name / sub, region)):
                tifffile.imwrite(out / f"{index:04d}.tif", np.ascontiguousarray(plane), compression=compression)
        print(f"{name}: written")


def check(source: Path) -> int:
    problems = 0
    for name, (region, classes) in CROPS.items():
        for sub, _ in _folders(name, classes):
            crop = sorted((HERE / name / sub).glob("*.tif"))
            planes = list(_source_planes(source / name / sub, region))
            if len(crop) != len(planes):
                print(f"{name}/{sub}: {len(crop)} slices, the source region has {len(planes)}")
                problems += 1
                continue
            for path, (origin, plane) in zip(crop, planes):
                if not np.array_equal(tifffile.imread(path), plane):
                    print(f"{path} differs from {origin}[{region[1].start}:{region[1].stop}, {region[2].start}:{region[2].stop}]")
                    problems += 1
        print(f"{name}: checked")
    return problems


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--check", action="store_true", help="compare the crops with the source instead of writing them")
    args = parser.parse_args()
    missing = [name for name in CROPS if not (args.source / name).is_dir()]
    if missing:
        sys.exit(f"{args.source} has no {', '.join(missing)}: give the folder of the shared data sets")
    if args.check:
        sys.exit(1 if check(args.source) else 0)
    write(args.source)
