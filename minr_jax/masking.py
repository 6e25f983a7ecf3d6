"""Patch masks drawn on device, inside jit, with static shapes.

A mask is boolean with True = masked (hidden from the model). Masks are drawn
on a `grid` x `grid` lattice of patches and expanded to pixels; the image side
must be a multiple of `grid`.

- `random`: each patch masked independently with probability `ratio`
  (the MINR paper's protocol, so the masked count varies per image);
- `exact`: exactly round(ratio * grid**2) patches per image (MAE's protocol),
  ties broken by the rank of uniform noise.

Evaluation masks are a function of (seed, image index) only, never of the
batch an image lands in, so a checkpoint scores the same every time.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

Array = jax.Array
PRNGKey = jax.Array


def exact_count(ratio: float, num_patches: int) -> int:
  """round(ratio * num_patches), halves rounded up (not Python's banker's)."""
  return int(math.floor(ratio * num_patches + 0.5))


def patch_mask(key: PRNGKey, grid: int, ratio: float, exact: bool = False) -> Array:
  """One image's patch mask [grid, grid] (bool, True = masked)."""
  if exact:
    n = grid * grid
    ranks = jnp.argsort(jnp.argsort(jax.random.uniform(key, (n,))))
    return (ranks < exact_count(ratio, n)).reshape(grid, grid)
  return jax.random.bernoulli(key, ratio, (grid, grid))


def patch_masks(key: PRNGKey, batch: int, grid: int, ratio: float,
                exact: bool = False) -> Array:
  """Independent masks for a batch: [batch, grid, grid]."""
  keys = jax.random.split(key, batch)
  return jax.vmap(lambda k: patch_mask(k, grid, ratio, exact))(keys)


def indexed_patch_masks(seed: int, indices: Array, grid: int, ratio: float,
                        exact: bool = False) -> Array:
  """Fixed masks [B, grid, grid] for images `indices` [B]: evaluation masks."""
  base = jax.random.key(seed)
  keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(indices)
  return jax.vmap(lambda k: patch_mask(k, grid, ratio, exact))(keys)


def to_pixels(masks: Array, height: int, width: int) -> Array:
  """Patch masks [B, g, g] -> pixel masks [B, height, width]."""
  g = masks.shape[-1]
  if height % g or width % g:
    raise ValueError(f"image {height}x{width} is not divisible by mask grid {g}")
  return jnp.repeat(jnp.repeat(masks, height // g, axis=-2), width // g, axis=-1)


def apply_mask(images: Array, pixel_masks: Array) -> Array:
  """Images [B, H, W, C] with masked pixels set to 0 (no mask channel)."""
  return jnp.where(pixel_masks[..., None], jnp.zeros_like(images), images)
