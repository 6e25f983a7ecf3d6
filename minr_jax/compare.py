"""`minr-compare` / `python -m minr_jax.compare`.

Several checkpoints on one set of images and masks: `evaluation.compare.compare_workdirs`.
"""

from __future__ import annotations

from absl import flags

from minr_jax import cli
from minr_jax.evaluation import compare


def main() -> None:
  flags.DEFINE_string(
    "datasets",
    None,
    "Comma-separated name[:path] entries (default: the first workdir's evaluation datasets).",
  )
  flags.DEFINE_string("out", "compare", "Output directory.")
  flags.DEFINE_integer(
    "step",
    None,
    "Checkpoint step of every workdir (default: each one's "
    "newest; or give <workdir>/checkpoints/<step> directories).",
    lower_bound=0,
  )
  flags.DEFINE_integer(
    "max_images",
    None,
    "At most this many images per dataset; 0 = all, as config.dataset.eval_max_images "
    "(default: the first workdir's).",
    lower_bound=0,
  )
  flags.DEFINE_float(
    "mask_ratio",
    None,
    "Share of patches hidden, in [0, 1) (default: the first workdir's mask_ratio).",
    lower_bound=0.0,
  )
  cli.exclusive("mask_ratio", high=1.0)
  flags.DEFINE_integer(
    "mask_seed", None, "Mask seed (default: the first workdir's eval_mask_seed).", lower_bound=0
  )
  flags.DEFINE_integer("num_images", 6, "Images per dataset in the figures (>= 1).", lower_bound=1)
  flags.DEFINE_enum(
    "figure",
    "pasted",
    list(compare.FIGURE_KINDS),
    "What the figures show of "
    "each model: its prediction with the visible pixels pasted back, or raw.",
  )
  f = flags.FLAGS
  cli.run(
    lambda workdirs: compare.compare_workdirs(
      workdirs,
      f.datasets,
      f.out,
      max_images=f.max_images,
      mask_ratio=f.mask_ratio,
      seed=f.mask_seed,
      num_images=f.num_images,
      figure=f.figure,
      step=f.step,
    ),
    positional=True,
  )


if __name__ == "__main__":
  main()
