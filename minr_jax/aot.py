"""`minr-aot` / `python -m minr_jax.aot`.

`training.aot.aot_main`: compile the steps for a TPU topology ahead of time.
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from minr_jax import cli
from minr_jax.training import aot


def main() -> None:
  config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/transinr.py.", lock_config=True
  )
  flags.DEFINE_string(
    "topology",
    None,
    "A Cloud TPU accelerator type (v4-8, v5litepod-8, "
    "v5p-8, v6e-8, ...) or a libtpu topology name (v4:2x2x1, v5e:2x4).",
    required=True,
  )
  flags.DEFINE_list("steps", list(aot.STEP_NAMES), "Steps to compile: train_step, eval_step.")
  flags.mark_flag_as_required("config")
  f = flags.FLAGS
  cli.run(lambda args: aot.aot_main(f.config, f.topology, f.steps))


if __name__ == "__main__":
  main()
