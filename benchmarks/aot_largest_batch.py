r"""The largest global batch whose train step compiles for a TPU slice (libtpu, no TPU).

  ~/venv-tpu/bin/python benchmarks/aot_largest_batch.py --config=configs/ginr.py \
      --topology=v4-8 [--start=2048] [--granule=16]

Compiles the train step alone (minr_jax.aot.compile_report, the training
loop's own step and shardings) at one batch size after another, in one
process, and prints a JSON line per compile: batch, fits, total GiB per
device, GFLOP per image, compile seconds. A batch too big for the chip fails
in libtpu's memory check (RESOURCE_EXHAUSTED) within seconds, while one that
fits takes minutes, so the search walks down from a batch that is too big:

1. coarse: from --start, down by --factor (0.8; rounded to --granule)
   until a batch fits (if --start itself fits, it doubles up until one does
   not);
2. fine: from the last failure down to that fit in --fine steps (4;
   multiples of --granule, at least one granule each) until a batch fits;
   --fine=0 skips it (one fitting compile in all).

The last line is `{"largest": N, "first_fail": M, ...}`: N fits, M does not
(M - N is at most 1/--fine of the coarse gap). XLA's buffer use is not
monotone in the batch near the limit (it recomputes activations when memory
runs short), so N is the largest batch found by this walk;
docs/tpu_compile.md gives the measured table.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from minr_jax.config import load_file as load_config


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", required=True)
  p.add_argument("--topology", required=True)
  p.add_argument(
    "--start", type=int, default=0, help="first batch tried (0: 64x the config's batch)"
  )
  p.add_argument("--granule", type=int, default=16)
  p.add_argument("--factor", type=float, default=0.8, help="coarse step down (0 < f < 1)")
  p.add_argument(
    "--fine",
    type=int,
    default=4,
    help="fine steps between the coarse fit and failure (0: coarse only)",
  )
  args = p.parse_args()

  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  import jax

  jax.config.update("jax_platforms", "cpu")
  from minr_jax.training import aot

  base = load_config(args.config)
  g = args.granule
  results: dict[int, dict] = {}

  def probe(batch: int) -> bool:
    c = base.copy_and_resolve_references()
    c.batch_size = batch
    t0 = time.perf_counter()
    r = aot.compile_report(c, args.topology, log=lambda s: None, which=("train_step",))
    step = r["train_step"]
    fits = bool(step.get("fits"))
    line = dict(
      config=args.config,
      topology=r["topology"],
      batch=batch,
      fits=fits,
      seconds=round(time.perf_counter() - t0, 1),
      compile_s=step["compile_s"],
    )
    if "total_bytes" in step:
      line.update(
        gib_per_device=round(step["total_bytes"] / 2**30, 2),
        gflop_per_image=round(step["flops_per_device"] * r["devices"] / batch / 1e9, 2),
      )
    print(json.dumps(line), flush=True)
    results[batch] = line
    return fits

  start = args.start or max(g, 64 * base.batch_size // g * g)
  b = start
  if probe(b):  # the start fits: double up to a failure
    while probe(b * 2):
      b *= 2
    fail = b * 2
  else:
    fail = b
    while True:
      b = max(g, int(b * args.factor) // g * g)
      if probe(b):
        break
      fail = b
      if b == g:
        print(json.dumps(dict(largest=None, note=f"batch {g} does not fit")))
        return
  # fine: fail is the smallest known failure, b the largest known fit.
  fine = max(g, (fail - b) // max(args.fine, 1) // g * g)
  for cand in range(fail - fine, b, -fine) if args.fine else ():
    if probe(cand):
      b = cand
      break
    fail = cand
  print(
    json.dumps(
      dict(
        config=args.config,
        topology=args.topology,
        largest=b,
        first_fail=fail,
        **{k: results[b].get(k) for k in ("gib_per_device", "gflop_per_image", "compile_s")},
      )
    ),
    flush=True,
  )


if __name__ == "__main__":
  main()
