r"""Robustness sweep: a checkpoint's PSNR under every mask strategy and ratio.

  python -m minr_jax.robustness --workdir=runs/demo
  python -m minr_jax.robustness --workdir=runs/celeba \
      --datasets=celeb_a,imagenette,mit_indoor67:/data/indoor67 \
      --strategies=random,random_exact,block,center,outpaint,noise_filtered \
      --ratios=0.25,0.5,0.75,0.9 [--step=N] [--max_images=N]

Restores only the parameters of the newest checkpoint (or `--step`) once,
then evaluates every dataset x strategy x ratio under FIXED, seeded masks:
image i's mask depends on (the run's `eval_mask_seed`, i, strategy, ratio)
only (`train.eval_masks` with a config copy whose `eval_mask_strategy` and
`mask_ratio` are overridden), so a sweep gives the same numbers every time and
the run's own (eval_mask_strategy, mask_ratio) cell equals
`python -m minr_jax.evaluate`'s figure. The other mask parameters (grid,
block sizes, noise filter) are the run's `config.mask_grid` and `config.mask`.

Each dataset's evaluation split is read once: every batch is scored under
every (strategy, ratio). The model is compiled once: masks are drawn outside
it (by the jitted `masking.draw_indexed`, where the ratio is a traced
argument) and passed in, so neither a strategy nor a ratio recompiles it.

Writes `DIR/robustness/<step>/`:
  results.json, results.csv, results.md  one row per (dataset, strategy,
      ratio): psnr_full, psnr_masked, psnr_pasted, the baselines
      psnr_full_mean_fill and psnr_full_masked_input, the measured
      mask_fraction and num_images; the Markdown names the checkpoint, the
      mask seed and the model. (At ratio 0 nothing is hidden and psnr_masked
      is the metrics' 100 dB floor.)
  robustness.png   psnr_full against ratio, one line per strategy, one panel
      per dataset; the mean-colour-fill baseline dashed in the strategy's colour.
  mask_gallery.png the mask image 0 gets under each strategy (rows) at each
      ratio (columns), on the run's mask grid.

Model families: `supported_strategies(config)` is the hook that says which
strategies a checkpoint can be scored under. TransINR and GINR take any pixel
mask, so every strategy. An MAE checkpoint drops the tokens of hidden patches,
so it is limited to patch-aligned, exact-count strategies (all but `random`)
and needs its patch grid (resolution / model.patch_size) to equal mask_grid;
it compiles once per ratio (a static visible-token count).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging

from minr_jax import data, evaluate, masking, metrics, sharding, train
from minr_jax.config import ConfigError, model_family, validate

PyTree = Any

DEFAULT_RATIOS = (0.25, 0.5, 0.75, 0.9)
# Per-image metrics averaged over valid images, in column order.
METRICS = ("psnr_full", "psnr_masked", "psnr_pasted", "psnr_full_mean_fill",
           "psnr_full_masked_input", "mask_fraction")
COLUMNS = METRICS + ("num_images",)
KEYS = ("dataset", "strategy", "ratio")

# Families whose checkpoints only accept masks aligned with their own patch grid.
PATCH_TOKEN_FAMILIES = ("mae",)


# ------------------------------------------------------------------ inputs ---

def parse_strategies(spec: str | Sequence[str] | None) -> list[str]:
  """'random,block' (or a list) -> ['random', 'block']; None = every strategy.

  Raises ConfigError naming --strategies for an empty list or an unknown name.
  """
  if spec is None:
    return list(masking.STRATEGIES)
  names = spec.split(",") if isinstance(spec, str) else list(spec)
  out: list[str] = []
  for name in filter(None, (str(n).strip() for n in names)):
    if name not in masking.STRATEGIES:
      raise ConfigError(f"--strategies: unknown strategy {name!r}; choose from "
                        f"{','.join(masking.STRATEGIES)}")
    if name not in out:
      out.append(name)
  if not out:
    raise ConfigError("--strategies is empty; give e.g. --strategies=random,block")
  return out


def parse_ratios(spec: str | Sequence[float] | None) -> list[float]:
  """'0.25,0.5' (or a list) -> [0.25, 0.5]; None = DEFAULT_RATIOS.

  Raises ConfigError naming --ratios for an empty list, a non-number or a
  ratio outside [0, 1).
  """
  if spec is None:
    return list(DEFAULT_RATIOS)
  items = spec.split(",") if isinstance(spec, str) else list(spec)
  out: list[float] = []
  for item in items:
    if isinstance(item, str):
      item = item.strip()
      if not item:
        continue
    try:
      ratio = float(item)
    except (TypeError, ValueError):
      raise ConfigError(f"--ratios: {item!r} is not a number") from None
    if not 0.0 <= ratio < 1.0:
      raise ConfigError(f"--ratios: {item} is outside [0, 1)")
    if ratio not in out:
      out.append(ratio)
  if not out:
    raise ConfigError("--ratios is empty; give e.g. --ratios=0.25,0.5,0.75")
  return out


def supported_strategies(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The mask strategies a checkpoint of this config can be evaluated under.

  TransINR and GINR (pixel-input hypernetworks) accept any pixel mask: every
  strategy in `masking.STRATEGIES`. An MAE checkpoint drops hidden patch
  tokens, so it needs patch-aligned masks with a fixed count: masks on its own
  patch grid. All current strategies draw on the `mask_grid` lattice and all
  but `random` hide exactly round(ratio * N) patches, so an MAE supports
  those when its patch grid (resolution / model.patch_size) is mask_grid x
  mask_grid, and none otherwise. A new strategy that is not drawn on the mask
  grid must be left out here for MAE.
  """
  if model_family(config) in PATCH_TOKEN_FAMILIES:
    size, patch = config.resolution, config.model.patch_size
    if size % patch or size // patch != config.mask_grid:
      return ()
    # A static token count: every strategy but 'random' hides exactly k patches.
    return tuple(s for s in masking.STRATEGIES if s != "random")
  return tuple(masking.STRATEGIES)


def check_supported(config: ml_collections.ConfigDict, strategies: Sequence[str]) -> None:
  """ConfigError naming --strategies if the checkpoint's model cannot take one of them."""
  supported = supported_strategies(config)
  if not strategies:
    raise ConfigError(f"--strategies: a {model_family(config)} checkpoint with this patch "
                      "grid supports no mask strategy")
  for name in strategies:
    if name not in supported:
      family = model_family(config)
      raise ConfigError(
          f"--strategies: {name!r} is not supported by a {family} checkpoint (it needs "
          f"patch-aligned masks: patch grid {config.resolution}/{config.model.patch_size} "
          f"vs mask grid {config.mask_grid}); supported: {','.join(supported) or 'none'}")


def sweep_config(config: ml_collections.ConfigDict, strategy: str,
                 ratio: float) -> ml_collections.ConfigDict:
  """A copy of config whose evaluation masks are (strategy, ratio)."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.eval_mask_strategy = strategy
  c.mask_ratio = float(ratio)
  return c


# -------------------------------------------------------------------- sweep ---

def masked_eval_sums(params: PyTree, batch: dict[str, jax.Array], grid_masks: jax.Array,
                     *, model, config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """Sums over the batch's valid images of each metric in METRICS, and their `count`.

  `train.eval_step` with the patch masks [B, g, g] passed in rather than drawn
  inside (so one compiled function serves every strategy and, for MINR, every
  ratio) and the reduction over valid (non-padding) rows done on device (so
  the scalars are right on any number of processes). The prediction is
  `train.predict`'s, so every model family is scored the same way.
  """
  images = batch["image"]
  pixel_masks = masking.to_pixels(grid_masks, images.shape[1], images.shape[2])
  pred, _ = train.predict(model, params, images, grid_masks, config=config)
  per_image = metrics.reconstruction_metrics(pred, images, pixel_masks)
  valid = batch["valid"]
  sums = {name: jnp.sum(jnp.where(valid, per_image[name], 0.0)) for name in METRICS}
  sums["count"] = jnp.sum(valid.astype(jnp.int32))
  return sums


def _sweep_dataset(step_fn, params: PyTree, config: ml_collections.ConfigDict, mesh,
                   cells: list[tuple[str, float]]) -> list[dict[str, float]]:
  """Metric means for each (strategy, ratio) cell over one pass of config's eval split.

  step_fn(ratio) gives the compiled scoring function for that ratio.
  """
  mask_configs = [sweep_config(config, s, r) for s, r in cells]
  sums = [dict.fromkeys(METRICS, 0.0) for _ in cells]
  count = 0
  batches = data.make_eval_batches(config, process_index=jax.process_index(),
                                   process_count=jax.process_count())
  for batch in batches:
    gbatch = sharding.global_batch(mesh, {"image": batch["image"], "index": batch["index"],
                                          "valid": np.asarray(batch["valid"], bool)})
    for cell_sums, mask_config in zip(sums, mask_configs, strict=True):
      grid_masks = train.eval_grid_masks(mask_config, gbatch["index"])
      out = jax.device_get(step_fn(mask_config.mask_ratio)(params, gbatch, grid_masks))
      for name in METRICS:
        cell_sums[name] += float(out[name])
    count += int(out["count"])
  if count == 0:
    raise ConfigError("the evaluation split holds no images")
  return [{**{k: v / count for k, v in s.items()}, "num_images": count} for s in sums]


def scoring_functions(model, config: ml_collections.ConfigDict, mesh, params_sharding):
  """ratio -> the jitted `masked_eval_sums` for masks of that ratio (cached).

  MINR models take any mask with one compiled function. An MAE's visible
  token count is static, so it gets one compiled copy per ratio (its
  parameters do not depend on the ratio: `model.clone(mask_ratio=...)`).
  """
  cache: dict[float | None, Any] = {}
  patch_tokens = model_family(config) in PATCH_TOKEN_FAMILIES

  def get(ratio: float):
    key = float(ratio) if patch_tokens else None
    if key not in cache:
      m = model.clone(mask_ratio=key) if patch_tokens else model
      cache[key] = jax.jit(
          functools.partial(masked_eval_sums, model=m, config=config),
          in_shardings=(params_sharding, sharding.batch_sharding(mesh),
                        sharding.batch_sharding(mesh)),
          out_shardings=sharding.replicated(mesh))
    return cache[key]

  return get


def run_sweep(workdir: str, datasets: str | None = None,
              strategies: str | Sequence[str] | None = None,
              ratios: str | Sequence[float] | None = None, step: int | None = None,
              max_images: int | None = None) -> tuple[int, list[dict[str, Any]]]:
  """Sweeps a workdir's checkpoint; returns (step, rows) and writes the result files.

  Each row is {dataset, strategy, ratio, *COLUMNS}, in dataset, strategy,
  ratio order. `datasets` defaults to the run's evaluation datasets,
  `strategies` to every supported one, `ratios` to DEFAULT_RATIOS. Every
  input error raises ConfigError before anything is restored or compiled.
  """
  t_start = time.perf_counter()
  strategies = None if strategies is None else parse_strategies(strategies)
  ratios = parse_ratios(ratios)
  if max_images is not None and (isinstance(max_images, bool) or max_images < 0):
    raise ConfigError(f"--max_images must be >= 0 (0 = all), got {max_images}")
  config = evaluate.load_config(workdir)
  if max_images is not None:
    config.dataset.eval_max_images = max_images
  validate(config)
  if strategies is None:
    strategies = list(supported_strategies(config))
  check_supported(config, strategies)
  if datasets is not None:
    entries = list(dict.fromkeys(train.parse_datasets(datasets)))
    if not entries:
      raise ConfigError("--datasets is empty; give e.g. --datasets=demo,image_folder:/data/x")
  else:
    entries = train.eval_datasets(config)
  train.check_eval_datasets(config, entries)
  mesh = sharding.make_mesh(config)
  validate(config, num_devices=sharding.batch_devices(mesh))

  step, model, params, params_sharding = evaluate.restore_model(workdir, config, mesh, step)
  step_fn = scoring_functions(model, config, mesh, params_sharding)
  cells = [(s, r) for s in strategies for r in ratios]
  rows: list[dict[str, Any]] = []
  for name, path in entries:
    label = train.dataset_label(name, path)
    means = _sweep_dataset(step_fn, params, train.dataset_config(config, name, path),
                           mesh, cells)
    for (strategy, ratio), m in zip(cells, means, strict=True):
      rows.append(dict(dataset=label, strategy=strategy, ratio=ratio, **m))
      if jax.process_index() == 0:
        print(f"robustness step {step} [{label}] {strategy:>14} ratio {ratio:g}: "
              f"psnr_full {m['psnr_full']:.2f} dB (mean-colour fill "
              f"{m['psnr_full_mean_fill']:.2f})  psnr_masked {m['psnr_masked']:.2f}  "
              f"hidden {m['mask_fraction']:.3f}  ({m['num_images']} images)", flush=True)

  if jax.process_index() == 0:
    out_dir = os.path.join(workdir, "robustness", str(step))
    info = describe(workdir, step, config, train.count_params(params))
    write_results(out_dir, step, rows, info)
    metric = "psnr_pasted" if model_family(config) in PATCH_TOKEN_FAMILIES else "psnr_full"
    plot_psnr(os.path.join(out_dir, "robustness.png"), rows, step, metric)
    plot_mask_gallery(os.path.join(out_dir, "mask_gallery.png"), config, strategies, ratios)
    print(f"wrote {out_dir}/results.{{json,csv,md}}, robustness.png, mask_gallery.png "
          f"({time.perf_counter() - t_start:.1f} s)")
  return step, rows


# ------------------------------------------------------------------ output ---

def describe(workdir: str, step: int, config: ml_collections.ConfigDict,
             num_params: int) -> dict[str, Any]:
  """What was swept: checkpoint, masking protocol and model, for the result files."""
  model = train.describe_model(config, num_params)
  grid = config.mask_grid
  masking_text = (f"fixed evaluation masks, seed {config.eval_mask_seed}, {grid}x{grid} "
                  f"mask grid; 'random' hides each patch independently with probability "
                  f"ratio, every other strategy exactly round(ratio x {grid * grid}) patches")
  return dict(checkpoint=os.path.join(os.path.abspath(workdir), "checkpoints", str(step)),
              step=step, model=model, model_family=model_family(config),
              eval_mask_seed=config.eval_mask_seed, mask_grid=grid,
              run_mask_config=config.mask.to_dict(), masking=masking_text)


def write_results(out_dir: str, step: int, rows: list[dict[str, Any]],
                  info: dict[str, Any]) -> None:
  """results.json, results.csv and results.md in out_dir."""
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump(dict(info, rows=rows), f, indent=2)
  with open(os.path.join(out_dir, "results.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(KEYS + COLUMNS)
    for r in rows:
      w.writerow(tuple(r[c] for c in KEYS + COLUMNS))
  lines = [f"Robustness sweep of checkpoint `{info['checkpoint']}` (step {step}).", "",
           f"Model: {info['model']}.", "", f"Masks: {info['masking']}.", "",
           "| " + " | ".join(KEYS + COLUMNS) + " |",
           "|---" * (len(KEYS) + len(COLUMNS)) + "|"]
  for r in rows:
    cells = [r["dataset"], r["strategy"], f"{r['ratio']:g}"]
    cells += [f"{r[c]:.3f}" for c in METRICS] + [str(int(r["num_images"]))]
    lines.append("| " + " | ".join(cells) + " |")
  with open(os.path.join(out_dir, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def plot_psnr(path: str, rows: list[dict[str, Any]], step: int,
              metric: str = "psnr_full") -> None:
  """`metric` against ratio: a panel per dataset, a solid line per strategy,
  its mean-colour-fill baseline dashed in the same colour.

  psnr_full for MINR (the whole rendered image, the paper's figure);
  psnr_pasted for an MAE, whose output in the visible patches is untrained.

  Perfect scores (the fill at ratio 0 hides nothing: 100 dB) are left off the
  y axis so they don't flatten the rest.
  """
  # Imported here: matplotlib is slow to import and only the plots need it.
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
  from matplotlib.figure import Figure  # noqa: PLC0415
  from matplotlib.lines import Line2D  # noqa: PLC0415

  datasets = list(dict.fromkeys(r["dataset"] for r in rows))
  strategies = list(dict.fromkeys(r["strategy"] for r in rows))
  cols = min(len(datasets), 3)
  nrows = -(-len(datasets) // cols)
  fig = Figure(figsize=(4.2 * cols + 2.2, 3.4 * nrows), layout="constrained")
  FigureCanvasAgg(fig)
  axes = fig.subplots(nrows, cols, squeeze=False).reshape(-1)
  for ax, label in zip(axes, datasets, strict=False):
    num_images = next(r["num_images"] for r in rows if r["dataset"] == label)
    for i, strategy in enumerate(strategies):
      sel = sorted((r for r in rows if r["dataset"] == label and r["strategy"] == strategy),
                   key=lambda r: r["ratio"])
      x = [r["ratio"] for r in sel]
      colour = f"C{i % 10}"
      ax.plot(x, [r[metric] for r in sel], "o-", color=colour, label=strategy)
      ax.plot(x, [r["psnr_full_mean_fill"] for r in sel], "x--", color=colour, alpha=0.7)
    _clip_perfect_scores(ax, [r[k] for r in rows if r["dataset"] == label
                              for k in (metric, "psnr_full_mean_fill")])
    ax.set_title(f"{label} ({num_images} images)", fontsize=10)
    ax.set_xlabel("mask ratio")
    ax.set_ylabel(f"{metric} (dB)")
    ax.grid(alpha=0.3)
  for ax in axes[len(datasets):]:
    ax.set_visible(False)
  handles = [Line2D([], [], color=f"C{i % 10}", marker="o", label=s)
             for i, s in enumerate(strategies)]
  handles += [Line2D([], [], color="black", label="model"),
              Line2D([], [], color="black", ls="--", alpha=0.7, label="mean-colour fill")]
  fig.legend(handles=handles, loc="outside right center", fontsize=9)  # clear of the title
  fig.suptitle(f"Robustness to masking, checkpoint step {step}", fontsize=11)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)


def _clip_perfect_scores(ax, values: list[float]) -> None:
  """Keeps the 100 dB floor of perfect scores (mean-colour fill at ratio 0) off the axis."""
  perfect = -10.0 * np.log10(metrics.MSE_FLOOR) - 1.0
  rest = [v for v in values if v < perfect]
  if rest and len(rest) < len(values):
    low, high = min(rest), max(rest)
    ax.set_ylim(low - 0.05 * (high - low + 1.0), high + 0.15 * (high - low + 1.0))


def gallery_masks(config: ml_collections.ConfigDict, strategies: Sequence[str],
                  ratios: Sequence[float], index: int = 0) -> np.ndarray:
  """The evaluation masks [S, R, grid, grid] (bool) image `index` gets in the sweep."""
  base = masking.mask_spec_from_config(config)
  out = []
  for strategy in strategies:
    spec = dataclasses.replace(base, strategy=strategy)
    out.append([np.asarray(masking.draw_indexed(spec, config.eval_mask_seed,
                                                jnp.array([index]), ratio))[0]
                for ratio in ratios])
  return np.asarray(out, bool)


def plot_mask_gallery(path: str, config: ml_collections.ConfigDict,
                      strategies: Sequence[str], ratios: Sequence[float]) -> None:
  """A grid of image 0's masks: a row per strategy, a column per ratio (black = hidden)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
  from matplotlib.figure import Figure  # noqa: PLC0415

  masks = gallery_masks(config, strategies, ratios)
  g = config.mask_grid
  fig = Figure(figsize=(1.5 * len(ratios) + 1.4, 1.5 * len(strategies) + 0.8),
               layout="constrained")
  FigureCanvasAgg(fig)
  axes = fig.subplots(len(strategies), len(ratios), squeeze=False)
  for i, strategy in enumerate(strategies):
    for j, ratio in enumerate(ratios):
      ax = axes[i, j]
      ax.imshow(masks[i, j], cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
      ax.set_xticks(np.arange(-0.5, g, 1), minor=True)
      ax.set_yticks(np.arange(-0.5, g, 1), minor=True)
      ax.grid(which="minor", color="0.6", linewidth=0.3)
      ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
      ax.set_title(f"ratio {ratio:g}: {int(masks[i, j].sum())}/{g * g}", fontsize=8)
      if j == 0:
        ax.set_ylabel(strategy, fontsize=9)
  fig.suptitle(f"Evaluation mask of image 0 (seed {config.eval_mask_seed}, {g}x{g} grid; "
               "black = hidden)", fontsize=9)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)


# --------------------------------------------------------------------- CLI ---

def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  try:
    run_sweep(f.workdir, f.datasets, f.strategies, f.ratios, f.step, f.max_images)
  except ConfigError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  # Flags are defined only for the command line, so that importing this module
  # (tests, notebooks) defines none.
  flags.DEFINE_string("workdir", None, "A training workdir.", required=True)
  flags.DEFINE_string("datasets", None, "Comma-separated name[:path] entries, e.g. "
                      "'celeb_a,image_folder:/data/x'. Default: the run's evaluation datasets.")
  flags.DEFINE_string("strategies", None, "Comma-separated mask strategies, of "
                      f"{','.join(masking.STRATEGIES)} (default: all the model supports).")
  flags.DEFINE_string("ratios", ",".join(f"{r:g}" for r in DEFAULT_RATIOS),
                      "Comma-separated mask ratios in [0, 1).")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).")
  flags.DEFINE_integer("max_images", None, "Evaluate at most this many images per dataset.")
  app.run(main)
