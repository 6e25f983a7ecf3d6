r"""The README's figure: a checkpoint's reconstructions of held-out images, beside interpolation.

  python benchmarks/pretrained_figure.py --workdir=pretrained/celeba64 \
      --folder=/path/to/celeba_sample/val --count=4 --output=docs/images/pretrained_celeba64.png

Takes the first --count images of --folder (sorted by name), centre-cropped
and resized as the image_folder pipeline does, hides 75% of their patches
with the checkpoint's fixed, seeded evaluation masks of image indices 0 to
count - 1 (`Model.reconstruct`'s default masks), and writes one PNG: masked input | Gaussian
interpolation of the visible pixels | MINR's prediction | prediction with the
visible pixels pasted back | ground truth, one row per image. Prints each
row's PSNR for interpolation and the pasted prediction.
"""

from __future__ import annotations

import argparse
import os

import jax.numpy as jnp
import numpy as np
from PIL import Image

import minr_jax
from minr_jax import metrics, writers
from minr_jax.data import preprocess


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--folder", required=True)
  p.add_argument("--count", type=int, default=4)
  p.add_argument("--output", required=True)
  args = p.parse_args()
  model = minr_jax.load(args.workdir, devices=1)
  r = model.config.resolution
  files = sorted(
    f for f in os.listdir(args.folder) if f.lower().endswith((".jpg", ".jpeg", ".png"))
  )[: args.count]
  images = (
    np.stack(
      [
        preprocess.center_crop(
          preprocess.resize_short_side(
            np.asarray(Image.open(os.path.join(args.folder, f)).convert("RGB")), r
          ),
          r,
        )
        for f in files
      ]
    ).astype(np.float32)
    / 255
  )
  pred, mask = model.reconstruct(images, indices=np.arange(len(files)))
  target, hidden = jnp.asarray(images), jnp.asarray(mask)
  interp = np.asarray(
    metrics.interpolation_fill(
      target, hidden, metrics.interpolation_sigma(r, model.config.mask_grid)
    )
  )
  pasted = np.asarray(metrics.paste_visible(jnp.asarray(pred), target, hidden))
  psnr = lambda x: np.asarray(metrics.psnr_from_mse(metrics.per_image_mse(jnp.asarray(x), target)))
  for f, a, b in zip(files, psnr(interp), psnr(pasted), strict=True):
    print(f"{f}: interpolation {a:.2f} dB, MINR pasted {b:.2f} dB")
  writers.save_image_grid(
    args.output,
    [images * ~mask[..., None], interp, pred, pasted, images],
    ["masked input", "interpolation", "MINR", "MINR, pasted", "ground truth"],
    max_rows=args.count,
  )
  print(f"wrote {args.output}")


if __name__ == "__main__":
  main()
