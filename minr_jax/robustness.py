"""`minr-robustness` / `python -m minr_jax.robustness`.

The mask strategy x ratio sweep of one checkpoint: `evaluation.robustness.run_sweep`.
"""

from __future__ import annotations

from absl import flags

from minr_jax import cli, masking
from minr_jax.evaluation import robustness


def main() -> None:
  flags.DEFINE_string(
    "workdir", None, "A training workdir (or <workdir>/checkpoints/<step>).", required=True
  )
  flags.DEFINE_string(
    "datasets",
    None,
    "Comma-separated name[:path] entries, e.g. "
    "'celeb_a,image_folder:/data/x'. Default: the run's evaluation datasets.",
  )
  flags.DEFINE_string(
    "strategies",
    None,
    "Comma-separated mask strategies, of "
    f"{','.join(masking.STRATEGIES)} (default: all the model supports).",
  )
  flags.DEFINE_string(
    "ratios",
    ",".join(f"{r:g}" for r in robustness.DEFAULT_RATIOS),
    "Comma-separated mask ratios in [0, 1).",
  )
  cli.define_step()
  cli.define_eval_max_images()
  flags.DEFINE_string(
    "output",
    None,
    "Folder for the results (default: <workdir>/robustness/"
    "<step>, or ~/.cache/minr_jax/results/... if the workdir is read-only).",
  )
  f = flags.FLAGS
  cli.run(
    lambda args: robustness.run_sweep(
      f.workdir, f.datasets, f.strategies, f.ratios, f.step, f.max_images, f.output
    )
  )


if __name__ == "__main__":
  main()
