"""On-device patch masks: statistics, exactness, grid alignment, determinism."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from minr_jax import masking


def _random_masks(key, batch, grid, ratio, exact=False):
  """Independent random (or exact-count) masks [batch, grid, grid]."""
  return masking.draw_batch(
    masking.MaskSpec("random_exact" if exact else "random", grid), key, batch, ratio
  )


def test_random_masks_have_the_ratio_on_average():
  masks = np.asarray(_random_masks(jax.random.key(0), 512, 14, 0.75))
  assert masks.shape == (512, 14, 14) and masks.dtype == bool
  per_image = masks.reshape(512, -1).sum(1)
  assert abs(per_image.mean() - 147) < 1.5  # 0.75 * 196; std of the mean ~0.27
  assert per_image.std() > 3  # the paper's masks vary in count per image


@pytest.mark.parametrize(
  "ratio,grid,count", [(0.75, 14, 147), (0.5, 8, 32), (0.9, 4, 14), (0.0, 4, 0)]
)
def test_exact_masks_hide_exactly_round_ratio_n(ratio, grid, count):
  masks = np.asarray(_random_masks(jax.random.key(1), 64, grid, ratio, exact=True))
  np.testing.assert_array_equal(masks.reshape(64, -1).sum(1), count)
  if grid >= 8:  # enough possible masks that repeats would mean shared keys
    assert len({m.tobytes() for m in masks}) == 64


def test_exact_count_rounds_halves_up():
  assert masking.exact_count(0.5, 5) == 3
  assert masking.exact_count(0.75, 196) == 147


def test_same_key_same_mask_other_key_other_mask():
  a = _random_masks(jax.random.key(3), 4, 8, 0.5)
  b = _random_masks(jax.random.key(3), 4, 8, 0.5)
  c = _random_masks(jax.random.key(4), 4, 8, 0.5)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_pixel_masks_are_aligned_to_the_patch_grid():
  grid = _random_masks(jax.random.key(5), 2, 4, 0.5)
  pixels = np.asarray(masking.to_pixels(grid, 12, 12))
  assert pixels.shape == (2, 12, 12)
  blocks = pixels.reshape(2, 4, 3, 4, 3)
  want = np.asarray(grid)[:, :, None, :, None].repeat(3, 2).repeat(3, 4)
  np.testing.assert_array_equal(blocks, want)
  with pytest.raises(ValueError, match="not divisible by mask grid"):
    masking.to_pixels(grid, 10, 12)


def test_apply_mask_zeroes_masked_pixels_only():
  images = jnp.full((1, 4, 4, 3), 0.7)
  pixel_masks = jnp.zeros((1, 4, 4), bool).at[0, :2].set(True)
  out = np.asarray(masking.apply_mask(images, pixel_masks))
  assert (out[0, :2] == 0).all() and np.allclose(out[0, 2:], 0.7)


def test_eval_masks_depend_on_the_image_index_not_the_batch():
  spec = masking.MaskSpec("random", 8)
  a = masking.draw_indexed(spec, 7, jnp.array([0, 1, 2, 3]), 0.75)
  b = masking.draw_indexed(spec, 7, jnp.array([3, 9, 1]), 0.75)
  np.testing.assert_array_equal(a[3], b[0])
  np.testing.assert_array_equal(a[1], b[2])
  c = masking.draw_indexed(spec, 8, jnp.array([0, 1, 2, 3]), 0.75)
  assert not np.array_equal(a, c)


def test_masks_jit_without_retracing_across_keys():
  @jax.jit
  @chex.assert_max_traces(n=1)
  def draw(key):
    return masking.to_pixels(_random_masks(key, 2, 4, 0.75), 8, 8)

  for i in range(3):
    draw(jax.random.key(i))


# ------------------------------------------------------- mask strategies ---
# Compiles dominate this file's time, so the tests share a few compiled calls:
# `draw_batch` is jitted with the ratio traced, and `_masks` always passes
# float32 [128] ratios on a 14x14 grid, so each spec compiles once.

KEYED = [s for s in masking.STRATEGIES if s not in ("center", "outpaint")]


def _masks(strategy, ratio, seed=0, grid=14, batch=128, **kwargs):
  """Masks [batch, grid, grid] (numpy) of one strategy at one ratio."""
  spec = masking.MaskSpec(strategy, grid, **kwargs)
  ratios = jnp.full((batch,), ratio, jnp.float32)
  return np.asarray(masking.draw_batch(spec, jax.random.key(seed), batch, ratios))


def _edges(masks):
  """Mean number of 4-neighbour patch pairs with one hidden and one visible."""
  return (
    (masks[:, 1:] != masks[:, :-1]).sum((1, 2)) + (masks[:, :, 1:] != masks[:, :, :-1]).sum((1, 2))
  ).mean()


@pytest.mark.parametrize("strategy", masking.STRATEGIES)
def test_strategies_hit_the_ratio_and_align_to_the_grid(strategy):
  for ratio in (0.3, 0.75):
    masks = _masks(strategy, ratio)
    assert masks.shape == (128, 14, 14) and masks.dtype == bool
    counts = masks.reshape(128, -1).sum(1)
    if strategy == "random":
      assert abs(counts.mean() - ratio * 196) < 2.5  # std of the mean <= 0.55
    else:
      np.testing.assert_array_equal(counts, masking.exact_count(ratio, 196))
  pixels = np.asarray(masking.to_pixels(masks[:2], 28, 42))
  np.testing.assert_array_equal(pixels, masks[:2].repeat(2, 1).repeat(3, 2))


@pytest.mark.parametrize("strategy", masking.STRATEGIES)
def test_same_key_same_masks_other_key_other_masks(strategy):
  a, b = _masks(strategy, 0.5, seed=3), _masks(strategy, 0.5, seed=3)
  c = _masks(strategy, 0.5, seed=4)
  np.testing.assert_array_equal(a, b)
  if strategy in KEYED:
    assert not np.array_equal(a, c)
    assert len({m.tobytes() for m in a}) == len(a)  # the images of a batch differ too
  else:  # deterministic: the key is ignored
    np.testing.assert_array_equal(a, c)
    assert (a == a[0]).all()


def test_center_hides_a_centred_square_and_outpaint_keeps_one():
  centre = (slice(6, 8), slice(6, 8))  # the 2x2 central patches of a 14x14 grid
  assert _masks("center", 0.3)[0][centre].all()
  assert not _masks("outpaint", 0.3)[0][centre].any()
  # 75% of 14x14: 49 visible patches, a 7x7 square around the centre.
  visible = ~_masks("outpaint", 0.75)[0]
  rows, cols = np.nonzero(visible)
  assert visible.sum() == 49 and np.ptp(rows) == 6 and np.ptp(cols) == 6
  # 8x8 grid, k = 16: exactly the central 4x4 square, and outpaint is the inverse.
  square = np.zeros((8, 8), bool)
  square[2:6, 2:6] = True
  key = jax.random.key(0)
  np.testing.assert_array_equal(masking.draw(masking.MaskSpec("center", 8), key, 0.25), square)
  np.testing.assert_array_equal(masking.draw(masking.MaskSpec("outpaint", 8), key, 0.75), ~square)
  for ratio in (0.1, 0.4, 0.75):  # complements of each other for every count
    k = masking.exact_count(ratio, 196)
    np.testing.assert_array_equal(
      masking.draw(masking.MaskSpec("center", 14), key, ratio),
      ~masking.draw(masking.MaskSpec("outpaint", 14), key, 1 - k / 196),
    )


def test_block_masks_are_blockier_than_random_ones():
  for ratio in (0.3, 0.75):
    assert _edges(_masks("block", ratio)) < 0.5 * _edges(_masks("random_exact", ratio))


def test_lowpass_noise_masks_are_smoother_than_highpass_ones():
  low = _edges(_masks("noise_filtered", 0.75, filter="lowpass"))
  high = _edges(_masks("noise_filtered", 0.75, filter="highpass"))
  random = _edges(_masks("random_exact", 0.75))
  assert low < 0.7 * random < random < high


def test_every_strategy_jits_once_across_ratios_and_matches_a_float_ratio():
  specs = [masking.MaskSpec(s, 8) for s in masking.STRATEGIES]

  @jax.jit
  @chex.assert_max_traces(n=1)
  def draw_all(key, ratio):
    keys = jax.random.split(key, 4)
    traced = [jax.vmap(lambda k, s=s: masking.draw(s, k, ratio))(keys) for s in specs]
    # A Python float takes the static path (Python int count, float probability).
    static = [jax.vmap(lambda k, s=s: masking.draw(s, k, 0.5))(keys) for s in specs[:3]]
    return traced, static

  for ratio in (0.1, 0.5, 0.9):
    traced, static = draw_all(jax.random.key(0), jnp.float32(ratio))
    for spec, masks in zip(specs, traced):
      assert masks.shape == (4, 8, 8) and masks.dtype == bool
      if spec.exact:
        np.testing.assert_array_equal(np.asarray(masks).sum((1, 2)), masking.exact_count(ratio, 64))
    if ratio == 0.5:  # random, random_exact, block: the same masks either way
      for masks, float_masks in zip(traced, static):
        np.testing.assert_array_equal(masks, float_masks)


def test_traced_counts_match_exact_count():
  # Every exact half (x + 0.5) / 196 rounds up; so do decimal ratios' halves.
  ratios = np.concatenate([(2 * np.arange(0, 128, 2) + 1) / 392, np.arange(64) / 63])
  masks = _masks("random_exact", jnp.asarray(ratios, jnp.float32))
  np.testing.assert_array_equal(masks.sum((1, 2)), [masking.exact_count(r, 196) for r in ratios])
  np.testing.assert_array_equal(masks.sum((1, 2))[:64], np.arange(1, 128, 2))
  assert masking.exact_count(0.58, 25) == 15  # 14.5 rounds up, though 0.58 * 25 < 14.5 in float64


def test_per_image_ratios_are_in_range_and_each_image_hits_its_own():
  ratios = masking.sample_ratios(jax.random.key(2), 128, 0.4, 0.9)
  r = np.asarray(ratios)
  assert r.shape == (128,) and r.dtype == np.float32
  assert (r >= 0.4).all() and (r <= 0.9).all() and np.ptp(r) > 0.3
  for strategy in ("block", "noise_filtered"):
    masks = masking.draw_batch(masking.MaskSpec(strategy, 14), jax.random.key(0), 128, ratios)
    np.testing.assert_array_equal(
      np.asarray(masks).sum((1, 2)), [masking.exact_count(x, 196) for x in r.tolist()]
    )


def test_indexed_masks_of_any_strategy_depend_on_the_index_only():
  spec = masking.MaskSpec("block", 8)
  a = masking.draw_indexed(spec, 7, jnp.array([0, 1, 2, 3]), 0.5)
  b = masking.draw_indexed(spec, 7, jnp.array([3, 9, 1, 5]), 0.5)
  np.testing.assert_array_equal(a[3], b[0])
  np.testing.assert_array_equal(a[1], b[2])
  assert not np.array_equal(a, masking.draw_indexed(spec, 8, jnp.array([0, 1, 2, 3]), 0.5))
  assert (np.asarray(a).sum((1, 2)) == 32).all()


def test_mask_spec_from_config_defaults_and_fields():
  config = ml_collections.ConfigDict(dict(mask_grid=8))
  assert masking.mask_spec_from_config(config) == masking.MaskSpec("random", 8)
  config.mask = ml_collections.ConfigDict(
    dict(strategy="noise_filtered", filter="bandpass", cutoff_low=0.3, block_min_patches=2)
  )
  spec = masking.mask_spec_from_config(config)
  assert (spec.grid, spec.filter, spec.cutoff_low, spec.cutoff_high, spec.block_min_patches) == (
    8,
    "bandpass",
    0.3,
    0.75,
    2,
  )
  assert masking.MaskSpec(filter="highpass").cutoff_low == 0.75
  hash(spec)  # static: usable as a jit static argument


@pytest.mark.parametrize(
  "field,value,message",
  [
    ("strategy", "checkerboard", "config.mask.strategy must be one of"),
    ("filter", "notch", "config.mask.filter must be one of"),
    ("cutoff_low", 0.8, "config.mask.cutoff_low=0.8 must be below config.mask.cutoff_high"),
    ("cutoff_high", 0.1, "config.mask.cutoff_high: the lowpass band"),
    ("block_aspect_min", 0.0, "config.mask.block_aspect_min must be in"),
    ("block_min_patches", 0, "config.mask.block_min_patches must be an integer"),
  ],
)
def test_mask_spec_from_config_names_the_bad_field(field, value, message):
  mask = dict(strategy="noise_filtered", filter="bandpass" if field == "cutoff_low" else "lowpass")
  mask[field] = value
  config = ml_collections.ConfigDict(dict(mask_grid=8, mask=mask))
  with pytest.raises(ValueError, match=message):
    masking.mask_spec_from_config(config)
  with pytest.raises(ValueError, match="MaskSpec.strategy"):
    masking.MaskSpec("checkerboard")
