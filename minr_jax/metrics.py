"""Reconstruction metrics, pure jnp and jittable: PSNR variants and the trivial inpainters.

Images are float [B, H, W, C] in [0, 1]; masks bool [B, H, W], True = hidden. Functions
return per-image values so that callers average over valid images only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


# MSE floor: a perfect prediction gives -10 * log10(1e-10) = 100 dB, not inf.
MSE_FLOOR = 1e-10


# Mean colour used by `mean_colour_fill` for an image with no visible pixel.
EMPTY_FILL_VALUE = 0.5


# `interpolation_fill` cuts its Gaussian window at this many sigmas.
INTERPOLATION_TRUNCATE = 4.0


def _check_image_and_mask(images: Array, mask: Array) -> None:
  """Raises if images [B, H, W, C] and mask [B, H, W] shapes disagree."""
  if images.ndim != 4:
    raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
  if mask.shape != images.shape[:3]:
    raise ValueError(f"mask must be [B, H, W] = {images.shape[:3]}, got shape {mask.shape}")


def per_image_mse(pred: Array, target: Array) -> Array:
  """[B, H, W, C] x2 -> [B] mean squared error over H, W, C (all pixels)."""
  if pred.shape != target.shape:
    raise ValueError(f"pred {pred.shape} and target {target.shape} differ")
  err = pred.astype(jnp.float32) - target.astype(jnp.float32)
  return jnp.mean(jnp.square(err), axis=tuple(range(1, err.ndim)))


def psnr_from_mse(mse: Array) -> Array:
  """Any shape -> same shape PSNR in dB for peak 1: -10 log10(max(mse, floor))."""
  mse = jnp.asarray(mse, jnp.float32)
  return -10.0 * jnp.log10(jnp.maximum(mse, MSE_FLOOR))


def paste_visible(pred: Array, target: Array, mask: Array) -> Array:
  """[B, H, W, C] pred, target, [B, H, W] mask -> [B, H, W, C] with visible pixels from target."""
  _check_image_and_mask(target, mask)
  return jnp.where(mask.astype(bool)[..., None], pred, target)


def _visible_mean(x: Array, mask: Array) -> Array:
  """float [B, H, W, C], bool [B, H, W] -> [B, C] mean visible colour (EMPTY_FILL_VALUE if none)."""
  visible = (~mask)[..., None].astype(jnp.float32)  # [B, H, W, 1]
  total = jnp.sum(x * visible, axis=(1, 2))  # [B, C]
  count = jnp.sum(visible, axis=(1, 2))  # [B, 1]
  return jnp.where(count > 0, total / jnp.maximum(count, 1.0), EMPTY_FILL_VALUE)


def mean_colour_fill(target: Array, mask: Array) -> Array:
  """[B, H, W, C], [B, H, W] -> [B, H, W, C], masked pixels = mean visible colour (or 0.5)."""
  _check_image_and_mask(target, mask)
  mask = mask.astype(bool)
  x = target.astype(jnp.float32)
  mean = _visible_mean(x, mask)
  filled = jnp.where(mask[..., None], mean[:, None, None, :], x)
  return filled.astype(target.dtype)


def interpolation_sigma(resolution: int, mask_grid: int) -> float:
  """The Gaussian width in pixels for `interpolation_fill`: patch side / 4.

  A hidden patch of side p = resolution / mask_grid is filled from the
  visible pixels around it. With sigma = p / 4 the weights fall to
  exp(-8) ~ 3e-4 of their peak at one patch side, so a hidden pixel is
  filled from its nearest visible neighbours, not from the far side of the
  image, while the Gaussian is still wide enough (2 px for 8-px patches) to
  average away single-pixel noise. A lone hidden patch is then filled from
  its border; deep inside a large hidden region the fill falls back to the
  image's mean visible colour.
  """
  if resolution <= 0 or mask_grid <= 0:
    raise ValueError(f"resolution ({resolution}) and mask_grid ({mask_grid}) must be > 0")
  return float(resolution) / float(mask_grid) / 4.0


def _gaussian_matrix(size: int, sigma: float, truncate: float) -> np.ndarray:
  """[size, size] float32 weights exp(-(i - j)^2 / (2 sigma^2)), 0 beyond truncate * sigma.

  Computed in float64 and rounded once. Multiplying an image axis by it
  is a 1-D Gaussian convolution whose window is cut at the image border
  (pixels outside the image have no weight).
  """
  d = np.arange(size, dtype=np.float64)
  d = d[:, None] - d[None, :]
  w = np.exp(-0.5 * (d / sigma) ** 2)
  w[np.abs(d) > truncate * sigma] = 0.0
  return w.astype(np.float32)


def _sigma_pair(sigma) -> tuple[float, float]:
  """sigma (a number, or (rows, columns)) -> (sigma_rows, sigma_cols), each > 0."""
  pair = tuple(sigma) if isinstance(sigma, (tuple, list)) else (sigma, sigma)
  if len(pair) != 2 or not all(s > 0 for s in pair):
    raise ValueError(f"interpolation sigma must be > 0 pixels, got {sigma}")
  return float(pair[0]), float(pair[1])


def _normalised_convolution(x: Array, mask: Array, sigma, truncate: float) -> tuple[Array, Array]:
  """(G*(v x) / G*v [B, H, W, C], has_weight [B, H, W, 1]) for visible indicator v = ~mask."""
  sigma_rows, sigma_cols = _sigma_pair(sigma)
  visible = (~mask)[..., None].astype(jnp.float32)  # [B, H, W, 1]
  # Numerator channels and the weight channel go through the same products.
  stacked = jnp.concatenate([x * visible, visible], axis=-1)  # [B, H, W, C + 1]
  g_rows = jnp.asarray(_gaussian_matrix(x.shape[1], sigma_rows, truncate))
  g_cols = jnp.asarray(_gaussian_matrix(x.shape[2], sigma_cols, truncate))
  highest = jax.lax.Precision.HIGHEST  # no bfloat16 passes on TPU
  blurred = jnp.einsum("ij,bjwc->biwc", g_rows, stacked, precision=highest)
  blurred = jnp.einsum("kw,biwc->bikc", g_cols, blurred, precision=highest)
  numerator, weight = blurred[..., :-1], blurred[..., -1:]
  has_weight = weight > 0
  return numerator / jnp.where(has_weight, weight, 1.0), has_weight


def interpolation_fill(
  target: Array, mask: Array, sigma, truncate: float = INTERPOLATION_TRUNCATE
) -> Array:
  """[B, H, W, C], [B, H, W] -> [B, H, W, C]: hidden pixels from nearby visible ones.

  Normalised convolution, the classical inpainting baseline: each hidden
  pixel is the Gaussian-weighted mean (sigma in pixels, window cut at
  `truncate` * sigma) of the visible pixels around it, i.e. G*(v x) / G*v
  with v the visible indicator; visible pixels are returned unchanged. The
  Gaussian is separable, applied as one [H, H] and one [W, W] matrix. A
  hidden pixel with no visible pixel inside its window gets the image's
  mean visible colour, or EMPTY_FILL_VALUE (0.5) if nothing is visible.
  `sigma` must be a Python number, or a pair (rows, columns) for a
  Gaussian of another width along each axis (it fixes the static kernel).
  """
  _check_image_and_mask(target, mask)
  _sigma_pair(sigma)
  mask = mask.astype(bool)
  x = target.astype(jnp.float32)
  interpolated, has_weight = _normalised_convolution(x, mask, sigma, truncate)
  fallback = _visible_mean(x, mask)[:, None, None, :]
  hidden = jnp.where(has_weight, interpolated, fallback)
  return jnp.where(mask[..., None], hidden, x).astype(target.dtype)


def interpolation_fill_multiscale(
  target: Array, mask: Array, sigma, truncate: float = INTERPOLATION_TRUNCATE
) -> Array:
  """`interpolation_fill` for holes of any size: hidden pixels beyond the window widen it.

  Each hidden pixel takes the normalised convolution at `sigma` (a number or
  (rows, columns)) where its window holds a visible pixel, exactly as
  `interpolation_fill`; the others take it at 2 sigma, 4 sigma, ... (the
  first scale whose window reaches a visible pixel), so the middle of a
  large box is a smooth blend of the colours around it instead of the
  image's mean colour. Only an image with no visible pixel gets
  EMPTY_FILL_VALUE. Host-side loop over scales (not jittable as a whole).
  """
  _check_image_and_mask(target, mask)
  sigma_rows, sigma_cols = _sigma_pair(sigma)
  mask = jnp.asarray(mask).astype(bool)
  x = jnp.asarray(target).astype(jnp.float32)
  filled = _visible_mean(x, mask)[:, None, None, :] * jnp.ones_like(x)
  todo = jnp.ones(mask.shape + (1,), bool)  # hidden pixels not filled yet
  limit = 2.0 * max(x.shape[1], x.shape[2])
  scale = 1.0
  while True:
    interpolated, has_weight = _normalised_convolution(
      x, mask, (sigma_rows * scale, sigma_cols * scale), truncate
    )
    take = todo & has_weight
    filled = jnp.where(take, interpolated, filled)
    todo = todo & ~has_weight
    if not bool(jnp.any(todo & mask[..., None])) or min(sigma_rows, sigma_cols) * scale > limit:
      break
    scale *= 2.0
  return jnp.where(mask[..., None], filled, x).astype(jnp.asarray(target).dtype)


def masked_mse(pred: Array, target: Array, mask: Array) -> Array:
  """[B, H, W, C] x2, [B, H, W] -> [B] MSE over masked pixels only (0 if none masked)."""
  _check_image_and_mask(target, mask)
  mask = mask.astype(bool)
  sq = jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32))
  sq = jnp.sum(sq, axis=-1)  # [B, H, W], summed over channels.
  total = jnp.sum(jnp.where(mask, sq, 0.0), axis=(1, 2))  # [B]
  count = jnp.sum(mask, axis=(1, 2)).astype(jnp.float32) * target.shape[-1]
  return total / jnp.maximum(count, 1.0)


def reconstruction_metrics(
  pred: Array, target: Array, mask: Array, *, interpolation_sigma: float | None = None
) -> dict[str, Array]:
  """[B, H, W, C] pred, target, [B, H, W] mask -> dict of per-image [B] float32 metrics.

  Keys:
    psnr_full: PSNR of `pred` over the whole image (pred is not clipped).
    psnr_masked: PSNR over masked pixels only. An image with no masked pixel
      has masked MSE 0, hence the floor value (100 dB): weight it out with
      `mask_fraction > 0` when averaging (no NaN is ever produced).
    psnr_pasted: psnr_full of `paste_visible(pred, target, mask)`.
    psnr_full_mean_fill: psnr_full of `mean_colour_fill(target, mask)`, the
      trivial baseline.
    psnr_full_masked_input: psnr_full of the masked input (hidden pixels 0).
    psnr_full_interpolation (only with `interpolation_sigma`, in pixels; a
      Python number, static under jit):
      psnr_full of `interpolation_fill(target, mask, interpolation_sigma)`,
      the classical inpainting baseline; a model has learned more than local
      smoothness only where psnr_pasted beats it.
    mask_fraction: fraction of pixels that are masked, in [0, 1].
  """
  _check_image_and_mask(target, mask)
  if pred.shape != target.shape:
    raise ValueError(f"pred {pred.shape} and target {target.shape} differ")
  mask = mask.astype(bool)
  masked_input = jnp.where(mask[..., None], jnp.zeros_like(target), target)
  out = {
    "psnr_full": psnr_from_mse(per_image_mse(pred, target)),
    "psnr_masked": psnr_from_mse(masked_mse(pred, target, mask)),
    "psnr_pasted": psnr_from_mse(per_image_mse(paste_visible(pred, target, mask), target)),
    "psnr_full_mean_fill": psnr_from_mse(per_image_mse(mean_colour_fill(target, mask), target)),
    "psnr_full_masked_input": psnr_from_mse(per_image_mse(masked_input, target)),
  }
  if interpolation_sigma is not None:
    out["psnr_full_interpolation"] = psnr_from_mse(
      per_image_mse(interpolation_fill(target, mask, interpolation_sigma), target)
    )
  out["mask_fraction"] = jnp.mean(mask.astype(jnp.float32), axis=(1, 2))
  return out
