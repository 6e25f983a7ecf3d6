"""Pre-LayerNorm transformer blocks for the hypernetworks (tokens: [B, T, D])."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
Dtype = Any

ATTENTION_IMPLS = ("batched", "per_head")


def _batched_attention(q: Array, k: Array, v: Array) -> Array:
  """softmax(q k^T / sqrt(d)) v for q [B, Tq, H, d], k, v [B, Tk, H, d] -> [B, Tq, H, d]."""
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
  attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", attn, v)


def _head_logits(q: Array, k: Array) -> Array:
  """One head: q [Tq, d], k [Tk, d] -> float32 logits [Tq, Tk] (scaled as the batched form)."""
  return (q @ k.T).astype(jnp.float32) / math.sqrt(q.shape[-1])


def _heads_forward(q: Array, k: Array, v: Array) -> tuple[Array, Array]:
  """Heads [N, T, d] one at a time -> (outputs [N, Tq, d], log-sum-exp [N, Tq] float32)."""

  def one(args):
    q, k, v = args
    logits = _head_logits(q, k)
    lse = jax.nn.logsumexp(logits, axis=-1)
    probs = jnp.exp(logits - lse[:, None]).astype(v.dtype)
    return probs @ v, lse

  return lax.map(one, (q, k, v))


@jax.custom_vjp
def _heads_attention(q: Array, k: Array, v: Array) -> Array:
  return _heads_forward(q, k, v)[0]


def _heads_attention_fwd(q, k, v):
  out, lse = _heads_forward(q, k, v)
  return out, (q, k, v, out, lse)


def _heads_attention_bwd(residuals, d_out):
  """Recomputes each head's probabilities from the saved log-sum-exp (nothing [T, T] is kept)."""
  scale = 1.0 / math.sqrt(residuals[0].shape[-1])

  def one(args):
    q, k, v, out, lse, do = args
    probs = jnp.exp(_head_logits(q, k) - lse[:, None])  # [Tq, Tk] float32
    dv = probs.astype(v.dtype).T @ do
    dp = (do @ v.T).astype(jnp.float32)
    delta = jnp.sum(do.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
    ds = (probs * (dp - delta) * scale).astype(q.dtype)
    return ds @ k, ds.T @ q, dv

  return lax.map(one, (*residuals, d_out))


_heads_attention.defvjp(_heads_attention_fwd, _heads_attention_bwd)


def _per_head_attention(q: Array, k: Array, v: Array) -> Array:
  """The same attention as `_batched_attention`, one (image, head) pair at a time.

  On XLA's CPU backend the batched [B, H, T, T] products and softmax run at a
  fraction of the speed of plain 2-D products on one head's cache-sized
  [T, T] block; a custom VJP recomputes the probabilities in the backward
  pass instead of storing [B, H, T, T]. (XLA's cost analysis counts a loop
  body once: `minr_jax.bench` counts FLOPs on the batched form.)
  """
  b, tq, h, d = q.shape
  fold = lambda x: jnp.swapaxes(x, 1, 2).reshape(b * h, x.shape[1], d)
  out = _heads_attention(fold(q), fold(k), fold(v))
  return jnp.swapaxes(out.reshape(b, h, tq, d), 1, 2)


def torch_linear_init(fan_in: int):
  """U(+-1/sqrt(fan_in)): PyTorch's nn.Linear default for weights and bias."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def torch_dense(
  features: int,
  use_bias: bool = True,
  dtype: Dtype | None = None,
  *,
  fan_in: int,
  name: str | None = None,
) -> nn.Dense:
  """nn.Dense initialised as PyTorch's nn.Linear: x [..., fan_in] -> [..., features]."""
  init = torch_linear_init(fan_in)
  return nn.Dense(
    features, use_bias=use_bias, dtype=dtype, kernel_init=init, bias_init=init, name=name
  )


class Attention(nn.Module):
  """Multi-head self-attention: tokens [B, T, D] -> [B, T, D].

  With `num_queries`, only the last num_queries tokens attend (to all T) and
  the output is [B, num_queries, D]: the same rows as the full call, without
  computing the others.
  """

  num_heads: int
  head_dim: int
  qkv_bias: bool = False
  dtype: Dtype | None = None
  attention_impl: str = "batched"

  @nn.compact
  def __call__(self, x: Array, num_queries: int | None = None) -> Array:
    d, inner = x.shape[-1], self.num_heads * self.head_dim
    split = lambda t: t.reshape(*t.shape[:-1], self.num_heads, self.head_dim)
    x_q = x if num_queries is None else x[:, x.shape[1] - num_queries :]
    q = split(torch_dense(inner, self.qkv_bias, self.dtype, fan_in=d, name="query")(x_q))
    k = split(torch_dense(inner, self.qkv_bias, self.dtype, fan_in=d, name="key")(x))
    v = split(torch_dense(inner, self.qkv_bias, self.dtype, fan_in=d, name="value")(x))
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(
        f"attention_impl={self.attention_impl!r} is not one of {', '.join(ATTENTION_IMPLS)}"
      )
    if self.attention_impl == "per_head":
      out = _per_head_attention(q, k, v)
    else:
      out = _batched_attention(q, k, v)
    out = out.reshape(*x_q.shape[:-1], inner)
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
  """x + Attn(LN(x)), then x + MLP(LN(x)); residual dropout: [B, T, D].

  With `num_queries`, only the last num_queries rows are computed: [B, num_queries, D].
  """

  num_heads: int
  head_dim: int
  mlp_dim: int
  qkv_bias: bool = False
  ln_epsilon: float = 1e-5
  exact_gelu: bool = True
  dropout: float = 0.0
  dtype: Dtype | None = None
  attention_impl: str = "batched"

  @nn.compact
  def __call__(self, x: Array, train: bool = False, num_queries: int | None = None) -> Array:
    drop = nn.Dropout(self.dropout, deterministic=not train)
    h = nn.LayerNorm(self.ln_epsilon, dtype=self.dtype, name="ln1")(x)
    h = Attention(
      self.num_heads, self.head_dim, self.qkv_bias, self.dtype, self.attention_impl, name="attn"
    )(h, num_queries)
    if num_queries is not None:
      x = x[:, x.shape[1] - num_queries :]
    x = x + drop(h)
    h = nn.LayerNorm(self.ln_epsilon, dtype=self.dtype, name="ln2")(x)
    h = MLP(self.mlp_dim, self.exact_gelu, self.dtype, name="mlp")(h)
    return x + drop(h)


class Transformer(nn.Module):
  """A stack of `depth` pre-LN blocks, no final LayerNorm: [B, T, D] -> [B, T, D].

  `num_outputs` (optional): only the last num_outputs tokens' outputs are
  wanted, [B, num_outputs, D]; the last block then computes only those rows
  (exactly the same values, without the rest of that block's work).
  `attention_impl`: 'batched' (einsum over all heads) or 'per_head' (the same
  maths one head at a time, faster on XLA's CPU backend; a config's 'auto' is
  resolved where a run starts: `device_policy.resolve_auto`).
  """

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
  attention_impl: str = "batched"

  @nn.compact
  def __call__(self, x: Array, train: bool = False, num_outputs: int | None = None) -> Array:
    block_cls = nn.remat(Block, static_argnums=(2, 3)) if self.remat else Block
    for i in range(self.depth):
      last = i == self.depth - 1
      x = block_cls(
        self.num_heads,
        self.head_dim,
        self.mlp_dim,
        self.qkv_bias,
        self.ln_epsilon,
        self.exact_gelu,
        self.dropout,
        self.dtype,
        self.attention_impl,
        name=f"block_{i}",
      )(x, train, num_outputs if last else None)
    return x
