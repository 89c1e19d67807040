#!/usr/bin/env bash
# All GPUs of one machine: DDP, or DeepSpeed ZeRO 1/2/3 (optionally with CPU offload).
# Usage:  bash launch/multi_gpu.sh [--dry-run] [--gpus N] [--zero 1|2|3] [--offload] [--mixed_precision fp16|bf16|no]
#                                  RECIPE [recipe flags...]
#   e.g.  bash launch/multi_gpu.sh --gpus 4 recipes/roberta_lora.py                 (DDP)
#         bash launch/multi_gpu.sh --gpus 8 --zero 3 --mixed_precision bf16 recipes/roberta_full.py
# Runs:   accelerate launch --config_file accelerate_configs/<multi_gpu|deepspeed_zeroN[_offload]>.yaml
#           --num_processes N --mixed_precision MP RECIPE ...
# --gpus defaults to the GPUs nvidia-smi lists. The recipe's per_device_train_batch_size is per GPU.
set -euo pipefail
. "$(dirname "$0")/_common.sh"
GPUS="" ZERO="" OFFLOAD=0 MP=fp16
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift;;
    --gpus) GPUS="$2"; shift 2;;
    --zero) ZERO="$2"; shift 2;;
    --offload) OFFLOAD=1; shift;;
    --mixed_precision) MP="$2"; shift 2;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0;;
    *) break;;
  esac
done
[ $# -ge 1 ] || die "give a recipe, e.g. recipes/roberta_lora.py"
RECIPE="$1"; shift
[ -n "$GPUS" ] || GPUS="$(gpu_count)"
[[ "$GPUS" =~ ^[1-9][0-9]*$ ]] || die "no GPU found; pass --gpus N"
[ "$OFFLOAD" = 1 ] && [ -z "$ZERO" ] && die "--offload needs --zero 2 or 3"
CONFIG="$(ds_config_for "$ZERO" "$OFFLOAD")"
run_cmd accelerate launch --config_file "$CONFIG" --num_machines 1 --num_processes "$GPUS" --mixed_precision "$MP" \
  "$RECIPE" "$@"
