r"""Speed benchmark of the jitted train and eval steps on random images: `run_benchmark`.

Builds the steps with `steps.make_steps`, exactly as the training loop does; the command is
`python -m minr_jax.bench` and its JSON output is described in docs/speed.md.
"""

from __future__ import annotations

import resource
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from minr_jax import data, families, masking, sharding
from minr_jax.config import ConfigError
from minr_jax.training import steps as steps_lib


def _stats(times: list[float]) -> dict[str, Any]:
  t = np.asarray(times, np.float64)
  return dict(
    median=float(np.median(t)),
    min=float(t.min()),
    max=float(t.max()),
    p25=float(np.percentile(t, 25)),
    p75=float(np.percentile(t, 75)),
    all=[round(float(x), 6) for x in t],
  )


def _flops(compiled) -> float | None:
  """XLA's flop count of a compiled computation (None if the backend gives none)."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # noqa: BLE001 (some backends do not implement it)
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  flops = (cost or {}).get("flops")
  return float(flops) if flops is not None and flops >= 0 else None


def _counted_flops(config: ml_collections.ConfigDict, compiled, make_step, args) -> float | None:
  """XLA's flop count of a step, with the looped forms counted in their batched forms.

  XLA's cost analysis counts the body of a loop once, so the 'per_head'
  attention (a lax.map over every image and head) and the chunked INR loss
  (`model.inr_chunk`: a loop over images and pixel chunks) would count one
  iteration's products. The step is then also compiled from
  `make_step(config with attention_impl='batched', inr_chunk=0)` (the same
  maths, no loops) and that is counted. `config` is resolved (`Steps.config`).
  """
  looped = config.model.attention_impl == "per_head" or families.inr_chunk(config) > 0
  if not looped:
    return _flops(compiled)
  counted = config.copy_and_resolve_references()
  with counted.unlocked():
    counted.model.attention_impl = "batched"
    counted.model.inr_chunk = 0
  return _flops(make_step(counted).lower(*args).compile())


def _xla_memory(compiled) -> dict[str, int] | None:
  """XLA's buffer sizes of a compiled step (per device), where the backend reports them."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # noqa: BLE001
    return None
  if m is None:
    return None
  fields = (
    "argument_size_in_bytes",
    "output_size_in_bytes",
    "alias_size_in_bytes",
    "temp_size_in_bytes",
    "generated_code_size_in_bytes",
  )
  return {
    f.replace("_size_in_bytes", "_bytes"): int(getattr(m, f)) for f in fields if hasattr(m, f)
  }


def _peak_memory() -> tuple[int, str]:
  stats = None
  try:
    stats = jax.local_devices()[0].memory_stats()
  except Exception:  # noqa: BLE001
    pass
  if stats and "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"]), "device_memory_stats"
  # Linux reports ru_maxrss in KiB.
  return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "process_max_rss"


def _time(fn, args_fn, steps: int, warmup: int) -> list[float]:
  """Wall times of `steps` calls after `warmup` untimed ones; args_fn feeds each call."""
  times = []
  for i in range(warmup + steps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args_fn()))
    if i >= warmup:
      times.append(time.perf_counter() - t0)
  return times


def _pipeline(
  compiled,
  state,
  mesh,
  config: ml_collections.ConfigDict,
  step_key,
  num_steps: int,
  median_step: float,
) -> tuple[dict[str, Any], Any]:
  """`num_steps` steps as the training loop runs them, on the config's real data.

  Returns (the `pipeline` results, the final state).
  """
  it = data.make_train_iterator(
    config, process_index=jax.process_index(), process_count=jax.process_count()
  )
  local = next(it)  # the pipeline's start-up (workers, first batch) is not timed
  jax.block_until_ready(sharding.global_batch(mesh, {"image": local["image"]}))
  pending, waited = [], 0.0
  start = time.perf_counter()
  for _ in range(num_steps):
    t0 = time.perf_counter()
    local = next(it)
    batch = sharding.global_batch(mesh, {"image": local["image"]})
    waited += time.perf_counter() - t0
    state, out = compiled(state, batch, step_key)
    pending.append(out)
  jax.block_until_ready((state, pending))
  wall = (time.perf_counter() - start) / num_steps
  return dict(
    steps=num_steps,
    step_s=wall,
    host_data_wait_s=waited / num_steps,
    images_per_s=config.batch_size / wall,
    overhead=wall / median_step - 1.0,
    dataset=config.dataset.name,
  ), state


def train_step_flops(config: ml_collections.ConfigDict) -> float | None:
  """XLA's FLOP count of one training step of `config` on its mesh, all devices.

  Compiles the step (in its batched forms, see `_counted_flops`) on a batch of
  noise; nothing is timed. None if the backend gives no count. What equal
  training compute means in benchmarks/ood_study.py.
  """
  family = families.check(config)
  mesh = sharding.make_mesh(config)
  built = steps_lib.make_steps(config, mesh, family)
  init_key, step_key = jax.random.split(jax.random.key(config.seed))
  state = built.init_state(init_key)
  local = built.config.batch_size // jax.process_count()
  res = built.config.resolution
  images = np.random.default_rng(0).uniform(size=(local, res, res, 3)).astype(np.float32)
  batch = sharding.global_batch(mesh, {"image": images})
  compiled = built.train_step.lower(state, batch, step_key).compile()
  flops = _counted_flops(
    built.config,
    compiled,
    lambda c: steps_lib.make_steps(c, mesh, family).train_step,
    (state, batch, step_key),
  )
  return flops * mesh.size if flops is not None else None


def run_benchmark(
  config: ml_collections.ConfigDict,
  steps: int = 5,
  warmup: int = 1,
  peak_flops: float | None = None,
  eval_steps: int | None = None,
  pipeline_steps: int = 0,
) -> dict[str, Any]:
  """Compiles and times the train and eval steps; returns the JSON-able results."""
  if steps < 1 or warmup < 0 or pipeline_steps < 0:
    raise ConfigError(
      f"--steps must be >= 1 and --warmup, --pipeline_steps >= 0, got "
      f"{steps}, {warmup}, {pipeline_steps}"
    )
  family = families.check(config)
  dtype, inr_dtype = families.model_dtypes(config)
  mesh = sharding.make_mesh(config)
  sharding.check_batch_sizes(config, mesh)
  built = steps_lib.make_steps(config, mesh, family)
  config = built.config  # 'auto' fields resolved for this mesh
  init_key, step_key = jax.random.split(jax.random.key(config.seed))
  state = built.init_state(init_key)
  abstract = built.abstract_state

  rng = np.random.default_rng(config.seed)
  local = config.batch_size // jax.process_count()
  res = config.resolution
  images = rng.uniform(size=(local, res, res, 3)).astype(np.float32)
  batch = sharding.global_batch(mesh, {"image": images})
  local_eval = config.eval_batch_size // jax.process_count()
  eval_batch = sharding.global_batch(
    mesh,
    {
      "image": rng.uniform(size=(local_eval, res, res, 3)).astype(np.float32),
      "index": (np.arange(local_eval) + jax.process_index() * local_eval).astype(np.int32),
      "valid": np.ones((local_eval,), bool),
    },
  )
  eval_masks = masking.eval_masks(config, eval_batch["index"])

  def make_train(c):  # only lowered and compiled here, never called: donation is harmless
    return steps_lib.make_steps(c, mesh, family).train_step

  def make_eval(c):
    return steps_lib.make_steps(c, mesh, family).eval_step

  t0 = time.perf_counter()
  compiled = built.train_step.lower(state, batch, step_key).compile()
  compile_s = time.perf_counter() - t0
  flops = _counted_flops(config, compiled, make_train, (state, batch, step_key))

  holder = [state]

  def train_call(s, b, k):
    new_state, out = compiled(s, b, k)
    holder[0] = new_state
    return out

  train_times = _time(train_call, lambda: (holder[0], batch, step_key), steps, warmup)

  t0 = time.perf_counter()
  eval_args = (holder[0].params, eval_batch, eval_masks)
  eval_compiled = built.eval_step.lower(*eval_args).compile()
  eval_compile_s = time.perf_counter() - t0
  eval_flops = _counted_flops(config, eval_compiled, make_eval, eval_args)
  eval_times = _time(
    eval_compiled,
    lambda: (holder[0].params, eval_batch, eval_masks),
    steps if eval_steps is None else eval_steps,
    warmup,
  )

  train_stats = _stats(train_times)
  pipeline = None
  if pipeline_steps:
    pipeline, holder[0] = _pipeline(
      compiled, holder[0], mesh, config, step_key, pipeline_steps, train_stats["median"]
    )
  memory, memory_source = _peak_memory()
  num_devices = mesh.size
  total_flops = flops * num_devices if flops is not None else None
  achieved = total_flops / train_stats["median"] if total_flops else None
  return dict(
    compile_s=compile_s,
    eval_compile_s=eval_compile_s,
    train_step_s=train_stats,
    eval_step_s=_stats(eval_times),
    images_per_s=config.batch_size / train_stats["median"],
    flops_per_step_per_device=flops,
    flops_per_step=total_flops,
    eval_flops_per_step=eval_flops * num_devices if eval_flops is not None else None,
    achieved_flops_per_s=achieved,
    peak_flops=peak_flops,
    mfu=achieved / peak_flops if achieved and peak_flops else None,
    peak_memory_bytes=memory,
    memory_source=memory_source,
    xla_train_memory=_xla_memory(compiled),
    dtype=jnp.dtype(dtype or jnp.float32).name,
    inr_dtype=jnp.dtype(inr_dtype or jnp.float32).name,
    remat=bool(config.model.remat),
    batch_size=config.batch_size,
    eval_batch_size=config.eval_batch_size,
    resolution=config.resolution,
    mesh=dict(mesh.shape),
    fsdp_min_size=config.get("fsdp_min_size"),
    num_parameters=families.count_params(abstract.params),
    device_kind=jax.devices()[0].device_kind,
    platform=jax.devices()[0].platform,
    num_devices=num_devices,
    process_count=jax.process_count(),
    steps=steps,
    warmup=warmup,
    pipeline=pipeline,
    final_loss_finite=bool(np.isfinite(float(train_call(holder[0], batch, step_key)["loss"]))),
  )
