#!/usr/bin/env bash
# Retrain the shipped serial-section mitochondria model (mito-sstem-50x5nm) with one command:
# prepare the two anisotropic data sets into DATA_FOLDER, then `incasem train` with this
# folder's config (the shipped `anisotropic` recipe, smaller) and data configs.
# Usage: bash training/mito_sstem_50x5nm/train.sh [DATA_FOLDER] [RUNS_FOLDER] [key=value ...]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
data="${1:-data}"
runs="${2:-runs}"
bash "$here/prepare.sh" "$here/../../../shared/data" "$data"
incasem train --config "$here/config.yaml" --train-data "$here/train.json" \
    --val-data "$here/val.json" --data-root "$data" --runs-dir "$runs" "${@:3}"
