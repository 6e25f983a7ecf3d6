"""The TransINR hypernetwork of MINR: masked image -> per-image INR weights.

Tokens of the padded image's patches plus learned weight tokens go through a pre-LN transformer;
each INR layer's weight tokens modulate its shared base weight (docs/model.md). Parameters are
float32; `dtype` is the computation dtype, and modulations and INR weights are float32 again.
"""

from __future__ import annotations

from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from minr_jax.models import inr
from minr_jax.models.transformer import Transformer, torch_dense

Array = jax.Array


def num_patches_per_side(image_size: int, patch_size: int, padding: int) -> int:
  """Patches along one side after padding; trailing pixels that don't fill a patch are dropped."""
  return (image_size + 2 * padding) // patch_size


def patchify(images: Array, patch_size: int, padding: int) -> Array:
  """Images [B, H, W, C] -> patches [B, T, C * P * P], channel-major per patch.

  Zero padding of `padding` pixels on every side, then non-overlapping P x P
  patches in row-major order. The (channel, row, col) order of each flattened
  patch matches torch's `F.unfold`, so ported weights line up.
  """
  x = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  nh = x.shape[1] // patch_size
  nw = x.shape[2] // patch_size
  x = x[:, : nh * patch_size, : nw * patch_size]
  return einops.rearrange(x, "b (h p1) (w p2) c -> b (h w) (c p1 p2)", p1=patch_size, p2=patch_size)


def hypernetwork_tokens(
  module: nn.Module, images: Array, num_weight_tokens: int, train: bool, data_tokens: bool = True
) -> tuple[Array | None, Array]:
  """The hypernetworks' shared trunk, built inside `module`'s compact call.

  images [B, H, W, 3] -> patches -> Dense + learned position embedding, then
  `num_weight_tokens` learned tokens appended, through the pre-LN transformer.
  Returns (data tokens [B, T, D], weight tokens [B, num_weight_tokens, D]).
  With data_tokens=False the data tokens' outputs are not computed (None):
  the last block then works on the weight tokens' rows only, which is all
  that the INR weights need (about 8% of the paper config's transformer).
  `module` supplies the sizes (patch_size, padding, dim, depth, ...) and owns
  the parameters `patch_embed`, `pos_embed`, `weight_tokens`, `transformer`.
  """
  m = module
  patches = patchify(images, m.patch_size, m.padding)
  if patches.shape[1] != m.num_data_tokens:
    raise ValueError(
      f"images of size {images.shape[1:3]} give {patches.shape[1]}"
      f" tokens; the model was built for {m.image_size} px"
    )
  tokens = torch_dense(m.dim, dtype=m.dtype, fan_in=patches.shape[-1], name="patch_embed")(patches)
  pos = m.param("pos_embed", nn.initializers.normal(1.0), (m.num_data_tokens, m.dim))
  tokens = tokens + pos.astype(tokens.dtype)
  table = m.param("weight_tokens", nn.initializers.normal(1.0), (num_weight_tokens, m.dim))
  table = jnp.broadcast_to(table.astype(tokens.dtype), (tokens.shape[0], *table.shape))
  x = jnp.concatenate([tokens, table], axis=1)
  x = Transformer(
    m.depth,
    m.num_heads,
    m.head_dim,
    m.mlp_dim,
    m.qkv_bias,
    m.ln_epsilon,
    m.exact_gelu,
    m.dropout,
    m.remat,
    m.dtype,
    m.attention_impl,
    name="transformer",
  )(x, train, None if data_tokens else num_weight_tokens)
  if not data_tokens:
    return None, x
  return x[:, : m.num_data_tokens], x[:, m.num_data_tokens :]


class TransINR(nn.Module):
  """MINR's TransINR hypernetwork: images [B, H, W, 3] -> dict of outputs.

  Outputs: `weights` (list per INR layer, [B, fan_in + 1, fan_out]),
  `modulations` (list, [B, fan_in, g]), `data_tokens` [B, T, D] and
  `weight_tokens` [B, G, D] (transformer outputs, for embeddings).
  `data_tokens=False` in the call skips what only the data tokens' outputs
  need (they come back as None); training and reconstruction call it so.
  """

  image_size: int
  patch_size: int = 9
  padding: int = 1
  dim: int = 768
  depth: int = 6
  num_heads: int = 12
  head_dim: int = 64
  mlp_dim: int = 3072
  qkv_bias: bool = False
  ln_epsilon: float = 1e-5
  exact_gelu: bool = True
  dropout: float = 0.0
  remat: bool = False
  inr_hidden_dim: int = 256
  inr_num_layers: int = 5
  inr_out_dim: int = 3
  ff_num_freqs: int = 64
  ff_sigma: float = 1024.0
  num_groups: int = 64
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
  def groups(self) -> list[int]:
    """Weight tokens per INR layer: min(num_groups, fan_out)."""
    return [min(self.num_groups, fan_out) for _, fan_out in self.inr_shapes]

  @property
  def num_data_tokens(self) -> int:
    return num_patches_per_side(self.image_size, self.patch_size, self.padding) ** 2

  def freqs(self) -> Array:
    return inr.fourier_frequencies(self.ff_num_freqs, self.ff_sigma)

  @nn.compact
  def __call__(
    self, images: Array, train: bool = False, data_tokens: bool = True
  ) -> dict[str, Any]:
    data_out, weight_out = hypernetwork_tokens(self, images, sum(self.groups), train, data_tokens)

    weights, modulations, start = [], [], 0
    for i, ((fan_in, fan_out), g) in enumerate(zip(self.inr_shapes, self.groups)):
      if fan_out % g:
        raise ValueError(
          f"model.num_groups gives {g} groups, which do not divide INR layer {i}'s width {fan_out}"
        )
      base = self.param(
        f"base_{i}", lambda key, fi=fan_in, fo=fan_out: inr.init_linear_weights(key, fi, fo)
      )
      h = nn.LayerNorm(self.ln_epsilon, dtype=self.dtype, name=f"head_{i}_ln")(
        weight_out[:, start : start + g]
      )
      h = torch_dense(fan_in, dtype=self.dtype, fan_in=self.dim, name=f"head_{i}")(
        h
      )  # [B, g, fan_in]
      mod = jnp.swapaxes(h, 1, 2).astype(jnp.float32)  # [B, fan_in, g]
      weights.append(inr.modulate(base, mod))
      modulations.append(mod)
      start += g
    return dict(
      weights=weights, modulations=modulations, data_tokens=data_out, weight_tokens=weight_out
    )
