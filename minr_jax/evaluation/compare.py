r"""Compare trained models on the same images under the same fixed masks: `compare_workdirs`.

The body of `python -m minr_jax.compare` (docs/comparison.md).
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from minr_jax import families, masking, paths, writers
from minr_jax.config import ConfigError, load_saved
from minr_jax.evaluation import runner, scoring
from minr_jax.inference import restore

METRICS = ("psnr_full", "psnr_masked", "psnr_pasted", "ssim_pasted", "lpips_pasted")
# Every classical baseline's PSNR, SSIM and LPIPS (scoring.BASELINES), and the masked input.
BASELINES = tuple(k for keys in zip(*scoring.BASELINES.values()) for k in keys) + (
  "psnr_full_masked_input",
)
BEST = (  # the best classical inpainter's name and figure, and the model's lead over it
  "best_classical_psnr",
  "psnr_best_classical",
  "psnr_lead_over_best",
  "best_classical_lpips",
  "lpips_best_classical",
  "lpips_lead_over_best",
)
CSV_COLUMNS = (
  ("dataset", "model", "family", "num_params", "step")
  + METRICS
  + BEST
  + BASELINES
  + ("num_images", "workdir")
)
# The baselines depend on images and masks only: equal across models up to float noise.
BASELINE_TOLERANCE_DB = 1e-3
FIGURE_KINDS = ("pasted", "pred")


def model_names(workdirs: Sequence[str]) -> list[str]:
  """Short unique names: the workdirs' base names, or their whole paths if those clash."""
  full = [w.rstrip("/") if paths.is_url(w) else os.path.normpath(w) for w in workdirs]
  bases = [posixpath.basename(w) if paths.is_url(w) else os.path.basename(w) for w in full]
  if len(set(bases)) == len(bases):
    return bases
  return full


def comparison_config(
  config: ml_collections.ConfigDict, mask_ratio: float, seed: int, max_images: int | None
) -> ml_collections.ConfigDict:
  """A copy of a run's config evaluating under the comparison's masks."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.eval_mask_strategy = "random_exact"
  c.mask_ratio = float(mask_ratio)
  c.eval_mask_seed = int(seed)
  if max_images is not None:
    c.dataset.eval_max_images = max_images
  return c


def load_configs(
  workdirs: Sequence[str], mask_ratio: float | None, seed: int | None, max_images: int | None
) -> tuple[list[ml_collections.ConfigDict], float, int]:
  """Every workdir's comparison config, the common mask ratio and seed.

  ConfigError (before anything is restored or compiled) for a missing
  workdir, or one whose resolution or mask grid differs from the first's.
  """
  if not workdirs:
    raise ConfigError("give at least one workdir to compare")
  if len(set(map(paths.abspath, workdirs))) != len(workdirs):
    raise ConfigError("a workdir is listed twice")
  raw = [load_saved(restore.resolve_path(w)[0]) for w in workdirs]
  first = raw[0]
  mask_ratio = float(first.mask_ratio if mask_ratio is None else mask_ratio)
  seed = int(first.eval_mask_seed if seed is None else seed)
  for w, c in zip(workdirs, raw, strict=True):
    for field in ("resolution", "mask_grid"):
      if c[field] != first[field]:
        raise ConfigError(
          f"{w}: config.{field}={c[field]} differs from {workdirs[0]}'s "
          f"{first[field]}; compared models must share the images and masks"
        )
  configs = [comparison_config(c, mask_ratio, seed, max_images) for c in raw]
  for w, c in zip(workdirs, configs, strict=True):
    try:
      families.check(c)
    except ConfigError as e:
      raise ConfigError(f"{w}: {e}") from None
  return configs, mask_ratio, seed


def comparison_masks_text(config: ml_collections.ConfigDict) -> str:
  """The protocol in words, for the report."""
  grid = config.mask_grid
  n = grid * grid
  k = masking.exact_count(config.mask_ratio, n)
  return (
    f"exact-count random masks: exactly {k} of the {n} patches of the "
    f"{grid}x{grid} mask grid hidden in every image (ratio {config.mask_ratio}), "
    f"drawn from seed {config.eval_mask_seed} and each image's index, identical "
    f"for every model"
  )


def _evaluate_model(
  workdir: str,
  config: ml_collections.ConfigDict,
  entries: list[scoring.EvalDataset],
  num_images: int,
  step: int | None = None,
) -> tuple[int, int, dict[str, tuple[dict[str, float], list[np.ndarray]]]]:
  """(step, parameters, {label: (means, grid columns)}) of one workdir's checkpoint."""
  r = restore.restore(workdir, step)
  config = ml_collections.ConfigDict(dict(config.to_dict(), model=r.config.model.to_dict()))
  families.check(config, num_devices=r.mesh.size)
  # The one evaluation path (runner.run_checkpoint): reconstruction and grids, kept in memory.
  r = dataclasses.replace(r, model=r.family.for_ratio(r.model, config.mask_ratio))
  spec = ",".join(f"{name}:{path}" if path else name for name, path in entries)
  evals = ml_collections.ConfigDict(
    dict(
      reconstruction=dict(type="reconstruction", datasets=spec, quiet=True),
      grids=dict(type="grids", datasets=spec, num_images=num_images, write_png=False),
    )
  )
  built, found = runner.run_checkpoint(r, config, evals, r.workdir, write_metrics=False)
  out = {
    label: (means, built["grids"].columns[label])
    for label, means in found["reconstruction"].items()
  }
  return r.step, families.count_params(r.params), out


def compare_workdirs(
  workdirs: Sequence[str],
  datasets: str | None = None,
  out_dir: str = "compare",
  *,
  max_images: int | None = None,
  mask_ratio: float | None = None,
  seed: int | None = None,
  num_images: int = 6,
  figure: str = "pasted",
  note: str = "",
  step: int | None = None,
) -> list[dict[str, Any]]:
  """Evaluates every workdir on every dataset under the same masks; writes the report.

  Returns the rows (one per dataset x model, in dataset then workdir order)
  as written to compare.csv. `note` is printed under the report's title.
  """
  workdirs = [os.fspath(w) for w in workdirs]
  if num_images < 1:
    raise ConfigError(f"--num_images must be >= 1, got {num_images}")
  if figure not in FIGURE_KINDS:
    raise ConfigError(f"--figure={figure!r}: use {' or '.join(FIGURE_KINDS)}")
  paths.check_reachable(out_dir, "--out")  # a URL's scheme and bucket, before any compile
  configs, mask_ratio, seed = load_configs(workdirs, mask_ratio, seed, max_images)
  entries = (
    scoring.parse_datasets(datasets) if datasets is not None else scoring.eval_datasets(configs[0])
  )
  for c in configs:
    scoring.check_datasets(c, entries, "--datasets")
  names = model_names(workdirs)

  rows: list[dict[str, Any]] = []
  figures: dict[str, list[np.ndarray]] = {}
  inputs: dict[str, np.ndarray] = {}
  per_model = []
  for workdir, name, config in zip(workdirs, names, configs, strict=True):
    step_, num_params, results = _evaluate_model(workdir, config, entries, num_images, step)
    per_model.append((workdir, name, config, step_, num_params, results))
    print(
      f"compare: {name} ({families.get(config).describe(config, num_params)}, step {step_})",
      flush=True,
    )
  for label in (scoring.dataset_label(*e) for e in entries):
    ref_baselines = None
    for workdir, name, config, step_, num_params, results in per_model:
      means, columns = results[label]
      if columns:
        masked, pred, pasted, _, truth = (np.asarray(c) for c in columns)
        if label not in inputs:
          inputs[label] = masked
          figures[label] = [masked]
        elif not np.array_equal(inputs[label], masked):
          raise AssertionError(
            f"{name} saw other masked inputs than the first model on "
            f"{label}: the comparison's masks are not shared"
          )
        figures[label].append(pasted if figure == "pasted" else pred)
      baselines = tuple(means[b] for b in BASELINES if b.startswith("psnr"))
      if ref_baselines is None:
        ref_baselines = baselines
      elif max(abs(a - b) for a, b in zip(baselines, ref_baselines, strict=True)) > (
        BASELINE_TOLERANCE_DB
      ):
        raise AssertionError(
          f"{name}: baselines {baselines} differ from the first model's {ref_baselines} on {label}"
        )
      row = dict(
        dataset=label,
        model=name,
        family=families.get(config).name,
        num_params=num_params,
        step=step_,
        **{m: float(means[m]) for m in METRICS + BASELINES},
        **{m: means[m] for m in BEST if m in means},
        num_images=int(means["num_images"]),
        workdir=paths.abspath(workdir),
      )
      rows.append(row)
    if label in figures:
      figures[label].append(truth)

  if jax.process_index() == 0:
    write_report(out_dir, rows, figures, names, comparison_masks_text(configs[0]), note, figure)
  return rows


def write_report(
  out_dir: str,
  rows: list[dict[str, Any]],
  figures: dict[str, list[np.ndarray]],
  names: list[str],
  protocol: str,
  note: str = "",
  figure: str = "pasted",
) -> None:
  """compare.{md,csv,json} (`scoring.write_results`) and compare_<dataset>.png."""
  header = (
    ["# Model comparison", ""]
    + ([note, ""] if note else [])
    + [
      f"Masks: {protocol}. PSNR in dB, averaged over images; psnr_full over the "
      "whole image, psnr_masked over the hidden pixels, psnr_pasted with the "
      "visible pixels pasted back. SSIM (higher is better) and LPIPS (AlexNet, lower "
      "is better) of the pasted output. The baselines use the same images and masks: "
      "mean-colour fill, Gaussian interpolation, Telea and Navier-Stokes (OpenCV), "
      "biharmonic (scikit-image), and the masked input itself (hidden pixels black); "
      "best_classical_* names the best of them on each set and *_lead_over_best is the "
      "model's lead over it (> 0: the model is ahead; docs/metrics.md)."
    ]
  )
  images = [f"compare_{scoring.safe_label(label)}.png" for label in figures]
  if images:
    shown = (
      "the prediction in the hidden patches, visible pixels pasted back"
      if figure == "pasted"
      else "the raw prediction"
    )
    header += [
      "",
      f"Figures (masked input, each model's output: {shown}; ground truth): "
      + ", ".join(images)
      + ".",
    ]
  scoring.write_results(
    out_dir, rows, CSV_COLUMNS, header, dict(masking=protocol, note=note), stem="compare"
  )
  for label, columns in figures.items():
    writers.save_image_grid(
      os.path.join(out_dir, f"compare_{scoring.safe_label(label)}.png"),
      columns,
      ["masked input", *names, "ground truth"],
      max_rows=columns[0].shape[0],
    )
  print(f"wrote {out_dir}/compare.{{md,csv,json}} and {len(figures)} figure(s)", flush=True)
