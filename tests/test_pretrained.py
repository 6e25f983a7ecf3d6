"""pretrained/celeba64: the checkpoint in the checkout loads and works like any workdir.

docs/pretrained.md is its model card. These tests use nothing outside the
checkout: a face the model never saw comes from scikit-image (the astronaut
portrait), and the evaluation runs on a folder of crops written here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from helpers import folder_bytes
from PIL import Image

import minr_jax
from minr_jax import checkpoint, masking, metrics, writers
from minr_jax import config as config_lib

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
  size = folder_bytes(PRETRAINED)
  assert size <= 20 * 2**20, size
  assert os.path.exists(os.path.join(PRETRAINED, "config.json"))


def test_loads_as_the_model_card_says(model):
  c = model.config
  assert model.family == "transinr" and model.num_params == 904_771
  assert (c.resolution, c.mask_grid, c.mask_ratio, c.mask.strategy) == (64, 8, 0.75, "random")
  assert model.step == 6000
  assert {x.dtype for x in jax.tree.leaves(model.params)} == {jnp.dtype("float32")}


def _scores(model, ratio: float) -> dict[str, float]:
  """Mean PSNR over 16 seeded masks hiding `ratio` of the astronaut face's patches."""
  image = np.repeat(_face(), 16, axis=0)
  spec = masking.mask_spec_from_config(model.config)
  grid = masking.draw_indexed(spec, 7, jnp.arange(16), ratio)
  mask = jnp.asarray(masking.to_pixels(grid, 64, 64))
  pred, _ = model.reconstruct(image, mask=np.asarray(mask))
  target, pred = jnp.asarray(image), jnp.asarray(pred)
  psnr = lambda x: float(jnp.mean(metrics.psnr_from_mse(metrics.per_image_mse(x, target))))
  return dict(
    full=psnr(pred),
    pasted=psnr(metrics.paste_visible(pred, target, mask)),
    interpolation=psnr(
      metrics.interpolation_fill(target, mask, metrics.interpolation_sigma(64, 8))
    ),
    fill=psnr(metrics.mean_colour_fill(target, mask)),
  )


def test_the_model_cards_figures_on_a_face_it_never_saw(model):
  """docs/pretrained.md's astronaut row: the shipped parameters give the same numbers."""
  s = _scores(model, 0.75)
  assert s["pasted"] == pytest.approx(14.161, abs=0.02), s
  assert s["interpolation"] == pytest.approx(14.010, abs=0.002), s
  assert s["pasted"] > s["fill"] + 1.0, s


def test_reconstructions_follow_the_input(model):
  """Fewer hidden patches, better reconstructions: the output depends on what is visible."""
  full = [_scores(model, r)["full"] for r in (0.75, 0.5, 0.25)]
  assert full[0] + 0.5 < full[1] < full[2] - 0.3, full


def test_evaluate_on_a_copy(tmp_path, monkeypatch):
  """What `python -m minr_jax.evaluate --workdir=<a copy> --datasets=image_folder:<faces>` runs."""
  from minr_jax.evaluation import runner

  monkeypatch.setenv("HOME", str(tmp_path))  # the folder is prepared under ~/tensorflow_datasets
  copy = tmp_path / "celeba64"
  shutil.copytree(PRETRAINED, copy)
  photo = skimage.data.astronaut()
  for split in ("train", "val"):
    folder = tmp_path / "faces" / split
    folder.mkdir(parents=True)
    for i, (y, x) in enumerate([(25, 140), (15, 130), (35, 150), (20, 145)]):
      Image.fromarray(photo[y : y + 170, x : x + 170]).save(folder / f"{i}.png")
  step, results = runner.evaluate_workdir(str(copy), f"image_folder:{tmp_path / 'faces'}")
  (row,) = results.values()
  assert step == 6000 and row["num_images"] == 4
  for key in ("psnr_pasted", "psnr_full_interpolation", "psnr_full_mean_fill"):
    assert np.isfinite(row[key])
  assert os.path.exists(copy / "eval" / "6000" / "results.md")


def test_the_readme_snippet_runs(tmp_path, monkeypatch):
  """README's "Try it without training" block, as written (run from another folder)."""
  readme = open(os.path.join(ROOT, "README.md")).read()
  block = readme.split("## Try it without training", 1)[1].split("```python\n", 1)[1]
  code = block.split("```", 1)[0]
  assert 'minr_jax.load("pretrained/celeba64")' in code
  monkeypatch.chdir(tmp_path)
  exec(code.replace('"pretrained/celeba64"', repr(PRETRAINED)), {})  # noqa: S102
  image = Image.open(tmp_path / "face.png")
  assert image.size == writers.image_grid_size(1, 4, 64, 64, with_titles=True)


def test_the_readme_snippet_prints_no_warning(tmp_path):
  """The first thing a newcomer runs says nothing but what it computes (issue 32):
  no config-age warning from the shipped config.json, no checksum line, no traceback."""
  readme = open(os.path.join(ROOT, "README.md")).read()
  block = readme.split("## Try it without training", 1)[1].split("```python\n", 1)[1]
  code = block.split("```", 1)[0].replace('"pretrained/celeba64"', repr(PRETRAINED))
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
  out = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env
  )
  assert out.returncode == 0, out.stderr[-2000:]
  noise = [l for l in (out.stdout + out.stderr).splitlines() if "warn" in l.lower() or "Trace" in l]
  assert noise == [], noise
  assert (tmp_path / "face.png").exists()


@pytest.mark.parametrize("name", ["celeba64", "photos64"])
def test_shipped_config_files_carry_every_current_field(name):
  """pretrained/*/config.json hold every field of their variant's current config, so
  reading them completes nothing; their checkpoints are the files the manifest lists."""
  stored = _flat(json.load(open(os.path.join(ROOT, "pretrained", name, "config.json"))))
  current = _flat(json.loads(config_lib.load_file(f"configs/transinr.py:{name}").to_json()))
  assert sorted(set(current) - set(stored)) == []
  manager = checkpoint.open_read_only(os.path.join(ROOT, "pretrained", name))
  try:
    (step,) = manager.all_steps()
    assert os.path.exists(checkpoint.step_dir(manager, step) / checkpoint.MANIFEST)
    assert checkpoint.verify(manager, step) is None  # the parameters' files are unchanged
  finally:
    manager.close()


def _flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
  return out
