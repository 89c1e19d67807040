#!/usr/bin/env bash
# GPU check, no network: the study's roberta_lora and roberta_full for a fraction of an epoch, first on one
# GPU in fp16, then under DeepSpeed ZeRO-2 on every GPU; throughput, peak memory and loss go to one JSON.
# Usage:  bash launch/gpu_check.sh [--dry-run] [--model DIR] [--train_file F --validation_file F]
#                                  [--steps 150] [--gpus N] [--out outputs/gpu_check]
#   e.g.  bash launch/gpu_check.sh --model ~/models/roberta-base \
#           --train_file ../shared/data/ud_english_ewt/en_ewt-ud-train.conllu \
#           --validation_file ../shared/data/ud_english_ewt/en_ewt-ud-dev.conllu
# Without --model: a tiny random-init RoBERTa built locally (synthetic:roberta, same architecture); without
# data files: generated POS sentences (synthetic:pos). Four runs of --steps optimizer steps (batch 16 per GPU,
# 400 evaluation sentences) take about 1-2 minutes each for roberta-base on one T4, under 8 minutes in all.
# Each run is:
#   accelerate launch --config_file accelerate_configs/single_t4_fp16.yaml recipes/roberta_<lora|full>.py ...
#   accelerate launch --config_file accelerate_configs/deepspeed_zero2.yaml --num_processes N --mixed_precision fp16 recipes/roberta_<lora|full>.py ...
# then:  python launch/gpu_check_report.py OUT  ->  OUT/gpu_check.json
# With no GPU it says so and stops, unless --dry-run (print the commands) or --allow-cpu (run them on CPU).
set -euo pipefail
. "$(dirname "$0")/_common.sh"
MODEL="" TRAIN="" VALID="" STEPS=150 GPUS="" OUT="outputs/gpu_check" ALLOW_CPU=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift;;
    --model) MODEL="$2"; shift 2;;
    --train_file) TRAIN="$2"; shift 2;;
    --validation_file) VALID="$2"; shift 2;;
    --steps) STEPS="$2"; shift 2;;
    --gpus) GPUS="$2"; shift 2;;
    --out) OUT="$2"; shift 2;;
    --allow-cpu) ALLOW_CPU=1; shift;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0;;
    *) die "unknown option '$1' (see --help)";;
  esac
done
[ -n "$GPUS" ] || GPUS="$(gpu_count)"
if [ "$GPUS" = 0 ]; then
  if [ "$DRY_RUN" = 1 ] || [ "$ALLOW_CPU" = 1 ]; then
    echo "gpu_check: no GPU found; $([ "$DRY_RUN" = 1 ] && echo 'printing' || echo 'running') the commands for CPU (fp16 becomes fp32)" >&2
    GPUS=1
  else
    die "no GPU found (nvidia-smi lists none); use --dry-run to see the commands"
  fi
fi
if [ -n "$MODEL" ]; then
  [ "$DRY_RUN" = 1 ] || [ -f "$MODEL/config.json" ] || die "--model $MODEL: no config.json there (a local model folder is needed, no network)"
else
  MODEL="synthetic:roberta"
  echo "gpu_check: no --model given: tiny random-init RoBERTa (synthetic:roberta)" >&2
fi
if [ -n "$TRAIN" ]; then
  [ -n "$VALID" ] || die "--train_file needs --validation_file"
  DATA=(--dataset_name "" --train_file "$TRAIN" --validation_file "$VALID")
else
  DATA=(--dataset_name synthetic:pos)
fi
COMMON=(--model_name_or_path "$MODEL" "${DATA[@]}" --max_steps "$STEPS" --max_eval_samples 400
        --logging_steps 10 --report_to none --overwrite_output_dir true --checkpoint_epoch_end false)

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled
run_one() {  # print (and unless --dry-run, run) one launch; a failed run is recorded, the check goes on
  printf '+'; printf ' %q' "$@"; printf '\n'
  [ "$DRY_RUN" = 1 ] && return 0
  "$@" || echo "gpu_check: run failed (exit $?): $*" >&2
}
for METHOD in lora full; do
  run_one accelerate launch --config_file "$ROOT/accelerate_configs/single_t4_fp16.yaml" --mixed_precision fp16 \
    "$ROOT/recipes/roberta_$METHOD.py" "${COMMON[@]}" --output_dir "$OUT/single_fp16-$METHOD"
  run_one accelerate launch --config_file "$ROOT/accelerate_configs/deepspeed_zero2.yaml" --num_machines 1 \
    --num_processes "$GPUS" --mixed_precision fp16 --main_process_port 29517 \
    "$ROOT/recipes/roberta_$METHOD.py" "${COMMON[@]}" --output_dir "$OUT/zero2_fp16-$METHOD"
done
run_one python "$ROOT/launch/gpu_check_report.py" "$OUT"
