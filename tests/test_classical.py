"""The classical inpainters: visible pixels kept, holes filled sensibly, best-method choice."""

import numpy as np
import pytest

from minr_jax import classical, metrics


def _patch_masks(batch: int, size: int, grid: int, ratio: float, seed: int = 0) -> np.ndarray:
  """bool [batch, size, size]: round(ratio * grid^2) random patches of a grid hidden."""
  rng = np.random.default_rng(seed)
  hidden = np.zeros((batch, grid * grid), bool)
  for i in range(batch):
    hidden[i, rng.permutation(grid * grid)[: round(ratio * grid * grid)]] = True
  patch = size // grid
  return hidden.reshape(batch, grid, grid).repeat(patch, 1).repeat(patch, 2)


def _ramp(size: int) -> np.ndarray:
  """[size, size, 3] float32: a smooth colour ramp in [0, 1]."""
  y, x = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
  return np.stack([x, y, 0.25 + 0.5 * (x + y) / 2], axis=-1).astype(np.float32)


@pytest.mark.parametrize("name", list(classical.INPAINTERS))
def test_visible_pixels_unchanged_and_shapes(name):
  rng = np.random.default_rng(1)
  images = rng.random((2, 16, 16, 3), dtype=np.float32)
  masks = _patch_masks(2, 16, 4, 0.75)
  out = classical.INPAINTERS[name](images, masks, sigma=metrics.interpolation_sigma(16, 4))
  assert out.shape == images.shape and out.dtype == np.float32
  np.testing.assert_array_equal(out[~masks], images[~masks])
  assert np.all(np.isfinite(out)) and out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("name", list(classical.INPAINTERS))
def test_nothing_or_everything_hidden(name):
  images = np.random.default_rng(2).random((2, 12, 12, 3), dtype=np.float32)
  masks = np.zeros((2, 12, 12), bool)
  masks[1] = True
  out = classical.INPAINTERS[name](images, masks, sigma=1.0)
  np.testing.assert_array_equal(out[0], images[0])
  np.testing.assert_allclose(out[1], metrics.EMPTY_FILL_VALUE)


@pytest.mark.parametrize("name", ["gaussian", "telea", "navier_stokes", "biharmonic"])
def test_smooth_ramp_hole_filled_closer_than_zero_fill(name):
  size = 32
  images = _ramp(size)[None]
  masks = np.zeros((1, size, size), bool)
  masks[0, 12:20, 12:20] = True
  out = classical.INPAINTERS[name](images, masks, sigma=metrics.interpolation_sigma(size, 4))
  err = np.mean((out - images)[masks] ** 2)
  zero_fill_err = np.mean(images[masks] ** 2)
  assert err < 0.01 * zero_fill_err, (name, err, zero_fill_err)


def test_fill_all_order_names_and_errors():
  images = np.random.default_rng(3).random((1, 8, 8, 3), dtype=np.float32)
  masks = _patch_masks(1, 8, 2, 0.5)
  out = classical.fill_all(images, masks, sigma=1.0, names=["telea", "mean"])
  assert list(out) == ["telea", "mean"]
  assert list(classical.INPAINTERS) == ["mean", "gaussian", "telea", "navier_stokes", "biharmonic"]
  assert list(classical.LABELS) == list(classical.INPAINTERS)
  with pytest.raises(ValueError, match="unknown inpainters"):
    classical.fill_all(images, masks, sigma=1.0, names=["inpaint_everything"])
  with pytest.raises(ValueError, match="sigma"):
    classical.gaussian_fill(images, masks)
  with pytest.raises(ValueError, match=r"\[B, H, W\]"):
    classical.telea_fill(images, masks[:, :4])


def test_opencv_radius_scales_with_side():
  assert classical.opencv_radius(16, 16) == 3
  assert classical.opencv_radius(64, 64) == 3
  assert classical.opencv_radius(128, 256) == 6


def test_best_classical_max_for_psnr_ssim_min_for_lpips():
  scores = {"mean": 0.30, "gaussian": 0.50, "telea": float("nan"), "biharmonic": 0.40}
  assert classical.best_classical(scores, "psnr_full") == "gaussian"
  assert classical.best_classical(scores, "ssim") == "gaussian"
  assert classical.best_classical(scores, "lpips") == "mean"
  assert classical.best_classical(scores, "LPIPS (lower is better)") == "mean"
  with pytest.raises(ValueError, match="no finite"):
    classical.best_classical({"mean": float("nan")}, "psnr")
