"""`minr-eval` / `python -m minr_jax.eval_only`.

The one evaluation command: `minr_jax.eval_only.evaluate_checkpoints`.
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from minr_jax import cli, eval_only


def main() -> None:
  flags.DEFINE_multi_string(
    "workdir",
    None,
    "A training workdir (or <workdir>/checkpoints/<step>); repeatable.",
    required=True,
  )
  flags.DEFINE_string("evals", None, "Comma-separated names of declared evals (default: all).")
  config_flags.DEFINE_config_file(
    "config", None, "A file declaring config.evals (default: each run's own).", lock_config=False
  )
  flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).")
  flags.DEFINE_string("output", None, "Folder for the results (default: <workdir>/eval/<step>).")
  f = flags.FLAGS
  cli.run(
    lambda args: eval_only.evaluate_checkpoints(f.workdir, f.config, f.evals, f.step, f.output)
  )


if __name__ == "__main__":
  main()
