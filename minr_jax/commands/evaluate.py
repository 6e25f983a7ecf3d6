"""`minr-evaluate` / `python -m minr_jax.evaluate`.

Flags of `minr_jax.evaluate.evaluate_workdir` (an alias onto eval_only).
"""

from __future__ import annotations

from absl import flags

from minr_jax import cli, evaluate


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
  flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).")
  flags.DEFINE_integer("max_images", None, "Evaluate at most this many images per dataset.")
  flags.DEFINE_string(
    "mask_strategy",
    None,
    "Evaluation mask strategy, e.g. random_exact (default: the run's config.eval_mask_strategy).",
  )
  flags.DEFINE_string(
    "output",
    None,
    "Folder for the results (default: <workdir>/eval/"
    "<step>, or ~/.cache/minr_jax/results/... if the workdir is read-only).",
  )
  f = flags.FLAGS
  cli.run(
    lambda args: evaluate.evaluate_workdir(
      f.workdir, f.datasets, f.step, f.max_images, f.mask_strategy, f.output
    )
  )


if __name__ == "__main__":
  main()
