r"""Times the classical inpainters and the SSIM / LPIPS metrics on 64 x 64 photo crops.

  python benchmarks/metric_speeds.py [--size=64] [--grid=8] [--batch=48]

The images are box-downsampled 256 x 256 crops of scikit-image's bundled
photographs; 75% of the patches of a `--grid` x `--grid` grid are hidden at
random. Prints ms per image and the mean PSNR / SSIM / LPIPS of each
inpainter, OpenCV's PSNR at other radii, and SSIM and LPIPS images/s per
batch size (best of 3 after a warm-up call). docs/metrics.md has the numbers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from skimage import data

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minr_jax import classical, metrics, similarity  # noqa: E402

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "cat")


def photo_crops(size: int, count: int, rng: np.random.Generator) -> np.ndarray:
  """[count, size, size, 3] float32: random 4 * size crops of the photos, box-downsampled."""
  out = []
  for i in range(count):
    src = getattr(data, PHOTOS[i % len(PHOTOS)])()
    side = 4 * size
    y = rng.integers(0, src.shape[0] - side + 1)
    x = rng.integers(0, src.shape[1] - side + 1)
    crop = src[y : y + side, x : x + side].astype(np.float32) / 255.0
    out.append(crop.reshape(size, 4, size, 4, 3).mean(axis=(1, 3)))
  return np.stack(out).astype(np.float32)


def patch_masks(count: int, size: int, grid: int, rng: np.random.Generator) -> np.ndarray:
  hidden = np.zeros((count, grid * grid), bool)
  for i in range(count):
    hidden[i, rng.permutation(grid * grid)[: round(0.75 * grid * grid)]] = True
  patch = size // grid
  return hidden.reshape(count, grid, grid).repeat(patch, 1).repeat(patch, 2)


def best_of(fn, repeats: int = 3) -> float:
  fn()  # warm-up (compiles)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--grid", type=int, default=8)
  parser.add_argument("--batch", type=int, default=48)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  images = photo_crops(args.size, args.batch, rng)
  masks = patch_masks(args.batch, args.size, args.grid, rng)
  sigma = metrics.interpolation_sigma(args.size, args.grid)

  grid = f"{args.grid}x{args.grid}"
  print(f"{args.batch} images {args.size}x{args.size}, 75% of a {grid} patch grid hidden")
  print(f"{'inpainter':24s} {'ms/image':>9s} {'PSNR':>6s} {'SSIM':>6s} {'LPIPS':>6s}")
  for name, fill in classical.INPAINTERS.items():
    seconds = best_of(lambda fill=fill: fill(images, masks, sigma=sigma))
    out = fill(images, masks, sigma=sigma)
    psnr = np.mean(-10 * np.log10(np.mean((out - images) ** 2, axis=(1, 2, 3))))
    ssim = np.mean(similarity.ssim(out, images))
    lpips = np.mean(similarity.lpips(out, images))
    ms = 1e3 * seconds / args.batch
    print(f"{classical.LABELS[name]:24s} {ms:9.2f} {psnr:6.2f} {ssim:6.3f} {lpips:6.3f}")

  print("\nOpenCV radius (px at 64 x 64, scaled with the side): PSNR, ms/image")
  for radius in (3, 5, 8):
    for name in ("telea", "navier_stokes"):
      scaled = radius * args.size / 64
      fill = classical.INPAINTERS[name]
      seconds = best_of(lambda f=fill, r=scaled: f(images, masks, radius=r), repeats=1)
      out = fill(images, masks, radius=scaled)
      psnr = np.mean(-10 * np.log10(np.mean((out - images) ** 2, axis=(1, 2, 3))))
      print(f"  {radius:2d} {name:14s} {psnr:6.2f} {1e3 * seconds / args.batch:7.2f}")

  print("\nmetric images/s (best of 3, jit compiled)")
  for batch in (1, 16, 64, 256):
    a = photo_crops(args.size, batch, rng)
    b = a[::-1].copy()
    for name, metric in (("SSIM", similarity.ssim), ("LPIPS", similarity.lpips)):
      seconds = best_of(lambda metric=metric, a=a, b=b: metric(a, b).block_until_ready())
      print(f"  {name:5s} batch {batch:3d}: {batch / seconds:8.0f} images/s")


if __name__ == "__main__":
  main()
