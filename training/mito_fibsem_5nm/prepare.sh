#!/usr/bin/env bash
# Prepare the whole Lucchi++ FIB-SEM training volume (../shared/data/lucchi_pp_fibsem,
# 165 x 768 x 1024 voxels, 5 nm) for the shipped FIB-SEM mitochondria model, split three
# ways by columns (x) into separate cells, so that no block of one part ever reads a voxel
# of another, not even as context:
#   train.zarr    columns   0-639  (training: every block the network learns from)
#   val.zarr      columns 640-831  (validation: picks the checkpoint and the thresholds)
#   heldout.zarr  columns 832-1023 (held out: the final score only; it holds the bundled
#                                   example, incasem demo's crop)
# All 165 sections and 768 rows in each. Each cell: raw, CLAHE-equalised raw (incasem
# equalize), labels, metric mask (exclusion zone of 4 voxels inwards / outwards).
# Usage: bash prepare.sh [SOURCE_FOLDER] [DATA_FOLDER]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source="${1:-$here/../../../shared/data/lucchi_pp_fibsem}"
data="${2:-data}"
mkdir -p "$data"
for part in train:0:640 val:640:832 heldout:832:1024; do
  IFS=: read -r name start stop <<<"$part"
  cell="$data/$name.zarr"
  [ -e "$cell/volumes/metric_masks/mito" ] && continue
  incasem convert "$source/image" "$cell" --voxel-size 5,5,5 --x "$start:$stop" -q
  incasem convert "$source/labels/mito" "$cell" -d volumes/labels/mito --x "$start:$stop" --like "$cell:volumes/raw" -q
  incasem equalize "$cell" -q
  incasem metric-mask "$cell" --labels volumes/labels/mito --exclude-inwards 4 --exclude-outwards 4 -q
done
