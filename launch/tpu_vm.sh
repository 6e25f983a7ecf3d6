#!/usr/bin/env bash
# Train minr_jax on a Cloud TPU VM (v4 / v5e / v5p / v6e), single host or pod slice.
#
#   launch/tpu_vm.sh [--dry-run] COMMAND [options] [-- extra minr_jax.main flags]
#
# Commands:
#   create    create the TPU VM (add --spot for a Spot, preemptible one)
#   setup     ship the committed tree (`git archive HEAD`) to every worker, create a
#             Python 3.11 venv there with uv (~/minr_venv) and install '.[tpu]' into it
#   train     start the run on all workers (--worker=all) in the background with the
#             venv's python and JAX_PLATFORMS=tpu; the log is ~/minr_train.log on each
#   up        create + setup + train
#   restart   after a preemption or crash: recreate the VM if it is gone, PREEMPTED or
#             TERMINATED (then setup again), stop a stale run, and start the same
#             training command again: minr_jax.main resumes from the newest checkpoint
#             in --workdir. A recreated VM has a new disk, so that needs a gs:// workdir.
#   status    the VM's state and the tail of worker 0's log
#   delete    delete the VM
#
# Options (defaults in brackets; each also reads the environment variable in caps):
#   --name NAME            TPU VM name [minr]
#   --zone ZONE            [us-central2-b]
#   --project PROJECT      [gcloud's default]
#   --accelerator TYPE     v4-8 | v4-32 | v5litepod-8 | v5p-8 | v6e-8 ... [v4-8]
#   --version RUNTIME      TPU software version [per generation: v4 tpu-ubuntu2204-base,
#                          v5e v2-alpha-tpuv5-lite, v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e]
#   --python VERSION       Python of the workers' venv, 3.11 or newer [3.11]
#   --spot                 create a Spot (preemptible) VM; needs a gs:// --workdir
#   --config SPEC          [configs/transinr.py:celeba]
#   --workdir DIR          checkpoints and logs; a pod slice or a Spot VM needs
#                          gs://BUCKET/... [gs://$BUCKET/minr/$NAME, else ~/minr_runs/NAME]
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
PYTHON_VERSION=${PYTHON_VERSION:-3.11}
SPOT=0
CONFIG=${CONFIG:-configs/transinr.py:celeba}
WORKDIR=${WORKDIR:-}
DATASET_PATH=${DATASET_PATH:-}
FSDP=${FSDP:-1}
DTYPE=${DTYPE:-bfloat16}
REMOTE_DIR=minr_jax   # the code, replaced by every setup (under ~ on each worker)
REMOTE_VENV=minr_venv # the Python environment the run uses (under ~ on each worker)
EXTRA=()

usage() { sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "error: $*" >&2; exit 2; }

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
    --python) PYTHON_VERSION=$2; shift ;;
    --spot) SPOT=1 ;;
    --config) CONFIG=$2; shift ;;
    --workdir) WORKDIR=$2; shift ;;
    --dataset_path) DATASET_PATH=$2; shift ;;
    --fsdp) FSDP=$2; shift ;;
    --dtype) DTYPE=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    create|setup|train|up|restart|status|delete)
      [[ -z $COMMAND ]] || die "two commands: $COMMAND and $1"
      COMMAND=$1 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
[[ -n $COMMAND ]] || { usage >&2; exit 2; }
[[ $PYTHON_VERSION =~ ^3\.(1[1-9]|[2-9][0-9])$ ]] \
  || die "--python $PYTHON_VERSION: minr_jax needs Python 3.11 or newer (e.g. 3.11, 3.12)"

# Hosts of the slice and the runtime (software) version of each generation. The
# versions are Google Cloud's "TPU software versions" page (cloud.google.com/tpu/docs/runtimes)
# for JAX: v6e v2-alpha-tpuv6e, v5p v2-alpha-tpuv5, v5e v2-alpha-tpuv5-lite, v4 and older
# tpu-ubuntu2204-base. The venv does not depend on the image's Python (Ubuntu 22.04's is
# 3.10): uv brings its own 3.11 when the image has none.
# v2/v3/v4/v5p-N count TensorCores (8 per host); v5litepod-N and v6e-N count chips
# (up to 8 on one host; a multi-host slice has 4 chips per host).
chips=${ACCELERATOR##*-}
[[ $chips =~ ^[0-9]+$ ]] || die "--accelerator $ACCELERATOR: expected e.g. v4-8"
case $ACCELERATOR in
  v2-*|v3-*|v4-*) HOSTS=$(( chips <= 8 ? 1 : chips / 8 )); DEFAULT_VERSION=tpu-ubuntu2204-base ;;
  v5p-*) HOSTS=$(( chips <= 8 ? 1 : chips / 8 )); DEFAULT_VERSION=v2-alpha-tpuv5 ;;
  v5litepod-*|v5e-*) HOSTS=$(( chips <= 8 ? 1 : chips / 4 )); DEFAULT_VERSION=v2-alpha-tpuv5-lite ;;
  v6e-*) HOSTS=$(( chips <= 8 ? 1 : chips / 4 )); DEFAULT_VERSION=v2-alpha-tpuv6e ;;
  *) die "--accelerator $ACCELERATOR: unknown TPU generation (v4-N, v5litepod-N, v5p-N, v6e-N)" ;;
esac
VERSION=${VERSION:-$DEFAULT_VERSION}
if [[ -z $WORKDIR ]]; then
  if [[ -n ${BUCKET:-} ]]; then WORKDIR=gs://$BUCKET/minr/$NAME
  elif [[ $HOSTS == 1 ]]; then WORKDIR="~/minr_runs/$NAME"
  else die "a pod slice ($HOSTS hosts) needs a shared --workdir (gs://...) or BUCKET"
  fi
fi
if [[ $SPOT == 1 && $WORKDIR != gs://* ]] && [[ $COMMAND =~ ^(create|up|train|restart)$ ]]; then
  die "--spot needs a gs:// --workdir (or BUCKET): a preempted VM loses its disk, $WORKDIR with it"
fi
DISTRIBUTED=$([[ $HOSTS -gt 1 ]] && echo on || echo off)
ROOT=$(cd "$(dirname "$0")/.." && pwd)

GC=(gcloud compute tpus tpu-vm)
LOC=(--zone="$ZONE")
[[ -n $PROJECT ]] && LOC+=(--project="$PROJECT")

# setup ships `git archive HEAD`: the committed tree, never the work tree's venvs or runs.
CHECKED=0
check_checkout() {
  [[ $CHECKED == 1 ]] && return
  CHECKED=1
  git -C "$ROOT" rev-parse --is-inside-work-tree > /dev/null 2>&1 \
    || die "$ROOT is not a git checkout: setup ships the committed tree (git archive HEAD)"
  if [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    echo "note: uncommitted changes in $ROOT are not shipped (setup sends git archive HEAD)" >&2
  fi
}

# Shell-quotes one word for the remote command line; a leading ~/ stays the worker's $HOME.
remote_word() {
  local prefix="" value=$1
  [[ $1 == *=* ]] && { prefix="$(printf '%q' "${1%%=*}")="; value=${1#*=}; }
  if [[ $value == '~/'* ]]; then echo "$prefix\$HOME/$(printf '%q' "${value#'~/'}")"
  else echo "$prefix$(printf '%q' "$value")"; fi
}

train_command() {
  local args=("--config=$CONFIG" "--workdir=$WORKDIR" "--distributed=$DISTRIBUTED"
              "--config.mesh.fsdp=$FSDP" "--config.model.dtype=$DTYPE") words=() a
  [[ -n $DATASET_PATH ]] && args+=("--config.dataset.path=$DATASET_PATH")
  args+=("${EXTRA[@]}")
  for a in "${args[@]}"; do words+=("$(remote_word "$a")"); done
  # JAX_PLATFORMS=tpu: a broken TPU install stops here instead of training on the CPU.
  # nohup with every stream redirected: the run outlives the ssh session and holds none of
  # its streams; the pid file is the python process itself, so `restart` stops exactly it.
  echo "cd ~/$REMOTE_DIR || exit 1; JAX_PLATFORMS=tpu nohup ~/$REMOTE_VENV/bin/python" \
       "-m minr_jax.main ${words[*]} < /dev/null >> ~/minr_train.log 2>&1 & echo \$! > ~/minr_train.pid"
}

do_create() {
  local cmd=("${GC[@]}" create "$NAME" "${LOC[@]}" --accelerator-type="$ACCELERATOR"
             --version="$VERSION")
  [[ $SPOT == 1 ]] && cmd+=(--spot)
  run "${cmd[@]}"
}

do_setup() {
  local tarball=${TMPDIR:-/tmp}/minr_jax_src.tar.gz
  check_checkout
  run git -C "$ROOT" archive --format=tar.gz -o "$tarball" HEAD
  run "${GC[@]}" scp "$tarball" "$NAME:~/minr_jax_src.tar.gz" "${LOC[@]}" --worker=all
  # uv (from the package index) brings a Python 3.11+ of its own when the image has none.
  # PIP_BREAK_SYSTEM_PACKAGES: images whose system Python is marked externally managed.
  local steps=(
    "PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --user --upgrade uv"
    "python3 -m uv venv -q --clear --python $PYTHON_VERSION ~/$REMOTE_VENV"
    "rm -rf ~/$REMOTE_DIR && mkdir -p ~/$REMOTE_DIR"
    "tar -xzf ~/minr_jax_src.tar.gz -C ~/$REMOTE_DIR"
    "cd ~/$REMOTE_DIR"
    "python3 -m uv pip install -q --python ~/$REMOTE_VENV/bin/python -e '.[tpu]'"
  )
  local joined
  joined=$(printf ' && %s' "${steps[@]}")
  run "${GC[@]}" ssh "$NAME" "${LOC[@]}" --worker=all --command="${joined:4}"
}

do_train() {
  run "${GC[@]}" ssh "$NAME" "${LOC[@]}" --worker=all --command="$(train_command)"
}

# SIGTERM, then wait (up to 10 min) while the run saves its checkpoint and exits.
do_stop() {
  run "${GC[@]}" ssh "$NAME" "${LOC[@]}" --worker=all --command='if [ -f ~/minr_train.pid ]; then pid=$(cat ~/minr_train.pid); kill $pid 2>/dev/null; for i in $(seq 600); do kill -0 $pid 2>/dev/null || break; sleep 1; done; rm -f ~/minr_train.pid; fi; true'
}

vm_state() {
  "${GC[@]}" describe "$NAME" "${LOC[@]}" --format='value(state)' 2>/dev/null || echo ABSENT
}

gone_note() {
  echo "the VM's disk, and the local workdir $WORKDIR with it, is gone: nothing to resume" \
       "(train into a gs:// --workdir, or start over with up)"
}

do_restart() {
  if [[ $DRY_RUN == 1 ]]; then
    echo "# $NAME: $HOSTS host(s); the VM's state decides between the paths below"
    run "${GC[@]}" describe "$NAME" "${LOC[@]}" --format='value(state)'
    if [[ $WORKDIR == gs://* ]]; then
      echo "# if it is PREEMPTED, TERMINATED or absent: recreate it and set it up again"
      run "${GC[@]}" delete "$NAME" "${LOC[@]}" --quiet
      do_create
      do_setup
    else
      echo "# if it is PREEMPTED, TERMINATED or absent: stop with an error, $(gone_note)"
    fi
    echo "# if it is READY: stop a stale run"
    do_stop
    echo "# then the training command of up again; it resumes from the newest checkpoint in $WORKDIR"
    do_train
    return
  fi
  check_checkout
  local state
  state=$(vm_state)
  echo "TPU VM $NAME: ${state:-ABSENT}"
  case $state in
    READY) do_stop ;;
    PREEMPTED|TERMINATED|ABSENT|"")
      [[ $WORKDIR == gs://* ]] || die "TPU VM $NAME is ${state:-ABSENT}: $(gone_note)"
      [[ $state == PREEMPTED || $state == TERMINATED ]] && run "${GC[@]}" delete "$NAME" "${LOC[@]}" --quiet
      do_create; do_setup ;;
    *) echo "error: TPU VM $NAME is $state; wait until it is READY or PREEMPTED" >&2; exit 1 ;;
  esac
  do_train
}

case $COMMAND in
  create) do_create ;;
  setup) do_setup ;;
  train) do_train ;;
  up) check_checkout; do_create; do_setup; do_train ;;
  restart) do_restart ;;
  status)
    run "${GC[@]}" describe "$NAME" "${LOC[@]}" --format='value(state)'
    run "${GC[@]}" ssh "$NAME" "${LOC[@]}" --worker=0 --command="tail -n 5 ~/minr_train.log" ;;
  delete) run "${GC[@]}" delete "$NAME" "${LOC[@]}" --quiet ;;
esac
