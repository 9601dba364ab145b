#!/usr/bin/env bash
# Train the FIB-SEM mitochondria model (mito-fibsem-5nm) with one command: prepare the
# whole Lucchi++ training volume (../shared/data/lucchi_pp_fibsem) into DATA_FOLDER, split
# three ways (prepare.sh: train.json trains, val.json selects the checkpoint, heldout.json
# is scored only, by training/ship_model.py), then `incasem train` with this folder's
# config and data configs. Fine-tune the shipped model instead of starting afresh with
# `--start-from mito-fibsem-5nm` among the extra arguments.
# Usage: bash training/mito_fibsem_5nm/train.sh [DATA_FOLDER] [RUNS_FOLDER] [key=value ...]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
data="${1:-data}"
runs="${2:-runs}"
bash "$here/prepare.sh" "$here/../../../shared/data/lucchi_pp_fibsem" "$data"
incasem train --config "$here/config.yaml" --train-data "$here/train.json" --val-data "$here/val.json" \
    --data-root "$data" --runs-dir "$runs" "${@:3}"
