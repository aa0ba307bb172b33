#!/usr/bin/env bash
# Cloud TPU VMs: create a slice, install this checkout on every worker, run flaxlm there, read the log.
#
#   launch/tpu_vm.sh create --name NAME --zone ZONE [--accelerator-type v4-32] [--version RUNTIME] [--spot]
#   launch/tpu_vm.sh setup  --name NAME --zone ZONE [--python python3.11]  # copy this checkout, .venv with jax[tpu]
#   launch/tpu_vm.sh run    --name NAME --zone ZONE [--env KEY=VALUE ...] -- --config experiments/X.py --workdir DIR
#   launch/tpu_vm.sh sweep  --name NAME --zone ZONE -- --config experiments/X.py --workdir-root DIR
#   launch/tpu_vm.sh logs   --name NAME --zone ZONE [--worker 0]
#   launch/tpu_vm.sh delete --name NAME --zone ZONE
#
# Every command takes --project P and --dry-run (print the exact gcloud commands, run nothing);
# --name and --zone default to $TPU_NAME and $TPU_ZONE. `run` and `sweep` start the same
# `python -m flaxlm.main` (or `flaxlm.sweep`) with the same arguments on every worker
# (--worker=all), detached, logging to ~/flaxlm.log; on a multi-host slice flaxlm.main calls
# jax.distributed.initialize() itself. Workdirs must be one path that every worker sees (a shared
# filesystem), since all workers write checkpoints of one run. A sweep on a multi-host slice runs
# its points one at a time (no --parallel): each point's processes span every worker.
set -euo pipefail

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REMOTE_DIR='~/flaxlm'  # Expanded by the worker's shell.
LOG='~/flaxlm.log'

command="${1:-}"
[[ -z "$command" || "$command" == -h || "$command" == --help ]] && usage 0
shift
name="${TPU_NAME:-}" zone="${TPU_ZONE:-}" project="" accelerator="v4-8" version="tpu-ubuntu2204-base"
python="python3.11" spot=0 dry_run=0 worker=0
envs=() args=()
while (($#)); do
  case "$1" in
    --name) name="$2"; shift 2 ;;
    --zone) zone="$2"; shift 2 ;;
    --project) project="$2"; shift 2 ;;
    --accelerator-type) accelerator="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --worker) worker="$2"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    --env) envs+=("$2"); shift 2 ;;
    --spot) spot=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; args=("$@"); break ;;
    *) echo "tpu_vm.sh: unknown option $1 (flaxlm arguments go after --)" >&2; usage ;;
  esac
done
[[ -n "$name" ]] || { echo "tpu_vm.sh: --name (or \$TPU_NAME) is required" >&2; exit 2; }
[[ -n "$zone" ]] || { echo "tpu_vm.sh: --zone (or \$TPU_ZONE) is required" >&2; exit 2; }

# One shell word, quoted only when it needs to be, so dry-run output reads and pastes back.
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then printf '%s' "$1"; else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
quote_all() { local out="" a; for a in "$@"; do out+="$(quote "$a") "; done; printf '%s' "${out% }"; }

# Prints the command (always, so logs show it) and runs it unless --dry-run.
run() {
  quote_all "$@"; echo
  ((dry_run)) || "$@"
}

gcloud_tpu=(gcloud compute tpus tpu-vm)
common=("--zone=$zone")
[[ -n "$project" ]] && common+=("--project=$project")

# `cd ~/flaxlm && [env] nohup .venv/bin/python -m MODULE ARGS > ~/flaxlm.log 2>&1 &` on every worker.
remote_python() {
  local module="$1"; shift
  ((${#args[@]})) || { echo "tpu_vm.sh: give the $module arguments after --" >&2; exit 2; }
  local exports=""
  for kv in "${envs[@]+"${envs[@]}"}"; do exports+="export $(quote "$kv") && "; done
  local remote="cd $REMOTE_DIR && ${exports}nohup .venv/bin/python -m $module $(quote_all "${args[@]}") > $LOG 2>&1 < /dev/null &"
  run "${gcloud_tpu[@]}" ssh "$name" "${common[@]}" --worker=all "--command=$remote"
}

case "$command" in
  create)
    extra=()
    ((spot)) && extra+=(--spot)
    run "${gcloud_tpu[@]}" create "$name" "${common[@]}" "--accelerator-type=$accelerator" "--version=$version" \
      "${extra[@]+"${extra[@]}"}"
    ;;
  setup)
    archive="${TMPDIR:-/tmp}/flaxlm-src.tar.gz"
    # The working tree as it is (uncommitted edits included), without the venv, runs or git history.
    run tar -czf "$archive" --exclude=./.venv --exclude=./runs --exclude=./.git -C "$REPO" .
    run "${gcloud_tpu[@]}" scp "$archive" "$name:flaxlm-src.tar.gz" "${common[@]}" --worker=all
    # TPU VM images ship an older Python than flaxlm needs; Ubuntu's own python3.11 is one apt-get away.
    install_python="command -v $python > /dev/null || (sudo apt-get update -qq && sudo apt-get install -y -qq $python $python-venv)"
    run "${gcloud_tpu[@]}" ssh "$name" "${common[@]}" --worker=all \
      "--command=$install_python && mkdir -p $REMOTE_DIR && tar -xzf ~/flaxlm-src.tar.gz -C $REMOTE_DIR && cd $REMOTE_DIR && $python -m venv .venv && .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e '.[tpu]'"
    ;;
  run) remote_python flaxlm.main ;;
  sweep) remote_python flaxlm.sweep ;;
  logs) run "${gcloud_tpu[@]}" ssh "$name" "${common[@]}" "--worker=$worker" "--command=tail -n 200 -f $LOG" ;;
  delete) run "${gcloud_tpu[@]}" delete "$name" "${common[@]}" --quiet ;;
  *) echo "tpu_vm.sh: unknown command $command" >&2; usage ;;
esac
