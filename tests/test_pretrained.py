"""pretrained/celeba64: the checkpoint in the checkout loads and works like any workdir.

docs/pretrained.md is its model card. These tests use nothing outside the
checkout: a face the model never saw comes from scikit-image (the astronaut
portrait), and the evaluation runs on a folder of crops written here.
"""

from __future__ import annotations

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from PIL import Image

import minr_jax
from minr_jax import masking, metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED = os.path.join(ROOT, "pretrained", "celeba64")


def _face() -> np.ndarray:
  """[1, 64, 64, 3]: the astronaut's face, cropped about as CelebA's aligned faces are."""
  crop = Image.fromarray(skimage.data.astronaut()[25:195, 140:310]).resize((64, 64), Image.BICUBIC)
  return np.asarray(crop, np.float32)[None] / 255


@pytest.fixture(scope="module")
def model():
  return minr_jax.load(PRETRAINED, devices=1)


def test_small_float32_params_only():
  size = sum(os.path.getsize(os.path.join(d, f))
             for d, _, files in os.walk(PRETRAINED) for f in files)
  assert size <= 20 * 2 ** 20, size
  assert os.path.exists(os.path.join(PRETRAINED, "config.json"))


def test_loads_as_the_model_card_says(model):
  c = model.config
  assert model.family == "transinr" and model.num_params == 904_771
  assert (c.resolution, c.mask_grid, c.mask_ratio, c.mask.strategy) == (64, 8, 0.75, "random")
  assert model.step == 6000
  assert {x.dtype for x in jax.tree.leaves(model.params)} == {jnp.dtype("float32")}


def test_beats_interpolation_on_a_face_it_never_saw(model):
  """Mean over 16 random 75% masks: the pasted reconstruction beats Gaussian
  interpolation and mean-colour fill of the same visible pixels."""
  image = np.repeat(_face(), 16, axis=0)
  spec = masking.mask_spec_from_config(model.config)
  grid = masking.draw_indexed(spec, 7, jnp.arange(16), 0.75)
  mask = np.asarray(masking.to_pixels(grid, 64, 64))
  pred, _ = model.reconstruct(image, mask=mask)
  target = jnp.asarray(image)
  pasted = metrics.paste_visible(jnp.asarray(pred), target, jnp.asarray(mask))
  interp = metrics.interpolation_fill(target, jnp.asarray(mask),
                                      metrics.interpolation_sigma(64, 8))
  fill = metrics.mean_colour_fill(target, jnp.asarray(mask))
  psnr = lambda x: float(jnp.mean(metrics.psnr_from_mse(metrics.per_image_mse(x, target))))
  assert psnr(pasted) > psnr(interp) > psnr(fill), (psnr(pasted), psnr(interp), psnr(fill))


def test_evaluate_on_a_copy(tmp_path, monkeypatch):
  """What `python -m minr_jax.evaluate --workdir=<a copy> --datasets=image_folder:<faces>` runs."""
  from minr_jax import evaluate  # noqa: PLC0415
  monkeypatch.setenv("HOME", str(tmp_path))  # the folder is prepared under ~/tensorflow_datasets
  copy = tmp_path / "celeba64"
  shutil.copytree(PRETRAINED, copy)
  photo = skimage.data.astronaut()
  for split in ("train", "val"):
    folder = tmp_path / "faces" / split
    folder.mkdir(parents=True)
    for i, (y, x) in enumerate([(25, 140), (15, 130), (35, 150), (20, 145)]):
      Image.fromarray(photo[y:y + 170, x:x + 170]).save(folder / f"{i}.png")
  step, results = evaluate.evaluate_workdir(str(copy), f"image_folder:{tmp_path / 'faces'}")
  (row,) = results.values()
  assert step == 6000 and row["num_images"] == 4
  for key in ("psnr_pasted", "psnr_full_interpolation", "psnr_full_mean_fill"):
    assert np.isfinite(row[key])
  assert os.path.exists(copy / "eval" / "6000" / "results.md")
