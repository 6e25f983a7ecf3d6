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

from minr_jax import classical, data, masking, metrics, paths, sharding, similarity
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
  # SSIM (higher is better) and LPIPS (lower is better; NaN under 31 px a side) of the
  # model's pasted output and of the two baselines computed on device.
  "ssim_pasted",
  "ssim_mean_fill",
  "ssim_interpolation",
  "lpips_pasted",
  "lpips_mean_fill",
  "lpips_interpolation",
)
# The classical inpainters run on the host (OpenCV, scikit-image), once per dataset and
# mask set (`classical_means`); their figures join the means as psnr_full_<name>,
# ssim_<name>, lpips_<name>.
HOST_INPAINTERS = ("telea", "navier_stokes", "biharmonic")
# Every classical baseline beside the model: name -> (psnr, ssim, lpips) keys.
BASELINES = {
  "mean": ("psnr_full_mean_fill", "ssim_mean_fill", "lpips_mean_fill"),
  "gaussian": ("psnr_full_interpolation", "ssim_interpolation", "lpips_interpolation"),
  **{n: (f"psnr_full_{n}", f"ssim_{n}", f"lpips_{n}") for n in HOST_INPAINTERS},
}
MODEL_KEYS = ("psnr_pasted", "ssim_pasted", "lpips_pasted")
GRID_TITLES = ("masked input", "prediction", "pasted", "Telea (OpenCV)", "ground truth")


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
  per_image.update(
    perceptual(
      {
        "pasted": metrics.paste_visible(pred, images, pixel_masks),
        "mean_fill": metrics.mean_colour_fill(images, pixel_masks),
        "interpolation": metrics.interpolation_fill(images, pixel_masks, sigma),
      },
      images,
    )
  )
  valid = batch["valid"]
  sums = {name: jnp.sum(jnp.where(valid, per_image[name], 0.0)) for name in METRICS}
  sums["count"] = jnp.sum(valid.astype(jnp.int32))
  return sums


def perceptual(filled: dict[str, Array], images: Array) -> dict[str, Array]:
  """ssim_<name> and lpips_<name> [B] of each filled [B, H, W, 3] against images; LPIPS
  is NaN for images under `similarity.lpips_min_size()` a side (AlexNet cannot see them)."""
  out = {}
  small = min(images.shape[1], images.shape[2]) < similarity.lpips_min_size()
  for name, x in filled.items():
    x = jnp.clip(x.astype(jnp.float32), 0.0, 1.0)
    out[f"ssim_{name}"] = similarity.ssim(x, images)
    out[f"lpips_{name}"] = (
      jnp.full(images.shape[:1], jnp.nan) if small else similarity.lpips(x, images)
    )
  return out


_CLASSICAL_CACHE: dict[str, dict[str, float]] = {}


def classical_names(value: Any, where: str = "classical") -> tuple[str, ...]:
  """An evaluator's `classical` field -> the host-side inpainters to score: True = all of
  HOST_INPAINTERS, False = none, or a comma-separated subset (e.g. 'telea,navier_stokes'
  where biharmonic's sparse solve per image would take hours at 182 px)."""
  if value is True or value is None:
    return HOST_INPAINTERS
  if value is False or value == "":
    return ()
  names = tuple(n.strip() for n in str(value).split(",") if n.strip())
  unknown = [n for n in names if n not in HOST_INPAINTERS]
  if unknown or not isinstance(value, str):
    raise ConfigError(
      f"{where}={value!r}: use true, false or a comma-separated subset of "
      f"{','.join(HOST_INPAINTERS)}"
    )
  return names


# Data fields that never change the evaluation images (augmentation, loading speed).
TRAINING_ONLY_DATA_FIELDS = (
  "random_crop",
  "flip",
  "train_resize",
  "num_workers",
  "prefetch_buffer",
)


def classical_key(config: ml_collections.ConfigDict, dataset: EvalDataset) -> str:
  """What decides a dataset's classical scores: its images (dataset, resolution, split,
  image cap) and masks (strategy, ratio, grid, seed); never the model."""
  d = dataset_config(config, *dataset).dataset.to_dict()
  for training_only in TRAINING_ONLY_DATA_FIELDS:  # so runs that differ there share the work
    d.pop(training_only, None)
  fields = [config.get(k) for k in ("resolution", "mask_grid", "mask_ratio", "eval_mask_seed")]
  return json.dumps([sorted(d.items(), key=str), fields, config.eval_mask_strategy], default=str)


def classical_means(
  config: ml_collections.ConfigDict,
  dataset: EvalDataset,
  names: Sequence[str] = HOST_INPAINTERS,
) -> dict[str, float]:
  """Means over `dataset`'s eval split of PSNR, SSIM and LPIPS of the host-side classical
  inpainters `names` (of HOST_INPAINTERS) under the run's evaluation masks; computed once per
  process for each `classical_key` (a training run's later evaluations reuse them)."""
  names = tuple(names)
  key = classical_key(config, dataset) + repr(names)
  if key in _CLASSICAL_CACHE:
    return _CLASSICAL_CACHE[key]
  sigma = metrics.interpolation_sigma(config.resolution, config.mask_grid)
  sums = {k: 0.0 for n in names for k in BASELINES[n]}
  count = 0
  name, path = dataset
  for batch in data.make_eval_batches(
    config, name, path, process_index=jax.process_index(), process_count=jax.process_count()
  ):
    valid = np.asarray(batch["valid"], bool)
    if not valid.any():
      continue
    images = np.asarray(batch["image"], np.float32)[valid]
    grid = masking.eval_masks(config, jnp.asarray(batch["index"])[valid])
    masks = np.asarray(masking.to_pixels(grid, images.shape[1], images.shape[2]))
    filled = classical.fill_all(images, masks, sigma, names=names)
    target = jnp.asarray(images)
    scores = perceptual({n: jnp.asarray(f) for n, f in filled.items()}, target)
    for n, f in filled.items():
      mse = metrics.per_image_mse(jnp.asarray(f), target)
      sums[f"psnr_full_{n}"] += float(jnp.sum(metrics.psnr_from_mse(mse)))
      sums[f"ssim_{n}"] += float(jnp.sum(scores[f"ssim_{n}"]))
      sums[f"lpips_{n}"] += float(jnp.sum(scores[f"lpips_{n}"]))
    count += len(images)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # noqa: PLC0415

    keys = sorted(sums)
    local = np.array([sums[k] for k in keys] + [count], np.float64)
    total = np.asarray(multihost_utils.process_allgather(local)).sum(axis=0)
    sums, count = dict(zip(keys, total[:-1].tolist())), int(total[-1])
  means = {k: v / max(count, 1) for k, v in sums.items()}
  _CLASSICAL_CACHE[key] = means
  return means


def with_best_classical(means: dict[str, float]) -> dict[str, Any]:
  """means plus, for PSNR, SSIM and LPIPS, the best baseline present (best_classical_psnr:
  its name; psnr_best_classical: its figure) and the model's lead over it
  (psnr_lead_over_best: model - best, so > 0 means ahead; lpips_lead_over_best: best -
  model, also > 0 when the model is ahead)."""
  out = dict(means)
  for i, metric in enumerate(("psnr", "ssim", "lpips")):
    scores = {n: means[keys[i]] for n, keys in BASELINES.items() if keys[i] in means}
    scores = {n: v for n, v in scores.items() if v == v}  # NaN: not measured
    if not scores:  # e.g. LPIPS of images under 31 px: said as NaN, no name
      out[f"best_classical_{metric}"] = ""
      out[f"{metric}_best_classical"] = out[f"{metric}_lead_over_best"] = float("nan")
      continue
    best = classical.best_classical(scores, metric)
    out[f"best_classical_{metric}"] = best
    out[f"{metric}_best_classical"] = scores[best]
    model = means.get(MODEL_KEYS[i])
    if model is not None and model == model:
      lead = scores[best] - model if metric == "lpips" else model - scores[best]
      out[f"{metric}_lead_over_best"] = lead
  return out


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
  with_classical: bool | Sequence[str] = False,
) -> list[dict[str, float]]:
  """Metric means over one pass of `dataset`'s eval split, one dict per mask function.

  masks_fns: functions of the global batch's `index` [B] -> grid masks [B, g,
  g] (default: the run's fixed evaluation masks, `masking.eval_masks`). Every
  batch is read once and scored under each. Each dict holds METRICS and
  `num_images`. with_classical (True: all of HOST_INPAINTERS, or their names; the run's
  own evaluation masks only): also the host-side
  classical inpainters' figures (`classical_means`) and the best baseline
  (`with_best_classical`).
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
  out = [{**{k: v / count for k, v in s.items()}, "num_images": count} for s in sums]
  if with_classical:
    names = HOST_INPAINTERS if with_classical is True else tuple(with_classical)
    out[0] = with_best_classical({**out[0], **classical_means(config, dataset, names)})
  return out


def _grid_predict(
  params: PyTree,
  batch: dict[str, Array],
  grid_masks: Array,
  *,
  model,
  family,
  config: ml_collections.ConfigDict,
) -> tuple[Array, ...]:
  """(masked inputs, predictions, pasted predictions, images) [B, H, W, 3], pixel masks
  [B, H, W] and valid [B] for a grid; returned replicated, so every process reads them."""
  images = batch["image"]
  pixel_masks = masking.to_pixels(grid_masks, images.shape[1], images.shape[2])
  pred, _ = family.predict(model, params, images, grid_masks, config=config)
  return (
    masking.apply_mask(images, pixel_masks),
    pred,
    metrics.paste_visible(pred, images, pixel_masks),
    images,
    pixel_masks,
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
  """Columns (masked input, prediction, pasted, Telea's fill, ground truth) of up to
  num_images images of the eval split, from its first batches, under the evaluation masks.

  The rows are the first evaluation images, in the split's fixed order (for
  image folders and faces, one source image each). Runs on every process (the
  grid function is a collective).
  """
  masks_fn = masks_fn or functools.partial(masking.eval_masks, config)
  columns: list[list[np.ndarray]] = [[], [], [], [], []]
  taken = 0
  for batch in _global_batches(config, mesh, dataset):
    outs = jax.device_get(grid_fn(params, batch, masks_fn(batch["index"])))
    masked, pred, pasted, images, hidden, valid = outs
    rows = np.flatnonzero(np.asarray(valid, bool))[: num_images - taken]
    images = np.asarray(images)[rows]
    telea = classical.telea_fill(images, np.asarray(hidden, bool)[rows])
    for col, values in zip(columns, (masked, pred, pasted), strict=False):
      col.append(np.asarray(values)[rows])
    columns[3].append(telea)
    columns[4].append(images)
    taken += len(rows)
    if taken >= num_images:
      break
  return [np.concatenate(c) for c in columns] if taken else []


def summary_line(prefix: str, means: dict[str, float]) -> str:
  """One console line: the model's three PSNRs beside the baselines (the best classical
  one when measured), with SSIM and LPIPS of the pasted output when they are finite."""
  line = (
    f"{prefix}: psnr_full {means['psnr_full']:.2f} dB  psnr_masked "
    f"{means['psnr_masked']:.2f}  psnr_pasted {means['psnr_pasted']:.2f}  | "
    f"interpolation {means['psnr_full_interpolation']:.2f}, mean-colour fill "
    f"{means['psnr_full_mean_fill']:.2f}"
  )
  if "best_classical_psnr" in means:
    line += f", best classical {means['psnr_best_classical']:.2f} ({means['best_classical_psnr']})"
  ssim, lpips = means.get("ssim_pasted"), means.get("lpips_pasted")
  if ssim is not None and ssim == ssim:
    line += f"  | SSIM {ssim:.3f}"
  if lpips is not None and lpips == lpips:
    line += f", LPIPS {lpips:.3f} (lower is better)"
  return line + f"  ({means['num_images']} images)"


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
  text = json.dumps(json_safe(dict(meta, rows=list(rows))), indent=2, allow_nan=False)
  paths.write_text(out / f"{stem}.json", text)
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


def json_safe(value: Any) -> Any:
  """NaN (a metric not measured, e.g. LPIPS under 31 px) as JSON null, recursively."""
  if isinstance(value, dict):
    return {k: json_safe(v) for k, v in value.items()}
  if isinstance(value, list | tuple):
    return [json_safe(v) for v in value]
  if isinstance(value, float) and value != value:
    return None
  return value


READING_RULE = (
  "How to read it: the classical inpainters need no model: mean-colour fill, Gaussian "
  "interpolation (psnr_full_interpolation, sigma = patch side / 4), Telea and "
  "Navier-Stokes (OpenCV), biharmonic (scikit-image); *_best_classical is the best of "
  "them on the set, psnr_lead_over_best the model's psnr_pasted minus it. A model has "
  "learned something only where it beats the best of them. SSIM: higher is better; "
  "LPIPS (AlexNet): lower is better, nan under 31 px a side (docs/metrics.md)."
)


def _cell(value: Any) -> str:
  if isinstance(value, bool) or not isinstance(value, float | int | np.floating | np.integer):
    return str(value)
  if isinstance(value, int | np.integer):
    return f"{int(value):,}" if abs(int(value)) >= 10_000 else str(int(value))
  return f"{float(value):.3f}"
