"""pretrained/ginr_photos64: the GINR-MINR photo checkpoint loads, its manifest verifies,
and it beats the classical inpainters on photos it never saw
(docs/pretrained_ginr_photos.md is its model card)."""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import check_shipped, mean_psnr
from test_pretrained_photos import PHOTOS, _photo

import minr_jax
from minr_jax import classical, masking, metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED = os.path.join(ROOT, "pretrained", "ginr_photos64")


@pytest.fixture(scope="module")
def model():
  return minr_jax.load(PRETRAINED, devices=1)


def test_small_float32_params_only_with_a_verified_manifest(model):
  check_shipped(PRETRAINED, model, "ginr", 863_619, 30_000, config="configs/ginr.py:photos64")
  assert (model.config.resolution, model.config.mask_grid, model.config.mask_ratio) == (64, 8, 0.75)


def test_it_beats_interpolation_and_telea_on_held_out_photos(model):
  """16 seeded masks (75% of the 8x8 patches) of each scikit-image photo."""
  spec = masking.mask_spec_from_config(model.config)
  mask = masking.to_pixels(masking.draw_indexed(spec, 7, jnp.arange(16), 0.75), 64, 64)
  leads = {}
  for name in PHOTOS:
    target = jnp.asarray(np.repeat(_photo(name)[None], 16, axis=0))
    pred, _ = model.reconstruct(np.asarray(target), mask=np.asarray(mask))
    pasted = mean_psnr(metrics.paste_visible(jnp.asarray(pred), target, mask), target)
    interp = metrics.interpolation_fill(target, mask, metrics.interpolation_sigma(64, 8))
    telea = classical.telea_fill(np.asarray(target), np.asarray(mask))
    leads[name] = (
      pasted - mean_psnr(interp, target),
      pasted - mean_psnr(jnp.asarray(telea), target),
    )
  # Measured: +0.44 to +0.79 dB over interpolation and +0.26 to +0.66 over Telea on every
  # photo (pretrained/photos64 trails Telea on three of the five).
  assert all(a > 0.2 and b > 0.1 for a, b in leads.values()), leads


def test_the_lpips_fine_tune_ships_beside_it():
  """pretrained/ginr_photos64_lpips: configs/ginr.py:photos64_lpips, seed 0, 2,000 steps."""
  path = os.path.join(ROOT, "pretrained", "ginr_photos64_lpips")
  tuned = minr_jax.load(path, devices=1)
  check_shipped(path, tuned, "ginr", 863_619, 2_000)
  assert tuned.config.lpips_weight == 0.1 and tuned.config.seed == 0
