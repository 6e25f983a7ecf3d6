"""Classical inpainters, the baselines MINR's reconstructions are compared with.

One table, `INPAINTERS`, of plain host-side functions
`fill(images [B, H, W, 3] float32 in [0, 1], masks [B, H, W] bool (True =
hidden), *, sigma=None) -> [B, H, W, 3] float32` that return the visible
pixels exactly unchanged: mean-colour fill and Gaussian interpolation (the
jnp ones of `metrics`), OpenCV's Telea and Navier-Stokes inpainting, and
scikit-image's biharmonic inpainting. Measured per 64 x 64 image with 75%
of an 8 x 8 patch grid hidden (2 busy CPU cores, docs/metrics.md): mean and
Gaussian 0.3-0.5 ms, Navier-Stokes 7-15 ms, Telea 10-17 ms, biharmonic
50-120 ms (the slow one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np

from minr_jax import metrics

Inpainter = Callable[..., np.ndarray]

# OpenCV's inpainting radius at 64 px: 3 px, the value of OpenCV's own
# inpainting examples. On 48 photo crops at 64 x 64 with 75% of 8-px patches
# hidden, 5 px and 8 px gain only 0.1 dB PSNR for 2.5x and 5x the time
# (docs/metrics.md). Larger images scale it with their side, so that the
# neighbourhood each hidden pixel is built from covers the same part of a patch.
OPENCV_RADIUS_AT_64 = 3


def opencv_radius(height: int, width: int) -> int:
  """The inpainting radius in pixels for an image: 3 px up to 64 px, then 3 * side / 64."""
  return max(OPENCV_RADIUS_AT_64, round(OPENCV_RADIUS_AT_64 * min(height, width) / 64))


def _check(images: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Returns (float32 [B, H, W, 3], bool [B, H, W]) or raises on other shapes."""
  images = np.asarray(images, np.float32)
  masks = np.asarray(masks, bool)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"images must be [B, H, W, 3], got shape {images.shape}")
  if masks.shape != images.shape[:3]:
    raise ValueError(f"masks must be [B, H, W] = {images.shape[:3]}, got shape {masks.shape}")
  return images, masks


def _paste(filled: np.ndarray, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
  """Hidden pixels from `filled`, visible ones exactly from `images` (float32)."""
  return np.where(masks[..., None], filled, images).astype(np.float32)


def mean_fill(images: np.ndarray, masks: np.ndarray, *, sigma=None) -> np.ndarray:
  """Hidden pixels = the image's mean visible colour (0.5 if none): `metrics.mean_colour_fill`."""
  del sigma  # one signature for the whole table
  images, masks = _check(images, masks)
  return _paste(np.asarray(metrics.mean_colour_fill(images, masks)), images, masks)


def gaussian_fill(images: np.ndarray, masks: np.ndarray, *, sigma=None) -> np.ndarray:
  """Gaussian interpolation (normalised convolution): `metrics.interpolation_fill`.

  `sigma` (pixels; a number or (rows, columns)) is required: the evaluator
  passes `metrics.interpolation_sigma(resolution, mask_grid)`, a quarter of
  a patch side.
  """
  if sigma is None:
    raise ValueError("gaussian_fill needs sigma: metrics.interpolation_sigma(resolution, grid)")
  images, masks = _check(images, masks)
  filled = metrics.interpolation_fill(images, masks, sigma)
  return _paste(np.asarray(filled), images, masks)


def _per_image(
  images: np.ndarray, masks: np.ndarray, fill_one: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> np.ndarray:
  """Applies fill_one(image [H, W, 3], mask [H, W]) to each image that has hidden pixels.

  An image with no visible pixel gets `metrics.EMPTY_FILL_VALUE` (0.5) in
  every pixel, as mean-colour fill does; the visible pixels are pasted back.
  """
  images, masks = _check(images, masks)
  out = images.copy()
  for i in range(images.shape[0]):
    if not masks[i].any():
      continue
    if masks[i].all():
      out[i] = metrics.EMPTY_FILL_VALUE
      continue
    out[i] = fill_one(images[i], masks[i])
  return _paste(out, images, masks)


def _opencv(
  method_flag_name: str, radius: float | None
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
  def fill_one(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import cv2  # noqa: PLC0415 (a large import, only when an OpenCV inpainter runs)

    rgb8 = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    hole = mask.astype(np.uint8) * 255
    r = opencv_radius(*mask.shape) if radius is None else radius
    filled = cv2.inpaint(rgb8, hole, r, getattr(cv2, method_flag_name))
    return filled.astype(np.float32) / 255.0

  return fill_one


def telea_fill(
  images: np.ndarray, masks: np.ndarray, *, sigma=None, radius: float | None = None
) -> np.ndarray:
  """OpenCV `cv2.inpaint(..., INPAINT_TELEA)`: fast marching from the hole's border inwards.

  Runs on 8-bit RGB (hidden pixels come back quantised to 1/255), radius
  `opencv_radius(H, W)` (3 px at 64 x 64) unless `radius` (px) is given.
  """
  del sigma
  return _per_image(images, masks, _opencv("INPAINT_TELEA", radius))


def navier_stokes_fill(
  images: np.ndarray, masks: np.ndarray, *, sigma=None, radius: float | None = None
) -> np.ndarray:
  """OpenCV `cv2.inpaint(..., INPAINT_NS)`: isophotes continued as in fluid dynamics.

  8-bit RGB, radius `opencv_radius(H, W)` (3 px at 64 x 64) or `radius`, as `telea_fill`.
  """
  del sigma
  return _per_image(images, masks, _opencv("INPAINT_NS", radius))


def _biharmonic_one(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
  from skimage.restoration import inpaint_biharmonic  # noqa: PLC0415

  # scikit-image's Cython solver refuses read-only buffers (e.g. arrays viewed from jax).
  image, mask = np.array(image, np.float64), np.array(mask, bool)
  return inpaint_biharmonic(image, mask, channel_axis=-1).astype(np.float32)


def biharmonic_fill(images: np.ndarray, masks: np.ndarray, *, sigma=None) -> np.ndarray:
  """scikit-image `inpaint_biharmonic`: the smoothest (biharmonic) surface through the border.

  Float RGB, no quantisation; about 100x slower than the others (a sparse
  solve per image and hole region).
  """
  del sigma
  return _per_image(images, masks, _biharmonic_one)


# name -> inpainter, in the order tables and figures show them.
INPAINTERS: dict[str, Inpainter] = {
  "mean": mean_fill,
  "gaussian": gaussian_fill,
  "telea": telea_fill,
  "navier_stokes": navier_stokes_fill,
  "biharmonic": biharmonic_fill,
}
LABELS: dict[str, str] = {
  "mean": "mean-colour fill",
  "gaussian": "Gaussian interpolation",
  "telea": "Telea (OpenCV)",
  "navier_stokes": "Navier-Stokes (OpenCV)",
  "biharmonic": "biharmonic",
}


def fill_all(
  images: np.ndarray, masks: np.ndarray, sigma, names: Iterable[str] | None = None
) -> dict[str, np.ndarray]:
  """{name: filled [B, H, W, 3] float32} for `names` (default: all of INPAINTERS, in order).

  `sigma` is the Gaussian interpolation's width (metrics.interpolation_sigma).
  """
  names = list(INPAINTERS) if names is None else list(names)
  unknown = [n for n in names if n not in INPAINTERS]
  if unknown:
    raise ValueError(f"unknown inpainters {unknown}; known: {list(INPAINTERS)}")
  return {name: INPAINTERS[name](images, masks, sigma=sigma) for name in names}


# Metrics where a smaller value is better; every other metric is higher-better.
LOWER_IS_BETTER = ("lpips", "mse")


def lower_is_better(metric: str) -> bool:
  """True for LPIPS and MSE-like metric names, False for PSNR, SSIM and the rest."""
  return any(key in metric.lower() for key in LOWER_IS_BETTER)


def best_classical(scores: Mapping[str, float], metric: str) -> str:
  """The name with the best score for `metric`: the max for PSNR/SSIM, the min for LPIPS.

  `scores` maps inpainter names to one (e.g. mean) value of `metric`; NaN
  scores are skipped; ties go to the earlier name in `scores`.
  """
  valid = {name: float(v) for name, v in scores.items() if not np.isnan(float(v))}
  if not valid:
    raise ValueError(f"no finite {metric} score among {list(scores)}")
  pick = min if lower_is_better(metric) else max
  return pick(valid, key=valid.__getitem__)
