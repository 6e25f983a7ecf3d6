"""`minr-bench` / `python -m minr_jax.bench`.

`training.bench.run_benchmark`: step time, FLOPs and MFU of a config.
"""

from __future__ import annotations

import json

from absl import flags
from ml_collections import config_flags

from minr_jax import cli
from minr_jax.training import bench


def main() -> None:
  config = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/transinr.py.", lock_config=True
  )
  steps = flags.DEFINE_integer("steps", 5, "Timed steps (after the warm-up), >= 1.", lower_bound=1)
  warmup = flags.DEFINE_integer("warmup", 1, "Untimed steps after compiling.", lower_bound=0)
  eval_steps = flags.DEFINE_integer(
    "eval_steps", None, "Timed eval steps, >= 1 (default --steps).", lower_bound=1
  )
  peak = flags.DEFINE_float(
    "peak_flops",
    None,
    "Peak FLOP/s of all devices together, "
    "for the MFU, > 0 (e.g. 190e9 for a 2-core AVX-512 CPU in fp32).",
    lower_bound=0.0,
  )
  cli.exclusive("peak_flops", low=0.0)
  pipeline = flags.DEFINE_integer(
    "pipeline_steps",
    0,
    "Also run this many steps on the config's real data, as the training loop does (0: none).",
    lower_bound=0,
  )

  def body(args: list[str]) -> None:
    del args
    out = bench.run_benchmark(
      config.value, steps.value, warmup.value, peak.value, eval_steps.value, pipeline.value
    )
    print(json.dumps(out), flush=True)

  flags.mark_flag_as_required("config")
  cli.run(body)


if __name__ == "__main__":
  main()
