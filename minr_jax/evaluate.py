"""`minr-evaluate` / `python -m minr_jax.evaluate`: score checkpoints, read-only.

One --workdir alone: `runner.evaluate_workdir`; --evals, --config or several workdirs:
`runner.evaluate_checkpoints` (docs/evaluators.md).
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from minr_jax import cli
from minr_jax.config import ConfigError
from minr_jax.evaluation import runner

TABLE_ONLY = ("datasets", "max_images", "mask_strategy")


def evaluate(f) -> object:
  """Dispatches on the flags (module docstring)."""
  declared = f.evals is not None or f.config is not None or len(f.workdir) > 1
  if declared:
    given = [name for name in TABLE_ONLY if getattr(f, name) is not None]
    if given:
      raise ConfigError(
        f"--{given[0]} is for one --workdir without --evals / --config "
        "(declare datasets in the evals config instead)"
      )
    return runner.evaluate_checkpoints(f.workdir, f.config, f.evals, f.step, f.output)
  return runner.evaluate_workdir(
    f.workdir[0], f.datasets, f.step, f.max_images, f.mask_strategy, f.output
  )


def main() -> None:
  flags.DEFINE_multi_string(
    "workdir",
    None,
    "A training workdir (or <workdir>/checkpoints/<step>); repeatable.",
    required=True,
  )
  flags.DEFINE_string(
    "datasets",
    None,
    "Comma-separated name[:path] entries, e.g. "
    "'celeb_a,image_folder:/data/x'. Default: the run's evaluation datasets.",
  )
  cli.define_step()
  cli.define_eval_max_images()
  flags.DEFINE_string(
    "mask_strategy",
    None,
    "Evaluation mask strategy, e.g. random_exact (default: the run's config.eval_mask_strategy).",
  )
  flags.DEFINE_string(
    "evals", None, "Comma-separated names of declared evals to run (default: all declared)."
  )
  config_flags.DEFINE_config_file(
    "config",
    None,
    "A file declaring config.evals, e.g. configs/evals/sweep.py (default: each run's own).",
    lock_config=False,
  )
  flags.DEFINE_string(
    "output",
    None,
    "Folder for the results (default: <workdir>/eval/<step>, or "
    "~/.cache/minr_jax/results/... if the workdir is read-only).",
  )
  cli.run(lambda args: evaluate(flags.FLAGS))


if __name__ == "__main__":
  main()
