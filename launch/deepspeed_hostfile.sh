#!/usr/bin/env bash
# Several machines listed in a DeepSpeed hostfile ("host slots=GPUS" per line), DeepSpeed ZeRO 1/2/3.
# Run it once, on the first host; DeepSpeed's pdsh launcher starts the other hosts over passwordless ssh
# (the repository and environment must be at the same path on every host). It stops at once, naming pdsh,
# when pdsh is not installed here.
# Usage:  bash launch/deepspeed_hostfile.sh [--dry-run] --hostfile FILE [--zero 1|2|3] [--offload]
#                 [--mixed_precision fp16|bf16|no] [--port 29500] RECIPE [recipe flags...]
#   e.g.  bash launch/deepspeed_hostfile.sh --hostfile hosts.txt --zero 2 recipes/roberta_full.py
# Runs:   accelerate launch --config_file accelerate_configs/deepspeed_zeroN.yaml --num_machines <hosts>
#           --num_processes <sum of slots> --main_process_ip <first host> --main_process_port 29500
#           --deepspeed_hostfile FILE --deepspeed_multinode_launcher pdsh RECIPE ...
set -euo pipefail
. "$(dirname "$0")/_common.sh"
HOSTFILE="" ZERO=2 OFFLOAD=0 MP=fp16 PORT=29500
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift;;
    --hostfile) HOSTFILE="$2"; shift 2;;
    --zero) ZERO="$2"; shift 2;;
    --offload) OFFLOAD=1; shift;;
    --mixed_precision) MP="$2"; shift 2;;
    --port) PORT="$2"; shift 2;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0;;
    *) break;;
  esac
done
[ $# -ge 1 ] || die "give a recipe, e.g. recipes/roberta_lora.py"
RECIPE="$1"; shift
[ -f "$HOSTFILE" ] || die "hostfile not found: '$HOSTFILE' (lines of 'hostname slots=NUM_GPUS')"
[ "$ZERO" != 0 ] || die "this launcher is for DeepSpeed; for multi-node DDP use launch/slurm_multinode.sbatch"
# hosts and slots, ignoring comments and blank lines; a host without slots= counts its GPUs as 1 (DeepSpeed's rule)
read -r NODES PROCS FIRST < <(awk '
  { sub(/#.*/, "") } NF == 0 { next }
  { n++; s = 1; for (i = 2; i <= NF; i++) if ($i ~ /^slots=/) { s = substr($i, 7) + 0 }
    p += s; if (n == 1) first = $1 }
  END { print n + 0, p + 0, first }' "$HOSTFILE")
[ "${NODES:-0}" -ge 1 ] || die "hostfile $HOSTFILE lists no hosts"
# DeepSpeed's launcher reaches the other hosts with pdsh; without it the job would die inside DeepSpeed
if [ "$NODES" -gt 1 ] && [ "$DRY_RUN" = 0 ] && ! command -v pdsh >/dev/null 2>&1; then
  die "pdsh not found on PATH: DeepSpeed's multi-node launcher starts the other $((NODES - 1)) host(s) of $HOSTFILE" \
      "with pdsh over passwordless ssh. Install pdsh on this host (e.g. apt-get install pdsh), or launch one" \
      "command per node with launch/slurm_multinode.sbatch"
fi
CONFIG="$(ds_config_for "$ZERO" "$OFFLOAD")"
run_cmd accelerate launch --config_file "$CONFIG" --num_machines "$NODES" --num_processes "$PROCS" \
  --main_process_ip "$FIRST" --main_process_port "$PORT" --mixed_precision "$MP" \
  --deepspeed_hostfile "$HOSTFILE" --deepspeed_multinode_launcher pdsh "$RECIPE" "$@"
