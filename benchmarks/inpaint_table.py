r"""Hidden-pixel PSNR, SSIM and LPIPS of photos at their own size: MINR vs the classical fills.

  python benchmarks/inpaint_table.py --workdir=pretrained/celeba64 \
      --folder=/path/to/faces [--masks=box:0.25,0.25,0.75,0.75,random:0.75:seed=0] \
      [--max_images=N] [--tile=0] [--output=inpaint_table.json]

Every image file below `--folder` (sorted, recursively) is inpainted at its
own size by `minr_jax.inference.inpaint.inpaint_many` under each mask of `--masks`
(';'-separated; each as `python -m minr_jax.inpaint --mask`; image i gets a strategy
mask's cells of (seed, i)). For each mask it prints one Markdown row: the mean over images
of the per-image PSNR (dB) on the hidden pixels of MINR and of every classical fill
(Gaussian interpolation, Telea, Navier-Stokes, biharmonic, mean-colour fill); MINR's mean
lead over the best of them on the set, with its standard error over images, and the share
of images where MINR beats it; SSIM and LPIPS over the whole photo of MINR and of the best
classical fill by each metric.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

import minr_jax
from minr_jax import classical
from minr_jax.inference import inpaint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MASKS = ("box:0.25,0.25,0.75,0.75", "random:0.75:seed=0")
FILLS = ("interpolation", "mean_fill", *inpaint.OTHER_BASELINES)  # the classical fills


def measure(model, files: list[tuple[str, str]], mask: str, tile: int = 0) -> dict:
  """Per-image hidden-region PSNRs of the three fills under one --mask value, and means."""
  arg = inpaint.parse_mask(mask)
  grid = int(model.config.mask_grid)
  file_mask = inpaint.read_mask_file(arg.path) if arg.kind == "file" else None
  rows = []
  for first in range(0, len(files), model.batch_size):
    batch = files[first : first + model.batch_size]
    photos = [inpaint.read_image(path) for path, _ in batch]
    masks = [
      inpaint.photo_mask(arg, p.shape[0], p.shape[1], first + k, grid, file_mask)
      for k, p in enumerate(photos)
    ]
    for result in inpaint.inpaint_many(
      model, photos, masks, tile=tile, names=[p for p, _ in batch]
    ):
      rows.append(
        dict(
          result.psnr,
          **{f"ssim_{k}": v for k, v in result.ssim.items()},
          **{f"lpips_{k}": v for k, v in result.lpips.items()},
          hidden=float(result.mask.mean()),
        )
      )
  means = {k: float(np.mean([r[k] for r in rows if k in r])) for k in rows[0] if k != "hidden"}
  # The best classical fill on this set (by mean hidden-pixel PSNR), and MINR's lead over it.
  best = classical.best_classical({k: means[k] for k in FILLS}, "psnr")
  lead = np.asarray([r["minr"] - r[best] for r in rows])
  return {
    "mask": mask,
    "tile": tile,
    "num_images": len(rows),
    "hidden_fraction": float(np.mean([r["hidden"] for r in rows])),
    **means,
    "best_classical": best,
    "lead": float(lead.mean()),
    "lead_se": float(lead.std(ddof=1) / np.sqrt(len(lead))) if len(lead) > 1 else 0.0,
    "wins": float((lead > 0).mean()),
    "images": rows,
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default=os.path.join(ROOT, "pretrained", "celeba64"))
  parser.add_argument("--folder", required=True)
  parser.add_argument(
    "--masks", default=";".join(DEFAULT_MASKS), help="--mask values separated by ';'"
  )
  parser.add_argument("--max_images", type=int, default=None)
  parser.add_argument("--tile", type=int, default=0)
  parser.add_argument("--output", default=None, help="also write the results as JSON")
  args = parser.parse_args()
  model = minr_jax.load(args.workdir)
  files = inpaint.list_images(args.folder)[: args.max_images]
  sizes = {inpaint.read_image(p).shape[:2] for p, _ in files[:50]}
  print(
    f"{len(files)} images from {args.folder} (sizes of the first 50, HxW: "
    f"{', '.join(f'{h}x{w}' for h, w in sorted(sizes)[:4])}"
    f"{', ...' if len(sizes) > 4 else ''}); {args.workdir} step {model.step}, "
    f"{model.resolution} px; tile {args.tile}",
    flush=True,
  )
  print(
    "| mask | hidden | images | MINR | interpolation | Telea | Navier-Stokes | biharmonic "
    "| mean fill | MINR - best classical (± s.e.) | MINR wins | SSIM MINR / best | "
    "LPIPS MINR / best (lower is better) | time |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
  out = []
  for mask in args.masks.split(";"):
    start = time.monotonic()
    r = measure(model, files, mask, args.tile)
    r["seconds"] = time.monotonic() - start
    out.append(r)
    ssim = {k[5:]: v for k, v in r.items() if k.startswith("ssim_") and k[5:] in FILLS}
    lpips = {k[6:]: v for k, v in r.items() if k.startswith("lpips_") and k[6:] in FILLS}
    ssim_text = f"{r['ssim_minr']:.3f} / {max(ssim.values()):.3f}" if ssim else "-"
    lpips_text = f"{r['lpips_minr']:.3f} / {min(lpips.values()):.3f}" if lpips else "-"
    print(
      f"| `{mask}` | {r['hidden_fraction']:.0%} | {r['num_images']} | {r['minr']:.2f} | "
      f"{r['interpolation']:.2f} | {r['telea']:.2f} | {r['navier_stokes']:.2f} | "
      f"{r['biharmonic']:.2f} | {r['mean_fill']:.2f} | {r['lead']:+.2f} ± {r['lead_se']:.2f} "
      f"({r['best_classical']}) | {r['wins']:.0%} | {ssim_text} | {lpips_text} | "
      f"{r['seconds']:.0f} s |",
      flush=True,
    )
  if args.output:
    with open(args.output, "w") as f:
      json.dump(
        {"workdir": args.workdir, "folder": args.folder, "step": model.step, "results": out},
        f,
        indent=1,
      )


if __name__ == "__main__":
  main()
