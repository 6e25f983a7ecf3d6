r"""What the INR itself can do at 64 px: its capacity, and its own inpainting prior.

  python benchmarks/inr_capacity.py --folders=objects:/path/to/imagenette/val,\
faces:/path/to/celeba/val,scenes:/path/to/scenes/val --count=32 --steps=1000 \
      --output=inr_capacity.json

For each INR shape (hidden width, Fourier frequencies, highest frequency
sigma) it fits one free INR per image by Adam, with no hypernetwork, in two
ways, on the first --count images of each folder (sorted by name; short side
to 64 px, centre crop) under the evaluation masks of the 64-px configs (8x8
grid, 75% hidden, `random` strategy, seed 2023, image i's mask from its
index):

- `fit_full`: fitted to every pixel: psnr of the fit, the ceiling of what a
  hypernetwork predicting this INR could reach on the whole image;
- `fit_visible`: fitted to the visible pixels only, scored with the visible
  pixels pasted back (psnr_pasted): what the INR's own smoothness fills into
  the holes when it matches the visible pixels as well as it can.

Each beside the classical inpainters (mean-colour fill, Gaussian
interpolation, Telea, Navier-Stokes, biharmonic: minr_jax/classical.py) on
the same images and masks, with PSNR, SSIM and LPIPS of every filled image.
A hypernetwork that beats them must put into the holes more than
`fit_visible` does: what it learned about images.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from PIL import Image

from minr_jax import classical, masking, metrics
from minr_jax.data import preprocess
from minr_jax.evaluation import scoring
from minr_jax.models import inr

_FOLDERS = flags.DEFINE_string(
  "folders", None, "name:folder,... of images (searched recursively, sorted by path)."
)
_COUNT = flags.DEFINE_integer("count", 32, "Images per folder.")
_STEPS = flags.DEFINE_integer("steps", 1000, "Adam steps per fit.")
_LR = flags.DEFINE_float("lr", 3e-3, "Adam learning rate.")
_SHAPES = flags.DEFINE_string(
  "shapes",
  "64x32x4,64x32x8,64x32x16,64x32x32,128x32x8,128x32x16,256x64x16",
  "INR shapes WIDTHxFREQSxSIGMA, comma-separated (5 layers each).",
)
_OUTPUT = flags.DEFINE_string("output", None, "JSON file for the results.")

RESOLUTION, GRID, RATIO, SEED = 64, 8, 0.75, 2023
EXTENSIONS = (".jpg", ".jpeg", ".png")


def load_images(folder: str, count: int) -> np.ndarray:
  """The first `count` images under folder: float32 [N, 64, 64, 3]."""
  found = sorted(
    os.path.join(d, f)
    for d, _, files in os.walk(folder)
    for f in files
    if f.lower().endswith(EXTENSIONS)
  )[:count]
  out = []
  for path in found:
    with Image.open(path) as image:
      array = np.asarray(preprocess.pil_to_rgb(image))
    array = preprocess.center_crop(preprocess.resize_short_side(array, RESOLUTION), RESOLUTION)
    out.append(preprocess.to_float(array))
  return np.stack(out)


def eval_masks(count: int) -> jax.Array:
  """[N, 64, 64] bool pixel masks (True = hidden), the configs' evaluation masks."""
  spec = masking.MaskSpec(strategy="random", grid=GRID)
  grid = masking.draw_indexed(spec, SEED, jnp.arange(count), RATIO)
  return masking.to_pixels(grid, RESOLUTION, RESOLUTION)


def fit(
  images: jax.Array,
  weight: jax.Array,
  width: int,
  num_freqs: int,
  sigma: float,
  steps: int,
  lr: float,
) -> jax.Array:
  """Per-image INRs fitted to `images` [N, H, W, 3] where weight [N, H, W] is 1; renders."""
  n = images.shape[0]
  shapes = inr.layer_shapes(4 * num_freqs, width, 5, 3)
  keys = jax.random.split(jax.random.key(0), len(shapes))
  weights = [
    jnp.stack([inr.init_linear_weights(k, a, b) for k in jax.random.split(key, n)])
    for key, (a, b) in zip(keys, shapes)
  ]
  feats = inr.fourier_features(
    inr.coord_grid(RESOLUTION, RESOLUTION), inr.fourier_frequencies(num_freqs, sigma)
  )
  feats = feats.reshape(-1, feats.shape[-1])
  render = jax.vmap(lambda w: inr.mlp_apply(w, feats).reshape(RESOLUTION, RESOLUTION, 3))
  opt = optax.adam(lr)

  def loss_fn(w):
    err = ((render(w) - images) ** 2).sum(-1) * weight
    return err.sum() / jnp.maximum(weight.sum(), 1.0)

  @jax.jit
  def run(w):
    def body(carry, _):
      w, state = carry
      grads = jax.grad(loss_fn)(w)
      updates, state = opt.update(grads, state)
      return (optax.apply_updates(w, updates), state), None

    (w, _), _ = jax.lax.scan(body, (w, opt.init(w)), None, length=steps)
    return render(w)

  return run(weights)


def score(images: np.ndarray, shapes: list[tuple[int, int, float]], steps: int, lr: float) -> dict:
  x = jnp.asarray(images)
  mask = eval_masks(len(images))
  sigma_px = metrics.interpolation_sigma(RESOLUTION, GRID)
  psnr = lambda pred: float(jnp.mean(metrics.psnr_from_mse(metrics.per_image_mse(pred, x))))

  def scores(filled: jax.Array) -> dict[str, float]:
    """psnr, ssim (higher is better) and lpips (lower is better) means of a filled image."""
    extra = scoring.perceptual({"x": jnp.asarray(filled)}, x)
    return {
      "psnr": psnr(jnp.asarray(filled)),
      "ssim": float(jnp.mean(extra["ssim_x"])),
      "lpips": float(jnp.mean(extra["lpips_x"])),
    }

  filled = classical.fill_all(np.asarray(images), np.asarray(mask), sigma_px)
  out = {"classical": {name: scores(f) for name, f in filled.items()}, "shapes": {}}
  print(f"  classical: {out['classical']}", flush=True)
  for width, num_freqs, sigma in shapes:
    t0 = time.time()
    full = fit(x, jnp.ones(mask.shape), width, num_freqs, sigma, steps, lr)
    visible = fit(x, (~mask).astype(jnp.float32), width, num_freqs, sigma, steps, lr)
    out["shapes"][f"{width}x{num_freqs}x{sigma:g}"] = {
      "fit_full": psnr(full),
      "fit_visible_pasted": scores(metrics.paste_visible(visible, x, mask)),
      "seconds": time.time() - t0,
    }
    print(
      f"  INR {width}x{num_freqs}x{sigma:g}: {out['shapes'][f'{width}x{num_freqs}x{sigma:g}']}",
      flush=True,
    )
  return out


def main(argv: list[str]) -> None:
  del argv
  folders = dict(e.split(":", 1) for e in _FOLDERS.value.split(",") if e)
  shapes = [
    (int(w), int(f), float(s))
    for w, f, s in (spec.split("x") for spec in _SHAPES.value.split(",") if spec)
  ]
  results = {
    "command": "python benchmarks/inr_capacity.py "
    + " ".join(
      f"--{k}={v}"
      for k, v in (
        ("count", _COUNT.value),
        ("steps", _STEPS.value),
        ("lr", _LR.value),
        ("shapes", _SHAPES.value),
      )
    ),
    "machine": f"{os.cpu_count()} CPU cores, jax {jax.__version__}",
    "folders": {},
  }
  for name, folder in folders.items():
    print(f"{name}: {folder}", flush=True)
    results["folders"][name] = score(
      load_images(folder, _COUNT.value), shapes, _STEPS.value, _LR.value
    )
  text = json.dumps(results, indent=1)
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as f:
      f.write(text)
  print(text)


if __name__ == "__main__":
  flags.mark_flag_as_required("folders")
  app.run(main)
