"""The train state and the jitted step functions: `make_steps(config, mesh)` -> `Steps`.

`train_step(state, batch, rng) -> (state, metrics)` is pure, jitted once with explicit
shardings and a donated state; the loop, `bench` and `aot` share these functions.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from minr_jax import device_policy, families, masking, metrics, sharding
from minr_jax.evaluation import scoring
from minr_jax.training import guard

Array = jax.Array


PRNGKey = jax.Array


PyTree = Any


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


def param_table(params: PyTree) -> str:
  """One line per parameter array (path, shape, count), then the total."""
  rows = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    rows.append((name, "x".join(map(str, leaf.shape)), int(np.prod(leaf.shape))))
  width = max(len(r[0]) for r in rows)
  lines = [f"{'parameter':<{width}}  {'shape':>14}  {'count':>12}"]
  lines += [f"{n:<{width}}  {s:>14}  {c:>12,}" for n, s, c in rows]
  lines.append(f"total parameters: {families.count_params(params):,}")
  return "\n".join(lines)


def summary(config: ml_collections.ConfigDict) -> str:
  """The parameter table of the configured model (no memory, no compile)."""
  family = families.check(config)
  model = family.build(config)
  return param_table(jax.eval_shape(functools.partial(family.init, model), jax.random.key(0)))


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
  (`scoring.score_batch`); grid_step(params, batch, grid_masks) -> grid
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
    eval_step=scoring.make_score_fn(model, family, config, mesh, state_sharding.params),
    grid_step=scoring.make_grid_fn(model, family, config, mesh, state_sharding.params),
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
NOT_READ_BY_STEPS = ("dataset", "seed", "init_from", *guard.LOOP_FIELDS)


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
