"""pretrained/photos64: the general-photo checkpoint loads and beats interpolation on photos.

docs/pretrained_photos.md is its model card. The photos come from
scikit-image (never in its training set, which is Imagenette's train split).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from helpers import folder_bytes
from PIL import Image

import minr_jax
from minr_jax import masking, metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED = os.path.join(ROOT, "pretrained", "photos64")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")


def _photo(name: str) -> np.ndarray:
  """[64, 64, 3] in [0, 1]: the central square of a scikit-image photo, resized."""
  a = getattr(skimage.data, name)()[..., :3]
  h, w = a.shape[:2]
  s = min(h, w)
  a = a[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
  return np.asarray(Image.fromarray(a).resize((64, 64), Image.BICUBIC), np.float32) / 255


@pytest.fixture(scope="module")
def model():
  return minr_jax.load(PRETRAINED, devices=1)


def test_small_float32_params_only(model):
  size = folder_bytes(PRETRAINED)
  assert size <= 20 * 2**20, size
  assert model.family == "transinr" and model.num_params == 904_771 and model.step == 10_000
  assert (model.config.resolution, model.config.mask_grid, model.config.mask_ratio) == (64, 8, 0.75)
  assert {x.dtype for x in jax.tree.leaves(model.params)} == {jnp.dtype("float32")}


def _scores(model, name: str) -> dict[str, float]:
  """Mean PSNR over 16 seeded masks (75% of the 8x8 patches hidden) of one photo."""
  target = jnp.asarray(np.repeat(_photo(name)[None], 16, axis=0))
  spec = masking.mask_spec_from_config(model.config)
  mask = masking.to_pixels(masking.draw_indexed(spec, 7, jnp.arange(16), 0.75), 64, 64)
  pred, _ = model.reconstruct(np.asarray(target), mask=np.asarray(mask))
  psnr = lambda x: float(jnp.mean(metrics.psnr_from_mse(metrics.per_image_mse(x, target))))
  return dict(
    pasted=psnr(metrics.paste_visible(jnp.asarray(pred), target, mask)),
    interpolation=psnr(
      metrics.interpolation_fill(target, mask, metrics.interpolation_sigma(64, 8))
    ),
  )


def test_the_model_cards_figures_on_photos_it_never_saw(model):
  """docs/pretrained_photos.md's scikit-image rows: the shipped parameters give them."""
  scores = {name: _scores(model, name) for name in PHOTOS}
  assert scores["coffee"]["pasted"] == pytest.approx(15.524, abs=0.02), scores
  assert scores["coffee"]["interpolation"] == pytest.approx(14.939, abs=0.002), scores
  for name, s in scores.items():  # ahead of interpolation on every one of them
    assert s["pasted"] > s["interpolation"], (name, s)
