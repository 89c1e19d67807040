#!/usr/bin/env bash
# One GPU, fp16 (a free-tier T4): the study's standard set-up.
# Usage:  bash launch/single_gpu.sh [--dry-run] [--mixed_precision fp16|bf16|no] RECIPE [recipe flags...]
#   e.g.  bash launch/single_gpu.sh recipes/roberta_lora.py --num_train_epochs 1
# Runs:   accelerate launch --config_file accelerate_configs/single_t4_fp16.yaml --mixed_precision fp16 RECIPE ...
set -euo pipefail
. "$(dirname "$0")/_common.sh"
MP=fp16
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift;;
    --mixed_precision) MP="$2"; shift 2;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0;;
    *) break;;
  esac
done
[ $# -ge 1 ] || die "give a recipe, e.g. recipes/roberta_lora.py"
RECIPE="$1"; shift
run_cmd accelerate launch --config_file "$ROOT/accelerate_configs/single_t4_fp16.yaml" --mixed_precision "$MP" \
  "$RECIPE" "$@"
