r"""Robustness sweep: a checkpoint's PSNR under every mask strategy and ratio.

  python -m minr_jax.robustness --workdir=runs/demo
  python -m minr_jax.robustness --workdir=runs/celeba \
      --datasets=celeb_a,imagenette,mit_indoor67:/data/indoor67 \
      --strategies=random,random_exact,block,center,outpaint,noise_filtered \
      --ratios=0.25,0.5,0.75,0.9 [--step=N] [--max_images=N]

Restores only the parameters of the newest checkpoint (or `--step`) once,
then evaluates every dataset x strategy x ratio under FIXED, seeded masks:
image i's mask depends on (the run's `eval_mask_seed`, i, strategy, ratio)
only (`masking.eval_masks` with a config copy whose `eval_mask_strategy` and
`mask_ratio` are overridden), so a sweep gives the same numbers every time and
the run's own (eval_mask_strategy, mask_ratio) cell equals
`python -m minr_jax.evaluate`'s figure. The other mask parameters (grid,
block sizes, noise filter) are the run's `config.mask_grid` and `config.mask`.

Each dataset's evaluation split is read once: every batch is scored under
every (strategy, ratio). The model is compiled once: masks are drawn outside
it (by the jitted `masking.draw_indexed`, where the ratio is a traced
argument) and passed in, so neither a strategy nor a ratio recompiles it.

Writes `DIR/robustness/<step>/` (or `--output=FOLDER`, leaving the workdir
untouched; a read-only workdir without `--output` writes to
`~/.cache/minr_jax/results/<workdir name>/robustness/<step>/`, said in one line):
  results.json, results.csv, results.md  one row per (dataset, strategy,
      ratio): psnr_full, psnr_masked, psnr_pasted, the baselines
      psnr_full_interpolation, psnr_full_mean_fill and
      psnr_full_masked_input, the measured
      mask_fraction and num_images; the Markdown names the checkpoint, the
      mask seed and the model. (At ratio 0 nothing is hidden and psnr_masked
      is the metrics' 100 dB floor.)
  robustness.png   psnr_full (psnr_pasted for MAE) against ratio, one line
      per strategy, one panel per dataset; the interpolation baseline dotted
      and the mean-colour-fill baseline dashed in the strategy's colour.
  mask_gallery.png the mask image 0 gets under each strategy (rows) at each
      ratio (columns), on the run's mask grid.

Model families: `supported_strategies(config)` says which strategies a
checkpoint can be scored under. TransINR and GINR take any pixel mask, so
every strategy. An MAE checkpoint drops the tokens of hidden patches,
so it is limited to patch-aligned, exact-count strategies (all but `random`)
and needs its patch grid (resolution / model.patch_size) to equal mask_grid;
it compiles once per ratio (a static visible-token count).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from minr_jax import api, eval_only, evaluation, families, masking, metrics, paths, train
from minr_jax.config import ConfigError

PyTree = Any

DEFAULT_RATIOS = (0.25, 0.5, 0.75, 0.9)
METRICS = evaluation.METRICS  # per-image metrics averaged over valid images
COLUMNS = METRICS + ("num_images",)
KEYS = ("dataset", "strategy", "ratio")


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
      raise ConfigError(
        f"--strategies: unknown strategy {name!r}; choose from {','.join(masking.STRATEGIES)}"
      )
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

  A pixel-input model (TransINR, GINR) accepts any pixel mask: every strategy
  in `masking.STRATEGIES`. A family with `patch_masks_only` (MAE) drops hidden
  patch tokens, so it needs patch-aligned masks with a fixed count: all
  current strategies draw on the `mask_grid` lattice and all but `random`
  hide exactly round(ratio * N) patches, so such a model supports those when
  its patch grid (resolution / model.patch_size) is mask_grid x mask_grid,
  and none otherwise. A new strategy that is not drawn on the mask grid must
  be left out here for such families.
  """
  if families.get(config).patch_masks_only:
    size, patch = config.resolution, config.model.patch_size
    if size % patch or size // patch != config.mask_grid:
      return ()
    return tuple(s for s in masking.STRATEGIES if s != "random")
  return tuple(masking.STRATEGIES)


def check_supported(config: ml_collections.ConfigDict, strategies: Sequence[str]) -> None:
  """ConfigError naming --strategies if the checkpoint's model cannot take one of them."""
  supported = supported_strategies(config)
  name = families.get(config).name
  if not strategies:
    raise ConfigError(
      f"--strategies: a {name} checkpoint with this patch grid supports no mask strategy"
    )
  for strategy in strategies:
    if strategy not in supported:
      raise ConfigError(
        f"--strategies: {strategy!r} is not supported by a {name} checkpoint (it needs "
        f"patch-aligned masks: patch grid {config.resolution}/{config.model.patch_size} "
        f"vs mask grid {config.mask_grid}); supported: {','.join(supported) or 'none'}"
      )


def sweep_config(
  config: ml_collections.ConfigDict, strategy: str, ratio: float
) -> ml_collections.ConfigDict:
  """A copy of config whose evaluation masks are (strategy, ratio)."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.eval_mask_strategy = strategy
  c.mask_ratio = float(ratio)
  return c


# -------------------------------------------------------------------- sweep ---


def scoring_functions(r, config: ml_collections.ConfigDict):
  """ratio -> the jitted `evaluation.score_batch` for masks of that ratio (cached).

  A pixel-input model takes any mask with one compiled function. A
  patch-token model's visible token count is static, so it gets one compiled
  copy per ratio (`family.for_ratio`; its parameters do not depend on it).
  """
  cache: dict[float | None, Any] = {}
  per_ratio = r.family.patch_masks_only

  def get(ratio: float):
    key = float(ratio) if per_ratio else None
    if key not in cache:
      model = r.family.for_ratio(r.model, key) if per_ratio else r.model
      cache[key] = evaluation.make_score_fn(model, r.family, config, r.mesh, r.params_sharding)
    return cache[key]

  return get


def run_sweep(
  workdir: str,
  datasets: str | None = None,
  strategies: str | Sequence[str] | None = None,
  ratios: str | Sequence[float] | None = None,
  step: int | None = None,
  max_images: int | None = None,
  output: str | None = None,
) -> tuple[int, list[dict[str, Any]]]:
  """Sweeps a workdir's checkpoint; returns (step, rows) and writes the result files.

  Each row is {dataset, strategy, ratio, *COLUMNS}, in dataset, strategy,
  ratio order. `datasets` defaults to the run's evaluation datasets,
  `strategies` to every supported one, `ratios` to DEFAULT_RATIOS. Every
  input error raises ConfigError before anything is compiled. The files go to
  `output` if given, else `<workdir>/robustness/<step>/`, or for a read-only
  workdir a folder under ~/.cache/minr_jax/results named in one line.
  """
  t_start = time.perf_counter()
  strategies = None if strategies is None else parse_strategies(strategies)
  ratios = parse_ratios(ratios)
  if max_images is not None and (isinstance(max_images, bool) or max_images < 0):
    raise ConfigError(f"--max_images must be >= 0 (0 = all), got {max_images}")
  r = api.restore(workdir, step)
  config = r.config
  if max_images is not None:
    config.dataset.eval_max_images = max_images
  families.check(config, num_devices=r.mesh.size)
  if strategies is None:
    strategies = list(supported_strategies(config))
  check_supported(config, strategies)
  if datasets is not None:
    entries = evaluation.parse_datasets(datasets)
    evaluation.check_datasets(config, entries, "--datasets")
  else:
    entries = evaluation.eval_datasets(config)
    evaluation.check_datasets(config, entries)

  evals = ml_collections.ConfigDict(
    dict(
      robustness=dict(
        type="robustness",
        datasets=datasets or "",  # checked above; empty = the run's evaluation datasets
        strategies=list(strategies),
        ratios=list(ratios),
      )
    )
  )
  # The one evaluation path (eval_only); the result files and plots are this command's.
  built = eval_only.run_checkpoint(r, config, evals, r.workdir, write_metrics=False)[0]
  rows = built["robustness"].rows

  if jax.process_index() == 0:
    out_dir = paths.results_dir(r.workdir, "robustness", r.step, output)
    info = describe(r.workdir, r.step, config, train.count_params(r.params), r.family)
    write_results(out_dir, r.step, rows, info)
    plot_psnr(os.path.join(out_dir, "robustness.png"), rows, r.step, r.family.plot_metric)
    plot_mask_gallery(os.path.join(out_dir, "mask_gallery.png"), config, strategies, ratios)
    print(
      f"wrote {out_dir}/results.{{json,csv,md}}, robustness.png, mask_gallery.png "
      f"({time.perf_counter() - t_start:.1f} s)"
    )
  return r.step, rows


def sweep(
  ctx,
  params,
  config: ml_collections.ConfigDict,
  entries: Sequence[evaluation.EvalDataset],
  strategies: Sequence[str],
  ratios: Sequence[float],
  step: int,
) -> list[dict[str, Any]]:
  """Rows {dataset, strategy, ratio, *COLUMNS} of params on every (dataset, strategy,
  ratio), printed one line each. `ctx` is an `api.Restored` or an
  `evaluators.EvalContext` (family, model, mesh, params_sharding)."""
  step_fn = scoring_functions(ctx, config)
  cells = [(s, ratio) for s in strategies for ratio in ratios]
  mask_configs = [sweep_config(config, s, ratio) for s, ratio in cells]
  rows: list[dict[str, Any]] = []
  for dataset in entries:
    label = evaluation.dataset_label(*dataset)
    means: list[dict[str, float]] = [{} for _ in cells]
    # One pass over the data per compiled scoring function (MINR: one in all).
    by_fn: dict[int, list[int]] = {}
    for i, (_, ratio) in enumerate(cells):
      by_fn.setdefault(id(step_fn(ratio)), []).append(i)
    for idx in by_fn.values():
      fn = step_fn(cells[idx[0]][1])
      found = evaluation.evaluate(
        fn,
        params,
        config,
        ctx.mesh,
        dataset,
        [functools.partial(masking.eval_masks, mask_configs[i]) for i in idx],
      )
      for i, m in zip(idx, found, strict=True):
        means[i] = m
    for (strategy, ratio), m in zip(cells, means, strict=True):
      rows.append(dict(dataset=label, strategy=strategy, ratio=ratio, **m))
      if jax.process_index() == 0:
        print(
          f"robustness step {step} [{label}] {strategy:>14} ratio {ratio:g}: "
          f"psnr_pasted {m['psnr_pasted']:.2f} dB (interpolation "
          f"{m['psnr_full_interpolation']:.2f}, mean-colour fill "
          f"{m['psnr_full_mean_fill']:.2f})  psnr_full {m['psnr_full']:.2f}  "
          f"hidden {m['mask_fraction']:.3f}  ({m['num_images']} images)",
          flush=True,
        )

  return rows


# ------------------------------------------------------------------ output ---


def describe(
  workdir: str, step: int, config: ml_collections.ConfigDict, num_params: int, family
) -> dict[str, Any]:
  """What was swept: checkpoint, masking protocol and model, for the result files."""
  grid = config.mask_grid
  masking_text = (
    f"fixed evaluation masks, seed {config.eval_mask_seed}, {grid}x{grid} "
    f"mask grid; 'random' hides each patch independently with probability "
    f"ratio, every other strategy exactly round(ratio x {grid * grid}) patches"
  )
  return dict(
    checkpoint=os.path.join(workdir, "checkpoints", str(step)),
    step=step,
    model=family.describe(config, num_params),
    model_family=family.name,
    eval_mask_seed=config.eval_mask_seed,
    mask_grid=grid,
    run_mask_config=config.mask.to_dict(),
    masking=masking_text,
  )


def write_results(
  out_dir: str, step: int, rows: list[dict[str, Any]], info: dict[str, Any]
) -> None:
  """results.json, results.csv and results.md in out_dir (`evaluation.write_results`)."""
  header = [
    f"Robustness sweep of checkpoint `{info['checkpoint']}` (step {step}).",
    "",
    f"Model: {info['model']}.",
    "",
    f"Masks: {info['masking']}.",
  ]
  evaluation.write_results(out_dir, rows, KEYS + COLUMNS, header, info)


def plot_psnr(path: str, rows: list[dict[str, Any]], step: int, metric: str = "psnr_full") -> None:
  """`metric` against ratio: a panel per dataset, a solid line per strategy,
  its mean-colour-fill baseline dashed and its interpolation baseline dotted in
  the same colour (a model has learned structure where it is above the dots).

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
      sel = sorted(
        (r for r in rows if r["dataset"] == label and r["strategy"] == strategy),
        key=lambda r: r["ratio"],
      )
      x = [r["ratio"] for r in sel]
      colour = f"C{i % 10}"
      ax.plot(x, [r[metric] for r in sel], "o-", color=colour, label=strategy)
      ax.plot(x, [r["psnr_full_mean_fill"] for r in sel], "x--", color=colour, alpha=0.7)
      ax.plot(x, [r["psnr_full_interpolation"] for r in sel], "+:", color=colour, alpha=0.8)
    _clip_perfect_scores(
      ax,
      [
        r[k]
        for r in rows
        if r["dataset"] == label
        for k in (metric, "psnr_full_mean_fill", "psnr_full_interpolation")
      ],
    )
    ax.set_title(f"{label} ({num_images} images)", fontsize=10)
    ax.set_xlabel("mask ratio")
    ax.set_ylabel(f"{metric} (dB)")
    ax.grid(alpha=0.3)
  for ax in axes[len(datasets) :]:
    ax.set_visible(False)
  handles = [
    Line2D([], [], color=f"C{i % 10}", marker="o", label=s) for i, s in enumerate(strategies)
  ]
  handles += [
    Line2D([], [], color="black", label="model"),
    Line2D([], [], color="black", ls="--", alpha=0.7, label="mean-colour fill"),
    Line2D([], [], color="black", ls=":", alpha=0.8, label="interpolation"),
  ]
  fig.legend(handles=handles, loc="outside right center", fontsize=9)  # clear of the title
  fig.suptitle(f"Robustness to masking, checkpoint step {step}", fontsize=11)
  _save_figure(fig, path)


def _save_figure(fig, path: str) -> None:
  """Writes fig as a PNG to path (a local path or a URL) whole."""
  buf = io.BytesIO()
  fig.savefig(buf, dpi=100, format="png")
  paths.write_bytes(path, buf.getvalue())


def _clip_perfect_scores(ax, values: list[float]) -> None:
  """Keeps the 100 dB floor of perfect scores (mean-colour fill at ratio 0) off the axis."""
  perfect = -10.0 * np.log10(metrics.MSE_FLOOR) - 1.0
  rest = [v for v in values if v < perfect]
  if rest and len(rest) < len(values):
    low, high = min(rest), max(rest)
    ax.set_ylim(low - 0.05 * (high - low + 1.0), high + 0.15 * (high - low + 1.0))


def gallery_masks(
  config: ml_collections.ConfigDict,
  strategies: Sequence[str],
  ratios: Sequence[float],
  index: int = 0,
) -> np.ndarray:
  """The evaluation masks [S, R, grid, grid] (bool) image `index` gets in the sweep."""
  base = masking.mask_spec_from_config(config)
  out = []
  for strategy in strategies:
    spec = dataclasses.replace(base, strategy=strategy)
    out.append(
      [
        np.asarray(masking.draw_indexed(spec, config.eval_mask_seed, jnp.array([index]), ratio))[0]
        for ratio in ratios
      ]
    )
  return np.asarray(out, bool)


def plot_mask_gallery(
  path: str, config: ml_collections.ConfigDict, strategies: Sequence[str], ratios: Sequence[float]
) -> None:
  """A grid of image 0's masks: a row per strategy, a column per ratio (black = hidden)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
  from matplotlib.figure import Figure  # noqa: PLC0415

  masks = gallery_masks(config, strategies, ratios)
  g = config.mask_grid
  fig = Figure(figsize=(1.5 * len(ratios) + 1.4, 1.5 * len(strategies) + 0.8), layout="constrained")
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
  fig.suptitle(
    f"Evaluation mask of image 0 (seed {config.eval_mask_seed}, {g}x{g} grid; black = hidden)",
    fontsize=9,
  )
  _save_figure(fig, path)


# --------------------------------------------------------------------- CLI ---


if __name__ == "__main__":  # the flags live in minr_jax.commands.robustness
  from minr_jax.commands import robustness as _command

  _command.main()
