r"""Where a training step's time goes: the hypernetwork versus the per-image INRs.

Times, at a config's shapes (default: the paper's TransINR, 182 px, batch 16),
the forward and backward pass of the hypernetwork alone (loss = sum of squares
of the predicted INR weights) and of the INRs alone (rendering every pixel
from fixed weights, MSE), each the way the train step computes it
(model.attention_impl, model.inr_chunk), with XLA's FLOP count of each (on
the unlooped forms: XLA counts a loop's body once), and prints one JSON
object:

  python benchmarks/step_breakdown.py [--config=configs/transinr.py] [--reps=2]

The two parts add up to roughly one `python -m minr_jax.bench` train step
(the step also runs Adam and draws masks).
"""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
from absl import app, flags
from ml_collections import config_flags

from minr_jax import device_policy, families
from minr_jax.models import inr

_CONFIG = config_flags.DEFINE_config_file("config", "configs/transinr.py", "Model config.")
_REPS = flags.DEFINE_integer("reps", 2, "Timed calls per part (after one warm-up).")


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0))


def main(argv):
  del argv
  c, _ = device_policy.resolve_auto(_CONFIG.value, jax.devices())  # as a training run resolves
  unlooped = c.copy_and_resolve_references()  # the same maths without loops, for XLA's count
  with unlooped.unlocked():
    unlooped.model.attention_impl, unlooped.model.inr_chunk = "batched", 0
  model = families.get(c).build(c)
  params = jax.jit(lambda k: families.get(c).init(model, k))(jax.random.key(0))
  size = c.resolution
  images = jax.random.uniform(jax.random.key(1), (c.batch_size, size, size, 3))
  weights = jax.jit(lambda p: model.apply({"params": p}, images)["weights"])(params)
  coords = inr.coord_grid(size, size)
  dtype = getattr(model, "inr_dtype", None)

  def hyper_loss(p, config):
    out = families.get(config).build(config).apply({"params": p}, images, data_tokens=False)
    return sum(jnp.sum(w.astype(jnp.float32) ** 2) for w in out["weights"])

  def inr_loss(ws, config):
    chunk = families.inr_chunk(config)
    if chunk:
      return jnp.mean(
        inr.pixel_mse(ws, images, coords, model.freqs(), model.output_bias, dtype, chunk)
      )
    pred = inr.render(ws, coords, model.freqs(), model.output_bias, dtype)
    return jnp.mean((pred - images) ** 2)

  parts = {
    "hypernetwork_fwd_bwd": (jax.grad(hyper_loss), params),
    "inr_fwd_bwd": (jax.grad(inr_loss), weights),
    "inr_fwd": (inr_loss, weights),
  }
  result = {}
  for name, (fn, arg) in parts.items():
    compiled = jax.jit(functools.partial(fn, config=c)).lower(arg).compile()
    flops = _flops(jax.jit(functools.partial(fn, config=unlooped)).lower(arg).compile())
    jax.block_until_ready(compiled(arg))
    times = []
    for _ in range(_REPS.value):
      start = time.perf_counter()
      jax.block_until_ready(compiled(arg))
      times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    result[name] = dict(
      seconds=round(seconds, 2),
      tflop=round(flops / 1e12, 3),
      gflops_per_s=round(flops / seconds / 1e9, 1),
    )
  result.update(
    batch_size=c.batch_size,
    resolution=size,
    dtype=c.model.get("dtype"),
    attention_impl=c.model.attention_impl,
    inr_chunk=families.inr_chunk(c),
    cpu_count=os.cpu_count(),
    machine=platform.processor() or platform.machine(),
    load_average=[round(x, 2) for x in os.getloadavg()],
  )
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  app.run(main)
