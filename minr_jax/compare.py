r"""Compare trained models on the same images under the same fixed masks.

  python -m minr_jax.compare runs/transinr runs/ginr runs/mae \
      --datasets=image_folder:/data/celeba,image_folder:/data/scenes \
      --out=runs/comparison [--max_images=N] [--num_images=6]

Every workdir (any model family: TransINR, GINR, MAE) is restored (parameters
only, newest checkpoint) and evaluated by `train.eval_step` on each dataset's
evaluation split under the SAME masks: exact-count random masks (exactly
round(mask_ratio x N) of the N mask-grid patches hidden in every image, the
only masking an MAE can take), drawn from one seed and each image's index, so
model A and model B see identical masked inputs (checked: the masked inputs
of every model must agree pixel for pixel). mask_ratio and the seed default
to the first workdir's `mask_ratio` and `eval_mask_seed`; all workdirs must
share the resolution and mask grid.

Writes to `--out`:
  compare.md    the masking protocol, then one table row per dataset x model
                (family, parameters, checkpoint step, psnr_full, psnr_masked,
                psnr_pasted) and, per dataset, the mean-colour-fill and
                masked-input baselines on the same images and masks.
  compare.csv, compare.json  the same rows (json also holds the protocol).
  compare_<dataset>.png  the first `--num_images` images of each dataset: the
                masked input, each model's output, the ground truth. The
                output is `--figure=pasted` (default: the prediction in the
                hidden patches, the input's own pixels elsewhere; the fair view
                for an MAE, whose loss ignores the visible patches) or `pred`
                (the raw prediction everywhere: MINR's whole-image rendering).
Without `--datasets` the first workdir's evaluation datasets are used.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging

from minr_jax import data, evaluate, masking, metrics, train
from minr_jax.config import ConfigError, model_family, validate

METRICS = ("psnr_full", "psnr_masked", "psnr_pasted")
BASELINES = ("psnr_full_mean_fill", "psnr_full_masked_input")
CSV_COLUMNS = ("dataset", "model", "family", "num_params", "step") + METRICS + BASELINES + (
    "num_images", "workdir")
# The baselines depend on images and masks only: equal across models up to float noise.
BASELINE_TOLERANCE_DB = 1e-3
FIGURE_KINDS = ("pasted", "pred")


def model_names(workdirs: Sequence[str]) -> list[str]:
  """Short unique names: the workdirs' base names, or their whole paths if those clash."""
  bases = [os.path.basename(os.path.normpath(w)) for w in workdirs]
  if len(set(bases)) == len(bases):
    return bases
  return [os.path.normpath(w) for w in workdirs]


def comparison_config(config: ml_collections.ConfigDict, mask_ratio: float, seed: int,
                      max_images: int | None) -> ml_collections.ConfigDict:
  """A copy of a run's config evaluating under the comparison's masks."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.eval_mask_strategy = "random_exact"
  c.mask_ratio = float(mask_ratio)
  c.eval_mask_seed = int(seed)
  if max_images is not None:
    c.dataset.eval_max_images = max_images
  return c


def load_configs(workdirs: Sequence[str], mask_ratio: float | None, seed: int | None,
                 max_images: int | None) -> tuple[list[ml_collections.ConfigDict], float, int]:
  """Every workdir's comparison config, the common mask ratio and seed.

  ConfigError (before anything is restored or compiled) for a missing
  workdir, or one whose resolution or mask grid differs from the first's.
  """
  if not workdirs:
    raise ConfigError("give at least one workdir to compare")
  if len(set(map(os.path.abspath, workdirs))) != len(workdirs):
    raise ConfigError("a workdir is listed twice")
  raw = [evaluate.load_config(w) for w in workdirs]
  first = raw[0]
  mask_ratio = float(first.mask_ratio if mask_ratio is None else mask_ratio)
  seed = int(first.eval_mask_seed if seed is None else seed)
  for w, c in zip(workdirs, raw, strict=True):
    for field in ("resolution", "mask_grid"):
      if c[field] != first[field]:
        raise ConfigError(f"{w}: config.{field}={c[field]} differs from {workdirs[0]}'s "
                          f"{first[field]}; compared models must share the images and masks")
  configs = [comparison_config(c, mask_ratio, seed, max_images) for c in raw]
  for w, c in zip(workdirs, configs, strict=True):
    try:
      validate(c)
    except ConfigError as e:
      raise ConfigError(f"{w}: {e}") from None
  return configs, mask_ratio, seed


def masking_text(config: ml_collections.ConfigDict) -> str:
  """The protocol in words, for the report."""
  grid = config.mask_grid
  n = grid * grid
  k = masking.exact_count(config.mask_ratio, n)
  return (f"exact-count random masks: exactly {k} of the {n} patches of the "
          f"{grid}x{grid} mask grid hidden in every image (ratio {config.mask_ratio}), "
          f"drawn from seed {config.eval_mask_seed} and each image's index, identical "
          f"for every model")


def _evaluate_model(workdir: str, config: ml_collections.ConfigDict,
                    entries: list[tuple[str, str | None]], num_images: int
                    ) -> tuple[int, int, dict[str, tuple[dict[str, float], list[np.ndarray]]]]:
  """(step, parameters, {label: (means, grid columns)}) of one workdir's newest checkpoint."""
  mesh, step, params, eval_fn = evaluate.restore_eval_step(workdir, config)
  out = {}
  for name, path in entries:
    batches = data.make_eval_batches(
        train.dataset_config(config, name, path), process_index=jax.process_index(),
        process_count=jax.process_count())
    out[train.dataset_label(name, path)] = train.evaluate(eval_fn, params, batches, mesh,
                                                          num_images)
  return step, train.count_params(params), out


def compare_workdirs(workdirs: Sequence[str], datasets: str | None = None,
                     out_dir: str = "compare", *, max_images: int | None = None,
                     mask_ratio: float | None = None, seed: int | None = None,
                     num_images: int = 6, figure: str = "pasted",
                     note: str = "") -> list[dict[str, Any]]:
  """Evaluates every workdir on every dataset under the same masks; writes the report.

  Returns the rows (one per dataset x model, in dataset then workdir order)
  as written to compare.csv. `note` is printed under the report's title.
  """
  workdirs = [os.fspath(w) for w in workdirs]
  if num_images < 1:
    raise ConfigError(f"--num_images must be >= 1, got {num_images}")
  if figure not in FIGURE_KINDS:
    raise ConfigError(f"--figure={figure!r}: use {' or '.join(FIGURE_KINDS)}")
  configs, mask_ratio, seed = load_configs(workdirs, mask_ratio, seed, max_images)
  entries = (list(dict.fromkeys(train.parse_datasets(datasets))) if datasets
             else train.eval_datasets(configs[0]))
  if not entries:
    raise ConfigError("--datasets is empty; give e.g. --datasets=image_folder:/data/x")
  for c in configs:
    train.check_eval_datasets(c, entries)
  names = model_names(workdirs)

  rows: list[dict[str, Any]] = []
  figures: dict[str, list[np.ndarray]] = {}
  inputs: dict[str, np.ndarray] = {}
  per_model = []
  for workdir, name, config in zip(workdirs, names, configs, strict=True):
    step, num_params, results = _evaluate_model(workdir, config, entries, num_images)
    per_model.append((workdir, name, config, step, num_params, results))
    print(f"compare: {name} ({train.describe_model(config, num_params)}, step {step})",
          flush=True)
  for label in (train.dataset_label(n, p) for n, p in entries):
    ref_baselines = None
    for workdir, name, config, step, num_params, results in per_model:
      means, columns = results[label]
      if columns:
        masked, pred, pasted, truth = (np.asarray(c) for c in columns)
        if label not in inputs:
          inputs[label] = masked
          figures[label] = [masked]
        elif not np.array_equal(inputs[label], masked):
          raise AssertionError(f"{name} saw other masked inputs than the first model on "
                               f"{label}: the comparison's masks are not shared")
        figures[label].append(pasted if figure == "pasted" else pred)
      baselines = tuple(means[b] for b in BASELINES)
      if ref_baselines is None:
        ref_baselines = baselines
      elif max(abs(a - b) for a, b in zip(baselines, ref_baselines, strict=True)) > (
          BASELINE_TOLERANCE_DB):
        raise AssertionError(f"{name}: baselines {baselines} differ from the first "
                             f"model's {ref_baselines} on {label}")
      row = dict(dataset=label, model=name,
                 family=model_family(config),
                 num_params=num_params, step=step,
                 **{m: float(means[m]) for m in METRICS + BASELINES},
                 num_images=int(means["num_images"]), workdir=os.path.abspath(workdir))
      rows.append(row)
    if label in figures:
      figures[label].append(truth)

  if jax.process_index() == 0:
    write_report(out_dir, rows, figures, names, masking_text(configs[0]), note, figure)
  return rows


def _safe(label: str) -> str:
  return label.replace(":", "_").replace("/", "_")


def write_report(out_dir: str, rows: list[dict[str, Any]],
                 figures: dict[str, list[np.ndarray]], names: list[str], protocol: str,
                 note: str = "", figure: str = "pasted") -> None:
  """compare.{md,csv,json} and one compare_<dataset>.png per dataset."""
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "compare.json"), "w") as f:
    json.dump(dict(masking=protocol, note=note, rows=rows), f, indent=2)
  with open(os.path.join(out_dir, "compare.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
    w.writeheader()
    w.writerows(rows)
  lines = ["# Model comparison", ""]
  if note:
    lines += [note, ""]
  lines += [f"Masks: {protocol}. PSNR in dB, averaged over images; psnr_full over the "
            "whole image, psnr_masked over the hidden pixels, psnr_pasted with the "
            "visible pixels pasted back. The baselines use the same images and masks: "
            "mean-colour fill (hidden pixels set to the visible pixels' mean colour) "
            "and the masked input itself (hidden pixels black).", "",
            "| dataset | images | model | family | parameters | step | psnr_full "
            "| psnr_masked | psnr_pasted |", "|---|---|---|---|---|---|---|---|---|"]
  by_dataset: dict[str, list[dict[str, Any]]] = {}
  for r in rows:
    by_dataset.setdefault(r["dataset"], []).append(r)
  for label, group in by_dataset.items():
    for r in group:
      lines.append(f"| {label} | {r['num_images']} | {r['model']} | {r['family']} | "
                   f"{r['num_params']:,} | {r['step']} | {r['psnr_full']:.2f} | "
                   f"{r['psnr_masked']:.2f} | {r['psnr_pasted']:.2f} |")
    r = group[0]
    lines.append(f"| {label} | {r['num_images']} | *mean-colour fill* | baseline | 0 | - | "
                 f"{r['psnr_full_mean_fill']:.2f} | - | - |")
    lines.append(f"| {label} | {r['num_images']} | *masked input* | baseline | 0 | - | "
                 f"{r['psnr_full_masked_input']:.2f} | - | - |")
  images = [f"compare_{_safe(label)}.png" for label in figures]
  if images:
    shown = ("the prediction in the hidden patches, visible pixels pasted back"
             if figure == "pasted" else "the raw prediction")
    lines += ["", f"Figures (masked input, each model's output: {shown}; ground truth): "
              + ", ".join(images) + "."]
  with open(os.path.join(out_dir, "compare.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  for label, columns in figures.items():
    metrics.save_image_grid(os.path.join(out_dir, f"compare_{_safe(label)}.png"), columns,
                            ["masked input", *names, "ground truth"],
                            max_rows=columns[0].shape[0])
  print(f"wrote {out_dir}/compare.{{md,csv,json}} and {len(figures)} figure(s)", flush=True)


def main(argv: list[str]) -> None:
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  try:
    compare_workdirs(argv[1:], f.datasets, f.out, max_images=f.max_images,
                     mask_ratio=f.mask_ratio, seed=f.mask_seed, num_images=f.num_images,
                     figure=f.figure)
  except ConfigError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  flags.DEFINE_string("datasets", None, "Comma-separated name[:path] entries (default: the "
                      "first workdir's evaluation datasets).")
  flags.DEFINE_string("out", "compare", "Output directory.")
  flags.DEFINE_integer("max_images", None, "At most this many images per dataset.")
  flags.DEFINE_float("mask_ratio", None, "Share of patches hidden (default: the first "
                     "workdir's mask_ratio).")
  flags.DEFINE_integer("mask_seed", None, "Mask seed (default: the first workdir's "
                       "eval_mask_seed).")
  flags.DEFINE_integer("num_images", 6, "Images per dataset in the figures.")
  flags.DEFINE_enum("figure", "pasted", list(FIGURE_KINDS), "What the figures show of "
                    "each model: its prediction with the visible pixels pasted back, or raw.")
  app.run(main)
