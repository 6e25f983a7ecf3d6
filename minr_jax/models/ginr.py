"""The GINR hypernetwork of MINR (instance pattern composers): images -> per-image INR weights.

Only INR layer `modulated_layer` is per image (U @ V, column-normalised); the other layers are
shared, so `weights` has the TransINR layout. Where it follows the reference code
(kakaobrain/ginr-ipc) and the parameter count: docs/model.md.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from minr_jax.models import inr
from minr_jax.models.transformer import torch_dense
from minr_jax.models.transinr import hypernetwork_tokens, num_patches_per_side

Array = jax.Array
PRNGKey = jax.Array


def ginr_linear_init(key: PRNGKey, fan_in: int, fan_out: int) -> Array:
  """A shared INR layer [fan_in + 1, fan_out]: weights U(+-1/sqrt(fan_out)), bias row 0.

  GINR's kaiming_uniform(a = sqrt 5) on its [fan_in, fan_out] weight, whose
  PyTorch fan-in is the second axis: a reference quirk kept on purpose (docs/model.md).
  """
  bound = 1.0 / math.sqrt(fan_out)
  w = jax.random.uniform(key, (fan_in, fan_out), jnp.float32, -bound, bound)
  return jnp.concatenate([w, jnp.zeros((1, fan_out), jnp.float32)], axis=0)


def shared_factor_init(key: PRNGKey, shape: tuple[int, int], fan_in: int) -> Array:
  """Shared factor V [rank, fan_out] of the instance-specific layer: N(0, 1) / sqrt(rank fan_in)."""
  return jax.random.normal(key, shape, jnp.float32) / math.sqrt(shape[0] * fan_in)


def normalize_columns(w: Array) -> Array:
  """Weights [..., fan_in, fan_out] with each output column scaled to unit L2 norm."""
  return w / jnp.maximum(jnp.linalg.norm(w, axis=-2, keepdims=True), 1e-12)


class GINR(nn.Module):
  """MINR's GINR hypernetwork: images [B, H, W, 3] -> dict of outputs.

  Outputs: `weights` (list per INR layer, [B, fan_in + 1, fan_out]; all but
  layer `modulated_layer` identical across the batch), `modulations` ([U],
  U [B, fan_in, rank]), `data_tokens` [B, T, D] and `weight_tokens`
  [B, rank, D] (transformer outputs, for embeddings; None when called with
  data_tokens=False, which skips the work only they need).
  """

  image_size: int
  patch_size: int = 9
  padding: int = 1
  dim: int = 768
  depth: int = 6
  num_heads: int = 12
  head_dim: int = 64
  mlp_dim: int = 3072
  qkv_bias: bool = True
  ln_epsilon: float = 1e-5
  exact_gelu: bool = True
  dropout: float = 0.1
  remat: bool = False
  inr_hidden_dim: int = 256
  inr_num_layers: int = 5
  inr_out_dim: int = 3
  ff_num_freqs: int = 64
  ff_sigma: float = 64.0
  rank: int = 256
  modulated_layer: int = 1
  normalize_shared: bool = True
  output_bias: float = 0.5
  dtype: Any = None
  inr_dtype: Any = None
  attention_impl: str = "batched"

  @property
  def inr_shapes(self) -> list[tuple[int, int]]:
    return inr.layer_shapes(
      4 * self.ff_num_freqs, self.inr_hidden_dim, self.inr_num_layers, self.inr_out_dim
    )

  @property
  def num_data_tokens(self) -> int:
    return num_patches_per_side(self.image_size, self.patch_size, self.padding) ** 2

  @property
  def num_weight_tokens(self) -> int:
    return self.rank

  def freqs(self) -> Array:
    return inr.fourier_frequencies(self.ff_num_freqs, self.ff_sigma)

  @nn.compact
  def __call__(
    self, images: Array, train: bool = False, data_tokens: bool = True
  ) -> dict[str, Any]:
    if not 0 <= self.modulated_layer < self.inr_num_layers:
      raise ValueError(
        f"modulated_layer={self.modulated_layer} is not a layer of an"
        f" INR with {self.inr_num_layers} layers"
      )
    batch = images.shape[0]
    data_out, weight_out = hypernetwork_tokens(self, images, self.rank, train, data_tokens)

    weights, modulations = [], []
    for i, (fan_in, fan_out) in enumerate(self.inr_shapes):
      if i == self.modulated_layer:
        h = nn.LayerNorm(self.ln_epsilon, dtype=self.dtype, name="head_ln")(weight_out)
        h = torch_dense(fan_in, dtype=self.dtype, fan_in=self.dim, name="head")(h)
        u = jnp.swapaxes(h, 1, 2).astype(jnp.float32)  # [B, fan_in, rank]
        v = self.param("shared_factor", shared_factor_init, (self.rank, fan_out), fan_in)
        w = normalize_columns(jnp.matmul(u, v, precision="highest"))
        # The reference also keeps a full base weight here that it never uses (the paper's
        # 43.75M counts it); only its bias is read, so only the bias is kept.
        bias = self.param(f"bias_{i}", nn.initializers.zeros, (fan_out,), jnp.float32)
        bias = jnp.broadcast_to(bias, (batch, 1, fan_out))
        weights.append(jnp.concatenate([w, bias], axis=1))
        modulations.append(u)
      else:
        base = self.param(
          f"base_{i}", lambda key, fi=fan_in, fo=fan_out: ginr_linear_init(key, fi, fo)
        )
        if self.normalize_shared:
          base = jnp.concatenate([normalize_columns(base[:-1]), base[-1:]], axis=0)
        weights.append(jnp.broadcast_to(base, (batch, *base.shape)))
    return dict(
      weights=weights, modulations=modulations, data_tokens=data_out, weight_tokens=weight_out
    )
