"""The robustness sweep: scores under mask strategy x ratio (`sweep`, `run_sweep`) and its
evaluator (`Robustness`, type 'robustness').
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import ml_collections

from minr_jax import families, masking, paths
from minr_jax.config import ConfigError
from minr_jax.evaluation import runner, scoring
from minr_jax.evaluation.plots import plot_mask_gallery, plot_psnr
from minr_jax.evaluation.registry import datasets_of
from minr_jax.inference import restore

PyTree = Any


DEFAULT_RATIOS = (0.25, 0.5, 0.75, 0.9)


METRICS = scoring.METRICS  # per-image metrics averaged over valid images


COLUMNS = METRICS + ("num_images",)


KEYS = ("dataset", "strategy", "ratio")


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


def scoring_functions(r, config: ml_collections.ConfigDict):
  """ratio -> the jitted `scoring.score_batch` for masks of that ratio (cached).

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
      cache[key] = scoring.make_score_fn(model, r.family, config, r.mesh, r.params_sharding)
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
  r = restore.restore(workdir, step)
  config = r.config
  if max_images is not None:
    config.dataset.eval_max_images = max_images
  families.check(config, num_devices=r.mesh.size)
  if strategies is None:
    strategies = list(supported_strategies(config))
  check_supported(config, strategies)
  if datasets is not None:
    entries = scoring.parse_datasets(datasets)
    scoring.check_datasets(config, entries, "--datasets")
  else:
    entries = scoring.eval_datasets(config)
    scoring.check_datasets(config, entries)

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
  # The one evaluation path (runner.run_checkpoint); the result files and plots are this command's.
  built = runner.run_checkpoint(r, config, evals, r.workdir, write_metrics=False)[0]
  rows = built["robustness"].rows

  if jax.process_index() == 0:
    out_dir = paths.results_dir(r.workdir, "robustness", r.step, output)
    info = describe(r.workdir, r.step, config, families.count_params(r.params), r.family)
    write_sweep_results(out_dir, r.step, rows, info)
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
  entries: Sequence[scoring.EvalDataset],
  strategies: Sequence[str],
  ratios: Sequence[float],
  step: int,
) -> list[dict[str, Any]]:
  """Rows {dataset, strategy, ratio, *COLUMNS} of params on every (dataset, strategy,
  ratio), printed one line each. `ctx` is an `restore.Restored` or an
  `registry.EvalContext` (family, model, mesh, params_sharding)."""
  step_fn = scoring_functions(ctx, config)
  cells = [(s, ratio) for s in strategies for ratio in ratios]
  mask_configs = [sweep_config(config, s, ratio) for s, ratio in cells]
  rows: list[dict[str, Any]] = []
  for dataset in entries:
    label = scoring.dataset_label(*dataset)
    means: list[dict[str, float]] = [{} for _ in cells]
    # One pass over the data per compiled scoring function (MINR: one in all).
    by_fn: dict[int, list[int]] = {}
    for i, (_, ratio) in enumerate(cells):
      by_fn.setdefault(id(step_fn(ratio)), []).append(i)
    for idx in by_fn.values():
      fn = step_fn(cells[idx[0]][1])
      found = scoring.evaluate(
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


def describe(
  workdir: str, step: int, config: ml_collections.ConfigDict, num_params: int, family
) -> dict[str, Any]:
  """What was swept: checkpoint, masking protocol and model, for the result files."""
  grid = config.mask_grid
  masks_text = (
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
    masking=masks_text,
  )


def write_sweep_results(
  out_dir: str, step: int, rows: list[dict[str, Any]], info: dict[str, Any]
) -> None:
  """results.json, results.csv and results.md in out_dir (`scoring.write_results`)."""
  header = [
    f"Robustness sweep of checkpoint `{info['checkpoint']}` (step {step}).",
    "",
    f"Model: {info['model']}.",
    "",
    f"Masks: {info['masking']}.",
  ]
  scoring.write_results(out_dir, rows, KEYS + COLUMNS, header, info)


class Robustness:
  """`sweep` on the entry's datasets, strategies and ratios."""

  FIELDS = ("strategies", "ratios")

  @staticmethod
  def check(config, cfg, where: str) -> None:
    parse_ratios(cfg.get("ratios"))
    if cfg.get("strategies"):
      check_supported(config, parse_strategies(cfg.strategies))

  def __init__(self, name: str, cfg: ml_collections.ConfigDict, ctx):
    self.name, self.cfg, self.ctx = name, cfg, ctx
    self.datasets = datasets_of(ctx.config, cfg, f"config.evals.{name}")
    spec = cfg.get("strategies")
    supported = supported_strategies(ctx.config)
    self.strategies = parse_strategies(spec) if spec else list(supported)
    self.ratios = parse_ratios(cfg.get("ratios"))
    self.rows: list[dict] = []

  def run(self, params, step: int) -> Iterator[tuple[str, dict]]:
    self.rows = sweep(
      self.ctx, params, self.ctx.config, self.datasets, self.strategies, self.ratios, step
    )
    for row in self.rows:
      yield f"{row['dataset']}/{row['strategy']}/{row['ratio']:g}", row
