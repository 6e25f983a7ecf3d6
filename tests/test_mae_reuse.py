"""An MAE checkpoint through the reuse API (load, embed, reconstruct) and the robustness sweep."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from helpers import make_image_folder

import minr_jax
from configs import mae as mae_config
from minr_jax import data, families, masking, metrics
from minr_jax.config import ConfigError
from minr_jax.evaluation import robustness, scoring
from minr_jax.training import loop

pytestmark = pytest.mark.slow  # end-to-end: trains or runs subprocesses


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A 2-step configs/mae.py:tiny run: (workdir, config, final eval, Minr)."""
  root = tmp_path_factory.mktemp("mae_reuse")
  folder = make_image_folder(str(root / "faces"), num_val=5)
  config = mae_config.get_config("tiny")
  config.dataset.name, config.dataset.path = "image_folder", folder
  config.dataset.data_dir = str(root / "tfds")
  config.batch_size = config.eval_batch_size = 8
  config.num_train_steps = 2
  workdir = str(root / "run")
  final = loop.train_and_evaluate(config, workdir)
  return workdir, config, final["image_folder:faces"], minr_jax.load(workdir)


def test_reconstruct_equals_the_training_evaluation(run):
  _, config, final, m = run
  assert m.family == "mae" and m.kinds == ("data_mean", "cls")
  batch = next(iter(data.make_eval_batches(config)))
  valid = batch["valid"]
  images, indices = batch["image"][valid], batch["index"][valid]
  pred, mask = m.reconstruct(images, indices=indices)
  assert pred.shape == images.shape and mask.mean() == pytest.approx(0.75)
  grid_fn = jax.jit(
    functools.partial(
      scoring._grid_predict, model=m.model, family=families.get(m.config), config=m.config
    )
  )
  inputs, pred_eval, *_ = grid_fn(m.params, batch, masking.eval_masks(m.config, batch["index"]))
  out = {"inputs": inputs, "pred": pred_eval}
  np.testing.assert_allclose(pred, np.asarray(out["pred"])[valid], atol=1e-5)
  psnr = metrics.reconstruction_metrics(pred, images, mask)["psnr_full"]
  assert float(np.mean(psnr)) == pytest.approx(final["psnr_full"], abs=1e-4)


def test_embeddings_of_an_mae(run):
  _, config, _, m = run
  images = np.random.default_rng(0).uniform(size=(11, 16, 16, 3)).astype(np.float32)
  full = m.embed(images)  # every patch visible
  assert full.shape == (11, config.model.dim) and np.isfinite(full).all()
  np.testing.assert_array_equal(m.embed(images), full)  # deterministic
  np.testing.assert_allclose(m.embed(images[:3]), full[:3], atol=1e-5)  # chunk-independent
  masked = m.embed(images, mask="random")
  assert not np.allclose(masked, full)
  assert m.embed(images, kind="cls").shape == (11, config.model.dim)
  # A hand-made patch-aligned mask: the same count in every image.
  hidden = np.zeros((16, 16), bool)
  hidden[:8] = True  # the top two rows of 4-pixel patches: 8 of 16
  assert m.embed(images, mask=hidden).shape == full.shape


def test_mae_errors_name_the_problem(run):
  _, _, _, m = run
  images = np.zeros((2, 16, 16, 3), np.float32)
  with pytest.raises(ConfigError, match="kind='modulations': a mae model gives data_mean, cls"):
    m.embed(images, kind="modulations")
  with pytest.raises(ConfigError, match="has no INR"):
    m.render(images, 32, 32)
  ragged = np.zeros((2, 16, 16), bool)
  ragged[:, :3] = True  # 3-pixel rows: not on the 4-pixel patch grid
  with pytest.raises(ConfigError, match="aligned with its 4x4 grid"):
    m.embed(images, mask=ragged)
  uneven = np.zeros((2, 16, 16), bool)
  uneven[0, :4] = True
  with pytest.raises(ConfigError, match="same number of hidden patches"):
    m.reconstruct(images, mask=uneven)


def test_robustness_sweep_of_an_mae(run):
  workdir, _, final, _ = run
  step, rows = robustness.run_sweep(workdir, strategies="random_exact,center", ratios="0.5,0.75")
  assert step == 2 and len(rows) == 4
  own = [r for r in rows if r["strategy"] == "random_exact" and r["ratio"] == 0.75][0]
  assert own["psnr_full"] == pytest.approx(final["psnr_full"], abs=1e-4)
  assert own["mask_fraction"] == pytest.approx(0.75)
  half = [r for r in rows if r["strategy"] == "center" and r["ratio"] == 0.5][0]
  assert half["mask_fraction"] == pytest.approx(0.5)
  with pytest.raises(ConfigError, match="'random' is not supported by a mae"):
    robustness.run_sweep(workdir, strategies="random")
  assert masking.STRATEGIES[0] == "random"
