"""`minr-inpaint` / `python -m minr_jax.inpaint`: flags of `minr_jax.inpaint.run`."""

from __future__ import annotations

from absl import flags

from minr_jax import cli, inpaint


def main() -> None:
  flags.DEFINE_string(
    "workdir",
    None,
    "A training workdir (or <workdir>/checkpoints/<step>), e.g. pretrained/celeba64.",
    required=True,
  )
  flags.DEFINE_string(
    "images", None, "An image file or a folder of images (searched recursively).", required=True
  )
  flags.DEFINE_string(
    "mask",
    None,
    "FILE.png (white = hidden), a box x0,y0,x1,y1 (pixels, "
    "or fractions like 0.25), or STRATEGY:RATIO[:seed=N][:grid=N], e.g. "
    "random:0.75:seed=0.",
    required=True,
  )
  flags.DEFINE_string("output", None, "Folder for the PNGs and results.json.", required=True)
  flags.DEFINE_integer(
    "tile",
    0,
    "0: resize the whole photo to the model's resolution; N: "
    "also fill from overlapping N x N-pixel windows.",
  )
  flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).")
  flags.DEFINE_integer(
    "batch_size", None, "Images per device call (default: the run's eval_batch_size)."
  )
  flags.DEFINE_integer("max_images", None, "Inpaint at most this many images of a folder.")
  f = flags.FLAGS
  cli.run(
    lambda args: inpaint.run(
      f.workdir, f.images, f.mask, f.output, f.tile, f.step, f.batch_size, max_images=f.max_images
    )
  )


if __name__ == "__main__":
  main()
