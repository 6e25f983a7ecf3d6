"""Evaluation datasets, the on-device reducer, grids and result files.

Every evaluator (`minr_jax.evaluation.registry`) and compare score through `make_score_fn` and
`evaluate`; sums over valid rows are reduced on device, so no host all-gather is needed.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from minr_jax import data, masking, metrics, paths, sharding
from minr_jax.config import ConfigError

Array = jax.Array
PyTree = Any
EvalDataset = tuple[str, str | None]  # (dataset.name, dataset.path)

# Per-image metrics averaged over the valid images (reconstruction_metrics' keys).
METRICS = (
  "psnr_full",
  "psnr_masked",
  "psnr_pasted",
  "psnr_full_mean_fill",
  "psnr_full_interpolation",
  "psnr_full_masked_input",
  "mask_fraction",
)
GRID_TITLES = ("masked input", "prediction", "pasted", "ground truth")


# ---------------------------------------------------------------- datasets ---


def parse_datasets(spec: str, flag: str = "--datasets") -> list[EvalDataset]:
  """'demo,image_folder:/data/x' -> [('demo', None), ('image_folder', '/data/x')].

  Duplicates are dropped; ConfigError naming `flag` for an empty list.
  """
  out: list[EvalDataset] = []
  for entry in filter(None, (e.strip() for e in spec.split(","))):
    name, _, path = entry.partition(":")
    if (name, path or None) not in out:
      out.append((name, path or None))
  if not out:
    raise ConfigError(f"{flag} is empty; give e.g. {flag}=demo,image_folder:/data/x")
  return out


def eval_datasets(config: ml_collections.ConfigDict) -> list[EvalDataset]:
  """The training dataset (unless config.eval_train_dataset is False), then
  config.eval_datasets (duplicates dropped).

  Raises:
    ConfigError: eval_train_dataset is False and eval_datasets is empty.
  """
  train_too = config.get("eval_train_dataset", True)
  if not isinstance(train_too, bool):
    raise ConfigError(f"config.eval_train_dataset must be true or false, got {train_too!r}")
  out = [(config.dataset.name, config.dataset.path)] if train_too else []
  extra = config.get("eval_datasets", "") or ""
  if not train_too and not extra.strip():
    raise ConfigError(
      "config.eval_train_dataset=False needs held-out datasets in "
      "config.eval_datasets (e.g. image_folder:/data/val_photos)"
    )
  for entry in parse_datasets(extra, "config.eval_datasets") if extra.strip() else []:
    if entry not in out:
      out.append(entry)
  return out


def dataset_label(name: str, path: str | None) -> str:
  """A short name for logs and files: the name, or name:folder for folders."""
  if not path:
    return name
  return f"{name}:{os.path.basename(os.path.normpath(path))}"


def dataset_config(
  config: ml_collections.ConfigDict, name: str, path: str | None
) -> ml_collections.ConfigDict:
  """A copy of config whose dataset is (name, path)."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.dataset.name, c.dataset.path = name, path
  return c


def check_datasets(
  config: ml_collections.ConfigDict,
  datasets: Sequence[EvalDataset],
  where: str = "config.eval_datasets",
  workdir: str | None = None,
) -> None:
  """data.check_dataset for each dataset (ConfigError on the first bad one; the
  message names `where`, the flag or field that listed it, or config.dataset.*).
  With a training `workdir`, also refuses one inside an image folder the run reads."""
  for name, path in datasets:
    own = (name, path) == (config.dataset.name, config.dataset.path)
    if own:
      data.check_dataset(config)
    else:
      data.check_dataset(config, name, path, origin=where)
    if workdir is not None:
      data.check_workdir_outside(config, workdir, *(() if own else (name, path)), origin=where)


def prepare_datasets(config: ml_collections.ConfigDict, datasets: Sequence[EvalDataset]) -> None:
  """Prepares every dataset and refuses an empty eval split, before anything compiles.

  With several processes, process 0 prepares every dataset first while the
  others wait (two processes preparing the same folder at once would do the
  work twice); then each process checks every eval split (ConfigError naming
  the dataset's field and path if one holds no images, which would otherwise
  stop the run at its first evaluation).
  """
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # noqa: PLC0415

    if jax.process_index() == 0:
      for name, path in datasets:
        data.num_eval_images(config, name, path)  # loads = prepares
    multihost_utils.sync_global_devices("minr_jax: evaluation data prepared")
  for name, path in datasets:
    data.check_eval_images(config, name, path)


# ----------------------------------------------------------------- scoring ---


def score_batch(
  params: PyTree,
  batch: dict[str, Array],
  grid_masks: Array,
  *,
  model,
  family,
  config: ml_collections.ConfigDict,
) -> dict[str, Array]:
  """Sums over the batch's valid images of each metric in METRICS, and their `count`.

  batch: {'image' [B, H, W, 3], 'valid' bool [B]}; grid_masks [B, g, g]. The
  prediction is `family.predict`'s, so every model family is scored the same
  way; the baselines (mean-colour fill, Gaussian interpolation with sigma =
  patch side / 4, the masked input) need no model.
  """
  images = batch["image"]
  pixel_masks = masking.to_pixels(grid_masks, images.shape[1], images.shape[2])
  pred, _ = family.predict(model, params, images, grid_masks, config=config)
  sigma = metrics.interpolation_sigma(config.resolution, config.mask_grid)
  per_image = metrics.reconstruction_metrics(pred, images, pixel_masks, interpolation_sigma=sigma)
  valid = batch["valid"]
  sums = {name: jnp.sum(jnp.where(valid, per_image[name], 0.0)) for name in METRICS}
  sums["count"] = jnp.sum(valid.astype(jnp.int32))
  return sums


def make_score_fn(
  model, family, config: ml_collections.ConfigDict, mesh, params_sharding
) -> Callable:
  """`score_batch` jitted: (params, batch, grid_masks) -> replicated sums."""
  batch_sh = sharding.batch_sharding(mesh)
  return jax.jit(
    functools.partial(score_batch, model=model, family=family, config=config),
    in_shardings=(params_sharding, batch_sh, batch_sh),
    out_shardings=sharding.replicated(mesh),
  )


def _global_batches(config: ml_collections.ConfigDict, mesh, dataset: EvalDataset):
  """The eval split of `dataset` as global batches {'image', 'index', 'valid'} on mesh."""
  name, path = dataset
  for batch in data.make_eval_batches(
    config, name, path, process_index=jax.process_index(), process_count=jax.process_count()
  ):
    yield sharding.global_batch(
      mesh,
      {"image": batch["image"], "index": batch["index"], "valid": np.asarray(batch["valid"], bool)},
    )


def evaluate(
  score_fn: Callable,
  params: PyTree,
  config: ml_collections.ConfigDict,
  mesh,
  dataset: EvalDataset,
  masks_fns: Sequence[Callable] | None = None,
) -> list[dict[str, float]]:
  """Metric means over one pass of `dataset`'s eval split, one dict per mask function.

  masks_fns: functions of the global batch's `index` [B] -> grid masks [B, g,
  g] (default: the run's fixed evaluation masks, `masking.eval_masks`). Every
  batch is read once and scored under each. Each dict holds METRICS and
  `num_images`.
  """
  masks_fns = masks_fns or [functools.partial(masking.eval_masks, config)]
  sums = [dict.fromkeys(METRICS, 0.0) for _ in masks_fns]
  count = 0
  for batch in _global_batches(config, mesh, dataset):
    for cell, masks_fn in zip(sums, masks_fns, strict=True):
      out = jax.device_get(score_fn(params, batch, masks_fn(batch["index"])))
      for name in METRICS:
        cell[name] += float(out[name])
    count += int(out["count"])
  if count == 0:
    raise ConfigError(f"the evaluation split of {dataset_label(*dataset)} holds no images")
  return [{**{k: v / count for k, v in s.items()}, "num_images": count} for s in sums]


def _grid_predict(
  params: PyTree,
  batch: dict[str, Array],
  grid_masks: Array,
  *,
  model,
  family,
  config: ml_collections.ConfigDict,
) -> tuple[Array, ...]:
  """(masked inputs, predictions, pasted predictions, images) [B, H, W, 3] and valid [B]
  for a grid; returned replicated, so every process can read them."""
  images = batch["image"]
  pixel_masks = masking.to_pixels(grid_masks, images.shape[1], images.shape[2])
  pred, _ = family.predict(model, params, images, grid_masks, config=config)
  return (
    masking.apply_mask(images, pixel_masks),
    pred,
    metrics.paste_visible(pred, images, pixel_masks),
    images,
    batch["valid"],
  )


def make_grid_fn(
  model, family, config: ml_collections.ConfigDict, mesh, params_sharding
) -> Callable:
  """`_grid_predict` jitted: (params, batch, grid_masks), outputs replicated (a grid
  is one batch of images)."""
  batch_sh = sharding.batch_sharding(mesh)
  return jax.jit(
    functools.partial(_grid_predict, model=model, family=family, config=config),
    in_shardings=(params_sharding, batch_sh, batch_sh),
    out_shardings=sharding.replicated(mesh),
  )


def grid_images(
  grid_fn: Callable,
  params: PyTree,
  config: ml_collections.ConfigDict,
  mesh,
  dataset: EvalDataset,
  num_images: int,
  masks_fn: Callable | None = None,
) -> list[np.ndarray]:
  """Columns (masked input, prediction, pasted, ground truth) of up to num_images
  images of the eval split, from its first batches, under the evaluation masks.

  The rows are the first evaluation images, in the split's fixed order (for
  image folders and faces, one source image each). Runs on every process (the
  grid function is a collective).
  """
  masks_fn = masks_fn or functools.partial(masking.eval_masks, config)
  columns: list[list[np.ndarray]] = [[], [], [], []]
  taken = 0
  for batch in _global_batches(config, mesh, dataset):
    *outs, valid = jax.device_get(grid_fn(params, batch, masks_fn(batch["index"])))
    rows = np.flatnonzero(np.asarray(valid, bool))[: num_images - taken]
    for col, values in zip(columns, outs, strict=True):
      col.append(np.asarray(values)[rows])
    taken += len(rows)
    if taken >= num_images:
      break
  return [np.concatenate(c) for c in columns] if taken else []


def summary_line(prefix: str, means: dict[str, float]) -> str:
  """One console line: the model's three PSNRs beside the two trivial inpainters."""
  return (
    f"{prefix}: psnr_full {means['psnr_full']:.2f} dB  psnr_masked "
    f"{means['psnr_masked']:.2f}  psnr_pasted {means['psnr_pasted']:.2f}  | "
    f"interpolation {means['psnr_full_interpolation']:.2f}, mean-colour fill "
    f"{means['psnr_full_mean_fill']:.2f}  ({means['num_images']} images)"
  )


def safe_label(label: str) -> str:
  """A dataset label usable in a file name."""
  return label.replace(":", "_").replace("/", "_")


# ----------------------------------------------------------------- results ---


def write_results(
  out_dir: str,
  rows: Sequence[dict[str, Any]],
  columns: Sequence[str],
  header: Sequence[str],
  meta: dict[str, Any],
  stem: str = "results",
) -> None:
  """`<stem>.json` (meta + rows), `<stem>.csv` (columns) and `<stem>.md` in out_dir.

  out_dir is a local path or a URL; each file is written whole (`paths.write_text`).

  The one writer of evaluate, robustness and compare. The Markdown opens with
  `header` (lines), then a table of `columns`: floats to 3 decimals (2 for
  PSNRs), counts as integers, with a closing note on how to read the baselines.
  """
  out = paths.as_path(out_dir)
  paths.makedirs(out)
  paths.write_text(out / f"{stem}.json", json.dumps(dict(meta, rows=list(rows)), indent=2))
  buf = io.StringIO()
  w = csv.writer(buf)
  w.writerow(columns)
  for r in rows:
    w.writerow([r.get(c, "") for c in columns])
  paths.write_text(out / f"{stem}.csv", buf.getvalue())
  lines = [*header, "", "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
  for r in rows:
    lines.append("| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |")
  lines += ["", READING_RULE]
  paths.write_text(out / f"{stem}.md", "\n".join(lines) + "\n")


READING_RULE = (
  "How to read it: psnr_full_interpolation (normalised Gaussian convolution of "
  "the visible pixels, sigma = patch side / 4) and psnr_full_mean_fill (hidden "
  "pixels set to the mean visible colour) need no model; a model has learned "
  "structure only where its psnr_pasted beats interpolation."
)


def _cell(value: Any) -> str:
  if isinstance(value, bool) or not isinstance(value, float | int | np.floating | np.integer):
    return str(value)
  if isinstance(value, int | np.integer):
    return f"{int(value):,}" if abs(int(value)) >= 10_000 else str(int(value))
  return f"{float(value):.3f}"
