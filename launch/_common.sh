# Sourced by the launch scripts: repository root, --dry-run, and printing the exact command.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY_RUN=0

# print the command as one shell-quoted line (copy-paste safe), then run it unless --dry-run
run_cmd() {
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [ "$DRY_RUN" = 1 ]; then return 0; fi
  exec "$@"
}

die() { echo "$(basename "$0"): $*" >&2; exit 2; }

# accelerate config for a ZeRO stage (empty = plain DDP), with or without CPU offload
ds_config_for() {
  local stage="$1" offload="$2"
  case "$stage" in
    ""|0) echo "$ROOT/accelerate_configs/multi_gpu.yaml"; return;;
    1) [ "$offload" = 1 ] && die "--offload needs ZeRO stage 2 or 3"; echo "$ROOT/accelerate_configs/deepspeed_zero1.yaml";;
    2|3) if [ "$offload" = 1 ]; then echo "$ROOT/accelerate_configs/deepspeed_zero${stage}_offload.yaml";
         else echo "$ROOT/accelerate_configs/deepspeed_zero${stage}.yaml"; fi;;
    *) die "--zero must be 1, 2 or 3 (got '$stage')";;
  esac
}

gpu_count() { if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -L | grep -c '^GPU'; else echo 0; fi; }
