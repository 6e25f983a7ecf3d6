"""The training loop: `train_and_evaluate(config, workdir)`.

mesh -> data -> model -> step functions -> restore the newest intact checkpoint -> loop
(step, then when due: divergence checks, progress, save, stop on a signal, evaluators).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from minr_jax import checkpoint, data, families, sharding, writers
from minr_jax.config import ConfigError
from minr_jax.evaluation import registry, scoring
from minr_jax.inference import restore as restore_lib
from minr_jax.training import guard, profiling
from minr_jax.training import lock as lock_lib
from minr_jax.training.steps import DIVERGED_LOSS, PyTree, TrainState, steps_for_run

LOG_EVERY_SECS = 60.0  # progress also on a time cadence: slow steps still report
# steps timed (after the compile) to turn checkpoint_every_secs into a step count
CADENCE_TIMING_STEPS = 10


CPU_WARN_SECS = 86_400.0  # warn when a CPU run's estimate exceeds a day


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
  evals = registry.declared(config)
  by_eval = registry.check(config, evals, workdir=workdir)
  datasets = list(dict.fromkeys(d for entries in by_eval.values() for d in entries))
  profiling.parse(config.get("profile", ""))
  mesh = sharding.make_mesh(config)
  sharding.check_batch_sizes(config, mesh)
  families.check(config, num_devices=sharding.batch_devices(mesh))
  guard.check_workdir(workdir)
  is_main = jax.process_index() == 0
  lock = lock_lib.WorkdirLock(workdir)
  if is_main:
    lock.acquire()
  try:
    with contextlib.ExitStack() as cleanup:  # the checkpoint manager, on every path
      return _train(config, workdir, family, datasets, evals, mesh, allow_config_change, cleanup)
  finally:
    lock.release()


def _train(config, workdir, family, datasets, evals, mesh, allow_config_change, cleanup):
  is_main = jax.process_index() == 0
  guard.enable_compilation_cache(config)
  steps = steps_for_run(config, mesh, family)
  run_config = steps.config
  train_iter = _make_train_iterator(run_config)  # data errors before the manager exists
  scoring.prepare_datasets(run_config, datasets)  # and empty eval splits
  root = checkpoint.as_path(workdir)
  manager = checkpoint.make_manager(workdir, config.keep_checkpoints, config.get("keep_period", 0))
  cleanup.callback(manager.close)
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
    if config.get("init_from", ""):
      state = _init_from(config.init_from, steps, state)
  saved_config = json.loads(config.to_json_best_effort())
  if is_main:
    (root / "config.json").write_text(config.to_json_best_effort(indent=2))
    print(f"model: {family.describe(config, families.count_params(state.params))}", flush=True)
    print(describe_devices(mesh), flush=True)
    for field, value in steps.resolved.items():
      print(f"config.{field}=auto resolved to {value!r} for these devices", flush=True)

  writer = writers.MetricWriter(workdir, tensorboard=config.tensorboard, enabled=is_main)
  schedule = family.schedule(run_config)
  step = int(jax.device_get(state.step))
  num_steps = config.num_train_steps
  final: dict[str, dict[str, float]] = {}
  last_saved = resume_step
  ctx = registry.EvalContext(
    config=run_config,
    mesh=mesh,
    model=steps.model,
    family=family,
    params_sharding=steps.state_sharding.params,
    writer=registry.ResultsWriter(writer, os.fspath(root)),
    out_dir=os.fspath(root),
    score_fn=steps.eval_step,
    grid_fn=steps.grid_step,
    workdir=workdir,
  )
  built = registry.build(evals, ctx)

  def run_eval(step: int, everything: bool = False) -> dict[str, dict[str, float]]:
    """Every declared evaluator due at `step` (or all); the results of final_eval.json."""
    due_by = None if everything else num_steps
    return _final_results(
      evals, registry.run_all(built, evals, state.params, step, ctx.writer, due_by)
    )

  if resume_step is not None and any(registry.due(evals[n], step, num_steps) for n in evals):
    missing = is_main and registry.missing(built, evals, workdir, step, num_steps)
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
      log = step % config.log_every_steps == 0 or step == num_steps
      log = log or now - t_log >= LOG_EVERY_SECS
      if time_cadence is None and cadence_secs and step - first_step >= CADENCE_TIMING_STEPS:
        # Steps are dispatched asynchronously: only a step whose result is ready gives
        # the real step time (timing the dispatch alone made the cadence huge). The
        # trigger is a step count, the same on every host, for the broadcast.
        jax.block_until_ready(step_metrics)
        per_step = guard.broadcast((time.perf_counter() - t_start) / (step - first_step))
        time_cadence = max(1, int(cadence_secs / max(per_step, 1e-9)))
        if is_main:
          print(
            f"config.checkpoint_every_secs={cadence_secs:g}: a checkpoint every "
            f"{time_cadence:,} steps ({per_step:.3g} s a step)",
            flush=True,
          )
      save = _save_due(config, step, last_saved, time_cadence) or stopping
      evaluate = any(registry.due(evals[n], step, num_steps) for n in evals)
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

  if not final:  # Already trained: evaluate what was restored.
    writer = writers.MetricWriter(workdir, tensorboard=config.tensorboard, enabled=is_main)
    ctx.writer.metrics = writer
    with writer:
      final = run_eval(step, everything=True)
  if is_main:
    (root / "final_eval.json").write_text(json.dumps(dict(step=step, results=final), indent=2))
  return final


def _init_from(path: str, steps, state: TrainState) -> TrainState:
  """`state` with the parameters of the checkpoint at `path` (config.init_from), a fresh
  optimizer state and step 0; ConfigError naming the field if the model differs."""
  restored = restore_lib.restore(path)
  want = {jax.tree_util.keystr(k): v.shape for k, v in _leaves(state.params)}
  have = {jax.tree_util.keystr(k): v.shape for k, v in _leaves(restored.params)}
  for name in sorted(set(want) | set(have)):
    if want.get(name) != have.get(name):
      raise ConfigError(
        f"config.init_from={path} holds a different model: parameter {name} is "
        f"{have.get(name, 'absent')} there but {want.get(name, 'absent')} in this config"
      )
  params = jax.device_put(restored.params, steps.state_sharding.params)
  opt_state = jax.jit(steps.tx.init, out_shardings=steps.state_sharding.opt_state)(params)
  if jax.process_index() == 0:
    where = f"{restored.workdir} step {restored.step}"
    print(f"initialised from {where} (config.init_from)", flush=True)
  return state.replace(params=params, opt_state=opt_state)


def _leaves(tree: PyTree) -> list:
  return jax.tree_util.tree_flatten_with_path(tree)[0]


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
    writers.format_progress(step, num_steps, means["loss"], means["psnr"], rate, elapsed, eta),
    flush=True,
  )
  if first_log and mesh.devices.flat[0].platform == "cpu" and eta > CPU_WARN_SECS:
    print(
      f"warning: at this rate the remaining {num_steps - step:,} steps take "
      f"{writers.format_duration(eta)} on the CPU; JAX sees no accelerator "
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
