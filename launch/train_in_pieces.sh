#!/usr/bin/env bash
# Train in pieces of at most MINUTES: each piece ends with SIGTERM (the run saves and
# exits), the next resumes from the workdir, until checkpoints/STEPS exists. For shared
# or preemptible machines where a run must not hold the machine for hours at a time.
#
#   launch/train_in_pieces.sh MINUTES STEPS -- python -m minr_jax.main --config=... --workdir=W ...
#
# The workdir is read from the command's --workdir; progress goes to stdout.
set -u
if [ $# -lt 4 ] || [ "$3" != "--" ]; then
  echo "usage: $0 MINUTES STEPS -- python -m minr_jax.main --config=... --workdir=DIR ..." >&2
  exit 2
fi
minutes=$1
steps=$2
shift 3
workdir=""
for arg in "$@"; do
  case $arg in --workdir=*) workdir=${arg#--workdir=} ;; esac
done
if [ -z "$workdir" ]; then
  echo "error: the command needs --workdir=DIR" >&2
  exit 2
fi
while [ ! -d "$workdir/checkpoints/$steps" ]; do
  echo "=== piece start $(date -u +%FT%TZ)"
  timeout -s TERM -k 600 "${minutes}m" "$@"
  rc=$?
  echo "=== piece end, exit status $rc, $(date -u +%FT%TZ)"
  # 124 / 143: the piece's time ran out (SIGTERM saved); anything else is an error.
  if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $rc -ne 143 ]; then
    exit $rc
  fi
done
echo "=== done: $workdir/checkpoints/$steps"
