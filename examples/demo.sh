#!/usr/bin/env bash
# The whole workflow on the bundled example (examples/lucchi_crop, real FIB-SEM with
# manual mitochondria labels): TIFF -> zarr, 3D CLAHE, metric mask, prediction with
# the bundled demo model, scores against the labels (all voxels and the exclusion zone),
# instances, a preview PNG, export to TIFF for Fiji; prints the command to browse it all.
# Usage: bash examples/demo.sh [OUTPUT_FOLDER]   (default: ./example)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-example}"
mkdir -p "$out"
cell="$out/demo.zarr"

incasem convert "$here/lucchi_crop/image" "$cell" --voxel-size 5,5,5 --overwrite
incasem convert "$here/lucchi_crop/labels/mito" "$cell" -d volumes/labels/mito --like "$cell:volumes/raw" --overwrite
incasem equalize "$cell" --overwrite
incasem metric-mask "$cell" --labels volumes/labels/mito --overwrite
cat > "$out/demo_config.json" <<JSON
{
  "demo_crop": {
    "file": "demo.zarr",
    "offset": [0, 0, 0],
    "shape": [48, 192, 192],
    "voxel_size": [5, 5, 5],
    "raw": "volumes/raw_equalized_0.02",
    "labels": {"volumes/labels/mito": 1},
    "metric_masks": ["volumes/metric_masks/mito"]
  }
}
JSON
incasem predict "$out/demo_config.json" --model "$here/demo_model_mito_5nm.pt" --device cpu
prediction=$(cd "$cell" && ls -d volumes/predictions/demo_model_mito_5nm/* | sort | tail -n 1)
incasem evaluate "$cell" -p "$prediction" --instances --json "$out/scores.json" --overwrite -q
incasem instances "$cell" -i "$prediction/segmentation" --min-size 500 --overwrite -q
incasem preview "$cell" -o "$out/preview.png" --overwrite
incasem info "$cell"
incasem export "$cell" "$out/segmentation_tiff" -d "$prediction/segmentation" --overwrite
echo "demo finished: zarr in $cell, scores in $out/scores.json, picture $out/preview.png, segmentation TIFFs in $out/segmentation_tiff"
echo "browse it in neuroglancer: incasem view $cell"
