#!/usr/bin/env bash
# GPU clusters with SLURM: one flaxlm process per GPU on every node, joined by jax.distributed.
#
#   launch/slurm.sh submit [--nodes 2] [--gpus-per-node 8] [--partition P] [--account A] [--time 24:00:00]
#                          [--job-name flaxlm] [--module flaxlm.main|flaxlm.sweep] [--dry-run] -- FLAXLM ARGS
#
# `submit` calls sbatch with this script (`job`), which srun-starts `task` once per GPU. Each task
# exports JAX_COORDINATOR_ADDRESS (the allocation's first node, a port derived from the job id or
# $JAX_COORDINATOR_PORT) and runs `python -m flaxlm.main FLAXLM ARGS`; flaxlm.main sees SLURM_NTASKS
# and calls jax.distributed.initialize(), which takes the process count, the process id and this
# task's GPU from SLURM_NTASKS, SLURM_PROCID and SLURM_LOCALID. The checkout must be on a
# filesystem every node sees, with its .venv (`pip install -e '.[gpu]'`), or set $FLAXLM_PYTHON.
# --dry-run prints the sbatch command (submit) or the environment and command of one task (task).
set -euo pipefail

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then printf '%s' "$1"; else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
quote_all() { local out="" a; for a in "$@"; do out+="$(quote "$a") "; done; printf '%s' "${out% }"; }

# The first host of a SLURM node list: gpu[03-04,07],cpu1 -> gpu03.
first_host() {
  if command -v scontrol > /dev/null 2>&1; then
    scontrol show hostnames "$1" | head -n 1
  elif [[ "$1" =~ ^([^,\[]+)\[([0-9]+) ]]; then
    printf '%s\n' "${BASH_REMATCH[1]}${BASH_REMATCH[2]}"
  else
    printf '%s\n' "${1%%,*}"
  fi
}

stage="${1:-}"
[[ -z "$stage" || "$stage" == -h || "$stage" == --help ]] && usage 0
shift
FLAXLM_DIR="${FLAXLM_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"

case "$stage" in
  submit)
    nodes=1 gpus=8 partition="" account="" time_limit="" job_name="flaxlm" module="flaxlm.main" dry_run=0
    while (($#)); do
      case "$1" in
        --nodes) nodes="$2"; shift 2 ;;
        --gpus-per-node) gpus="$2"; shift 2 ;;
        --partition) partition="$2"; shift 2 ;;
        --account) account="$2"; shift 2 ;;
        --time) time_limit="$2"; shift 2 ;;
        --job-name) job_name="$2"; shift 2 ;;
        --module) module="$2"; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        --) shift; break ;;
        *) echo "slurm.sh: unknown option $1 (flaxlm arguments go after --)" >&2; usage ;;
      esac
    done
    (($#)) || { echo "slurm.sh: give the $module arguments after --" >&2; exit 2; }
    [[ "$module" == flaxlm.main || "$module" == flaxlm.sweep ]] || {
      echo "slurm.sh: --module must be flaxlm.main or flaxlm.sweep, got $module" >&2; exit 2; }
    cmd=(sbatch "--job-name=$job_name" "--nodes=$nodes" "--ntasks-per-node=$gpus" "--gpus-per-node=$gpus"
         "--output=$FLAXLM_DIR/runs/slurm-%j.out" "--export=ALL,FLAXLM_DIR=$FLAXLM_DIR,FLAXLM_MODULE=$module")
    [[ -n "$partition" ]] && cmd+=("--partition=$partition")
    [[ -n "$account" ]] && cmd+=("--account=$account")
    [[ -n "$time_limit" ]] && cmd+=("--time=$time_limit")
    cmd+=("$FLAXLM_DIR/launch/slurm.sh" job "$@")
    quote_all "${cmd[@]}"; echo
    if ((!dry_run)); then
      mkdir -p "$FLAXLM_DIR/runs"
      "${cmd[@]}"
    fi
    ;;
  job)
    # sbatch runs a copy of this script from its spool directory; srun starts the checkout's own.
    exec srun --kill-on-bad-exit=1 bash "$FLAXLM_DIR/launch/slurm.sh" task "$@"
    ;;
  task)
    dry_run=0
    if [[ "${1:-}" == --dry-run ]]; then dry_run=1; shift; fi
    [[ "${1:-}" == -- ]] && shift
    for var in SLURM_JOB_ID SLURM_JOB_NODELIST SLURM_NTASKS SLURM_PROCID; do
      [[ -n "${!var:-}" ]] || { echo "slurm.sh task: $var is not set (run it under srun, or use submit)" >&2; exit 2; }
    done
    port="${JAX_COORDINATOR_PORT:-$((20000 + SLURM_JOB_ID % 20000))}"
    export JAX_COORDINATOR_ADDRESS="$(first_host "$SLURM_JOB_NODELIST"):$port"
    python="${FLAXLM_PYTHON:-$FLAXLM_DIR/.venv/bin/python}"
    cmd=("$python" -m "${FLAXLM_MODULE:-flaxlm.main}" "$@")
    echo "slurm.sh: process $SLURM_PROCID of $SLURM_NTASKS, JAX_COORDINATOR_ADDRESS=$JAX_COORDINATOR_ADDRESS" >&2
    if ((dry_run)); then
      echo "JAX_COORDINATOR_ADDRESS=$JAX_COORDINATOR_ADDRESS $(quote_all "${cmd[@]}")"
    else
      cd "$FLAXLM_DIR"
      exec "${cmd[@]}"
    fi
    ;;
  *) echo "slurm.sh: unknown stage $stage (submit, job or task)" >&2; usage ;;
esac
