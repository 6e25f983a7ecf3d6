"""The MAE baseline (He et al., CVPR 2022): a ViT that sees only the visible patches.

`MAE(images, patch_mask)` -> latent and `pred_patches`; use `init_params`, not `model.init`, for
MAE's initialisation. Where it follows MAE's code and its parameter counts: docs/model.md.
"""

from __future__ import annotations

import functools
from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from minr_jax import masking
from minr_jax.models.transformer import Transformer

Array = jax.Array
PRNGKey = jax.Array
PyTree = Any

# MAE's token initialisation (torch.nn.init.normal_(std=0.02)).
TOKEN_INIT_STD = 0.02
# Epsilon of the per-patch normalisation of norm_pix targets (MAE's).
NORM_PIX_EPS = 1e-6


# ------------------------------------------------------------------ patches ---


def patchify(images: Array, patch_size: int) -> Array:
  """Images [B, H, W, C] -> patches [B, (H/P) (W/P), P * P * C], raster order.

  Each patch is flattened (row, column, channel), as MAE's targets. H and W
  must be multiples of P.
  """
  _, h, w, _ = images.shape
  if h % patch_size or w % patch_size:
    raise ValueError(f"images {h}x{w} are not divisible into {patch_size}-pixel patches")
  return einops.rearrange(
    images, "b (h p1) (w p2) c -> b (h w) (p1 p2 c)", p1=patch_size, p2=patch_size
  )


def unpatchify(patches: Array, patch_size: int, grid: int, channels: int = 3) -> Array:
  """Patches [B, grid * grid, P * P * C] -> images [B, grid P, grid P, C] (`patchify`'s inverse)."""
  return einops.rearrange(
    patches,
    "b (h w) (p1 p2 c) -> b (h p1) (w p2) c",
    h=grid,
    w=grid,
    p1=patch_size,
    p2=patch_size,
    c=channels,
  )


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
  """Positions [M] -> [M, dim]: [sin(pos * w_i) | cos(pos * w_i)], w_i = 10000^(-i / (dim/2))."""
  if dim % 2:
    raise ValueError(f"sin-cos embedding width must be even, got {dim}")
  omega = 1.0 / 10000.0 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
  angles = np.outer(positions.astype(np.float64), omega)
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


@functools.cache
def sincos_2d(dim: int, grid: int, cls_token: bool = True) -> np.ndarray:
  """Fixed 2-D position embedding [(1 if cls_token) + grid^2, dim] (float32).

  Patch (r, c) in raster order gets [sincos_1d(dim/2, c) | sincos_1d(dim/2, r)]
  (column first, as MAE's code); the class token's row is zeros. dim must be
  a multiple of 4.
  """
  if dim % 4:
    raise ValueError(f"2-D sin-cos embedding width must be a multiple of 4, got {dim}")
  rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
  emb = np.concatenate(
    [sincos_1d(dim // 2, cols.reshape(-1)), sincos_1d(dim // 2, rows.reshape(-1))], axis=1
  )
  if cls_token:
    emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
  return emb.astype(np.float32)


def num_visible(mask_ratio: float, num_patches: int) -> int:
  """K = N - exact_count(mask_ratio, N): visible patches per image."""
  return num_patches - masking.exact_count(mask_ratio, num_patches)


def _check_mask_counts(patch_mask: Array, expected_hidden: int) -> None:
  """ValueError if a concrete mask [B, g, g] does not hide `expected_hidden` per image.

  A traced mask (inside jit or eval_shape) is not checked: the count is then
  the caller's contract.
  """
  try:
    counts = np.asarray(patch_mask).reshape(patch_mask.shape[0], -1).sum(axis=1)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return
  bad = np.flatnonzero(counts != expected_hidden)
  if bad.size:
    raise ValueError(
      f"MAE needs exactly {expected_hidden} hidden patches per image (mask_ratio),"
      f" but image {int(bad[0])} hides {int(counts[bad[0]])}: draw masks with"
      " an exact-count strategy such as 'random_exact'"
    )


# -------------------------------------------------------------------- model ---

_xavier = nn.initializers.xavier_uniform()
_zeros = nn.initializers.zeros


class MAE(nn.Module):
  """Masked autoencoder: images [B, H, W, 3], patch_mask [B, g, g] -> dict.

  Attributes:
    image_size: image side H = W in pixels; must be a multiple of patch_size.
    patch_size: P; the patch grid g = image_size / P must equal the mask grid.
    mask_ratio: static share of hidden patches; K = N - exact_count(ratio, N)
      tokens enter the encoder, so every mask must hide exactly
      exact_count(ratio, N) patches.
    dim, depth, num_heads, head_dim, mlp_dim: the encoder ViT.
    decoder_dim, decoder_depth, decoder_num_heads, decoder_head_dim,
      decoder_mlp_dim: the decoder.
    qkv_bias, ln_epsilon, exact_gelu: block options (MAE: True, 1e-6, True).
    dropout: residual dropout in the blocks (MAE: 0).
    remat: recompute blocks in the backward pass.
    norm_pix: whether the model is trained against per-patch normalised
      targets. It does not change the forward pass; `mae_loss` / `to_pixels`
      callers read it from the model (it travels with the model).
    dtype: computation dtype (None = float32).
    attention_impl: 'auto' | 'batched' | 'per_head' (`transformer.Transformer`).

  Returns (`__call__`):
    pred_patches: [B, N, P*P*3] float32, predictions for every patch (in
      normalised-patch space if trained with norm_pix).
    latent: [B, 1 + K, D], encoder outputs (after the final LayerNorm),
      class token first, then the visible patches in raster order.
    pixels: [B, H, W, 3] float32, `unpatchify(pred_patches)`: an image only
      when norm_pix is False; else use `to_pixels`.
    ids_keep: [B, K] int32, raster indices of the visible patches.
    ids_restore: [B, N] int32, inverse of the sort that put visible first.
  """

  image_size: int
  patch_size: int = 13
  mask_ratio: float = 0.75
  dim: int = 768
  depth: int = 12
  num_heads: int = 12
  head_dim: int = 64
  mlp_dim: int = 3072
  decoder_dim: int = 512
  decoder_depth: int = 8
  decoder_num_heads: int = 16
  decoder_head_dim: int = 32
  decoder_mlp_dim: int = 2048
  qkv_bias: bool = True
  ln_epsilon: float = 1e-6
  exact_gelu: bool = True
  dropout: float = 0.0
  remat: bool = False
  norm_pix: bool = False
  dtype: Any = None
  attention_impl: str = "batched"

  @property
  def grid(self) -> int:
    """Patches per side, g = image_size / patch_size."""
    return self.image_size // self.patch_size

  @property
  def num_patches(self) -> int:
    """N = g * g."""
    return self.grid * self.grid

  @property
  def num_hidden(self) -> int:
    """exact_count(mask_ratio, N): hidden patches per image."""
    return masking.exact_count(self.mask_ratio, self.num_patches)

  @property
  def num_visible(self) -> int:
    """K = N - num_hidden: tokens per image in the encoder (plus the class token)."""
    return num_visible(self.mask_ratio, self.num_patches)

  @property
  def patch_dim(self) -> int:
    """P * P * 3: values per predicted patch."""
    return self.patch_size * self.patch_size * 3

  def _check_inputs(self, images: Array, patch_mask: Array) -> None:
    if self.image_size % self.patch_size:
      raise ValueError(
        f"MAE.image_size={self.image_size} is not a multiple of MAE.patch_size={self.patch_size}"
      )
    if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, 3):
      raise ValueError(
        f"images must be [B, {self.image_size}, {self.image_size}, 3], got {images.shape}"
      )
    g = self.grid
    if patch_mask.shape != (images.shape[0], g, g):
      raise ValueError(
        f"patch_mask must be [B, {g}, {g}] = the patch grid "
        f"({self.image_size} px / patch {self.patch_size}), got "
        f"{patch_mask.shape}"
      )
    if not 0 < self.num_visible <= self.num_patches:
      raise ValueError(
        f"MAE.mask_ratio={self.mask_ratio} leaves {self.num_visible} "
        f"of {self.num_patches} patches visible; need at least 1"
      )

  def _blocks(
    self, depth: int, num_heads: int, head_dim: int, mlp_dim: int, name: str
  ) -> Transformer:
    return Transformer(
      depth,
      num_heads,
      head_dim,
      mlp_dim,
      self.qkv_bias,
      self.ln_epsilon,
      self.exact_gelu,
      self.dropout,
      self.remat,
      self.dtype,
      self.attention_impl,
      name=name,
    )

  @nn.compact
  def __call__(self, images: Array, patch_mask: Array, train: bool = False) -> dict[str, Array]:
    """images [B, H, W, 3], patch_mask [B, g, g] bool (True = hidden) -> dict (see class)."""
    self._check_inputs(images, patch_mask)
    patch_mask = jnp.asarray(patch_mask).astype(bool)
    _check_mask_counts(patch_mask, self.num_hidden)
    b, n, k = images.shape[0], self.num_patches, self.num_visible

    # Encoder over the visible patches.
    patches = patchify(images, self.patch_size)  # [B, N, P*P*3]
    x = nn.Dense(
      self.dim, dtype=self.dtype, kernel_init=_xavier, bias_init=_zeros, name="patch_embed"
    )(patches)  # [B, N, D]
    pos = jnp.asarray(sincos_2d(self.dim, self.grid))  # [1 + N, D]
    x = x + pos[1:].astype(x.dtype)
    hidden = patch_mask.reshape(b, n)
    # Stable: visible (False) patches first, each group in raster order.
    ids_shuffle = jnp.argsort(hidden.astype(jnp.int32), axis=1, stable=True)
    ids_restore = jnp.argsort(ids_shuffle, axis=1, stable=True)
    ids_keep = ids_shuffle[:, :k]  # [B, K]
    x = jnp.take_along_axis(x, ids_keep[..., None], axis=1)  # [B, K, D]
    cls = self.param("cls_token", nn.initializers.normal(TOKEN_INIT_STD), (1, 1, self.dim))
    cls = cls.astype(x.dtype) + pos[:1].astype(x.dtype)
    x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, self.dim)), x], axis=1)
    x = self._blocks(self.depth, self.num_heads, self.head_dim, self.mlp_dim, "encoder")(x, train)
    latent = nn.LayerNorm(self.ln_epsilon, dtype=self.dtype, name="encoder_norm")(x)

    # Decoder over all tokens.
    y = nn.Dense(
      self.decoder_dim,
      dtype=self.dtype,
      kernel_init=_xavier,
      bias_init=_zeros,
      name="decoder_embed",
    )(latent)  # [B, 1 + K, D']
    mask_token = self.param(
      "mask_token", nn.initializers.normal(TOKEN_INIT_STD), (1, 1, self.decoder_dim)
    )
    fill = jnp.broadcast_to(mask_token.astype(y.dtype), (b, n - k, self.decoder_dim))
    tokens = jnp.concatenate([y[:, 1:], fill], axis=1)  # sorted order [B, N, D']
    tokens = jnp.take_along_axis(tokens, ids_restore[..., None], axis=1)  # raster order
    y = jnp.concatenate([y[:, :1], tokens], axis=1)  # [B, 1 + N, D']
    y = y + jnp.asarray(sincos_2d(self.decoder_dim, self.grid)).astype(y.dtype)
    y = self._blocks(
      self.decoder_depth,
      self.decoder_num_heads,
      self.decoder_head_dim,
      self.decoder_mlp_dim,
      "decoder",
    )(y, train)
    y = nn.LayerNorm(self.ln_epsilon, dtype=self.dtype, name="decoder_norm")(y)
    pred = nn.Dense(
      self.patch_dim, dtype=self.dtype, kernel_init=_xavier, bias_init=_zeros, name="decoder_pred"
    )(y[:, 1:])
    pred = pred.astype(jnp.float32)  # [B, N, P*P*3]
    return dict(
      pred_patches=pred,
      latent=latent,
      pixels=unpatchify(pred, self.patch_size, self.grid),
      ids_keep=ids_keep.astype(jnp.int32),
      ids_restore=ids_restore.astype(jnp.int32),
    )


# --------------------------------------------------------------------- init ---


def _xavier_blocks(params: PyTree, key: PRNGKey) -> PyTree:
  """Re-draws the encoder/decoder block kernels as MAE does; their biases -> 0.

  Every Dense kernel [fan_in, fan_out] inside `encoder` / `decoder` becomes
  xavier-uniform, U(+-sqrt(6 / (fan_in + fan_out))); query, key and value
  use fan_out = 3 x their width, as MAE's single fused qkv Linear. LayerNorm
  parameters are left at (1, 0).
  """
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  out = []
  for i, (path, leaf) in enumerate(leaves):
    names = [str(getattr(p, "key", p)) for p in path]
    in_blocks = names[0] in ("encoder", "decoder") and ("attn" in names or "mlp" in names)
    if in_blocks and names[-1] == "kernel":
      fan_in, fan_out = leaf.shape
      if names[-2] in ("query", "key", "value"):
        fan_out *= 3
      bound = float(np.sqrt(6.0 / (fan_in + fan_out)))
      leaf = jax.random.uniform(jax.random.fold_in(key, i), leaf.shape, leaf.dtype, -bound, bound)
    elif in_blocks and names[-1] == "bias":
      leaf = jnp.zeros_like(leaf)
    out.append(leaf)
  return jax.tree_util.tree_unflatten(treedef, out)


def init_params(model: MAE, key: PRNGKey, batch: int = 1) -> PyTree:
  """MAE's initialisation of `model`'s parameters (jax.eval_shape it for shapes only).

  `model.init` on a dummy batch of `batch` images with an exact-count mask,
  then `_xavier_blocks` on the transformer blocks; jitted as one program
  (much faster than op-by-op on CPU).
  """

  def init(key: PRNGKey) -> PyTree:
    init_key, block_key = jax.random.split(key)
    images = jnp.zeros((batch, model.image_size, model.image_size, 3), jnp.float32)
    mask = jnp.broadcast_to(
      jnp.arange(model.num_patches) < model.num_hidden, (batch, model.num_patches)
    )
    mask = mask.reshape(batch, model.grid, model.grid)
    params = model.init(init_key, images, mask)["params"]
    return _xavier_blocks(params, block_key)

  return jax.jit(init)(key)


# ------------------------------------------------------------- loss, pixels ---


def _patch_stats(patches: Array) -> tuple[Array, Array]:
  """Patches [B, N, V] -> per-patch mean and std [B, N, 1], std = sqrt(var + eps)."""
  mean = jnp.mean(patches, axis=-1, keepdims=True)
  var = jnp.var(patches, axis=-1, keepdims=True)
  return mean, jnp.sqrt(var + NORM_PIX_EPS)


def patch_targets(images: Array, patch_size: int, norm_pix: bool) -> Array:
  """Images [B, H, W, 3] -> targets [B, N, P*P*3] (float32), per-patch normalised if norm_pix.

  norm_pix: (patch - mean) / sqrt(var + 1e-6), mean and variance over the
  patch's P*P*3 values (MAE's recipe).
  """
  target = patchify(images.astype(jnp.float32), patch_size)
  if norm_pix:
    mean, std = _patch_stats(target)
    target = (target - mean) / std
  return target


def mae_loss(
  pred_patches: Array, images: Array, patch_mask: Array, patch_size: int, norm_pix: bool
) -> Array:
  """MAE's loss: a float32 scalar.

  pred_patches [B, N, P*P*3], images [B, H, W, 3], patch_mask [B, g, g] (True
  = hidden). Squared error against `patch_targets` is averaged over each
  patch's values, then over the hidden patches of the whole batch; visible
  patches do not count. 0 if no patch is hidden.
  """
  target = patch_targets(images, patch_size, norm_pix)
  if pred_patches.shape != target.shape:
    raise ValueError(
      f"pred_patches {pred_patches.shape} do not match the image's "
      f"patches {target.shape} (patch_size={patch_size})"
    )
  per_patch = jnp.mean(jnp.square(pred_patches.astype(jnp.float32) - target), axis=-1)
  hidden = patch_mask.reshape(per_patch.shape).astype(jnp.float32)  # [B, N]
  return jnp.sum(per_patch * hidden) / jnp.maximum(jnp.sum(hidden), 1.0)


def to_pixels(pred_patches: Array, images: Array, patch_mask: Array, norm_pix: bool) -> Array:
  """Predictions [B, N, P*P*3] -> images [B, H, W, 3] (float32), for metrics and pictures.

  Without norm_pix the predictions are pixels already: they are only
  unpatchified. With norm_pix each predicted patch is de-normalised,
  pred * std + mean:
  - visible patches use their own (visible) mean and std;
  - hidden patches use the GROUND-TRUTH mean and std of that hidden patch
    (as MAE's own visualisation). This leaks each hidden patch's mean colour
    and contrast from the target, so PSNR of a norm_pix model computed this
    way is optimistic and not comparable with models that never see hidden
    pixels (MINR). The paper configs train with norm_pix=False, where nothing
    leaks.

  patch_mask: [B, g, g], True = hidden; images: [B, H, W, 3], the targets.
  """
  b, h, w, c = images.shape
  patch_mask = jnp.asarray(patch_mask).astype(bool)
  grid = patch_mask.shape[-1]
  patch_size = h // grid
  if patch_size * grid != h or pred_patches.shape != (b, grid * grid, patch_size**2 * c):
    raise ValueError(
      f"pred_patches {pred_patches.shape} do not tile images {images.shape} "
      f"on the {grid}x{grid} mask grid"
    )
  pred = pred_patches.astype(jnp.float32)
  if norm_pix:
    mean, std = _patch_stats(patchify(images.astype(jnp.float32), patch_size))
    pred = pred * std + mean
  return unpatchify(pred, patch_size, grid, c)


# -------------------------------------------------------------- optimizer ---


def weight_decay_mask(params: PyTree) -> PyTree:
  """True for parameters that get weight decay: those with ndim >= 2 (MAE's rule).

  Biases and LayerNorm scales/offsets (1-D) are not decayed; kernels and the
  class and mask tokens ([1, 1, D]) are.
  """
  return jax.tree.map(lambda p: p.ndim >= 2, params)
