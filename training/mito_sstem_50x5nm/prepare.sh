#!/usr/bin/env bash
# Prepare the two anisotropic mitochondria data sets of ../shared/data for the shipped
# serial-section model (mito-sstem-50x5nm), one cell each, at a nominal 50 x 5 x 5 nm:
#   drosophila.zarr  Drosophila VNC ssTEM, 20 x 640 x 1024 (true voxel 50 x 4.6 x 4.6 nm)
#   sbem.zarr        CDeep3M SBEM, 20 x 1024 x 1024 (voxel size not published; thick sections)
# Each cell: raw, CLAHE-equalised raw (64-voxel regions in-plane, the 20 sections along z),
# labels, metric mask (exclusion zone of 2 voxels in-plane-scaled: 2 in / 2 out).
# Held out for validation: columns 704-1023 of drosophila.zarr and 768-1023 of sbem.zarr
# (the training data configs stop 64 columns before them).
# Usage: bash prepare.sh [SHARED_DATA_FOLDER] [DATA_FOLDER]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
shared="${1:-$here/../../../shared/data}"
data="${2:-data}"
mkdir -p "$data"
for part in drosophila:drosophila_vnc_sstem sbem:cdeep3m_mito_sbem; do
  IFS=: read -r name source <<<"$part"
  cell="$data/$name.zarr"
  [ -e "$cell/volumes/metric_masks/mito" ] && continue
  incasem convert "$shared/$source/image" "$cell" --voxel-size 50,5,5 -q
  incasem convert "$shared/$source/labels/mito" "$cell" -d volumes/labels/mito --like "$cell:volumes/raw" -q
  incasem equalize "$cell" --kernel-size 20,64,64 -q
  incasem metric-mask "$cell" --labels volumes/labels/mito --exclude-inwards 2 --exclude-outwards 2 -q
done
