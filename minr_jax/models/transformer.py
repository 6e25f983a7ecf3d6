"""Pre-LayerNorm transformer blocks for the hypernetworks (tokens: [B, T, D])."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Dtype = Any


def torch_linear_init(fan_in: int):
  """U(+-1/sqrt(fan_in)): PyTorch's nn.Linear default for weights and bias."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def torch_dense(features: int, use_bias: bool = True, dtype: Dtype | None = None,
                *, fan_in: int, name: str | None = None) -> nn.Dense:
  """nn.Dense initialised as PyTorch's nn.Linear: x [..., fan_in] -> [..., features]."""
  init = torch_linear_init(fan_in)
  return nn.Dense(features, use_bias=use_bias, dtype=dtype, kernel_init=init,
                  bias_init=init, name=name)


class Attention(nn.Module):
  """Multi-head self-attention: tokens [B, T, D] -> [B, T, D]."""
  num_heads: int
  head_dim: int
  qkv_bias: bool = False
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    d, inner = x.shape[-1], self.num_heads * self.head_dim
    split = lambda t: t.reshape(*t.shape[:-1], self.num_heads, self.head_dim)
    q = split(torch_dense(inner, self.qkv_bias, self.dtype, fan_in=d, name="query")(x))
    k = split(torch_dense(inner, self.qkv_bias, self.dtype, fan_in=d, name="key")(x))
    v = split(torch_dense(inner, self.qkv_bias, self.dtype, fan_in=d, name="value")(x))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(self.head_dim)
    attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", attn, v).reshape(*x.shape[:-1], inner)
    return torch_dense(d, True, self.dtype, fan_in=inner, name="out")(out)


class MLP(nn.Module):
  """Feed-forward block: [B, T, D] -> [B, T, D] through mlp_dim with GELU."""
  mlp_dim: int
  exact_gelu: bool = True
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    h = torch_dense(self.mlp_dim, True, self.dtype, fan_in=x.shape[-1], name="fc1")(x)
    h = nn.gelu(h, approximate=not self.exact_gelu)
    return torch_dense(x.shape[-1], True, self.dtype, fan_in=self.mlp_dim, name="fc2")(h)


class Block(nn.Module):
  """x + Attn(LN(x)), then x + MLP(LN(x)); residual dropout: [B, T, D]."""
  num_heads: int
  head_dim: int
  mlp_dim: int
  qkv_bias: bool = False
  ln_epsilon: float = 1e-5
  exact_gelu: bool = True
  dropout: float = 0.0
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    drop = nn.Dropout(self.dropout, deterministic=not train)
    h = nn.LayerNorm(self.ln_epsilon, dtype=self.dtype, name="ln1")(x)
    h = Attention(self.num_heads, self.head_dim, self.qkv_bias, self.dtype,
                  name="attn")(h)
    x = x + drop(h)
    h = nn.LayerNorm(self.ln_epsilon, dtype=self.dtype, name="ln2")(x)
    h = MLP(self.mlp_dim, self.exact_gelu, self.dtype, name="mlp")(h)
    return x + drop(h)


class Transformer(nn.Module):
  """A stack of `depth` pre-LN blocks, no final LayerNorm: [B, T, D] -> [B, T, D]."""
  depth: int
  num_heads: int
  head_dim: int
  mlp_dim: int
  qkv_bias: bool = False
  ln_epsilon: float = 1e-5
  exact_gelu: bool = True
  dropout: float = 0.0
  remat: bool = False
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    block_cls = nn.remat(Block, static_argnums=(2,)) if self.remat else Block
    for i in range(self.depth):
      x = block_cls(self.num_heads, self.head_dim, self.mlp_dim, self.qkv_bias,
                    self.ln_epsilon, self.exact_gelu, self.dropout, self.dtype,
                    name=f"block_{i}")(x, train)
    return x
