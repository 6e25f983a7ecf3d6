#!/usr/bin/env bash
# Train minr_jax on a Cloud TPU VM (v4 / v5e / v5p), single host or pod slice.
#
#   launch/tpu_vm.sh [--dry-run] COMMAND [options] [-- extra minr_jax.main flags]
#
# Commands:
#   create    create the TPU VM (add --spot for a preemptible one)
#   setup     copy this checkout to every worker and `pip install -e '.[tpu]'` there
#   train     start the run on all workers (--worker=all), in the background;
#             the log is ~/minr_train.log on each worker
#   up        create + setup + train
#   restart   after a preemption or crash: recreate the VM if it is gone or
#             PREEMPTED (then setup again), stop a stale run, start train again;
#             minr_jax.main resumes from the newest checkpoint in --workdir
#   status    the VM's state and the tail of worker 0's log
#   delete    delete the VM
#
# Options (defaults in brackets; each also reads the environment variable in caps):
#   --name NAME            TPU VM name [minr]
#   --zone ZONE            [us-central2-b]
#   --project PROJECT      [gcloud's default]
#   --accelerator TYPE     v4-8 | v4-32 | v5litepod-8 | v5litepod-16 | v5p-8 ... [v4-8]
#   --version RUNTIME      TPU software version [tpu-ubuntu2204-base; v5e: v2-alpha-tpuv5-lite]
#   --spot                 create a Spot (preemptible) VM
#   --config SPEC          [configs/transinr.py:celeba]
#   --workdir DIR          checkpoints and logs; must be shared by all workers of a
#                          pod slice, e.g. gs://BUCKET/runs/celeba [gs://$BUCKET/minr/$NAME]
#   --dataset_path DIR     the dataset's manual files (same path on every worker)
#   --fsdp N               FSDP axis size (config.mesh.fsdp) [1]
#   --dtype D              config.model.dtype: float32 | bfloat16 [bfloat16]
#   --dry-run              print the commands instead of running them
#
# Multi-host: on a pod slice every worker runs the same command with
# --distributed=on; jax.distributed.initialize() finds the other workers from
# the TPU metadata, each worker reads its share of every batch, and all of them
# write the orbax checkpoints into the shared --workdir.
set -euo pipefail

DRY_RUN=0
NAME=${NAME:-minr}
ZONE=${ZONE:-us-central2-b}
PROJECT=${PROJECT:-}
ACCELERATOR=${ACCELERATOR:-v4-8}
VERSION=${VERSION:-}
SPOT=0
CONFIG=${CONFIG:-configs/transinr.py:celeba}
WORKDIR=${WORKDIR:-}
DATASET_PATH=${DATASET_PATH:-}
FSDP=${FSDP:-1}
DTYPE=${DTYPE:-bfloat16}
REMOTE_DIR=minr_jax
EXTRA=()

usage() { sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'; }

# Prints a command (single-quoting words with spaces or quotes), or runs it.
run() {
  if [[ $DRY_RUN == 1 ]]; then
    local out=() a
    for a in "$@"; do
      if [[ $(printf '%q' "$a") != "$a" ]]; then out+=("'${a//\'/\'\\\'\'}'"); else out+=("$a"); fi
    done
    echo "${out[*]}"
  else
    "$@"
  fi
}

COMMAND=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --dry-run) DRY_RUN=1 ;;
    --name) NAME=$2; shift ;;
    --zone) ZONE=$2; shift ;;
    --project) PROJECT=$2; shift ;;
    --accelerator) ACCELERATOR=$2; shift ;;
    --version) VERSION=$2; shift ;;
    --spot) SPOT=1 ;;
    --config) CONFIG=$2; shift ;;
    --workdir) WORKDIR=$2; shift ;;
    --dataset_path) DATASET_PATH=$2; shift ;;
    --fsdp) FSDP=$2; shift ;;
    --dtype) DTYPE=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    create|setup|train|up|restart|status|delete)
      [[ -z $COMMAND ]] || { echo "error: two commands: $COMMAND and $1" >&2; exit 2; }
      COMMAND=$1 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ -n $COMMAND ]] || { usage >&2; exit 2; }

# Hosts of the slice: v4-N and v5p-N count TensorCores (2 per chip, 4 chips per
# host); v5litepod-N counts chips (up to 8 on one host, else 4 per host).
chips=${ACCELERATOR##*-}
[[ $chips =~ ^[0-9]+$ ]] || { echo "error: --accelerator $ACCELERATOR: expected e.g. v4-8" >&2; exit 2; }
case $ACCELERATOR in
  v5litepod-*|v5e-*) HOSTS=$(( chips <= 8 ? 1 : chips / 4 )); DEFAULT_VERSION=v2-alpha-tpuv5-lite ;;
  v4-*|v5p-*) HOSTS=$(( chips <= 8 ? 1 : chips / 8 )); DEFAULT_VERSION=tpu-ubuntu2204-base ;;
  *) HOSTS=1; DEFAULT_VERSION=tpu-ubuntu2204-base ;;
esac
VERSION=${VERSION:-$DEFAULT_VERSION}
if [[ -z $WORKDIR ]]; then
  if [[ -n ${BUCKET:-} ]]; then WORKDIR=gs://$BUCKET/minr/$NAME
  elif [[ $HOSTS == 1 ]]; then WORKDIR=runs/$NAME
  else echo "error: a pod slice ($HOSTS hosts) needs a shared --workdir (gs://...) or BUCKET" >&2; exit 2
  fi
fi
DISTRIBUTED=$([[ $HOSTS -gt 1 ]] && echo on || echo off)

GC=(gcloud compute tpus tpu-vm)
LOC=(--zone="$ZONE")
[[ -n $PROJECT ]] && LOC+=(--project="$PROJECT")

train_command() {
  local args=(python -m minr_jax.main "--config=$CONFIG" "--workdir=$WORKDIR"
              "--distributed=$DISTRIBUTED" "--config.mesh.fsdp=$FSDP"
              "--config.model.dtype=$DTYPE")
  [[ -n $DATASET_PATH ]] && args+=("--config.dataset.path=$DATASET_PATH")
  args+=("${EXTRA[@]}")
  # nohup + pid file: survives the ssh session; `restart` stops exactly this run.
  echo "cd ~/$REMOTE_DIR && nohup ${args[*]} > ~/minr_train.log 2>&1 & echo \$! > ~/minr_train.pid"
}

do_create() {
  local cmd=("${GC[@]}" create "$NAME" "${LOC[@]}" --accelerator-type="$ACCELERATOR"
             --version="$VERSION")
  [[ $SPOT == 1 ]] && cmd+=(--spot)
  run "${cmd[@]}"
}

do_setup() {
  local root tarball
  root=$(cd "$(dirname "$0")/.." && pwd)
  tarball=${TMPDIR:-/tmp}/minr_jax_src.tar.gz
  run tar -czf "$tarball" -C "$root" --exclude=.git --exclude=runs --exclude='*.pyc' .
  run "${GC[@]}" scp "$tarball" "$NAME:~/minr_jax_src.tar.gz" "${LOC[@]}" --worker=all
  run "${GC[@]}" ssh "$NAME" "${LOC[@]}" --worker=all --command="mkdir -p ~/$REMOTE_DIR && tar -xzf ~/minr_jax_src.tar.gz -C ~/$REMOTE_DIR && cd ~/$REMOTE_DIR && pip install -q -e '.[tpu]'"
}

do_train() {
  run "${GC[@]}" ssh "$NAME" "${LOC[@]}" --worker=all --command="$(train_command)"
}

do_stop() {
  run "${GC[@]}" ssh "$NAME" "${LOC[@]}" --worker=all --command="if [ -f ~/minr_train.pid ]; then kill \$(cat ~/minr_train.pid) 2>/dev/null; rm -f ~/minr_train.pid; fi; true"
}

vm_state() {
  "${GC[@]}" describe "$NAME" "${LOC[@]}" --format='value(state)' 2>/dev/null || echo ABSENT
}

do_restart() {
  if [[ $DRY_RUN == 1 ]]; then
    echo "# $NAME: $HOSTS host(s); the state decides between the two paths below"
    run "${GC[@]}" describe "$NAME" "${LOC[@]}" --format='value(state)'
    echo "# if the state is PREEMPTED, TERMINATED or the VM is absent: recreate, set up"
    run "${GC[@]}" delete "$NAME" "${LOC[@]}" --quiet
    do_create
    do_setup
    echo "# if it is READY: stop a stale run"
    do_stop
    echo "# then train again; minr_jax.main resumes from the newest checkpoint in $WORKDIR"
    do_train
    return
  fi
  local state
  state=$(vm_state)
  echo "TPU VM $NAME: ${state:-ABSENT}"
  case $state in
    READY) do_stop ;;
    PREEMPTED|TERMINATED) run "${GC[@]}" delete "$NAME" "${LOC[@]}" --quiet; do_create; do_setup ;;
    ABSENT|"") do_create; do_setup ;;
    *) echo "error: TPU VM $NAME is $state; wait until it is READY or PREEMPTED" >&2; exit 1 ;;
  esac
  do_train
}

case $COMMAND in
  create) do_create ;;
  setup) do_setup ;;
  train) do_train ;;
  up) do_create; do_setup; do_train ;;
  restart) do_restart ;;
  status)
    run "${GC[@]}" describe "$NAME" "${LOC[@]}" --format='value(state)'
    run "${GC[@]}" ssh "$NAME" "${LOC[@]}" --worker=0 --command="tail -n 5 ~/minr_train.log" ;;
  delete) run "${GC[@]}" delete "$NAME" "${LOC[@]}" --quiet ;;
esac
