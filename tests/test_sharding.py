"""The (data, fsdp) mesh: same losses on every mesh, parameters really split, errors."""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import make_image_folder, tiny_config
from jax.sharding import PartitionSpec as P

from minr_jax import families, sharding, writers
from minr_jax.config import ConfigError
from minr_jax.training import loop, steps


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return make_image_folder(str(tmp_path_factory.mktemp("sharding_images")))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("sharding_tfds"))


def _losses(workdir: str) -> dict[int, float]:
  out = {}
  for rec in writers.read_metrics(os.path.join(workdir, "metrics.jsonl")):
    if rec["split"] == "train":
      out[rec["step"]] = rec["loss"]
  return out


def _abstract_state(config):
  model, tx = families.get(config).build(config), families.get(config).make_optimizer(config)

  def init_state(key):
    params = families.get(config).init(model, key)
    return steps.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  return model, tx, init_state, jax.eval_shape(init_state, jax.random.key(0))


def test_eight_fake_devices():
  assert jax.device_count() == 8


@pytest.mark.slow
def test_same_losses_on_every_mesh(tmp_path, folder, data_dir):
  losses = {}
  for data, fsdp in ((8, 1), (2, 4), (1, 1)):
    config = tiny_config(
      data_dir,
      folder,
      num_train_steps=3,
      log_every_steps=1,
      eval_every_steps=3,
      checkpoint_every_steps=3,
      mesh__data=data,
      mesh__fsdp=fsdp,
      fsdp_min_size=64,
    )
    workdir = str(tmp_path / f"{data}x{fsdp}")
    loop.train_and_evaluate(config, workdir)
    losses[(data, fsdp)] = _losses(workdir)
  reference = losses[(1, 1)]
  assert sorted(reference) == [1, 2, 3]
  for mesh, got in losses.items():
    assert sorted(got) == [1, 2, 3], mesh
    for step in (1, 2, 3):
      assert got[step] == pytest.approx(reference[step], rel=1e-4, abs=1e-6), (mesh, step)


def test_big_leaves_and_their_adam_moments_are_sharded_over_fsdp(data_dir):
  config = tiny_config(data_dir, mesh__data=2, mesh__fsdp=4, fsdp_min_size=1024)
  mesh = sharding.make_mesh(config)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4}
  model, tx, init_state, abstract = _abstract_state(config)
  shardings = sharding.config_state_shardings(config, mesh, abstract)
  state = jax.jit(init_state, out_shardings=shardings)(jax.random.key(0))
  fc1 = state.params["transformer"]["block_0"]["mlp"]["fc1"]["kernel"]  # 32 x 64
  assert fc1.size >= 1024
  assert fc1.sharding.spec == P(None, "fsdp")
  assert fc1.addressable_shards[0].data.shape == (32, 16)
  adam = state.opt_state[0]
  assert adam.mu["transformer"]["block_0"]["mlp"]["fc1"]["kernel"].sharding.spec == P(None, "fsdp")
  assert adam.nu["transformer"]["block_0"]["mlp"]["fc1"]["kernel"].sharding.spec == P(None, "fsdp")
  # Small leaves and scalars are replicated.
  assert state.params["transformer"]["block_0"]["ln1"]["scale"].sharding.spec == P()
  assert state.step.sharding.spec == P()
  assert adam.count.sharding.spec == P()
  # A step keeps the layout (the jitted step's out_shardings are the same rule).
  step = jax.jit(
    functools.partial(
      steps.train_step, model=model, tx=tx, config=config, family=families.get(config)
    ),
    in_shardings=(shardings, sharding.batch_sharding(mesh), sharding.replicated(mesh)),
    out_shardings=(shardings, sharding.replicated(mesh)),
  )
  images = np.random.default_rng(0).uniform(size=(8, 16, 16, 3)).astype(np.float32)
  state, out = step(state, sharding.global_batch(mesh, {"image": images}), jax.random.key(1))
  assert np.isfinite(float(out["loss"]))
  assert state.params["transformer"]["block_0"]["mlp"]["fc1"]["kernel"].sharding.spec == P(
    None, "fsdp"
  )


def test_fsdp_rule():
  assert sharding.fsdp_spec((768, 3072), 4, 1024) == P(None, "fsdp")
  assert sharding.fsdp_spec((768, 768), 4, 1024) == P("fsdp", None)  # tie: first axis
  assert sharding.fsdp_spec((769, 6), 4, 16) == P()  # no axis divisible
  assert sharding.fsdp_spec((10, 8), 4, 16) == P(None, "fsdp")
  assert sharding.fsdp_spec((64,), 4, 1024) == P()  # too small
  assert sharding.fsdp_spec((), 4, 0) == P()  # scalar
  assert sharding.fsdp_spec((768, 3072), 1, 0) == P()  # no fsdp axis
  # evaluate.restore_model's call: params only, default threshold.
  config = tiny_config("/unused", mesh__data=1, mesh__fsdp=8)
  mesh = sharding.make_mesh(config)
  abstract = {
    "w": jax.ShapeDtypeStruct((1024, 512), jnp.float32),
    "b": jax.ShapeDtypeStruct((512,), jnp.float32),
  }
  specs = jax.tree.map(lambda s: s.spec, sharding.state_shardings(mesh, abstract))
  assert specs == {"w": P("fsdp", None), "b": P()}


@pytest.mark.parametrize(
  "data,fsdp,message",
  [
    (3, 1, "config.mesh.data=3 x config.mesh.fsdp=1 = 3 devices do not fit the 8"),
    (4, 4, "config.mesh.data=4 x config.mesh.fsdp=4 = 16 devices do not fit"),
    (-1, 3, "config.mesh.fsdp=3 does not divide the 8 devices"),
    (-1, -1, "config.mesh.data and config.mesh.fsdp are both -1"),
    (0, 1, "config.mesh.data must be a positive integer or -1"),
  ],
)
def test_mesh_that_does_not_fit_is_a_config_error(tmp_path, data_dir, data, fsdp, message):
  config = tiny_config(data_dir, mesh__data=data, mesh__fsdp=fsdp)
  with pytest.raises(ConfigError, match=message):
    loop.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


def test_batch_must_divide_over_data_times_fsdp(tmp_path, data_dir):
  config = tiny_config(data_dir, mesh__data=2, mesh__fsdp=4, batch_size=4, eval_batch_size=4)
  with pytest.raises(
    ConfigError,
    match=r"config.batch_size=4 is not divisible by "
    r"config.mesh.data x config.mesh.fsdp = 2 x 4 = 8",
  ):
    loop.train_and_evaluate(config, str(tmp_path))


def test_bad_dtype_is_a_config_error(tmp_path, data_dir):
  config = tiny_config(data_dir, model__dtype="float16")
  with pytest.raises(ConfigError, match="config.model.dtype='float16'"):
    loop.train_and_evaluate(config, str(tmp_path))
