"""Training and evaluation of MINR, in the order things happen.

mesh -> data -> model and optimizer -> shardings -> step functions -> restore
-> loop. `train_step(state, batch, rng) -> (state, metrics)` is pure and jitted
once with explicit shardings and a donated state; masks are drawn inside it
from `fold_in(rng, step)`, so a resumed run sees exactly the masks an
uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Iterable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from minr_jax import checkpoint, data, masking, metrics, sharding
from minr_jax.config import ConfigError, model_family, validate
from minr_jax.models import inr, mae
from minr_jax.models.ginr import GINR, build_ginr
from minr_jax.models.transformer import single_cpu_device
from minr_jax.models.transinr import TransINR

Array = jax.Array
PRNGKey = jax.Array
PyTree = Any


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training: a plain pytree."""
  step: Array
  params: PyTree
  opt_state: PyTree


# ------------------------------------------------------------------ model ---

DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


def model_dtypes(config: ml_collections.ConfigDict) -> tuple[Any, Any]:
  """(transformer dtype, INR dtype) from config.model.dtype / inr_dtype; None = float32.

  model.inr_dtype '' (the default) follows model.dtype.
  """
  m = config.model
  name = m.get("dtype", "float32") or "float32"
  inr_name = m.get("inr_dtype", "") or name
  for field, value in (("dtype", name), ("inr_dtype", inr_name)):
    if value not in DTYPES:
      raise ConfigError(f"config.model.{field}={value!r} is not one of "
                        f"{', '.join(DTYPES)}")
  return DTYPES[name], DTYPES[inr_name]


def build_model(config: ml_collections.ConfigDict) -> TransINR | GINR:
  """The hypernetwork described by config.model at config.resolution.

  config.model.family picks it: 'transinr' (default) or 'ginr'; both return
  the same output dict, so every step function below serves both; 'mae' is
  the MAE baseline, which has no INR: `predict` below is where the families
  differ.
  """
  m = config.model
  family = model_family(config)
  if family == "ginr":
    return build_ginr(config)
  if family == "mae":
    try:
      return mae.build_mae(config)
    except ValueError as e:
      raise ConfigError(str(e)) from None
  if family != "transinr":
    raise ConfigError(f"config.model.family={family!r} is not one of transinr, ginr, mae")
  dtype, inr_dtype = model_dtypes(config)
  return TransINR(
      image_size=config.resolution, patch_size=m.patch_size, padding=m.padding,
      dim=m.dim, depth=m.depth, num_heads=m.num_heads, head_dim=m.head_dim,
      mlp_dim=m.mlp_dim, qkv_bias=m.qkv_bias, ln_epsilon=m.ln_epsilon,
      exact_gelu=m.exact_gelu, dropout=m.dropout, remat=m.remat,
      inr_hidden_dim=m.inr_hidden_dim, inr_num_layers=m.inr_num_layers,
      ff_num_freqs=m.ff_num_freqs, ff_sigma=m.ff_sigma, num_groups=m.num_groups,
      output_bias=m.output_bias, dtype=dtype, inr_dtype=inr_dtype,
      attention_impl=m.get("attention_impl", "auto"))


def init_params(model: TransINR, key: PRNGKey) -> PyTree:
  """Fresh parameters (call under jax.eval_shape for shapes only)."""
  if isinstance(model, mae.MAE):
    return mae.init_params(model, key)
  size = model.image_size
  return model.init(key, jnp.zeros((1, size, size, 3), jnp.float32))["params"]


def count_params(params: PyTree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


def describe_model(config: ml_collections.ConfigDict, num_params: int) -> str:
  """One line naming the model: family, parameters, resolution and shape."""
  m = config.model
  family = model_family(config)
  head = (f"{family}: {num_params:,} parameters, {config.resolution} px, "
          f"patch {m.patch_size}, dim {m.dim}, depth {m.depth}")
  if family == "mae":
    return head + f", decoder {m.decoder_depth} x {m.decoder_dim}"
  return head + f", INR {m.inr_num_layers} layers x {m.inr_hidden_dim}"


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


def reconstruct(model: TransINR, params: PyTree, inputs: Array, *,
                train: bool = False, dropout_key: PRNGKey | None = None,
                coord_noise: float = 0.0, coord_key: PRNGKey | None = None) -> Array:
  """Masked inputs [B, H, W, 3] -> the INRs' images [B, H, W, 3] (float32).

  The Fourier features of the pixel grid are computed once per call and
  shared by all B images (`inr.render`); the INR's matmuls run in
  model.inr_dtype. With coord_noise > 0 (training only, needs coord_key) each
  image is rendered at its own jittered coordinates (`inr.jitter_coords`)
  while the targets stay the grid's pixels.
  """
  weights, coords = _inr_weights_and_coords(model, params, inputs, train=train,
                                            dropout_key=dropout_key, coord_noise=coord_noise,
                                            coord_key=coord_key)
  render = inr.render_per_image if coords.ndim == 4 else inr.render
  return render(weights, coords, model.freqs(), model.output_bias,
                getattr(model, "inr_dtype", None))


def _inr_weights_and_coords(model: TransINR, params: PyTree, inputs: Array, *, train: bool,
                            dropout_key: PRNGKey | None, coord_noise: float,
                            coord_key: PRNGKey | None) -> tuple[list[Array], Array]:
  """(per-image INR weights, coordinates) for masked inputs [B, H, W, 3].

  The coordinates are the pixel grid [H, W, 2], or with coord_noise > 0 (needs
  coord_key) each image's jittered copy [B, H, W, 2].
  """
  rngs = {"dropout": dropout_key} if dropout_key is not None else {}
  out = model.apply({"params": params}, inputs, train=train, data_tokens=False, rngs=rngs)
  coords = inr.coord_grid(inputs.shape[1], inputs.shape[2])
  if coord_noise > 0.0:
    if coord_key is None:
      raise ValueError("coord_noise > 0 needs a coord_key")
    coords = inr.jitter_coords(coord_key, coords, inputs.shape[0], coord_noise)
  return out["weights"], coords


def _coord_noise(config: ml_collections.ConfigDict, train: bool) -> float:
  """model.coord_noise in training (GINR's coordinate jitter), 0 otherwise."""
  return float(config.model.get("coord_noise", 0.0) or 0.0) if train else 0.0


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam; the rate drops by lr_decay_factor after lr_decay_at of the steps.

  MAE uses its own recipe (AdamW, warmup, cosine: `mae.make_optimizer`).
  """
  if model_family(config) == "mae":
    return mae.make_optimizer(config)
  boundary = int(config.lr_decay_at * config.num_train_steps)
  schedule = optax.piecewise_constant_schedule(
      config.learning_rate, {boundary: config.lr_decay_factor})
  return optax.adam(schedule)


# ------------------------------------------------------------------- steps ---

def _pixel_masks(grid_masks: Array, images: Array) -> Array:
  return masking.to_pixels(grid_masks, images.shape[1], images.shape[2])


def train_masks(config, key: PRNGKey, images: Array) -> Array:
  """Training pixel masks [B, H, W] for images [B, H, W, 3]."""
  return _pixel_masks(train_grid_masks(config, key, images), images)


def eval_masks(config, indices: Array, images: Array) -> Array:
  """Fixed evaluation pixel masks [B, H, W]: a function of seed and image index."""
  return _pixel_masks(eval_grid_masks(config, indices), images)


def train_grid_masks(config, key: PRNGKey, images: Array) -> Array:
  """Training patch masks [B, g, g] for images [B, H, W, 3]."""
  spec = masking.mask_spec_from_config(config)
  ratio_key, mask_key = jax.random.split(key)
  ratio = config.mask_ratio
  if config.mask.ratio_min is not None and config.mask.ratio_max is not None:
    ratio = masking.sample_ratios(ratio_key, images.shape[0], config.mask.ratio_min,
                                  config.mask.ratio_max)
  return masking.draw_batch(spec, mask_key, images.shape[0], ratio)


def eval_grid_masks(config, indices: Array) -> Array:
  """Fixed evaluation patch masks [B, g, g]: a function of seed and image index."""
  spec = dataclasses.replace(masking.mask_spec_from_config(config),
                             strategy=config.eval_mask_strategy)
  return masking.draw_indexed(spec, config.eval_mask_seed, indices, config.mask_ratio)


def predict(model, params: PyTree, images: Array, grid_masks: Array, *,
            config: ml_collections.ConfigDict, train: bool = False,
            dropout_key: PRNGKey | None = None,
            coord_key: PRNGKey | None = None) -> tuple[Array, Array]:
  """(predicted images [B, H, W, 3], training loss) for images under masks.

  MINR (TransINR, GINR): the masked image goes in, the INRs render the whole
  image, the loss is the mean per-image MSE over every pixel; in training,
  `model.coord_noise` > 0 jitters each pixel's coordinates (coord_key). MAE: the image
  and its patch mask go in (hidden patches never reach the encoder), the loss
  is MAE's MSE over the hidden patches only.
  """
  if isinstance(model, mae.MAE):
    rngs = {"dropout": dropout_key} if dropout_key is not None else {}
    out = model.apply({"params": params}, images, grid_masks, train=train, rngs=rngs)
    norm_pix = bool(config.model.get("norm_pix", False))
    loss = mae.mae_loss(out["pred_patches"], images, grid_masks, model.patch_size, norm_pix)
    return mae.to_pixels(out["pred_patches"], images, grid_masks, norm_pix), loss
  inputs = masking.apply_mask(images, _pixel_masks(grid_masks, images))
  pred = reconstruct(model, params, inputs, train=train, dropout_key=dropout_key,
                     coord_noise=_coord_noise(config, train), coord_key=coord_key)
  return pred, jnp.mean(metrics.per_image_mse(pred, images))


def inr_chunk(config: ml_collections.ConfigDict) -> int:
  """Pixels per chunk of the training loss (0: render whole images; MAE: 0), model.inr_chunk.

  -1 (auto) is 4096 on a single CPU device, where rendering one image and
  4096 pixels at a time keeps the INR's activations in cache (measured
  faster: README), else 0 (`transformer.single_cpu_device` says why).
  """
  if model_family(config) == "mae":  # no INR
    return 0
  chunk = int(config.model.get("inr_chunk", -1))
  if chunk == -1:
    return 4096 if single_cpu_device() else 0
  return chunk


def train_loss(model, params: PyTree, images: Array, grid_masks: Array, *,
               config: ml_collections.ConfigDict, dropout_key: PRNGKey | None = None,
               coord_key: PRNGKey | None = None) -> tuple[Array, Array]:
  """(training loss, per-image MSE [B] of the prediction against the images).

  The value of `predict(..., train=True)` and its per-image MSE. For MINR
  with `inr_chunk(config)` > 0 the INRs are scored chunk by chunk
  (`inr.pixel_mse`) instead of rendering [B, H, W, 3] first; same maths.
  """
  chunk = inr_chunk(config)
  if not chunk:
    pred, loss = predict(model, params, images, grid_masks, config=config, train=True,
                         dropout_key=dropout_key, coord_key=coord_key)
    return loss, metrics.per_image_mse(pred, images)
  inputs = masking.apply_mask(images, _pixel_masks(grid_masks, images))
  weights, coords = _inr_weights_and_coords(model, params, inputs, train=True,
                                            dropout_key=dropout_key,
                                            coord_noise=_coord_noise(config, True),
                                            coord_key=coord_key)
  mse = inr.pixel_mse(weights, images, coords, model.freqs(), model.output_bias,
                      getattr(model, "inr_dtype", None), chunk)
  return jnp.mean(mse), mse


def train_step(state: TrainState, batch: dict[str, Array], rng: PRNGKey, *,
               model: TransINR, tx: optax.GradientTransformation,
               config: ml_collections.ConfigDict) -> tuple[TrainState, dict[str, Array]]:
  """One optimizer step on the model's loss (MINR: whole-image per-image MSE)."""
  key = jax.random.fold_in(rng, state.step)
  mask_key, dropout_key = jax.random.split(key)
  coord_key = jax.random.fold_in(key, 2)  # a third stream; leaves the first two unchanged
  images = batch["image"]
  grid_masks = train_grid_masks(config, mask_key, images)
  pixel_masks = _pixel_masks(grid_masks, images)

  def loss_fn(params):
    return train_loss(model, params, images, grid_masks, config=config,
                      dropout_key=dropout_key, coord_key=coord_key)

  (loss, mse), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new_state, dict(loss=loss, psnr=jnp.mean(metrics.psnr_from_mse(mse)),
                         mask_fraction=jnp.mean(pixel_masks))


def eval_step(params: PyTree, batch: dict[str, Array], *, model: TransINR,
              config: ml_collections.ConfigDict) -> dict[str, Array]:
  """Per-image metrics [B] under the fixed masks of each image's index."""
  images = batch["image"]
  grid_masks = eval_grid_masks(config, batch["index"])
  pixel_masks = _pixel_masks(grid_masks, images)
  inputs = masking.apply_mask(images, pixel_masks)
  pred, _ = predict(model, params, images, grid_masks, config=config)
  out = metrics.reconstruction_metrics(pred, images, pixel_masks)
  out.update(inputs=inputs, pred=pred,
             pasted=metrics.paste_visible(pred, images, pixel_masks))
  return out


# -------------------------------------------------------------- evaluation ---

def evaluate(eval_fn, params: PyTree, batches: Iterable[dict[str, np.ndarray]],
             mesh, num_grid_images: int = 8) -> tuple[dict[str, float], list[np.ndarray]]:
  """Averages per-image metrics over valid images of every batch.

  Returns the means (plus `num_images`) and the columns of a PNG grid
  (masked input, prediction, pasted, ground truth) for the first images.
  """
  sums: dict[str, float] = {}
  count = 0
  grid_cols: list[list[np.ndarray]] = [[], [], [], []]
  grid_rows = 0
  for batch in batches:
    valid = np.asarray(batch["valid"], bool)
    out = eval_fn(params, sharding.global_batch(mesh, {
        "image": batch["image"], "index": batch["index"]}))
    for name, values in out.items():
      if name in ("inputs", "pred", "pasted"):
        continue
      # This process's rows, matching its local `valid` (all rows with one process).
      values = _process_local(values)[valid]
      sums[name] = sums.get(name, 0.0) + float(values.sum())
    count += int(valid.sum())
    if grid_rows < num_grid_images and jax.process_index() == 0:
      take = min(num_grid_images - grid_rows, int(valid.sum()))
      rows = np.flatnonzero(valid)[:take]
      for col, key in zip(grid_cols[:3], ("inputs", "pred", "pasted")):
        col.append(np.asarray(_process_local(out[key]))[rows])
      grid_cols[3].append(np.asarray(batch["image"])[rows])
      grid_rows += take
  if jax.process_count() > 1:  # every process saw its own rows: add them up
    from jax.experimental import multihost_utils  # noqa: PLC0415
    names = sorted(sums)
    local = np.array([sums[n] for n in names] + [count], np.float64)
    total = np.asarray(multihost_utils.process_allgather(local)).sum(axis=0)
    sums, count = dict(zip(names, map(float, total[:-1]))), int(round(total[-1]))
  if count == 0:
    raise ConfigError("the evaluation split holds no images")
  means = {name: total / count for name, total in sums.items()}
  means["num_images"] = count
  return means, [np.concatenate(c) for c in grid_cols] if grid_rows else []


def _process_local(x: Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array, in order.

  Shards holding the same rows (a replicated or partly replicated output)
  are taken once.
  """
  if jax.process_count() == 1 or x.is_fully_addressable:
    return np.asarray(x)
  rows = {}
  for shard in x.addressable_shards:
    rows.setdefault(shard.index[0].start or 0, shard)
  return np.concatenate([np.asarray(rows[start].data) for start in sorted(rows)])


EvalDataset = tuple[str, str | None]  # (dataset.name, dataset.path)


def parse_datasets(spec: str) -> list[EvalDataset]:
  """'demo,image_folder:/data/x' -> [('demo', None), ('image_folder', '/data/x')]."""
  out = []
  for entry in filter(None, (e.strip() for e in spec.split(","))):
    name, _, path = entry.partition(":")
    out.append((name, path or None))
  return out


def eval_datasets(config: ml_collections.ConfigDict) -> list[EvalDataset]:
  """The training dataset, then config.eval_datasets (duplicates dropped)."""
  out = [(config.dataset.name, config.dataset.path)]
  for entry in parse_datasets(config.get("eval_datasets", "") or ""):
    if entry not in out:
      out.append(entry)
  return out


def dataset_label(name: str, path: str | None) -> str:
  """A short name for logs and files: the name, or name:folder for folders."""
  if not path:
    return name
  return f"{name}:{os.path.basename(os.path.normpath(path))}"


def dataset_config(config: ml_collections.ConfigDict, name: str,
                   path: str | None) -> ml_collections.ConfigDict:
  """A copy of config whose dataset is (name, path)."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.dataset.name, c.dataset.path = name, path
  return c


def check_eval_datasets(config: ml_collections.ConfigDict,
                        datasets: list[EvalDataset]) -> None:
  """data.check_dataset for each evaluation dataset (ConfigError on the first bad one)."""
  for name, path in datasets:
    data.check_dataset(dataset_config(config, name, path))


def evaluate_datasets(eval_fn, params: PyTree, config: ml_collections.ConfigDict, mesh,
                      datasets: list[EvalDataset], step: int, writer, image_dir: str | None
                      ) -> dict[str, dict[str, float]]:
  """Evaluates on every dataset: logs, prints, writes a PNG grid per dataset.

  Returns {label: metric means}.
  """
  results = {}
  for name, path in datasets:
    label = dataset_label(name, path)
    batches = data.make_eval_batches(
        dataset_config(config, name, path), process_index=jax.process_index(),
        process_count=jax.process_count())
    means, columns = evaluate(eval_fn, params, batches, mesh, config.num_grid_images)
    results[label] = means
    writer.write(step, "eval", means, dataset=label)
    if jax.process_index() != 0:
      continue
    if columns and image_dir:
      safe = label.replace(":", "_").replace("/", "_")
      metrics.save_image_grid(
          os.path.join(image_dir, f"eval_{step:07d}_{safe}.png"), columns,
          ["masked input", "prediction", "pasted", "ground truth"],
          max_rows=config.num_grid_images)
    print(f"eval step {step} [{label}]: psnr_full {means['psnr_full']:.2f} dB  "
          f"psnr_masked {means['psnr_masked']:.2f}  psnr_pasted "
          f"{means['psnr_pasted']:.2f}  | mean-colour fill "
          f"{means['psnr_full_mean_fill']:.2f}, masked input "
          f"{means['psnr_full_masked_input']:.2f}  ({means['num_images']} images)",
          flush=True)
  return results


# -------------------------------------------------------------------- loop ---

def _make_train_iterator(config: ml_collections.ConfigDict, process_index: int,
                         process_count: int):
  """data.make_train_iterator; with several processes, process 0 goes first.

  The first use of a dataset prepares it in dataset.data_dir, so process 0
  prepares it while the others wait at a barrier and then only read it (two
  processes preparing the same folder at once would race).
  """
  def make():
    return data.make_train_iterator(config, process_index=process_index,
                                    process_count=process_count)

  if process_count == 1:
    return make()
  from jax.experimental import multihost_utils  # noqa: PLC0415
  it = make() if process_index == 0 else None
  multihost_utils.sync_global_devices("minr_jax: training data prepared")
  return it if it is not None else make()


def _prepare_eval_datasets(config: ml_collections.ConfigDict, datasets: list[EvalDataset],
                           process_index: int, process_count: int) -> None:
  """With several processes, process 0 prepares every evaluation dataset first.

  As `_make_train_iterator`: the others wait at a barrier, so no two
  processes prepare the same dataset at once.
  """
  if process_count == 1:
    return
  from jax.experimental import multihost_utils  # noqa: PLC0415
  if process_index == 0:
    for name, path in datasets:
      data.num_eval_images(dataset_config(config, name, path))  # loads = prepares
  multihost_utils.sync_global_devices("minr_jax: evaluation data prepared")


def summary(config: ml_collections.ConfigDict) -> str:
  """The parameter table of the configured model (no memory, no compile)."""
  validate(config)
  model = build_model(config)
  params = jax.eval_shape(functools.partial(init_params, model), jax.random.key(0))
  return param_table(params)


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, dict[str, float]]:
  """Trains (resuming from workdir's newest checkpoint), evaluates, saves.

  Returns the final evaluation metrics, {dataset label: {metric: value}}.
  """
  # Every check that can fail on bad input runs before anything compiles.
  validate(config)
  datasets = eval_datasets(config)
  check_eval_datasets(config, datasets)
  model_dtypes(config)
  mesh = sharding.make_mesh(config)
  sharding.check_batch_sizes(config, mesh)
  validate(config, num_devices=sharding.batch_devices(mesh))
  process_index, process_count = jax.process_index(), jax.process_count()
  is_main = process_index == 0

  model = build_model(config)
  tx = make_optimizer(config)
  root_key = jax.random.key(config.seed)
  init_key, step_key = jax.random.split(root_key)

  def init_state(key):
    params = init_params(model, key)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params))

  abstract_state = jax.eval_shape(init_state, init_key)
  # FSDP: big parameters and their Adam moments split over `fsdp` (sharding.py).
  state_sharding = sharding.config_state_shardings(config, mesh, abstract_state)
  abstract_state = sharding.with_shardings(abstract_state, state_sharding)

  os.makedirs(workdir, exist_ok=True)
  manager = checkpoint.make_manager(workdir, config.keep_checkpoints)
  resume_step = checkpoint.latest_step(manager)
  if resume_step is not None:
    checkpoint.check_compatible(manager, resume_step, abstract_state.params)

  train_iter = _make_train_iterator(config, process_index, process_count)
  _prepare_eval_datasets(config, datasets, process_index, process_count)

  batch_sh = sharding.batch_sharding(mesh)
  repl = sharding.replicated(mesh)
  p_train_step = jax.jit(
      functools.partial(train_step, model=model, tx=tx, config=config),
      in_shardings=(state_sharding, batch_sh, repl),
      out_shardings=(state_sharding, repl), donate_argnums=(0,))
  p_eval_step = jax.jit(functools.partial(eval_step, model=model, config=config),
                        in_shardings=(state_sharding.params, batch_sh),
                        out_shardings=repl if process_count == 1 else batch_sh)

  if resume_step is not None:
    state = checkpoint.restore(manager, resume_step, abstract_state, train_iter)
    print(f"resumed from {manager.directory}/{resume_step}", flush=True)
  else:
    state = jax.jit(init_state, out_shardings=state_sharding)(init_key)
  if is_main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
    print(f"model: {count_params(state.params):,} parameters; mesh {dict(mesh.shape)}; "
          f"{process_count} process(es)", flush=True)

  writer = metrics.MetricWriter(workdir, tensorboard=config.tensorboard,
                                enabled=is_main)
  step = int(jax.device_get(state.step))
  num_steps = config.num_train_steps
  final: dict[str, dict[str, float]] = {}

  def run_eval(step: int) -> dict[str, dict[str, float]]:
    return evaluate_datasets(p_eval_step, state.params, config, mesh, datasets, step,
                             writer, os.path.join(workdir, "images"))

  pending = []  # Train metrics stay on device until logged.
  t_log, steps_since_log, t_start = time.perf_counter(), 0, time.perf_counter()
  while step < num_steps:
    local = next(train_iter)
    batch = sharding.global_batch(mesh, {"image": local["image"]})
    state, step_metrics = p_train_step(state, batch, step_key)
    step += 1
    steps_since_log += 1
    pending.append(step_metrics)

    if step % config.log_every_steps == 0 or step == num_steps:
      host = jax.device_get(pending)
      pending = []
      means = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
      if not math.isfinite(means["loss"]):
        raise FloatingPointError(f"non-finite training loss {means['loss']} at step {step}")
      now = time.perf_counter()
      rate = steps_since_log * config.batch_size / (now - t_log)
      means["images_per_sec"] = rate
      writer.write(step, "train", means)
      if is_main:
        eta = (num_steps - step) * config.batch_size / rate
        print(metrics.format_progress(step, num_steps, means["loss"], means["psnr"],
                                      rate, now - t_start, eta), flush=True)
      t_log, steps_since_log = time.perf_counter(), 0

    if step % config.checkpoint_every_steps == 0 or step == num_steps:
      checkpoint.save(manager, step, state, train_iter)
    if step % config.eval_every_steps == 0 or step == num_steps:
      final = run_eval(step)
      t_log = time.perf_counter()

  if not final:  # Already trained: evaluate what was restored.
    final = run_eval(step)
  writer.close()
  manager.close()
  if is_main:
    with open(os.path.join(workdir, "final_eval.json"), "w") as f:
      json.dump(dict(step=step, results=final), f, indent=2)
  return final

