"""Attention implementations and the weight-token-only last block give the same maths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import transinr as transinr_config
from minr_jax import device_policy, families
from minr_jax.models import transformer
from minr_jax.models.transformer import Transformer

TOKENS = jax.random.normal(jax.random.key(0), (3, 13, 32))


def _stack(impl, dtype=None, dropout=0.0):
  return Transformer(
    depth=2, num_heads=4, head_dim=8, mlp_dim=64, dropout=dropout, dtype=dtype, attention_impl=impl
  )


def _max_diff(a, b):
  return max(
    float(np.max(np.abs(np.asarray(x, np.float32) - np.asarray(y, np.float32))))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )


def _value_and_grads(model, params, num_outputs=None):
  def f(p):
    y = model.apply(p, TOKENS.astype(model.dtype or jnp.float32), num_outputs=num_outputs)
    return jnp.sum(jnp.sin(y.astype(jnp.float32)) * jnp.arange(y.shape[1])[:, None]), y

  (_, y), grads = jax.jit(jax.value_and_grad(f, has_aux=True))(params)  # as in training
  return y, grads


def _init(model):
  return jax.jit(model.init)(jax.random.key(1), TOKENS)


def test_per_head_attention_equals_batched_in_value_and_gradient():
  params = _init(_stack("batched"))
  y_b, g_b = _value_and_grads(_stack("batched"), params)
  y_h, g_h = _value_and_grads(_stack("per_head"), params)
  assert _max_diff(y_b, y_h) < 1e-5
  assert _max_diff(g_b, g_h) < 1e-4
  # The tolerance is meaningful: other inputs move the output far beyond it.
  assert _max_diff(y_b, _stack("batched").apply(params, TOKENS * 2.0)) > 1e-2


def _relative_error(ref, other):
  """Largest |ref - other| / max |ref| over the arrays of two pytrees."""
  return max(
    float(
      np.max(np.abs(np.asarray(x, np.float32) - np.asarray(y, np.float32)))
      / np.max(np.abs(np.asarray(x, np.float32)))
    )
    for x, y in zip(jax.tree.leaves(ref), jax.tree.leaves(other))
  )


def test_per_head_attention_in_bfloat16_is_as_close_to_float32_as_batched():
  params = _init(_stack("batched"))
  y32, g32 = _value_and_grads(_stack("batched"), params)
  y_b, g_b = _value_and_grads(_stack("batched", jnp.bfloat16), params)
  y_h, g_h = _value_and_grads(_stack("per_head", jnp.bfloat16), params)
  assert y_h.dtype == jnp.bfloat16
  assert jax.tree.leaves(g_h)[0].dtype == jnp.float32
  for ref, batched, per_head in ((y32, y_b, y_h), (g32, g_b, g_h)):
    assert _relative_error(ref, per_head) < max(0.05, 2 * _relative_error(ref, batched))


@pytest.mark.parametrize("impl", ["batched", "per_head"])
def test_num_outputs_computes_exactly_the_last_rows(impl):
  model = _stack(impl)
  params = _init(model)
  full = jax.jit(model.apply)(params, TOKENS)
  part = jax.jit(lambda p, x: model.apply(p, x, num_outputs=4))(params, TOKENS)
  assert part.shape == (3, 4, 32)
  np.testing.assert_allclose(np.asarray(part), np.asarray(full[:, -4:]), rtol=1e-6, atol=1e-6)
  # The gradient of a loss on those rows is the same as through the full stack.
  loss = lambda p, n: jnp.sum(jnp.sin(model.apply(p, TOKENS, num_outputs=n)[:, -4:]))
  full_loss = lambda p: jnp.sum(jnp.sin(model.apply(p, TOKENS)[:, -4:]))
  grad = jax.jit(jax.grad(loss), static_argnums=1)
  assert _max_diff(jax.jit(jax.grad(full_loss))(params), grad(params, 4)) < 1e-5


def test_remat_takes_num_outputs():
  model = Transformer(depth=2, num_heads=4, head_dim=8, mlp_dim=64, remat=True)
  params = _init(model)
  grads = jax.jit(jax.grad(lambda p: jnp.sum(model.apply(p, TOKENS, True, 4))))(params)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def _tiny_model(family, **model_fields):
  """configs/transinr.py:tiny as `family` (GINR: rank 8), its fresh parameters and 2 images."""
  config = transinr_config.get_config("tiny")
  config.model.family = family
  if family == "ginr":
    config.model.ginr_rank, config.model.ginr_layer = 8, 1
    config.model.qkv_bias = True
  for name, value in model_fields.items():
    config.model[name] = value
  model = families.get(config).build(config)
  params = families.get(config).init(model, jax.random.key(1))
  return config, model, params, jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))


@pytest.mark.parametrize("family", ["transinr", "ginr"])
def test_training_forward_skips_data_tokens_with_the_same_weights(family):
  _, model, params, images = _tiny_model(family)
  full = jax.jit(model.apply)({"params": params}, images)
  lean = jax.jit(lambda v, x: model.apply(v, x, data_tokens=False))({"params": params}, images)
  assert lean["data_tokens"] is None
  assert _max_diff(full["weights"], lean["weights"]) < 1e-5
  assert _max_diff(full["weight_tokens"], lean["weight_tokens"]) < 1e-5


def test_auto_settings_resolve_per_mesh_devices():
  import types

  config = transinr_config.get_config("tiny")
  cpu = types.SimpleNamespace(platform="cpu")
  tpu = types.SimpleNamespace(platform="tpu")
  one, resolved = device_policy.resolve_auto(config, [cpu])
  assert (one.model.attention_impl, one.model.inr_chunk) == ("per_head", 4096)
  assert resolved == {"model.attention_impl": "per_head", "model.inr_chunk": 4096}
  for devices in ([cpu, cpu], [tpu]):
    many, _ = device_policy.resolve_auto(config, devices)
    assert (many.model.attention_impl, many.model.inr_chunk) == ("batched", 0)
  config.model.attention_impl, config.model.inr_chunk = "batched", 40
  fixed, resolved = device_policy.resolve_auto(config, [cpu])
  assert (fixed.model.attention_impl, fixed.model.inr_chunk, resolved) == ("batched", 40, {})
  from configs import mae as mae_config

  assert device_policy.resolve_auto(mae_config.get_config("tiny"), [cpu])[0].model.inr_chunk == 0
  with pytest.raises(ValueError, match="attention_impl='x'"):
    transformer.Attention(num_heads=1, head_dim=4, attention_impl="x").init(
      jax.random.key(0), jnp.zeros((1, 2, 4))
    )


@pytest.mark.parametrize("family,coord_noise", [("transinr", 0.0), ("ginr", 0.5)])
def test_chunked_training_loss_equals_rendering_then_mse(family, coord_noise):
  config, model, params, images = _tiny_model(family, coord_noise=coord_noise)
  grid_masks = jax.random.bernoulli(jax.random.key(3), 0.75, (2, 4, 4))
  results = {}
  for chunk in (0, 40):
    config.model.inr_chunk = chunk

    def loss(p, config=config):
      return families.get(config).train_loss(
        model, p, images, grid_masks, config=config, coord_key=jax.random.key(4)
      )

    (value, mse), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    results[chunk] = value, mse, grads
    assert families.inr_chunk(config) == chunk
  (v0, m0, g0), (v1, m1, g1) = results[0], results[40]
  np.testing.assert_allclose(v1, v0, rtol=1e-5)
  np.testing.assert_allclose(m1, m0, rtol=1e-5)
  # Against the largest gradient overall: the keys' bias gradients are zero
  # in exact arithmetic (softmax ignores a per-query constant), only noise.
  scale = max(float(np.max(np.abs(np.asarray(g)))) for g in jax.tree.leaves(g0))
  assert _max_diff(g0, g1) < 1e-4 * scale
