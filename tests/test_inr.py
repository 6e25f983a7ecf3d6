"""The INR as plain functions: coordinates, Fourier features, MLP, modulation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minr_jax.models import inr


def test_coord_grid_is_pixel_centres_in_ij_order():
  grid = np.asarray(inr.coord_grid(2, 4))
  assert grid.shape == (2, 4, 2)
  np.testing.assert_allclose(grid[:, 0, 0], [-0.5, 0.5])  # rows
  np.testing.assert_allclose(grid[0, :, 1], [-0.75, -0.25, 0.25, 0.75])  # columns
  np.testing.assert_allclose(grid[1, 2], [0.5, 0.25])


@pytest.mark.parametrize("size", [64, 182, 13])
def test_coord_grid_is_its_float64_value_rounded_once(size):
  grid = np.asarray(inr.coord_grid(size, 5))
  assert grid.dtype == np.float32
  want = (-1.0 + 2.0 * (np.arange(size, dtype=np.float64) + 0.5) / size).astype(np.float32)
  np.testing.assert_array_equal(grid[:, 0, 0], want)
  np.testing.assert_array_equal(np.asarray(inr.coord_grid(3, size))[0, :, 1], want)


def test_fourier_frequencies_are_their_float64_values_rounded_once():
  f = np.asarray(inr.fourier_frequencies(64, 1024.0))
  assert f.dtype == np.float32
  want = np.exp(np.linspace(0.0, math.log(1024.0), 64, dtype=np.float64)).astype(np.float32)
  np.testing.assert_array_equal(f, want)
  assert f[-1] == 1024.0 and f[0] == 1.0


def test_fourier_frequencies_are_geometric_from_1_to_sigma():
  f = np.asarray(inr.fourier_frequencies(64, 1024.0))
  assert f.shape == (64,)
  np.testing.assert_allclose([f[0], f[-1]], [1.0, 1024.0], rtol=1e-5)
  np.testing.assert_allclose(f[1:] / f[:-1], (1024.0 ** (1 / 63)) * np.ones(63), rtol=1e-5)


def test_fourier_features_by_hand():
  freqs = jnp.array([1.0, 2.0])
  r, c = 0.25, -0.5
  got = np.asarray(inr.fourier_features(jnp.array([[r, c]]), freqs))[0]
  pi = math.pi
  want = [
    math.cos(pi * r),
    math.cos(2 * pi * r),
    math.cos(pi * c),
    math.cos(2 * pi * c),
    math.sin(pi * r),
    math.sin(2 * pi * r),
    math.sin(pi * c),
    math.sin(2 * pi * c),
  ]
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_mlp_apply_by_hand():
  w0 = jnp.array([[1.0, -1.0], [2.0, 0.0], [0.5, 0.25]])  # fan_in 2 (+ bias row)
  w1 = jnp.array([[1.0], [1.0], [-1.0]])
  x = jnp.array([[1.0, 1.0]])
  # layer 0: [1*1 + 1*2 + 0.5, -1 + 0 + 0.25] = [3.5, -0.75] -> relu [3.5, 0]
  # layer 1: 3.5 - 1 = 2.5; + output bias 0.5 -> 3.0
  np.testing.assert_allclose(np.asarray(inr.mlp_apply([w0, w1], x)), [[3.0]])


def test_layer_shapes_of_the_paper_inr():
  assert inr.layer_shapes(256, 256, 5, 3) == [(256, 256)] * 4 + [(256, 3)]


def test_init_linear_weights_bound():
  w = np.asarray(inr.init_linear_weights(jax.random.key(0), 64, 32))
  assert w.shape == (65, 32)
  assert np.abs(w).max() <= 1 / 8 and np.abs(w).max() > 0.1


def test_modulate_tiles_groups_normalises_columns_keeps_bias():
  key1, key2 = jax.random.split(jax.random.key(0))
  fan_in, fan_out, g = 5, 6, 3
  base = jax.random.normal(key1, (fan_in + 1, fan_out))
  mod = jax.random.normal(key2, (2, fan_in, g))  # a batch of two images
  w = np.asarray(inr.modulate(base, mod))
  assert w.shape == (2, fan_in + 1, fan_out)
  base, mod = np.asarray(base), np.asarray(mod)
  for b in range(2):
    for j in range(fan_out):
      col = base[:-1, j] * mod[b, :, j % g]
      np.testing.assert_allclose(w[b, :-1, j], col / np.linalg.norm(col), rtol=1e-5)
    np.testing.assert_allclose(w[b, -1], base[-1])
  np.testing.assert_allclose(np.linalg.norm(w[:, :-1], axis=1), 1.0, rtol=1e-5)


def test_modulate_rejects_groups_not_dividing_width():
  with pytest.raises(ValueError, match="do not divide"):
    inr.modulate(jnp.ones((3, 6)), jnp.ones((2, 4)))


def test_render_vmaps_images_over_one_grid():
  key = jax.random.key(1)
  shapes = inr.layer_shapes(8, 4, 3, 3)
  weights = [
    jnp.stack([inr.init_linear_weights(k, *s) for k in jax.random.split(key, 2)]) for s in shapes
  ]
  coords = inr.coord_grid(3, 5)
  freqs = inr.fourier_frequencies(2, 4.0)
  out = inr.render(weights, coords, freqs)
  assert out.shape == (2, 3, 5, 3)
  feats = inr.fourier_features(coords.reshape(-1, 2), freqs)  # one image, by hand
  one = inr.mlp_apply([w[1] for w in weights], feats).reshape(3, 5, 3)
  np.testing.assert_allclose(np.asarray(out[1]), np.asarray(one), rtol=1e-6)
  assert not np.allclose(np.asarray(out[0]), np.asarray(out[1]))


def _random_inrs(key, batch, widths=(16, 8, 3)):
  shapes = inr.layer_shapes(4 * 3, widths[0], len(widths), widths[-1])
  keys = jax.random.split(key, len(shapes))
  return [
    jax.random.normal(k, (batch, fi + 1, fo)) / math.sqrt(fi) for k, (fi, fo) in zip(keys, shapes)
  ]


@pytest.mark.parametrize("per_image_coords", [False, True])
@pytest.mark.parametrize("max_chunk", [10, 7 * 9, 1000])
def test_pixel_mse_equals_rendering_then_mse_in_value_and_gradient(per_image_coords, max_chunk):
  weights = _random_inrs(jax.random.key(0), 3)
  targets = jax.random.uniform(jax.random.key(1), (3, 7, 9, 3))
  freqs = inr.fourier_frequencies(3, 8.0)
  coords = inr.coord_grid(7, 9)
  if per_image_coords:
    coords = inr.jitter_coords(jax.random.key(2), coords, 3, 0.5)
  render = inr.render_per_image if per_image_coords else inr.render
  # A per-image weighting of the MSE, so each image's cotangent differs.
  weigh = jnp.array([1.0, 2.0, 3.0])

  def reference(ws):
    pred = render(ws, coords, freqs, 0.5)
    return jnp.sum(weigh * jnp.mean((pred - targets) ** 2, axis=(1, 2, 3)))

  def chunked(ws):
    return jnp.sum(weigh * inr.pixel_mse(ws, targets, coords, freqs, 0.5, None, max_chunk))

  ref_value, ref_grads = jax.value_and_grad(reference)(weights)
  value, grads = jax.jit(jax.value_and_grad(chunked))(weights)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  for g, r in zip(grads, ref_grads):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6)
  # Padding pixels (7 * 9 = 63 is not a multiple of 10) must not count: a
  # different target in one real pixel must change the value.
  moved = targets.at[0, 6, 8, 0].add(1.0)
  assert float(
    jnp.sum(inr.pixel_mse(weights, moved, coords, freqs, 0.5, None, max_chunk))
  ) != pytest.approx(
    float(jnp.sum(inr.pixel_mse(weights, targets, coords, freqs, 0.5, None, max_chunk)))
  )


def test_pixel_mse_in_bfloat16_is_close_to_float32():
  weights = _random_inrs(jax.random.key(0), 2)
  targets = jax.random.uniform(jax.random.key(1), (2, 8, 8, 3))
  args = (targets, inr.coord_grid(8, 8), inr.fourier_frequencies(3, 8.0), 0.5)
  f32 = jax.grad(lambda w: jnp.sum(inr.pixel_mse(w, *args, None, 16)))(weights)
  bf16 = jax.grad(lambda w: jnp.sum(inr.pixel_mse(w, *args, jnp.bfloat16, 16)))(weights)
  for a, b in zip(f32, bf16):
    assert b.dtype == jnp.float32
    np.testing.assert_allclose(b, a, rtol=0.1, atol=0.05 * float(jnp.max(jnp.abs(a))))


def test_chunk_layout_is_even_with_little_padding():
  assert inr.chunk_layout(33124, 4096) == (9, 3681)
  assert inr.chunk_layout(64, 64) == (1, 64)
  assert inr.chunk_layout(65, 64) == (2, 33)
  with pytest.raises(ValueError, match="pixel chunk"):
    inr.chunk_layout(10, 0)
