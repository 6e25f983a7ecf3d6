"""On-device patch masks: statistics, exactness, grid alignment, determinism."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minr_jax import masking


def test_random_masks_have_the_ratio_on_average():
  masks = np.asarray(masking.patch_masks(jax.random.key(0), 512, 14, 0.75))
  assert masks.shape == (512, 14, 14) and masks.dtype == bool
  per_image = masks.reshape(512, -1).sum(1)
  assert abs(per_image.mean() - 147) < 1.5  # 0.75 * 196; std of the mean ~0.27
  assert per_image.std() > 3  # the paper's masks vary in count per image


@pytest.mark.parametrize("ratio,grid,count", [(0.75, 14, 147), (0.5, 8, 32), (0.9, 4, 14),
                                              (0.0, 4, 0)])
def test_exact_masks_hide_exactly_round_ratio_n(ratio, grid, count):
  masks = np.asarray(masking.patch_masks(jax.random.key(1), 64, grid, ratio, exact=True))
  np.testing.assert_array_equal(masks.reshape(64, -1).sum(1), count)
  if grid >= 8:  # enough possible masks that repeats would mean shared keys
    assert len({m.tobytes() for m in masks}) == 64


def test_exact_count_rounds_halves_up():
  assert masking.exact_count(0.5, 5) == 3
  assert masking.exact_count(0.75, 196) == 147


def test_same_key_same_mask_other_key_other_mask():
  a = masking.patch_masks(jax.random.key(3), 4, 8, 0.5)
  b = masking.patch_masks(jax.random.key(3), 4, 8, 0.5)
  c = masking.patch_masks(jax.random.key(4), 4, 8, 0.5)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_pixel_masks_are_aligned_to_the_patch_grid():
  grid = masking.patch_masks(jax.random.key(5), 2, 4, 0.5)
  pixels = np.asarray(masking.to_pixels(grid, 12, 12))
  assert pixels.shape == (2, 12, 12)
  blocks = pixels.reshape(2, 4, 3, 4, 3)
  np.testing.assert_array_equal(blocks, np.asarray(grid)[:, :, None, :, None].repeat(3, 2).repeat(3, 4))
  with pytest.raises(ValueError, match="not divisible by mask grid"):
    masking.to_pixels(grid, 10, 12)


def test_apply_mask_zeroes_masked_pixels_only():
  images = jnp.full((1, 4, 4, 3), 0.7)
  pixel_masks = jnp.zeros((1, 4, 4), bool).at[0, :2].set(True)
  out = np.asarray(masking.apply_mask(images, pixel_masks))
  assert (out[0, :2] == 0).all() and np.allclose(out[0, 2:], 0.7)


def test_eval_masks_depend_on_the_image_index_not_the_batch():
  a = masking.indexed_patch_masks(7, jnp.array([0, 1, 2, 3]), 8, 0.75)
  b = masking.indexed_patch_masks(7, jnp.array([3, 9, 1]), 8, 0.75)
  np.testing.assert_array_equal(a[3], b[0])
  np.testing.assert_array_equal(a[1], b[2])
  c = masking.indexed_patch_masks(8, jnp.array([0, 1, 2, 3]), 8, 0.75)
  assert not np.array_equal(a, c)


def test_masks_jit_without_retracing_across_keys():
  @jax.jit
  @chex.assert_max_traces(n=1)
  def draw(key):
    return masking.to_pixels(masking.patch_masks(key, 2, 4, 0.75), 8, 8)

  for i in range(3):
    draw(jax.random.key(i))
