#!/usr/bin/env bash
# Turn a DeepSpeed ZeRO checkpoint (sharded per process) into one plain fp32 transformers model folder,
# e.g. to continue on a different number of GPUs by starting a new run from these weights.
# Usage:  bash launch/zero_to_fp32.sh [--dry-run] CHECKPOINT_DIR OUT_DIR
#   e.g.  bash launch/zero_to_fp32.sh outputs/roberta_full/checkpoints/step-3000 outputs/roberta_full/fp32
#         accelerate launch --config_file accelerate_configs/deepspeed_zero2.yaml --num_processes 8 \
#           recipes/roberta_full.py --model_name_or_path outputs/roberta_full/fp32 --output_dir outputs/roberta_full_8gpu
# Runs:   python -m deepspeed.utils.zero_to_fp32 CHECKPOINT_DIR OUT_DIR --safe_serialization   (DeepSpeed's utility:
#         gathers the shards into fp32 weights; needs only CPU RAM for the full model), then
#         python launch/zero_to_fp32_finish.py CHECKPOINT_DIR OUT_DIR  (adds config.json with the label maps and
#         the tokenizer; a LoRA run's weights are merged into the base model), so that plain
#         AutoModelForTokenClassification.from_pretrained(OUT_DIR) loads it.
set -euo pipefail
. "$(dirname "$0")/_common.sh"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0;;
    *) break;;
  esac
done
[ $# -eq 2 ] || die "usage: bash launch/zero_to_fp32.sh CHECKPOINT_DIR OUT_DIR"
CKPT="$1" OUT="$2"
[ "$DRY_RUN" = 1 ] || [ -f "$CKPT/latest" ] || die "$CKPT is not a DeepSpeed checkpoint (no 'latest' file): give a checkpoints/step-<N> folder of a ZeRO run"
PY="${PYTHON:-python}"
printf '+'; printf ' %q' "$PY" -m deepspeed.utils.zero_to_fp32 "$CKPT" "$OUT" --safe_serialization; printf '\n'
printf '+'; printf ' %q' "$PY" "$ROOT/launch/zero_to_fp32_finish.py" "$CKPT" "$OUT"; printf '\n'
[ "$DRY_RUN" = 1 ] && exit 0
"$PY" -m deepspeed.utils.zero_to_fp32 "$CKPT" "$OUT" --safe_serialization
exec "$PY" "$ROOT/launch/zero_to_fp32_finish.py" "$CKPT" "$OUT"
