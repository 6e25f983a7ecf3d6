r"""The raw-pixel baseline for linear probes of embeddings.

Downsamples each image of `<folder>/train/<class>/` and `<folder>/val/<class>/`
(short side resized to 64, centre crop, then box-filtered to SIZE x SIZE) and
fits the same probe as `python -m minr_jax.probe`, so an embedding's accuracy
can be read against what colour layout alone gives:

  python benchmarks/pixel_probe.py /path/to/imagenette_sample 8 16
"""

from __future__ import annotations

import os
import sys

import numpy as np
from PIL import Image

from minr_jax.data import preprocess
from minr_jax.inference import probe


def load(root: str, split: str, size: int) -> dict:
  """{'embeddings': [N, 3 size^2] in [0, 1], 'labels': [N]} of one split."""
  classes = sorted(os.listdir(os.path.join(root, "train")))
  xs, ys = [], []
  for label, name in enumerate(classes):
    folder = os.path.join(root, split, name)
    for file in sorted(os.listdir(folder)):
      image = np.asarray(Image.open(os.path.join(folder, file)).convert("RGB"))
      image = preprocess.center_crop(preprocess.resize_short_side(image, 64), 64)
      small = Image.fromarray(image).resize((size, size), Image.BOX)
      xs.append(np.asarray(small, np.float32).reshape(-1) / 255)
      ys.append(label)
  return dict(embeddings=np.stack(xs), labels=np.array(ys), kind="pixels")


def main() -> None:
  root, sizes = sys.argv[1], [int(s) for s in sys.argv[2:]] or [8]
  for size in sizes:
    r = probe.probe(load(root, "train", size), load(root, "val", size))
    print(
      f"raw pixels {size}x{size}x3 (dim {3 * size * size}): test accuracy "
      f"{r['accuracy']:.3f}, majority class {r['majority_baseline']:.3f}"
    )


if __name__ == "__main__":
  main()
