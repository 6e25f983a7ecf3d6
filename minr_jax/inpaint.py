"""`minr-inpaint` / `python -m minr_jax.inpaint`.

Fills holes in photos at their own size (docs/inpaint.md).
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
from absl import flags

from minr_jax import classical, cli, paths
from minr_jax.config import ConfigError, load_saved
from minr_jax.inference import inpaint, restore
from minr_jax.inference import model as model_lib


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
    lower_bound=0,
  )
  cli.define_step()
  flags.DEFINE_integer(
    "batch_size",
    None,
    "Images per device call (default: the run's eval_batch_size).",
    lower_bound=1,
  )
  flags.DEFINE_integer(
    "max_images",
    None,
    "Inpaint at most this many images of a folder, >= 1 (default: all).",
    lower_bound=1,
  )
  f = flags.FLAGS
  cli.run(
    lambda args: run(
      f.workdir, f.images, f.mask, f.output, f.tile, f.step, f.batch_size, max_images=f.max_images
    )
  )


def run(
  workdir: str,
  images: str,
  mask: str,
  output: str,
  tile: int = 0,
  step: int | None = None,
  batch_size: int | None = None,
  devices: int | None = None,
  max_images: int | None = None,
  progress: bool = True,
) -> dict[str, Any]:
  """The command: inpaint every image, write its PNGs and results.json; returns the summary."""
  arg = inpaint.parse_mask(mask)  # a bad --mask fails before anything is loaded
  if isinstance(tile, bool) or not isinstance(tile, int) or tile < 0:
    raise ConfigError(f"--tile={tile!r} must be a non-negative integer (0: resize)")
  if max_images is not None and max_images < 1:
    raise ConfigError(f"--max_images={max_images} must be positive")
  if not output:
    raise ConfigError("--output is empty: give a folder")
  paths.check_reachable(output, "--output")
  found = inpaint.list_images(images)[:max_images]
  file_mask = inpaint.read_mask_file(arg.path) if arg.kind == "file" else None
  grid = int(load_saved(restore.resolve_path(workdir, step)[0]).mask_grid)
  first_photo = inpaint.read_image(found[0][0])  # the first image's mask, before loading anything
  inpaint.check_mask(
    inpaint.photo_mask(arg, *first_photo.shape[:2], 0, grid, file_mask),
    *first_photo.shape[:2],
    found[0][0],
  )
  model = model_lib.load(workdir, step, devices=devices, batch_size=batch_size)
  paths.makedirs(output)
  rows, start = [], time.monotonic()
  group = max(1, model.batch_size)
  for first in range(0, len(found), group):
    batch = found[first : first + group]
    photos, masks = [], []
    for k, (path, _) in enumerate(batch):
      photo = inpaint.read_image(path)
      h, w = photo.shape[:2]
      masks.append(inpaint.photo_mask(arg, h, w, first + k, grid, file_mask))
      photos.append(photo)
    results = inpaint.inpaint_many(model, photos, masks, tile=tile, names=[p for p, _ in batch])
    for k, ((_, rel), result) in enumerate(zip(batch, results)):
      filled_path, _ = inpaint.save_result(result, output, rel)
      h, w = result.mask.shape
      row = {
        "image": rel,
        "width": w,
        "height": h,
        "hidden_fraction": float(result.mask.mean()),
        **{f"psnr_{key}": value for key, value in result.psnr.items()},
        **{f"ssim_{key}": value for key, value in result.ssim.items()},
        **{f"lpips_{key}": value for key, value in result.lpips.items()},
      }
      rows.append(row)
      if progress:
        print(
          f"[{first + k + 1}/{len(found)}] {rel} ({w}x{h}, "
          f"{row['hidden_fraction']:.0%} hidden): MINR {result.psnr['minr']:.2f} dB | "
          f"interpolation {result.psnr['interpolation']:.2f} dB | best classical "
          f"{_best(result.psnr)} | mean fill {result.psnr['mean_fill']:.2f} dB -> {filled_path}",
          flush=True,
        )
  keys = [k for k in rows[0] if k.startswith(("psnr_", "ssim_", "lpips_"))]
  means = {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}
  summary = {
    "workdir": model.workdir,
    "step": model.step,
    "mask": arg.text,
    "tile": tile,
    "num_images": len(rows),
    "mean": means,
    "images": rows,
    "seconds": round(time.monotonic() - start, 1),
  }
  paths.write_text(f"{output.rstrip('/')}/results.json", json.dumps(summary, indent=1) + "\n")
  print(
    f"inpainted {len(rows)} image(s) with step {model.step} in "
    f"{summary['seconds']:.0f}s; mean PSNR on the hidden pixels: MINR "
    f"{means['psnr_minr']:.2f} dB, interpolation {means['psnr_interpolation']:.2f} dB, "
    f"best classical {_best({k[5:]: v for k, v in means.items() if k.startswith('psnr_')})}, "
    f"mean fill {means['psnr_mean_fill']:.2f} dB; wrote {output.rstrip('/')}/results.json",
    flush=True,
  )
  return summary


def _best(psnr: dict[str, float]) -> str:
  """'NN.NN dB (name)': the best classical fill's hidden-pixel PSNR."""
  scores = {k: v for k, v in psnr.items() if k != "minr"}
  name = classical.best_classical(scores, "psnr")
  return f"{scores[name]:.2f} dB ({name})"


if __name__ == "__main__":
  main()
