"""The MAE baseline: parameter counts, masking contract, loss, pixels, configs."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import mae as mae_config
from minr_jax import families, masking
from minr_jax.config import ConfigError
from minr_jax.models import mae

# Trainable parameters at 182 px, patch 13 (14x14 patches), MAE's 8 x 512 decoder.
# The fixed sin-cos position embeddings are constants, not parameters.
BASE_PARAMS = 111_321_339
LARGE_PARAMS = 328_838_139
# The MINR paper's table: "MAE-Base 106.2M", "MAE-Large 313.6M".
PAPER_BASE_M, PAPER_LARGE_M = 106.2, 313.6


def count(params) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


def shapes(model: mae.MAE):
  return jax.eval_shape(lambda key: mae.init_params(model, key), jax.random.key(0))


def block_params(dim: int, mlp_dim: int) -> int:
  """One pre-LN ViT block with qkv bias: 2 LayerNorms, qkv, projection, MLP."""
  return (
    2 * 2 * dim
    + 3 * (dim * dim + dim)
    + (dim * dim + dim)
    + (dim * mlp_dim + mlp_dim)
    + (mlp_dim * dim + dim)
  )


def expected_params(
  patch_dim: int,
  dim: int,
  depth: int,
  mlp_dim: int,
  dec_dim: int = 512,
  dec_depth: int = 8,
  dec_mlp: int = 2048,
) -> int:
  encoder = (patch_dim * dim + dim) + dim + depth * block_params(dim, mlp_dim) + 2 * dim
  decoder = (
    (dim * dec_dim + dec_dim)
    + dec_dim
    + dec_depth * block_params(dec_dim, dec_mlp)
    + 2 * dec_dim
    + (dec_dim * patch_dim + patch_dim)
  )
  return encoder + decoder


def tiny_model(**overrides) -> mae.MAE:
  """16 px, patch 4 (4x4 grid), 75% masked: 12 hidden, K = 4 visible."""
  fields = dict(
    image_size=16,
    patch_size=4,
    mask_ratio=0.75,
    dim=32,
    depth=2,
    num_heads=2,
    head_dim=16,
    mlp_dim=64,
    decoder_dim=24,
    decoder_depth=1,
    decoder_num_heads=2,
    decoder_head_dim=12,
    decoder_mlp_dim=48,
  )
  fields.update(overrides)
  return mae.MAE(**fields)


def _exact_masks(key, batch: int, grid: int, ratio: float) -> jax.Array:
  """Independent exact-count masks [batch, grid, grid], as MAE trains with."""
  return masking.draw_batch(masking.MaskSpec("random_exact", grid), key, batch, ratio)


def random_images(key, batch: int, size: int = 16) -> jax.Array:
  return jax.random.uniform(key, (batch, size, size, 3))


@functools.cache
def tiny_setup(batch: int = 3):
  model = tiny_model()
  params = mae.init_params(model, jax.random.key(0))
  images = random_images(jax.random.key(1), batch)
  masks = _exact_masks(jax.random.key(2), batch, model.grid, model.mask_ratio)
  return model, params, images, masks


# ------------------------------------------------------------ parameter counts ---


@pytest.mark.parametrize(
  "size, expected, dim, depth, mlp, paper_m",
  [
    ("base", BASE_PARAMS, 768, 12, 3072, PAPER_BASE_M),
    ("large", LARGE_PARAMS, 1024, 24, 4096, PAPER_LARGE_M),
  ],
)
def test_paper_size_parameter_counts(size, expected, dim, depth, mlp, paper_m):
  config = mae_config.get_config(size)
  model = families.get(config).build(config)
  assert (model.image_size, model.patch_size, model.grid) == (182, 13, 14)
  params = shapes(model)
  assert count(params) == expected
  assert expected == expected_params(13 * 13 * 3, dim, depth, mlp)
  # The paper's figures are these exact counts in units of 2**20, not 10**6.
  assert round(expected / 2**20, 1) == paper_m
  assert round(expected / 1e6, 1) != paper_m
  # The position embeddings are not parameters (MAE's PyTorch model.parameters()
  # would add its frozen ones: (1 + 196) x (dim + 512)).
  assert not any("pos" in str(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0])


def test_init_follows_mae():
  model, params, _, _ = tiny_setup()
  block = params["encoder"]["block_0"]
  for name in ("query", "key", "value", "out"):
    assert np.all(np.asarray(block["attn"][name]["bias"]) == 0)
  q = np.asarray(block["attn"]["query"]["kernel"])  # fused qkv: fan_out = 3 x 32
  assert np.abs(q).max() <= np.sqrt(6 / (32 + 96))
  assert np.abs(q).max() > 0.8 * np.sqrt(6 / (32 + 96))
  fc1 = np.asarray(block["mlp"]["fc1"]["kernel"])
  assert np.abs(fc1).max() <= np.sqrt(6 / (32 + 64))
  assert np.all(np.asarray(block["ln1"]["scale"]) == 1)
  assert np.std(np.asarray(params["mask_token"])) < 0.05
  assert np.all(np.asarray(params["decoder_pred"]["bias"]) == 0)


# ---------------------------------------------------------------- forward pass ---


def test_tiny_output_shapes():
  model, params, images, masks = tiny_setup()
  out = jax.jit(model.apply)({"params": params}, images, masks)
  assert (model.num_patches, model.num_hidden, model.num_visible) == (16, 12, 4)
  assert out["pred_patches"].shape == (3, 16, 4 * 4 * 3)
  assert out["pred_patches"].dtype == jnp.float32
  assert out["latent"].shape == (3, 1 + 4, 32)
  assert out["pixels"].shape == (3, 16, 16, 3)
  assert out["ids_keep"].shape == (3, 4) and out["ids_restore"].shape == (3, 16)
  np.testing.assert_array_equal(out["pixels"], mae.unpatchify(out["pred_patches"], 4, 4))
  assert np.all(np.isfinite(np.asarray(out["pred_patches"])))


def test_latent_holds_exactly_the_visible_patches():
  model, params, images, masks = tiny_setup()
  out = jax.jit(model.apply)({"params": params}, images, masks)
  flat = np.asarray(masks).reshape(3, -1)
  for b in range(3):
    visible = np.flatnonzero(~flat[b])
    assert visible.size == model.num_visible
    np.testing.assert_array_equal(np.asarray(out["ids_keep"][b]), visible)  # raster order
    restore = np.asarray(out["ids_restore"][b])
    order = np.concatenate([visible, np.flatnonzero(flat[b])])
    np.testing.assert_array_equal(order[restore], np.arange(16))


def test_mae_masks_exact_count_and_per_sample():
  masks = np.asarray(_exact_masks(jax.random.key(3), 8, 14, 0.75))
  assert masks.shape == (8, 14, 14) and masks.dtype == bool
  assert masking.exact_count(0.75, 196) == 147
  assert np.all(masks.reshape(8, -1).sum(axis=1) == 147)
  assert len({m.tobytes() for m in masks}) == 8
  again = np.asarray(_exact_masks(jax.random.key(3), 8, 14, 0.75))
  np.testing.assert_array_equal(masks, again)


def test_encoder_does_not_see_hidden_pixels():
  model, params, images, masks = tiny_setup()
  pixel_masks = masking.to_pixels(masks, 16, 16)
  noise = random_images(jax.random.key(9), 3)
  changed = jnp.where(pixel_masks[..., None], noise, images)
  assert not np.allclose(changed, images)
  apply = jax.jit(model.apply)
  a = apply({"params": params}, images, masks)
  b = apply({"params": params}, changed, masks)
  zeroed = apply({"params": params}, masking.apply_mask(images, pixel_masks), masks)
  for other in (b, zeroed):
    np.testing.assert_array_equal(a["latent"], other["latent"])
    np.testing.assert_array_equal(a["pred_patches"], other["pred_patches"])
  # A visible pixel does change the latent.
  visible = np.argwhere(~np.asarray(pixel_masks[0]))[0]
  poked = images.at[0, visible[0], visible[1], 0].add(0.5)
  c = apply({"params": params}, poked, masks)
  assert not np.allclose(a["latent"][0], c["latent"][0])


def test_wrong_mask_count_is_rejected_outside_jit():
  model, params, images, masks = tiny_setup()
  bad = masks.at[0, 0, 0].set(~masks[0, 0, 0])
  with pytest.raises(ValueError, match="exactly 12 hidden"):
    model.apply({"params": params}, images, bad)
  with pytest.raises(ValueError, match=r"patch_mask must be \[B, 4, 4\]"):
    model.apply({"params": params}, images, jnp.zeros((3, 8, 8), bool))


# --------------------------------------------------------------- loss, pixels ---


def test_loss_counts_hidden_patches_only():
  model, _, images, masks = tiny_setup()
  pred = jax.random.uniform(jax.random.key(4), (3, 16, 48))
  loss = mae.mae_loss(pred, images, masks, 4, norm_pix=False)
  flat = np.asarray(masks).reshape(3, 16)
  b, p = np.argwhere(~flat)[0]
  changed = pred.at[b, p].add(10.0)
  assert mae.mae_loss(changed, images, masks, 4, False) == loss
  hb, hp = np.argwhere(flat)[0]
  assert mae.mae_loss(pred.at[hb, hp].add(10.0), images, masks, 4, False) > loss
  # Per-patch mean over 48 values, then mean over all hidden patches.
  target = np.asarray(mae.patchify(images, 4))
  per_patch = ((np.asarray(pred) - target) ** 2).mean(-1)
  np.testing.assert_allclose(loss, per_patch[flat].mean(), rtol=1e-6)
  assert mae.mae_loss(jnp.asarray(target), images, masks, 4, False) == 0


def test_norm_pix_round_trip():
  model, _, images, masks = tiny_setup()
  target = mae.patch_targets(images, 4, norm_pix=True)
  stats = np.asarray(target)
  np.testing.assert_allclose(stats.mean(-1), 0, atol=1e-5)
  np.testing.assert_allclose(stats.std(-1), 1, atol=1e-3)
  assert mae.mae_loss(target, images, masks, 4, norm_pix=True) < 1e-10
  back = mae.to_pixels(target, images, masks, norm_pix=True)
  np.testing.assert_allclose(back, images, atol=1e-5)
  raw = mae.patchify(images, 4)
  np.testing.assert_array_equal(mae.to_pixels(raw, images, masks, norm_pix=False), images)


def test_to_pixels_uses_the_hidden_patches_true_stats():
  _, _, images, masks = tiny_setup()
  pixel_masks = masking.to_pixels(masks, 16, 16)
  changed = jnp.where(pixel_masks[..., None], 0.3 * images + 0.6, images)
  pred = jax.random.normal(jax.random.key(5), (3, 16, 48))
  leaky = [mae.to_pixels(pred, x, masks, True) for x in (images, changed)]
  assert not np.allclose(leaky[0], leaky[1])  # norm_pix: hidden patches' stats leak


# --------------------------------------------------------------------- config ---


def test_patch_grid_must_equal_mask_grid():
  config = mae_config.get_config("base")
  config.model.patch_size = 16
  with pytest.raises(ConfigError, match=r"config\.model\.patch_size.*config\.mask_grid"):
    families.check(config)
  config = mae_config.get_config("tiny")
  config.mask_grid = 8
  with pytest.raises(ConfigError, match=r"config\.model\.patch_size=4.*config\.mask_grid=8"):
    families.check(config)


def test_config_variants():
  base = mae_config.get_config("")
  assert base.model.family == "mae" and base.model.norm_pix is False
  assert (base.model.dim, base.model.depth, base.model.num_heads) == (768, 12, 12)
  assert (base.mask.strategy, base.eval_mask_strategy) == ("random_exact", "random_exact")
  assert (base.optimizer, base.adam_b1, base.adam_b2, base.weight_decay) == (
    "adamw",
    0.9,
    0.95,
    0.05,
  )
  assert base.learning_rate == pytest.approx(1.5e-4 * base.batch_size / 256)
  large = mae_config.get_config("large,imagenette")
  assert (large.model.dim, large.model.depth, large.model.num_heads) == (1024, 24, 16)
  assert large.dataset.name == "imagenette"
  assert large.num_train_steps == mae_config.transinr.steps_for_epochs(9_469, 400, 64)
  assert large.warmup_steps == large.num_train_steps // 20
  large.batch_size = 128  # rescales the linked fields
  assert large.learning_rate == pytest.approx(1.5e-4 * 128 / 256)
  assert large.num_train_steps == mae_config.transinr.steps_for_epochs(9_469, 400, 128)
  assert large.warmup_steps == large.num_train_steps // 20
  celeba = mae_config.get_config("celeba,base")
  assert celeba.dataset.name == "celeb_a" and celeba.model.dim == 768
  demo = mae_config.get_config("demo")
  assert demo.resolution // demo.model.patch_size == demo.mask_grid
  assert mae_config.get_config("large,demo").model.dim == 1024
  for arg in ("", "large", "demo", "tiny", "large,indoor"):
    config = mae_config.get_config(arg)
    assert families.get(config).build(config).grid == config.mask_grid
  for bad in ("huge", "base,large", "celeba,demo"):
    with pytest.raises(ValueError, match="configs/mae.py"):
      mae_config.get_config(bad)


# ------------------------------------------------------------------- training ---


def test_adamw_steps_decrease_the_loss():
  config = mae_config.get_config("tiny")
  config.num_train_steps = 20
  config.warmup_steps = 2
  config.learning_rate = 3e-3
  model = families.get(config).build(config)
  tx = families.get(config).make_optimizer(config)
  params = mae.init_params(model, jax.random.key(0))
  opt_state = tx.init(params)
  images = random_images(jax.random.key(1), 4)
  masks = _exact_masks(jax.random.key(2), 4, model.grid, model.mask_ratio)

  def loss_fn(p):
    out = model.apply({"params": p}, images, masks, train=True)
    return mae.mae_loss(out["pred_patches"], images, masks, model.patch_size, model.norm_pix)

  @jax.jit
  def step(p, s):
    loss, grads = jax.value_and_grad(loss_fn)(p)
    updates, s = tx.update(grads, s, p)
    return optax.apply_updates(p, updates), s, loss

  losses = []
  for _ in range(20):
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
  assert np.all(np.isfinite(losses))
  assert losses[-1] < 0.5 * losses[0], losses
  decayed = mae.weight_decay_mask(params)
  assert decayed["patch_embed"]["kernel"] and not decayed["patch_embed"]["bias"]
  assert decayed["cls_token"] and not decayed["encoder_norm"]["scale"]
