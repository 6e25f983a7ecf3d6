"""The GINR hypernetwork: paper parameter count, outputs, shared layers, training."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import ginr as ginr_config
from minr_jax import families
from minr_jax.models import ginr, inr


def _count(params) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


def _abstract_params(config):
  model = families.get(config).build(config)
  size = config.resolution
  init = functools.partial(model.init, images=jnp.zeros((1, size, size, 3), jnp.float32))
  return model, jax.eval_shape(init, jax.random.key(0))["params"]


@pytest.fixture(scope="module")
def tiny():
  """(model, params, images [3, 16, 16, 3]) of configs/ginr.py:tiny."""
  model = families.get(ginr_config.get_config("tiny")).build(ginr_config.get_config("tiny"))
  images = jax.random.uniform(jax.random.key(0), (3, 16, 16, 3))
  params = jax.jit(model.init)(jax.random.key(1), images[:1])["params"]
  return model, params, images


def test_paper_config_parameter_count():
  model, params = _abstract_params(ginr_config.get_config("celeba"))
  count = _count(params)
  assert count == 43_680_771  # breakdown in minr_jax/models/ginr.py's docstring
  assert abs(count - 43_750_000) < 100_000  # the REFERENCE's "about 43.75M"
  # + the reference's unused 256 x 256 base weight of layer 1 = 43,746,307 = 43.75M.
  assert round((count + 256 * 256) / 1e4) / 100 == 43.75
  assert model.num_data_tokens == 400 and model.ff_sigma == 64.0


def test_paper_config_structure():
  _, params = _abstract_params(ginr_config.get_config("celeba"))
  assert params["pos_embed"].shape == (400, 768)
  assert params["weight_tokens"].shape == (256, 768)
  assert params["patch_embed"]["kernel"].shape == (243, 768)
  assert params["head"]["kernel"].shape == (768, 256)
  assert params["shared_factor"].shape == (256, 256)
  assert params["bias_1"].shape == (256,)
  assert "base_1" not in params
  assert [params[f"base_{i}"].shape for i in (0, 2, 3, 4)] == [(257, 256)] * 3 + [(257, 3)]
  assert len(params["transformer"]) == 6
  attn = params["transformer"]["block_0"]["attn"]
  assert all("bias" in attn[k] for k in ("query", "key", "value", "out"))
  assert params["transformer"]["block_0"]["mlp"]["fc1"]["kernel"].shape == (768, 3072)


def test_config_variants():
  steps = {"celeba": 5_087 * 30, "imagenette": 296 * 400, "indoor": 168 * 400}
  for variant, sigma, noise in (
    ("celeba", 64.0, 0.0),
    ("imagenette", 128.0, 0.5),
    ("indoor", 128.0, 0.5),
  ):
    c = ginr_config.get_config(variant)
    assert c.model.family == "ginr" and c.model.qkv_bias and c.model.dropout == 0.1
    assert c.model.ff_sigma == sigma and c.model.coord_noise == noise
    assert c.model.ginr_rank == 256 and c.model.ginr_layer == 1
    assert c.batch_size == 32 and c.learning_rate == 1e-4 and c.lr_decay_at == 0.8
    assert c.num_train_steps == steps[variant]
  default, celeba = ginr_config.get_config(), ginr_config.get_config("celeba")
  assert default.model.to_dict() == celeba.model.to_dict()
  assert (default.batch_size, default.num_train_steps) == (32, steps["celeba"])
  assert ginr_config.get_config("demo").resolution == 64
  with pytest.raises(ValueError, match="unknown variant"):
    ginr_config.get_config("nope")


def test_init_of_shared_layers(tiny):
  model, params, _ = tiny
  for i, (fan_in, fan_out) in enumerate(model.inr_shapes):
    if i == model.modulated_layer:
      np.testing.assert_array_equal(params[f"bias_{i}"], 0.0)
      continue
    base = np.asarray(params[f"base_{i}"])
    assert base.shape == (fan_in + 1, fan_out)
    np.testing.assert_array_equal(base[-1], 0.0)  # biases zero
    assert np.abs(base[:-1]).max() <= 1.0 / np.sqrt(fan_out)  # GINR's kaiming_uniform
  # The paper's INR shapes without a transformer (depth 0), for the statistics.
  model = ginr.GINR(
    image_size=8, patch_size=4, padding=0, dim=8, depth=0, num_heads=1, head_dim=8, mlp_dim=8
  )
  p = model.init(jax.random.key(2), jnp.zeros((1, 8, 8, 3)))["params"]
  v = np.asarray(p["shared_factor"])  # N(0, 1) / sqrt(rank * fan_in)
  assert v.shape == (256, 256)
  np.testing.assert_allclose(np.std(v), 1 / 256, rtol=0.02)
  last = np.asarray(p["base_4"][:-1])  # the 256 -> 3 layer: bound 1/sqrt(fan_out)
  np.testing.assert_allclose(np.abs(last).max(), 1 / np.sqrt(3), rtol=0.02)
  np.testing.assert_allclose(np.abs(np.asarray(p["base_0"][:-1])).max(), 1 / 16, rtol=0.01)


def test_tiny_model_outputs(tiny):
  model, params, images = tiny
  out = model.apply({"params": params}, images)
  shapes = model.inr_shapes
  assert len(shapes) == 3 and model.modulated_layer == 1
  assert [w.shape for w in out["weights"]] == [(3, fi + 1, fo) for fi, fo in shapes]
  assert [m.shape for m in out["modulations"]] == [(3, shapes[1][0], 8)]
  assert out["data_tokens"].shape == (3, 16, 32)
  assert out["weight_tokens"].shape == (3, 8, 32)
  for w in out["weights"]:
    assert w.dtype == jnp.float32


def test_only_layer_1_differs_across_images(tiny):
  model, params, images = tiny
  weights = [np.asarray(w) for w in model.apply({"params": params}, images)["weights"]]
  for i, w in enumerate(weights):
    if i == 1:
      assert not np.allclose(w[0, :-1], w[1, :-1])
      assert not np.allclose(w[1, :-1], w[2, :-1])
      np.testing.assert_array_equal(w[:, -1], np.broadcast_to(params["bias_1"], w[:, -1].shape))
    else:
      for b in range(1, 3):
        np.testing.assert_array_equal(w[b], w[0])
      base = np.asarray(params[f"base_{i}"])
      np.testing.assert_array_equal(w[0, -1], base[-1])
      want = base[:-1] / np.linalg.norm(base[:-1], axis=0, keepdims=True)
      np.testing.assert_allclose(w[0, :-1], want, rtol=1e-5, atol=1e-6)


def test_layer_1_is_normalised_u_times_v(tiny):
  model, params, images = tiny
  out = model.apply({"params": params}, images)
  w, u = np.asarray(out["weights"][1][:, :-1]), np.asarray(out["modulations"][0])
  np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1.0, rtol=1e-5)
  product = u @ np.asarray(params["shared_factor"])
  want = product / np.linalg.norm(product, axis=1, keepdims=True)
  np.testing.assert_allclose(w, want, rtol=1e-4, atol=1e-6)


def test_shared_layers_unnormalised_when_switched_off(tiny):
  model, params, images = tiny
  plain = model.clone(normalize_shared=False)
  w = plain.apply({"params": params}, images)["weights"][0]
  np.testing.assert_array_equal(w[0], params["base_0"])


def test_dropout_only_in_training_with_a_dropout_rng(tiny):
  model, params, images = tiny
  assert model.dropout == 0.1
  apply = lambda **kw: np.asarray(model.apply({"params": params}, images, **kw)["weights"][1])
  ref = apply()
  np.testing.assert_array_equal(apply(train=False), ref)
  np.testing.assert_array_equal(apply(train=False, rngs={"dropout": jax.random.key(3)}), ref)
  a = apply(train=True, rngs={"dropout": jax.random.key(3)})
  b = apply(train=True, rngs={"dropout": jax.random.key(4)})
  assert not np.allclose(a, ref) and not np.allclose(a, b)
  np.testing.assert_array_equal(apply(train=True, rngs={"dropout": jax.random.key(3)}), a)
  with pytest.raises(Exception, match="dropout"):
    apply(train=True)


def test_render_gives_images(tiny):
  model, params, images = tiny
  out = model.apply({"params": params}, images)
  coords = inr.coord_grid(16, 16)
  pred = inr.render(out["weights"], coords, model.freqs(), model.output_bias)
  assert pred.shape == (3, 16, 16, 3) and np.isfinite(np.asarray(pred)).all()
  one = inr.render([w[2:3] for w in out["weights"]], coords, model.freqs(), model.output_bias)[
    0
  ]  # image 2 alone
  np.testing.assert_allclose(pred[2], one, rtol=1e-5, atol=1e-5)


def test_jitted_adam_steps_decrease_the_loss(tiny):
  model, params, images = tiny
  target = jax.random.uniform(jax.random.key(5), images.shape)
  coords = inr.coord_grid(16, 16)
  optimizer = optax.adam(1e-3)

  def loss_fn(p, key):
    out = model.apply({"params": p}, images, train=True, rngs={"dropout": key})
    pred = inr.render(out["weights"], coords, model.freqs(), model.output_bias)
    return jnp.mean((pred - target) ** 2)

  @jax.jit
  def step(p, opt_state, key):
    loss, grads = jax.value_and_grad(loss_fn)(p, key)
    updates, opt_state = optimizer.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, loss

  opt_state = optimizer.init(params)
  losses = []
  for key in jax.random.split(jax.random.key(6), 20):
    params, opt_state, loss = step(params, opt_state, key)
    losses.append(float(loss))
  assert np.isfinite(losses).all()
  assert losses[-1] < 0.8 * losses[0], losses


def test_coord_noise_jitters_training_coordinates_only(tiny):
  """GINR's coordinate jitter: per image and pixel, within the bound, train only."""
  coords = inr.coord_grid(16, 16)
  a = inr.jitter_coords(jax.random.key(0), coords, 3, 0.5)
  assert a.shape == (3, 16, 16, 2)
  shift = np.asarray(a - coords[None]) / (2.0 / 16)  # in pixel spacings
  assert np.abs(shift).max() <= 0.5 + 1e-5 and np.abs(shift).max() > 0.4
  assert not np.allclose(a[0], a[1])  # each image its own jitter
  model, params, images = tiny
  weights = model.apply({"params": params}, images)["weights"]
  exact = inr.render(weights, coords, model.freqs(), model.output_bias)
  # render_per_image at the exact grid is render.
  same = inr.render_per_image(
    weights, jnp.broadcast_to(coords, (3, 16, 16, 2)), model.freqs(), model.output_bias
  )
  np.testing.assert_allclose(same, exact, rtol=1e-5, atol=1e-6)

  from minr_jax import families

  config = ginr_config.get_config("tiny")
  config.resolution = 16
  config.model.coord_noise = 0.5
  masks = jnp.zeros((3, 4, 4), bool)
  keys = dict(dropout_key=jax.random.key(1), coord_key=jax.random.key(2))
  noisy, _ = families.get(config).predict(
    model, params, images, masks, config=config, train=True, **keys
  )
  config.model.coord_noise = 0.0
  plain, _ = families.get(config).predict(
    model, params, images, masks, config=config, train=True, **keys
  )
  assert not np.allclose(noisy, plain)
  config.model.coord_noise = 0.5  # evaluation renders the exact grid
  evaluated, _ = families.get(config).predict(model, params, images, masks, config=config)
  np.testing.assert_allclose(evaluated, exact, rtol=1e-5, atol=1e-6)
