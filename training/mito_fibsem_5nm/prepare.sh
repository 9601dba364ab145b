#!/usr/bin/env bash
# Prepare the Lucchi++ FIB-SEM data (../shared/data/lucchi_pp_fibsem, 165 x 512 x 640
# voxels, 5 nm) for the shipped FIB-SEM mitochondria model, as three separate cells so
# that no training block ever reads a voxel of the held-out slab, not even as context:
#   train_a.zarr  sections   0-51   (training)
#   heldout.zarr  sections  52-115  (validation: sections 56-111, all rows and columns;
#                                    it contains the bundled example, sections 60-107)
#   train_b.zarr  sections 116-164  (training)
# Each cell: raw, CLAHE-equalised raw (incasem equalize), labels, metric mask
# (exclusion zone of 4 voxels inwards / outwards).
# Usage: bash prepare.sh [SOURCE_FOLDER] [DATA_FOLDER]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source="${1:-$here/../../../shared/data/lucchi_pp_fibsem}"
data="${2:-data}"
mkdir -p "$data"
for part in train_a:0:52 heldout:52:116 train_b:116:165; do
  IFS=: read -r name start stop <<<"$part"
  cell="$data/$name.zarr"
  [ -e "$cell/volumes/metric_masks/mito" ] && continue
  incasem convert "$source/image" "$cell" --voxel-size 5,5,5 --z "$start:$stop" -q
  incasem convert "$source/labels/mito" "$cell" -d volumes/labels/mito --z "$start:$stop" --like "$cell:volumes/raw" -q
  incasem equalize "$cell" -q
  incasem metric-mask "$cell" --labels volumes/labels/mito --exclude-inwards 4 --exclude-outwards 4 -q
done
