#!/usr/bin/env bash
# Train minr_jax on the GPUs of one machine.
#
#   launch/multi_gpu.sh [--dry-run] [options] [-- extra minr_jax.main flags]
#
# Default (--mode=single): one process drives every visible GPU; the mesh's
# data axis spans them (config.mesh.data=-1) and --fsdp N splits the large
# parameters and Adam moments over N of them.
# --mode=per_gpu: one process per GPU on localhost, joined through
# jax.distributed (--coordinator_address=127.0.0.1:PORT --num_processes=N
# --process_id=i); the same code path as a multi-node GPU cluster. Process 0's
# log is the console; the others log to WORKDIR/process_<i>.log (to
# runs/logs/ when WORKDIR is a gs:// URL).
# Running the same command again resumes from the newest checkpoint.
#
# Options (defaults in brackets):
#   --gpus LIST         CUDA_VISIBLE_DEVICES, e.g. 0,1,2,3 [all]
#   --config SPEC       [configs/transinr.py]
#   --workdir DIR       [runs/gpu]; gs://BUCKET/... works too (installs the gcs extra)
#   --dataset_path DIR  config.dataset.path
#   --fsdp N            config.mesh.fsdp [1]
#   --dtype D           config.model.dtype: float32 | bfloat16 [bfloat16]
#   --mode M            single | per_gpu [single]
#   --port P            coordinator port for --mode=per_gpu [12355]
#   --venv DIR          the Python environment that runs minr_jax [.venv]
#   --install           first create DIR with uv (Python 3.11) and install '.[cuda]' into it
#   --cuda V            12 | 13: the CUDA of the jax plugin --install picks [12]
#   --python VERSION    Python of the venv --install creates, 3.11 or newer [3.11]
#   --dry-run           print the commands instead of running them
# Relative paths are relative to the repository root (the script cd's there).
# Every process runs with JAX_PLATFORMS=cuda: a broken GPU install stops with an
# error instead of training on the CPU.
set -euo pipefail

DRY_RUN=0
GPUS=${GPUS:-}
CONFIG=${CONFIG:-configs/transinr.py}
WORKDIR=${WORKDIR:-runs/gpu}
DATASET_PATH=${DATASET_PATH:-}
FSDP=${FSDP:-1}
DTYPE=${DTYPE:-bfloat16}
MODE=single
PORT=${PORT:-12355}
INSTALL=0
VENV=${VENV:-.venv}
CUDA=${CUDA:-12}
PYTHON_VERSION=${PYTHON_VERSION:-3.11}
EXTRA=()

usage() { sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "error: $*" >&2; exit 2; }

run() {  # print (dry run) or run a command
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

while [[ $# -gt 0 ]]; do
  case $1 in
    --dry-run) DRY_RUN=1 ;;
    --gpus) GPUS=$2; shift ;;
    --config) CONFIG=$2; shift ;;
    --workdir) WORKDIR=$2; shift ;;
    --dataset_path) DATASET_PATH=$2; shift ;;
    --fsdp) FSDP=$2; shift ;;
    --dtype) DTYPE=$2; shift ;;
    --mode) MODE=$2; shift ;;
    --port) PORT=$2; shift ;;
    --install) INSTALL=1 ;;
    --venv) VENV=$2; shift ;;
    --cuda) CUDA=$2; shift ;;
    --python) PYTHON_VERSION=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
[[ $MODE == single || $MODE == per_gpu ]] || die "--mode must be single or per_gpu"
[[ $CUDA == 12 || $CUDA == 13 ]] || die "--cuda must be 12 or 13"
[[ $PYTHON_VERSION =~ ^3\.(1[1-9]|[2-9][0-9])$ ]] \
  || die "--python $PYTHON_VERSION: minr_jax needs Python 3.11 or newer (e.g. 3.11, 3.12)"

cd "$(dirname "$0")/.."
PY=$VENV/bin/python
if [[ $INSTALL == 1 ]]; then
  extras=$([[ $CUDA == 13 ]] && echo cuda13 || echo cuda)
  [[ $WORKDIR == gs://* ]] && extras+=",gcs"
  # uv (from the package index) brings a Python 3.11+ of its own when the machine has none.
  if command -v uv > /dev/null; then UV=(uv)
  else run python3 -m pip install -q --user --upgrade uv; UV=(python3 -m uv); fi
  run "${UV[@]}" venv -q --clear --python "$PYTHON_VERSION" "$VENV"
  run "${UV[@]}" pip install -q --python "$PY" -e ".[$extras]"
fi
if [[ $DRY_RUN == 0 ]]; then
  [[ -x $PY ]] || die "no $PY: run once with --install, or pass --venv DIR of an environment with minr_jax installed"
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$PY is Python $("$PY" -c 'import platform; print(platform.python_version())'); minr_jax needs 3.11 or newer"
fi

ARGS=("$PY" -m minr_jax.main "--config=$CONFIG" "--workdir=$WORKDIR"
      "--config.mesh.fsdp=$FSDP" "--config.model.dtype=$DTYPE")
[[ -n $DATASET_PATH ]] && ARGS+=("--config.dataset.path=$DATASET_PATH")
ARGS+=("${EXTRA[@]}")

if [[ $MODE == single ]]; then
  GPU_ENV=()
  [[ -n $GPUS ]] && GPU_ENV=("CUDA_VISIBLE_DEVICES=$GPUS")
  run env "${GPU_ENV[@]}" JAX_PLATFORMS=cuda "${ARGS[@]}"
  exit 0
fi

# per_gpu: one process per GPU, each seeing only its own GPU.
if [[ -n $GPUS ]]; then
  IFS=, read -r -a IDS <<< "$GPUS"
elif [[ $DRY_RUN == 1 ]] || ! command -v nvidia-smi > /dev/null; then
  IDS=(0 1)  # nothing to ask: show the commands for two GPUs
  [[ $DRY_RUN == 1 ]] || { echo "error: no nvidia-smi; pass --gpus" >&2; exit 2; }
else
  mapfile -t IDS < <(nvidia-smi --query-gpu=index --format=csv,noheader)
fi
N=${#IDS[@]}
LOG_DIR=$([[ $WORKDIR == gs://* ]] && echo runs/logs || echo "$WORKDIR")
run mkdir -p "$LOG_DIR"
PIDS=()
for i in "${!IDS[@]}"; do
  cmd=(env "CUDA_VISIBLE_DEVICES=${IDS[$i]}" JAX_PLATFORMS=cuda "${ARGS[@]}"
       "--coordinator_address=127.0.0.1:$PORT" "--num_processes=$N" "--process_id=$i")
  if [[ $DRY_RUN == 1 ]]; then
    if [[ $i == 0 ]]; then echo "$(run "${cmd[@]}") &"
    else echo "$(run "${cmd[@]}") > $LOG_DIR/process_$i.log 2>&1 &"; fi
  elif [[ $i == 0 ]]; then
    "${cmd[@]}" & PIDS+=($!)
  else
    "${cmd[@]}" > "$LOG_DIR/process_$i.log" 2>&1 & PIDS+=($!)
  fi
done
[[ $DRY_RUN == 1 ]] && { echo wait; exit 0; }
status=0
for pid in "${PIDS[@]}"; do wait "$pid" || status=$?; done
exit $status
