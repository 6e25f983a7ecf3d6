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
# log is the console; the others log to WORKDIR/process_<i>.log.
# Running the same command again resumes from the newest checkpoint.
#
# Options (defaults in brackets):
#   --gpus LIST         CUDA_VISIBLE_DEVICES, e.g. 0,1,2,3 [all]
#   --config SPEC       [configs/transinr.py]
#   --workdir DIR       [runs/gpu]
#   --dataset_path DIR  config.dataset.path
#   --fsdp N            config.mesh.fsdp [1]
#   --dtype D           config.model.dtype: float32 | bfloat16 [bfloat16]
#   --mode M            single | per_gpu [single]
#   --port P            coordinator port for --mode=per_gpu [12355]
#   --install           first `pip install -e '.[cuda]'`
# Relative paths are relative to the repository root (the script cd's there).
#   --dry-run           print the commands instead of running them
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
EXTRA=()

usage() { sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; }

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
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ $MODE == single || $MODE == per_gpu ]] || { echo "error: --mode must be single or per_gpu" >&2; exit 2; }

cd "$(dirname "$0")/.."
[[ $INSTALL == 1 ]] && run pip install -q -e '.[cuda]'

ARGS=(python -m minr_jax.main "--config=$CONFIG" "--workdir=$WORKDIR"
      "--config.mesh.fsdp=$FSDP" "--config.model.dtype=$DTYPE")
[[ -n $DATASET_PATH ]] && ARGS+=("--config.dataset.path=$DATASET_PATH")
ARGS+=("${EXTRA[@]}")

if [[ $MODE == single ]]; then
  ENV=()
  [[ -n $GPUS ]] && ENV=(env "CUDA_VISIBLE_DEVICES=$GPUS")
  run "${ENV[@]}" "${ARGS[@]}"
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
run mkdir -p "$WORKDIR"
PIDS=()
for i in "${!IDS[@]}"; do
  cmd=(env "CUDA_VISIBLE_DEVICES=${IDS[$i]}" "${ARGS[@]}"
       "--coordinator_address=127.0.0.1:$PORT" "--num_processes=$N" "--process_id=$i")
  if [[ $DRY_RUN == 1 ]]; then
    if [[ $i == 0 ]]; then echo "$(run "${cmd[@]}") &"
    else echo "$(run "${cmd[@]}") > $WORKDIR/process_$i.log 2>&1 &"; fi
  elif [[ $i == 0 ]]; then
    "${cmd[@]}" & PIDS+=($!)
  else
    "${cmd[@]}" > "$WORKDIR/process_$i.log" 2>&1 & PIDS+=($!)
  fi
done
[[ $DRY_RUN == 1 ]] && { echo wait; exit 0; }
status=0
for pid in "${PIDS[@]}"; do wait "$pid" || status=$?; done
exit $status
