"""The implicit neural representation (INR): plain functions, no Flax.

Weights are one [fan_in + 1, fan_out] matrix per layer (last row the bias); `render` runs a
batch of per-image INRs on one shared, Fourier-encoded pixel-centre grid in [-1, 1]^2.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
PRNGKey = jax.Array
INRWeights = list[Array]  # per layer: [fan_in + 1, fan_out], last row = bias.


def pixel_centres(size: int) -> np.ndarray:
  """[size] float32 pixel centres -1 + 2 (i + 0.5) / size, computed in float64, rounded once."""
  return (-1.0 + 2.0 * (np.arange(size, dtype=np.float64) + 0.5) / size).astype(np.float32)


def coord_grid(height: int, width: int) -> Array:
  """Pixel-centre coordinates [height, width, 2] in [-1, 1], (row, col) order.

  Each value is the float64 -1 + 2 (i + 0.5) / size rounded once to float32
  (the same sum in float32 lands one ulp off for some sizes: 95 of the 182
  values at 182 px on a CPU).
  """
  rows, cols = np.meshgrid(pixel_centres(height), pixel_centres(width), indexing="ij")
  return jnp.asarray(np.stack([rows, cols], axis=-1))


def fourier_frequencies(num_freqs: int, sigma: float) -> Array:
  """Geometric frequencies [num_freqs] from 1 to sigma: exp(linspace(0, ln sigma)).

  Computed in float64 and rounded once to float32: exp of a float32
  linspace leaves the top frequencies about 12 ulp off, a phase error of
  ~3e-3 rad at frequency 1024 and ~3e-4 in rendered pixels.
  """
  freqs = np.exp(np.linspace(0.0, math.log(sigma), num_freqs, dtype=np.float64))
  return jnp.asarray(freqs.astype(np.float32))


def fourier_features(coords: Array, freqs: Array) -> Array:
  """Encodes coords [..., 2] as [..., 4 F]: all cosines, then all sines.

  Within each half the row axis's F frequencies come first, then the column
  axis's: cos(pi f_1 r) .. cos(pi f_F r), cos(pi f_1 c) .. cos(pi f_F c), then
  the same with sin.
  """
  scaled = coords[..., :, None] * freqs  # [..., 2, F]
  scaled = scaled.reshape(*coords.shape[:-1], -1)  # [..., 2F], row axis first
  return jnp.concatenate([jnp.cos(jnp.pi * scaled), jnp.sin(jnp.pi * scaled)], -1)


def layer_shapes(
  in_dim: int, hidden_dim: int, num_layers: int, out_dim: int
) -> list[tuple[int, int]]:
  """(fan_in, fan_out) of each of the `num_layers` linear layers."""
  dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
  return list(zip(dims[:-1], dims[1:]))


def mlp_apply(
  weights: Sequence[Array], features: Array, output_bias: float = 0.5, dtype: Any = None
) -> Array:
  """Applies the MLP to features [N, fan_in_0] -> [N, fan_out_last].

  ReLU between layers, none after the last; `output_bias` is added to the
  output (0.5 centres a zero-initialised output in the [0, 1] pixel range).
  dtype (e.g. jnp.bfloat16): inputs and weights of each matmul are cast to
  it, products are accumulated and biases added in float32, and the output
  is float32. None keeps the inputs' dtype throughout.
  """
  if dtype is None:
    x = features
    for i, w in enumerate(weights):
      x = x @ w[:-1] + w[-1]
      if i < len(weights) - 1:
        x = jax.nn.relu(x)
    return x + output_bias
  x = features.astype(dtype)
  for i, w in enumerate(weights):
    y = jnp.dot(x, w[:-1].astype(dtype), preferred_element_type=jnp.float32)
    y = y + w[-1].astype(jnp.float32)
    if i < len(weights) - 1:
      x = jax.nn.relu(y).astype(dtype)
  return y + output_bias


def init_linear_weights(key: PRNGKey, fan_in: int, fan_out: int) -> Array:
  """A [fan_in + 1, fan_out] matrix drawn U(+-1/sqrt(fan_in)), bias row too.

  This is what PyTorch's nn.Linear default (kaiming-uniform with a = sqrt 5 for
  the weight, U(+-1/sqrt(fan_in)) for the bias) gives, as TransINR uses.
  """
  bound = 1.0 / math.sqrt(fan_in)
  return jax.random.uniform(key, (fan_in + 1, fan_out), jnp.float32, -bound, bound)


def modulate(base: Array, modulation: Array) -> Array:
  """Group-wise modulation of a shared layer by one image's factors.

  base: [fan_in + 1, fan_out] shared weights (last row the bias).
  modulation: [..., fan_in, g] with g dividing fan_out; output column j uses
    group j mod g.
  Returns [..., fan_in + 1, fan_out]: the weight rows multiplied element-wise
  by the tiled modulation, each output column scaled to unit L2 norm over
  fan_in, and the shared, unmodulated bias row appended.
  """
  fan_out = base.shape[1]
  groups = modulation.shape[-1]
  if fan_out % groups:
    raise ValueError(f"{groups} groups do not divide a layer of width {fan_out}")
  tiled = jnp.tile(modulation, (1,) * (modulation.ndim - 1) + (fan_out // groups,))
  w = base[:-1] * tiled
  w = w / jnp.maximum(jnp.linalg.norm(w, axis=-2, keepdims=True), 1e-12)
  bias = jnp.broadcast_to(base[-1:], (*w.shape[:-2], 1, fan_out))
  return jnp.concatenate([w, bias.astype(w.dtype)], axis=-2)


def render_features(
  weights: Sequence[Array], features: Array, output_bias: float = 0.5, dtype: Any = None
) -> Array:
  """A batch of INRs, weights [B, ...] per layer, on shared features [N, 4F] -> [B, N, out]."""
  return jax.vmap(mlp_apply, in_axes=(0, None, None, None))(
    list(weights), features, output_bias, dtype
  )


def jitter_coords(key: PRNGKey, coords: Array, batch: int, noise: float) -> Array:
  """Per-image, per-pixel, per-axis jittered copies [batch, H, W, 2] of a grid [H, W, 2].

  Each coordinate moves by U(-noise, noise) pixel spacings (2 / H along rows,
  2 / W along columns): GINR's 'coordwise' training noise.
  """
  height, width = coords.shape[0], coords.shape[1]
  spacing = jnp.array([2.0 / height, 2.0 / width], jnp.float32)
  u = jax.random.uniform(key, (batch, *coords.shape), jnp.float32, -noise, noise)
  return coords[None] + u * spacing


def render_per_image(
  weights: Sequence[Array], coords: Array, freqs: Array, output_bias: float = 0.5, dtype: Any = None
) -> Array:
  """A batch of INRs, weights [B, ...] per layer, each at its own coords [B, H, W, 2].

  As `render`, but the Fourier features are computed per image (e.g. for
  jittered training coordinates). Returns [B, H, W, out_dim].
  """

  def one(w, c):
    feats = fourier_features(c, freqs)
    return mlp_apply(w, feats.reshape(-1, feats.shape[-1]), output_bias, dtype)

  out = jax.vmap(one)(list(weights), coords)
  return out.reshape(*coords.shape[:-1], out.shape[-1])


def render(
  weights: Sequence[Array], coords: Array, freqs: Array, output_bias: float = 0.5, dtype: Any = None
) -> Array:
  """A batch of INRs, weights [B, ...] per layer, at shared coords [H, W, 2].

  The Fourier features of the grid are computed once (float32) and shared by
  every image; dtype as in `mlp_apply`. Returns [B, H, W, out_dim].
  """
  feats = fourier_features(coords, freqs)
  flat = feats.reshape(-1, feats.shape[-1])
  out = render_features(weights, flat, output_bias, dtype)
  return out.reshape(out.shape[0], *coords.shape[:-1], out.shape[-1])


def chunk_layout(num_pixels: int, max_chunk: int) -> tuple[int, int]:
  """(chunks, pixels per chunk) covering num_pixels with chunks of at most max_chunk.

  The chunks are as even as possible, so the padding is below one pixel per chunk.
  """
  if max_chunk < 1:
    raise ValueError(f"pixel chunk must be >= 1, got {max_chunk}")
  num_chunks = -(-num_pixels // max_chunk)
  return num_chunks, -(-num_pixels // num_chunks)


def _image_sse(
  weights: Sequence[Array],
  feats_fn,
  targets: Array,
  num_chunks: int,
  chunk: int,
  num_pixels: int,
  output_bias: float,
  dtype: Any,
  with_grads: bool,
):
  """One image: sum of squared errors over its pixels, in chunks (and its weight gradient).

  feats_fn(start) -> the Fourier features [chunk, 4F] of pixels start..start+chunk;
  targets [num_chunks * chunk, C] (zero-padded past num_pixels).
  """

  def sse(ws, start):
    pred = mlp_apply(ws, feats_fn(start), output_bias, dtype)  # [chunk, C] float32
    target = jax.lax.dynamic_slice_in_dim(targets, start, chunk)
    valid = (start + jnp.arange(chunk)) < num_pixels
    err = jnp.where(valid[:, None], pred - target, 0.0)
    return jnp.sum(err * err)

  def body(i, carry):
    start = i * chunk
    if with_grads:
      total, grads = carry
      value, g = jax.value_and_grad(sse)(list(weights), start)
      return total + value, [a + b for a, b in zip(grads, g)]
    return carry + sse(list(weights), start)

  zero = jnp.zeros((), jnp.float32)
  init = (zero, [jnp.zeros(w.shape, jnp.float32) for w in weights]) if with_grads else zero
  return jax.lax.fori_loop(0, num_chunks, body, init)


def _pixel_mse_impl(weights, targets, coords, freqs, output_bias, dtype, max_chunk, with_grads):
  b, h, w, c = targets.shape
  n = h * w
  num_chunks, chunk = chunk_layout(n, max_chunk)
  pad = num_chunks * chunk - n
  flat_targets = jnp.pad(targets.reshape(b, n, c).astype(jnp.float32), ((0, 0), (0, pad), (0, 0)))
  if coords.ndim == 3:  # one grid for every image: its features once, sliced per chunk
    feats = fourier_features(coords.reshape(n, 2), freqs)
    feats = jnp.pad(feats, ((0, pad), (0, 0)))
    per_image_coords = None
  else:  # per-image coordinates: features of each chunk on the fly
    per_image_coords = jnp.pad(coords.reshape(b, n, 2), ((0, 0), (0, pad), (0, 0)))

  def one(args):
    ws, t, xy = args
    if xy is None:
      feats_fn = lambda s: jax.lax.dynamic_slice_in_dim(feats, s, chunk)
    else:
      feats_fn = lambda s: fourier_features(jax.lax.dynamic_slice_in_dim(xy, s, chunk), freqs)
    return _image_sse(ws, feats_fn, t, num_chunks, chunk, n, output_bias, dtype, with_grads)

  out = jax.lax.map(one, (list(weights), flat_targets, per_image_coords))
  scale = 1.0 / (n * c)
  if with_grads:
    sse, grads = out
    return sse * scale, [g * scale for g in grads]
  return out * scale


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def pixel_mse(
  weights: Sequence[Array],
  targets: Array,
  coords: Array,
  freqs: Array,
  output_bias: float = 0.5,
  dtype: Any = None,
  max_chunk: int = 4096,
) -> Array:
  """Per-image MSE [B] of a batch of INRs against targets [B, H, W, C], in pixel chunks.

  The same value as `metrics.per_image_mse(render(...), targets)` (or
  `render_per_image` when coords are per image, [B, H, W, 2]; a shared grid
  is [H, W, 2]), computed one image and at most `max_chunk` pixels at a
  time, so nothing of size [B, H * W, width] is ever built. Its gradient
  (weights only: targets, coords and freqs are data) is computed in the same
  pass over the chunks and kept (the size of the weights), so the backward
  pass does no further work. On a CPU the chunks' activations stay in cache;
  `model.inr_chunk` chooses it for training (`minr_jax.families`, the MINR loss).
  """
  return _pixel_mse_impl(
    weights, targets, coords, freqs, output_bias, dtype, max_chunk, with_grads=False
  )


def _pixel_mse_fwd(weights, targets, coords, freqs, output_bias, dtype, max_chunk):
  mse, grads = _pixel_mse_impl(
    weights, targets, coords, freqs, output_bias, dtype, max_chunk, with_grads=True
  )
  return mse, (grads, targets, coords, freqs)


def _pixel_mse_bwd(output_bias, dtype, max_chunk, residuals, d_mse):
  del output_bias, dtype, max_chunk
  grads, targets, coords, freqs = residuals
  d_weights = [g * d_mse[:, None, None] for g in grads]
  return (d_weights, jnp.zeros_like(targets), jnp.zeros_like(coords), jnp.zeros_like(freqs))


pixel_mse.defvjp(_pixel_mse_fwd, _pixel_mse_bwd)
