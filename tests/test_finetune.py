"""Training options beyond the paper's recipe: the LPIPS term (config.lpips_weight),
starting from a checkpoint (config.init_from), and the wall-time checkpoint cadence."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import make_image_folder, tiny_config

from minr_jax import families, masking, metrics, sharding, similarity
from minr_jax.config import ConfigError
from minr_jax.inference import restore as restore_lib
from minr_jax.training import loop
from minr_jax.training import steps as steps_lib

pytestmark = pytest.mark.slow  # trains


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return make_image_folder(str(tmp_path_factory.mktemp("finetune_images")), size=40)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, folder, data_dir):
  """A 3-step tiny run: what init_from starts from."""
  workdir = str(tmp_path_factory.mktemp("source") / "run")
  config = tiny_config(data_dir, folder, num_train_steps=3, eval_every_steps=3)
  config.checkpoint_every_steps = 3
  loop.train_and_evaluate(config, workdir)
  return workdir


def test_the_lpips_term_is_added_to_the_papers_loss_on_the_pasted_prediction(folder, data_dir):
  config = tiny_config(data_dir, folder, resolution=32, mask_grid=4)
  config.model.inr_chunk = 0
  family = families.check(config)
  model = family.build(config)
  params = family.init(model, jax.random.key(0))
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
  grid = masking.train_masks(config, jax.random.key(2), 2)
  kw = dict(config=config, dropout_key=jax.random.key(3), coord_key=jax.random.key(4))
  plain, mse = family.train_loss(model, params, images, grid, **kw)
  config.lpips_weight = 0.5
  with_term, mse_again = family.train_loss(model, params, images, grid, **kw)
  pred = family.predict(model, params, images, grid, config=config)[0]
  pasted = metrics.paste_visible(pred, images, masking.to_pixels(grid, 32, 32))
  term = float(jnp.mean(similarity.lpips(jnp.clip(pasted, 0, 1), images)))
  assert term > 0.01
  assert float(with_term) == pytest.approx(float(plain) + 0.5 * term, rel=1e-4)
  np.testing.assert_allclose(mse_again, mse, rtol=1e-5)  # the reported MSE is the paper's
  grads = jax.grad(lambda p: family.train_loss(model, p, images, grid, **kw)[0])(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize(
  "overrides, message",
  [
    (dict(lpips_weight=-1.0), "config.lpips_weight must be a finite number >= 0"),
    (dict(lpips_weight=0.1), "config.lpips_weight=0.1 needs config.resolution >= 31"),
    (dict(init_from="/no/such/run"), "config.init_from=/no/such/run: no such workdir"),
  ],
)
def test_bad_options_fail_in_one_line_naming_the_field(folder, data_dir, overrides, message):
  with pytest.raises(ConfigError, match=message):
    families.check(tiny_config(data_dir, folder, **overrides))


def test_mae_refuses_the_lpips_term():
  from configs import mae as mae_config

  config = mae_config.get_config("demo")
  config.lpips_weight = 0.1
  with pytest.raises(ConfigError, match="config.lpips_weight=0.1: the perceptual term is MINR"):
    families.check(config)


def test_init_from_starts_at_step_0_with_the_checkpoints_parameters(trained, folder, data_dir):
  config = tiny_config(data_dir, folder, init_from=trained)
  mesh = sharding.make_mesh(config)
  steps = steps_lib.make_steps(config, mesh)
  fresh = steps.init_state(jax.random.key(0))
  state = loop._init_from(trained, steps, fresh)
  source = restore_lib.restore(trained)
  assert int(state.step) == 0
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(source.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not all(
    np.array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(fresh.params))
  )
  # A fresh optimizer: Adam's moments are zero.
  assert all(float(jnp.max(jnp.abs(x))) == 0.0 for x in jax.tree.leaves(state.opt_state) if x.ndim)


def test_init_from_a_different_model_names_the_field(trained, folder, data_dir):
  config = tiny_config(data_dir, folder, init_from=trained)
  config.model.dim = config.model.dim * 2
  steps = steps_lib.make_steps(config, sharding.make_mesh(config))
  with pytest.raises(ConfigError, match="config.init_from=.* holds a different model"):
    loop._init_from(trained, steps, steps.init_state(jax.random.key(0)))


def test_a_run_from_init_from_trains_and_a_resumed_one_ignores_it(
  tmp_path, trained, folder, data_dir, capsys
):
  workdir = str(tmp_path / "tuned")
  config = tiny_config(data_dir, folder, init_from=trained, num_train_steps=2, eval_every_steps=2)
  config.checkpoint_every_steps = 2
  loop.train_and_evaluate(config, workdir)
  assert "(config.init_from)" in capsys.readouterr().out
  config.num_train_steps = 4
  config.eval_every_steps = 4
  loop.train_and_evaluate(config, workdir)
  out = capsys.readouterr().out
  assert "resumed from" in out and "(config.init_from)" not in out


def test_the_wall_time_cadence_saves_between_the_step_checkpoints(
  tmp_path, folder, data_dir, capsys
):
  # The cadence is timed on steps whose results are ready: timing their dispatch
  # alone made it several times too long (the 77,042-step MAE run saved no
  # time-based checkpoint at all).
  workdir = str(tmp_path / "run")
  config = tiny_config(data_dir, folder, num_train_steps=60, eval_every_steps=1000)
  config.checkpoint_every_steps, config.keep_checkpoints = 1000, 100
  config.checkpoint_every_secs = 0.3
  loop.train_and_evaluate(config, workdir)
  out = capsys.readouterr().out
  assert "config.checkpoint_every_secs=0.3: a checkpoint every" in out
  saved = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")))
  assert saved[-1] == 60 and len(saved) >= 3, saved


def _initial_step(config) -> int:
  """The step of the state `config.init_from` starts from (raises on a shape mismatch)."""
  steps = steps_lib.make_steps(config, sharding.make_mesh(config))
  state = loop._init_from(config.init_from, steps, steps.init_state(jax.random.key(0)))
  return int(state.step)


def test_the_photos64_lpips_variant_fine_tunes_the_shipped_photo_model():
  from configs import transinr as transinr_config

  config = transinr_config.get_config("photos64_lpips")
  assert config.lpips_weight > 0 and os.path.isdir(config.init_from)
  assert _initial_step(config) == 0  # the shipped model's shapes are the variant's


def test_the_ginr_photos64_lpips_variant_fine_tunes_the_shipped_ginr_model():
  from configs import ginr as ginr_config

  config = ginr_config.get_config("photos64_lpips")
  assert config.model.family == "ginr" and config.init_from.endswith("ginr_photos64")
  assert (config.lpips_weight, config.num_train_steps, config.learning_rate) == (0.1, 2000, 1e-4)
  assert _initial_step(config) == 0  # the shipped model's shapes are the variant's
