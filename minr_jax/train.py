"""Training, in the order things happen.

mesh -> data -> model and optimizer -> shardings -> step functions -> restore
-> loop. `train_step(state, batch, rng) -> (state, metrics)` is pure and jitted
once with explicit shardings and a donated state (`make_steps`, which bench and
aot use too); masks are drawn inside it from `fold_in(rng, step)`, so a resumed
run sees exactly the masks an uninterrupted run would have seen. The model
family (`families.get(config)`) supplies the model, its loss and optimizer.

The restore is `checkpoint.restore_newest_intact`; the loop body is: step,
then (each only when due) check for divergence, log, save, stop on a signal,
run the declared evaluators (`minr_jax.evaluators`). Its policies are small
named functions at the end of this file: `_save_due` (cadence),
`_check_finite_flags` and `_check_params_before_save` (divergence),
`_print_progress`, `_announce_stop` (preemption).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from minr_jax import (
  checkpoint,
  data,
  device_policy,
  evaluation,
  evaluators,
  families,
  guard,
  masking,
  metrics,
  profiling,
  sharding,
)
from minr_jax.config import ConfigError

Array = jax.Array
PRNGKey = jax.Array
PyTree = Any

LOG_EVERY_SECS = 60.0  # progress also on a time cadence: slow steps still report
CPU_WARN_SECS = 86_400.0  # warn when a CPU run's estimate exceeds a day
# Every family's loss is a mean squared error of [0, 1] pixels (or of per-patch
# normalised pixels, MAE's norm_pix): far below 1 when training works. A loss
# above this has exploded, even while still finite, and is never saved.
DIVERGED_LOSS = 1e4


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training: a plain pytree."""

  step: Array
  params: PyTree
  opt_state: PyTree


def count_params(params: PyTree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


def param_table(params: PyTree) -> str:
  """One line per parameter array (path, shape, count), then the total."""
  rows = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    rows.append((name, "x".join(map(str, leaf.shape)), int(np.prod(leaf.shape))))
  width = max(len(r[0]) for r in rows)
  lines = [f"{'parameter':<{width}}  {'shape':>14}  {'count':>12}"]
  lines += [f"{n:<{width}}  {s:>14}  {c:>12,}" for n, s, c in rows]
  lines.append(f"total parameters: {count_params(params):,}")
  return "\n".join(lines)


def summary(config: ml_collections.ConfigDict) -> str:
  """The parameter table of the configured model (no memory, no compile)."""
  family = families.check(config)
  model = family.build(config)
  return param_table(jax.eval_shape(functools.partial(family.init, model), jax.random.key(0)))


# ------------------------------------------------------------------- steps ---


def train_step(
  state: TrainState,
  batch: dict[str, Array],
  rng: PRNGKey,
  *,
  model,
  family,
  tx: optax.GradientTransformation,
  config: ml_collections.ConfigDict,
) -> tuple[TrainState, dict[str, Array]]:
  """One optimizer step on the family's training loss (MINR: whole-image MSE).

  The metrics carry `finite`: 1 when the loss is finite and below DIVERGED_LOSS and
  every gradient is finite.
  """
  key = jax.random.fold_in(rng, state.step)
  mask_key, dropout_key = jax.random.split(key)
  coord_key = jax.random.fold_in(key, 2)  # a third stream; leaves the first two unchanged
  images = batch["image"]
  grid_masks = masking.train_masks(config, mask_key, images.shape[0])

  def loss_fn(params):
    return family.train_loss(
      model, params, images, grid_masks, config=config, dropout_key=dropout_key, coord_key=coord_key
    )

  (loss, mse), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  finite = (
    jnp.isfinite(loss)
    & (loss < DIVERGED_LOSS)
    & jnp.all(jnp.array([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
  )
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new_state, dict(
    loss=loss,
    psnr=jnp.mean(metrics.psnr_from_mse(mse)),
    mask_fraction=jnp.mean(grid_masks.astype(jnp.float32)),
    finite=finite.astype(jnp.float32),
  )


def probe_loss(
  state: TrainState,
  batch: dict[str, Array],
  rng: PRNGKey,
  *,
  model,
  family,
  config: ml_collections.ConfigDict,
) -> Array:
  """The training loss of state.params on batch under the masks of state.step: checked
  before a save, so parameters that an exploding step left finite but useless are
  never saved."""
  key = jax.random.fold_in(rng, state.step)
  mask_key, dropout_key = jax.random.split(key)
  images = batch["image"]
  grid_masks = masking.train_masks(config, mask_key, images.shape[0])
  return family.train_loss(
    model,
    state.params,
    images,
    grid_masks,
    config=config,
    dropout_key=dropout_key,
    coord_key=jax.random.fold_in(key, 2),
  )[0]


@dataclasses.dataclass(frozen=True)
class Steps:
  """A run's compiled-once functions and what they were built from.

  init_state(key) -> TrainState; train_step(state, batch, rng) -> (state,
  metrics); eval_step(params, batch, grid_masks) -> metric sums over valid rows
  (`evaluation.score_batch`); grid_step(params, batch, grid_masks) -> grid
  columns; probe_loss(state, batch, rng) -> loss of state.params (forward only).
  `config` is the run's config with 'auto' fields resolved for the
  mesh (`resolved` says which).
  """

  config: ml_collections.ConfigDict
  resolved: dict[str, Any]
  family: Any
  model: Any
  tx: optax.GradientTransformation
  init_state: Callable
  train_step: Callable
  eval_step: Callable
  grid_step: Callable
  probe_loss: Callable
  abstract_state: TrainState
  state_sharding: Any
  batch_sharding: Any


def make_steps(config: ml_collections.ConfigDict, mesh, family=None) -> Steps:
  """The jitted step functions of config on mesh, exactly as the training loop runs them.

  Resolves model.attention_impl / inr_chunk 'auto' for the mesh's devices
  (`device_policy.resolve_auto`) and shards the state by the config's FSDP rule.
  """
  family = family or families.get(config)
  config, resolved = device_policy.resolve_auto(config, mesh.devices.flat)
  model = family.build(config)
  tx = family.make_optimizer(config)

  def init_state(key: PRNGKey) -> TrainState:
    params = family.init(model, key)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  abstract = jax.eval_shape(init_state, jax.random.key(0))
  # FSDP: big parameters and their Adam moments split over `fsdp` (sharding.py).
  state_sharding = sharding.config_state_shardings(config, mesh, abstract)
  batch_sh, repl = sharding.batch_sharding(mesh), sharding.replicated(mesh)
  return Steps(
    config=config,
    resolved=resolved,
    family=family,
    model=model,
    tx=tx,
    init_state=jax.jit(init_state, out_shardings=state_sharding),
    train_step=jax.jit(
      functools.partial(train_step, model=model, family=family, tx=tx, config=config),
      in_shardings=(state_sharding, batch_sh, repl),
      out_shardings=(state_sharding, repl),
      donate_argnums=(0,),
    ),
    eval_step=evaluation.make_score_fn(model, family, config, mesh, state_sharding.params),
    grid_step=evaluation.make_grid_fn(model, family, config, mesh, state_sharding.params),
    probe_loss=jax.jit(
      functools.partial(probe_loss, model=model, family=family, config=config),
      in_shardings=(state_sharding, batch_sh, repl),
      out_shardings=repl,
    ),
    abstract_state=sharding.with_shardings(abstract, state_sharding),
    state_sharding=state_sharding,
    batch_sharding=batch_sh,
  )


# Fields the step functions never read: dataset.* feeds the data pipeline, seed the
# initial key, guard.LOOP_FIELDS the loop's cadences, outputs and evaluator
# schedule (evaluation scores through eval_step and grid_step, which read none).
NOT_READ_BY_STEPS = ("dataset", "seed", *guard.LOOP_FIELDS)
STEPS_KEPT = 4  # step functions of this many configs stay compiled in a process
_steps_kept: collections.OrderedDict = collections.OrderedDict()


def steps_for_run(config: ml_collections.ConfigDict, mesh, family) -> Steps:
  """`make_steps`, built once per process for each maths and mesh.

  A second run in the same process whose config differs only in
  NOT_READ_BY_STEPS (a notebook re-running a cell, a study's seeds, a resumed
  run) reuses the jitted functions and so skips tracing and compiling; the
  returned `config` is always this run's own. The newest STEPS_KEPT are kept.
  bench and aot call `make_steps` itself: they measure compiling.
  """
  fields = json.loads(config.to_json_best_effort())
  maths = {k: v for k, v in fields.items() if k not in NOT_READ_BY_STEPS}
  key = (json.dumps(maths, sort_keys=True), mesh, family.name)
  if key not in _steps_kept:  # built for this run: its config already
    _steps_kept[key] = make_steps(config, mesh, family)
    while len(_steps_kept) > STEPS_KEPT:
      _steps_kept.popitem(last=False)
    return _steps_kept[key]
  _steps_kept.move_to_end(key)
  run_config, resolved = device_policy.resolve_auto(config, mesh.devices.flat)
  return dataclasses.replace(_steps_kept[key], config=run_config, resolved=resolved)


# -------------------------------------------------------------------- loop ---


def _make_train_iterator(config: ml_collections.ConfigDict):
  """data.make_train_iterator; with several processes, process 0 goes first.

  The first use of a dataset prepares it in dataset.data_dir, so process 0
  prepares it while the others wait at a barrier and then only read it.
  """

  def make():
    return data.make_train_iterator(
      config, process_index=jax.process_index(), process_count=jax.process_count()
    )

  if jax.process_count() == 1:
    return make()
  from jax.experimental import multihost_utils  # noqa: PLC0415

  it = make() if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices("minr_jax: training data prepared")
  return it if it is not None else make()


def describe_devices(mesh) -> str:
  """One line: platform, device kind x count, processes and mesh."""
  device = mesh.devices.flat[0]
  return (
    f"devices: {device.platform} {device.device_kind} x {mesh.size}; "
    f"{jax.process_count()} process(es); mesh {dict(mesh.shape)}"
  )


def _all_finite(tree: PyTree) -> bool:
  return bool(
    jax.device_get(
      jax.jit(lambda t: jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(t)])))(
        tree
      )
    )
  )


class DivergedError(ConfigError):
  """Training diverged (non-finite or exploding loss); nothing after it was saved.

  A ConfigError so every command reports it in one `error:` line: the remedy is a
  config change (a lower learning rate) from the last good checkpoint.
  """


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, allow_config_change: bool = False
) -> dict[str, dict[str, float]]:
  """Trains (resuming from workdir's newest intact checkpoint), evaluates, saves.

  Returns the final evaluation metrics, {dataset label: {metric: value}}; on
  SIGTERM / SIGINT it saves the step reached and returns {}.
  """
  # Every check that can fail on bad input runs before anything compiles.
  family = families.check(config)
  evals = evaluators.declared(config, training=True)
  by_eval = evaluators.check(config, evals, workdir=workdir)
  datasets = list(dict.fromkeys(d for entries in by_eval.values() for d in entries))
  profiling.parse(config.get("profile", ""))
  mesh = sharding.make_mesh(config)
  sharding.check_batch_sizes(config, mesh)
  families.check(config, num_devices=sharding.batch_devices(mesh))
  guard.check_workdir(workdir)
  is_main = jax.process_index() == 0
  lock = checkpoint.WorkdirLock(workdir)
  if is_main:
    lock.acquire()
  try:
    return _train(config, workdir, family, datasets, evals, mesh, allow_config_change)
  finally:
    lock.release()


def _train(config, workdir, family, datasets, evals, mesh, allow_config_change):
  is_main = jax.process_index() == 0
  guard.enable_compilation_cache(config)
  steps = steps_for_run(config, mesh, family)
  run_config = steps.config
  train_iter = _make_train_iterator(run_config)  # data errors before the manager exists
  evaluation.prepare_datasets(run_config, datasets)  # and empty eval splits
  root = checkpoint.as_path(workdir)
  manager = checkpoint.make_manager(workdir, config.keep_checkpoints, config.get("keep_period", 0))
  init_key, step_key = jax.random.split(jax.random.key(config.seed))
  state, resume_step = checkpoint.restore_newest_intact(
    manager,
    steps.abstract_state,
    train_iter,
    workdir,
    check_config=lambda saved, where: guard.check_config_change(
      config, saved, where, workdir, allow_config_change
    ),
    set_aside_unusable=is_main,
    warn=lambda line: print(line, flush=True),
  )
  if resume_step is not None:
    print(f"resumed from {checkpoint.step_dir(manager, resume_step)}", flush=True)
  else:
    state = steps.init_state(init_key)
  saved_config = json.loads(config.to_json_best_effort())
  if is_main:
    (root / "config.json").write_text(config.to_json_best_effort(indent=2))
    print(f"model: {family.describe(config, count_params(state.params))}", flush=True)
    print(describe_devices(mesh), flush=True)
    for field, value in steps.resolved.items():
      print(f"config.{field}=auto resolved to {value!r} for these devices", flush=True)

  writer = metrics.MetricWriter(workdir, tensorboard=config.tensorboard, enabled=is_main)
  schedule = family.schedule(run_config)
  step = int(jax.device_get(state.step))
  num_steps = config.num_train_steps
  final: dict[str, dict[str, float]] = {}
  last_saved = resume_step
  ctx = evaluators.EvalContext(
    config=run_config,
    mesh=mesh,
    model=steps.model,
    family=family,
    params_sharding=steps.state_sharding.params,
    writer=evaluators.ResultsWriter(writer, os.fspath(root)),
    out_dir=os.fspath(root),
    score_fn=steps.eval_step,
    grid_fn=steps.grid_step,
    workdir=workdir,
  )
  built = evaluators.build(evals, ctx)

  def run_eval(step: int, everything: bool = False) -> dict[str, dict[str, float]]:
    """Every declared evaluator due at `step` (or all); the results of final_eval.json."""
    due_by = None if everything else num_steps
    return _final_results(
      evals, evaluators.run_all(built, evals, state.params, step, ctx.writer, due_by)
    )

  if resume_step is not None and any(evaluators.due(evals[n], step, num_steps) for n in evals):
    missing = is_main and evaluators.missing(built, evals, workdir, step, num_steps)
    if guard.broadcast(float(missing)):
      print(f"finishing the interrupted evaluation of step {step}", flush=True)
      final = run_eval(step)

  stop = guard.StopRequest()
  profiler = profiling.StepProfiler(config.get("profile", ""), workdir)
  train_fn, cadence_secs = None, float(config.get("checkpoint_every_secs", 0) or 0)
  time_cadence = None  # steps between time-based saves, set once the step time is known
  pending = []  # Train metrics stay on device until logged.
  t_log, steps_since_log, t_start = time.perf_counter(), 0, time.perf_counter()
  try:
    while step < num_steps:
      local = next(train_iter)
      batch = sharding.global_batch(mesh, {"image": local["image"]})
      if train_fn is None:
        if is_main:
          print("compiling the train step...", flush=True)
        t0 = time.perf_counter()
        train_fn = steps.train_step.lower(state, batch, step_key).compile()
        if is_main:
          print(f"compiled in {time.perf_counter() - t0:.1f} s", flush=True)
        t_log = t_start = time.perf_counter()
        first_step = step
      with profiler.annotate(step + 1):
        state, step_metrics = train_fn(state, batch, step_key)
      step += 1
      profiler.after(step, state)
      steps_since_log += 1
      pending.append(step_metrics)

      now = time.perf_counter()
      stopping = stop.reached(step)
      if time_cadence is None and cadence_secs and step - first_step >= 2:
        per_step = guard.broadcast((now - t_start) / (step - first_step))
        time_cadence = max(1, int(cadence_secs / max(per_step, 1e-9)))
      save = _save_due(config, step, last_saved, time_cadence) or stopping
      log = step % config.log_every_steps == 0 or step == num_steps
      log = log or now - t_log >= LOG_EVERY_SECS
      evaluate = any(evaluators.due(evals[n], step, num_steps) for n in evals)
      if save or log or evaluate:  # nothing is logged, saved or scored after a bad step
        last_good = None if last_saved is None else checkpoint.step_dir(manager, last_saved)
        _check_finite_flags(pending, step, last_good)
      if log:
        host, pending = jax.device_get(pending), []
        # Steps are dispatched asynchronously: the rate counts until their results are
        # on the host, not until they were queued (which overstated it about 3x on CPU).
        now = time.perf_counter()
        means = {k: float(np.mean([m[k] for m in host])) for k in host[0] if k != "finite"}
        rate = steps_since_log * config.batch_size / max(now - t_log, 1e-9)
        means.update(images_per_sec=rate, learning_rate=float(schedule(step - 1)))
        writer.write(step, "train", means)
        if is_main:
          first_log = step - steps_since_log == first_step
          _print_progress(config, mesh, step, means, rate, now - t_start, first_log)
        t_log, steps_since_log = time.perf_counter(), 0
      if save:
        _check_params_before_save(steps, state, batch, step_key, step, last_good)
        writer.flush()  # a gs:// metrics.jsonl then holds every step this checkpoint has
        checkpoint.save(manager, step, state, train_iter, saved_config)
        last_saved = step
      if stopping:
        if is_main:
          _announce_stop(stop, step, checkpoint.step_dir(manager, step))
        return {}
      if evaluate:
        final = run_eval(step)
        t_log = time.perf_counter()
  finally:
    profiler.stop()
    stop.close()
    writer.close()
    manager.close()

  if not final:  # Already trained: evaluate what was restored.
    writer = metrics.MetricWriter(workdir, tensorboard=config.tensorboard, enabled=is_main)
    ctx.writer.metrics = writer
    with writer:
      final = run_eval(step, everything=True)
  if is_main:
    (root / "final_eval.json").write_text(json.dumps(dict(step=step, results=final), indent=2))
  return final


# ------------------------------------------------- the loop's small policies ---


def _save_due(config, step: int, last_saved: int | None, time_cadence: int | None) -> bool:
  """Checkpoint cadence: every checkpoint_every_steps, the last step, and every
  `time_cadence` steps (config.checkpoint_every_secs turned into steps once the
  step time is known)."""
  return (
    step % config.checkpoint_every_steps == 0
    or step == config.num_train_steps
    or (time_cadence is not None and step - (last_saved or 0) >= time_cadence)
  )


def _check_finite_flags(pending: list, step: int, last_good) -> None:
  """Divergence, cheap: every step since the last check reported finite loss and gradients."""
  if not all(float(f) > 0 for f in jax.device_get([m["finite"] for m in pending])):
    raise DivergedError(
      f"training diverged (non-finite or exploding loss or gradient) by step {step};"
      f" nothing after it was saved; last good checkpoint: {last_good or 'none'}"
    )


def _check_params_before_save(steps, state, batch, key, step: int, last_good) -> None:
  """Divergence, thorough (before a save only): finite parameters and a sane loss."""
  loss_now = float(jax.device_get(steps.probe_loss(state, batch, key)))
  if not (_all_finite(state.params) and np.isfinite(loss_now) and loss_now < DIVERGED_LOSS):
    raise DivergedError(
      f"the parameters of step {step} have diverged (loss {loss_now:.3g}); not saved;"
      f" last good checkpoint: {last_good or 'none'}"
    )


def _print_progress(config, mesh, step, means, rate, elapsed, first_log: bool) -> None:
  """The progress line (step, loss, PSNR, images/s, ETA); on the first one, a warning
  when the CPU would take longer than CPU_WARN_SECS."""
  num_steps = config.num_train_steps
  eta = (num_steps - step) * config.batch_size / rate
  print(
    metrics.format_progress(step, num_steps, means["loss"], means["psnr"], rate, elapsed, eta),
    flush=True,
  )
  if first_log and mesh.devices.flat[0].platform == "cpu" and eta > CPU_WARN_SECS:
    print(
      f"warning: at this rate the remaining {num_steps - step:,} steps take "
      f"{metrics.format_duration(eta)} on the CPU; JAX sees no accelerator "
      "(docs/install.md)",
      flush=True,
    )


def _announce_stop(stop: guard.StopRequest, step: int, saved) -> None:
  """Preemption: SIGTERM / SIGINT stopped the run after saving `step`."""
  name = signal.Signals(stop.signal).name if stop.signal else "signal"
  print(
    f"{name}: stopped at step {step}; saved {saved}; run the same command to resume",
    flush=True,
  )


def _final_results(evals, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
  """final_eval.json's results: {dataset label: means} of the entries writing the
  'eval' split (today's evaluation), then every other result as '<name>/<key>'."""
  final: dict[str, Any] = {}
  for name, found in results.items():
    if evals[name].get("split") == "eval":
      final.update(found)
    else:
      final.update({f"{name}/{key}": value for key, value in found.items()})
  return final
