r"""What limits the paper config's step time on a CPU: XLA's matmul throughput.

Times, in one process and interleaved over rounds, the products that make up
a TransINR-MINR training step at the paper's shapes (182 px, batch 16: 659
tokens x 16 images through 768-wide layers; 16 per-image INRs over 33,124
pixels), as XLA compiles them for the CPU, and prints one JSON object with
GFLOP/s per case (median over rounds):

  python benchmarks/cpu_matmul.py [--rounds=3] [--reps=3]

Cases:
  mlp_fwd_*      [10544, 768] x [768, 3072], the transformer MLP's first product
  mlp_grad_*     forward and backward of 768 -> 3072 -> 768 with GELU (4 images)
  attn_*         attention logits [16, 12, 659, 64] x [16, 12, 64, 659]
  inr_fwd_*      per-image [33124, 256] x [256, 256], vmapped over 16 images
  inr_grad_*     forward and backward of a per-image 256 -> 256 -> 256 ReLU MLP (4 images)
in float32 (`_f32`), bfloat16 operands with a bfloat16 result (`_bf16`,
what flax computes with dtype=bfloat16) and, for the forward products,
bfloat16 operands accumulated into float32 (`_bf16_f32acc`). The step needs
3.88 TFLOP (XLA's count, `python -m minr_jax.bench`), so GFLOP/s here bound
the step time from below: 3,876 / GFLOP/s seconds at the measured rate.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
from absl import app, flags

_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved rounds over all cases.")
_REPS = flags.DEFINE_integer("reps", 3, "Timed calls per case per round (after one warm-up).")

F32, BF16 = jnp.float32, jnp.bfloat16
TOKENS = 16 * 659  # paper config: 400 data + 259 weight tokens, 16 images
PIXELS = 182 * 182


def _mlp_grad(dtype):
  def loss(params, x):
    w1, w2 = (w.astype(dtype) for w in params)
    h = jax.nn.gelu(x.astype(dtype) @ w1)
    return jnp.sum((h @ w2).astype(F32))

  return jax.grad(loss)


def _inr_grad(dtype, accumulate):
  def one(x, w1, w2):
    kw = {"preferred_element_type": F32} if accumulate else {}
    h = jax.nn.relu(jnp.dot(x.astype(dtype), w1.astype(dtype), **kw))
    return jnp.dot(h.astype(dtype), w2.astype(dtype), **kw)

  def loss(params, x):
    return jnp.sum(jax.vmap(one)(x, *params).astype(F32))

  return jax.grad(loss)


def cases():
  """name -> (function, argument shapes and dtypes, FLOPs per call)."""
  mlp = 2 * TOKENS * 768 * 3072
  grad_tokens = 4 * 659
  mlp_grad = 2 * grad_tokens * 768 * 3072 * 5  # 2 forward, 3 backward products (no input grad)
  attn = 2 * 16 * 12 * 659 * 659 * 64
  inr = 2 * 16 * PIXELS * 256 * 256
  inr_grad = 2 * 4 * PIXELS * 256 * 256 * 5
  mixed = lambda a, b: jnp.dot(a, b, preferred_element_type=F32)
  logits = lambda q, k: jnp.einsum("bhqd,bhkd->bhqk", q, k)
  per_image = lambda f: jax.vmap(f, in_axes=(0, 0))
  out = {}
  for tag, dt in (("f32", F32), ("bf16", BF16)):
    out[f"mlp_fwd_{tag}"] = (jnp.dot, [((TOKENS, 768), dt), ((768, 3072), dt)], mlp)
    out[f"mlp_grad_{tag}"] = (
      _mlp_grad(dt),
      [[((768, 3072), F32), ((3072, 768), F32)], ((grad_tokens, 768), F32)],
      mlp_grad,
    )
    out[f"attn_{tag}"] = (logits, [((16, 12, 659, 64), dt), ((16, 12, 659, 64), dt)], attn)
    out[f"inr_fwd_{tag}"] = (
      per_image(jnp.dot),
      [((16, PIXELS, 256), dt), ((16, 256, 256), dt)],
      inr,
    )
    out[f"inr_grad_{tag}"] = (
      _inr_grad(dt, accumulate=dt == BF16),
      [[((4, 256, 256), F32), ((4, 256, 256), F32)], ((4, PIXELS, 256), F32)],
      inr_grad,
    )
  out["mlp_fwd_bf16_f32acc"] = (mixed, [((TOKENS, 768), BF16), ((768, 3072), BF16)], mlp)
  out["inr_fwd_bf16_f32acc"] = (
    per_image(mixed),
    [((16, PIXELS, 256), BF16), ((16, 256, 256), BF16)],
    inr,
  )
  return out


def _make(spec, key):
  if isinstance(spec, list):
    return [_make(s, k) for s, k in zip(spec, jax.random.split(key, len(spec)))]
  shape, dtype = spec
  return (jax.random.normal(key, shape, F32) * 0.05).astype(dtype)


def main(argv):
  del argv
  table = cases()
  compiled, args = {}, {}
  for i, (name, (fn, specs, _)) in enumerate(table.items()):
    args[name] = [
      _make(s, k) for s, k in zip(specs, jax.random.split(jax.random.key(i), len(specs)))
    ]
    compiled[name] = jax.jit(fn)
    jax.block_until_ready(compiled[name](*args[name]))  # compile and warm up
  rates = {name: [] for name in table}
  for _ in range(_ROUNDS.value):
    for name, (_, _, flops) in table.items():
      start = time.perf_counter()
      for _ in range(_REPS.value):
        jax.block_until_ready(compiled[name](*args[name]))
      seconds = (time.perf_counter() - start) / _REPS.value
      rates[name].append(flops / seconds / 1e9)
  result = dict(
    gflops_per_s={n: round(statistics.median(r), 1) for n, r in rates.items()},
    spread={n: [round(min(r), 1), round(max(r), 1)] for n, r in rates.items()},
    rounds=_ROUNDS.value,
    reps=_REPS.value,
    jax=jax.__version__,
    cpu_count=os.cpu_count(),
    machine=platform.processor() or platform.machine(),
    load_average=[round(x, 2) for x in os.getloadavg()],
    xla_flags=os.environ.get("XLA_FLAGS", ""),
  )
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  app.run(main)
