"""Runs declared evaluators on restored checkpoints: the body of `minr_jax.evaluate`.

`evaluate_workdir` scores one checkpoint on datasets and writes a results table;
`evaluate_checkpoints` runs a config's declared `evals` on one or more checkpoints.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections

from minr_jax import families, paths, writers
from minr_jax.config import ConfigError
from minr_jax.evaluation import registry, scoring
from minr_jax.inference import restore


def run_checkpoint(
  r: restore.Restored,
  config: ml_collections.ConfigDict,
  evals: ml_collections.ConfigDict,
  out_dir: str,
  *,
  write_metrics: bool = True,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
  """Runs every entry of `evals` (checked first) on restored checkpoint `r` with
  `config`; writes metrics.jsonl and PNG grids to out_dir (metrics.jsonl only with
  write_metrics). Returns ({name: evaluator}, {name: {key: result}})."""
  registry.check(config, evals, training=False)
  enabled = write_metrics and jax.process_index() == 0
  with writers.MetricWriter(out_dir, tensorboard=False, enabled=enabled) as writer:
    ctx = registry.EvalContext(
      config=config,
      mesh=r.mesh,
      model=r.model,
      family=r.family,
      params_sharding=r.params_sharding,
      writer=registry.ResultsWriter(writer, out_dir, image_subdir=""),
      out_dir=out_dir,
      workdir=r.workdir,
    )
    built = registry.build(evals, ctx)
    results = registry.run_all(built, evals, r.params, r.step, ctx.writer)
  return built, results


def _load_evals(config: ml_collections.ConfigDict | None, names: str | None, run_config):
  """The entries to run: --config's evals (else the run's declared ones), by --evals."""
  if config is not None:
    if "evals" not in config or not isinstance(config.evals, ml_collections.ConfigDict):
      raise ConfigError("--config must declare config.evals = {name: {type: ..., ...}}")
    evals = config.evals
  else:
    evals = registry.declared(run_config)
  return registry.select(evals, names)


def evaluate_checkpoints(
  workdirs: Sequence[str],
  evals_config: ml_collections.ConfigDict | None = None,
  names: str | None = None,
  step: int | None = None,
  output: str | None = None,
) -> dict[str, dict[str, Any]]:
  """Runs the declared evaluators on every workdir's checkpoint; returns
  {workdir: {'step', 'evals': {name: {key: result}}}}."""
  workdirs = [os.fspath(w) for w in workdirs]
  if not workdirs:
    raise ConfigError("give at least one --workdir")
  if output:
    paths.check_reachable(output, "--output")
  # One subfolder of --output per workdir: its base name, numbered if two clash.
  bases = [os.path.basename(w.rstrip("/")) or "run" for w in workdirs]
  folders = [b if bases.count(b) == 1 else f"{i}_{b}" for i, b in enumerate(bases)]
  out: dict[str, dict[str, Any]] = {}
  for workdir in workdirs:
    r = restore.restore(workdir, step)
    config = r.config
    families.check(config, num_devices=r.mesh.size)
    evals = _load_evals(evals_config, names, config)
    single = evals
    sub = output and os.path.join(output, folders[workdirs.index(workdir)])
    out_dir = paths.results_dir(r.workdir, "eval", r.step, sub if len(workdirs) > 1 else output)
    _, results = run_checkpoint(r, config, single, out_dir)
    out[workdir] = dict(step=r.step, evals=results)
    if jax.process_index() == 0:
      paths.makedirs(paths.as_path(out_dir))
      text = json.dumps(
        scoring.json_safe(dict(step=r.step, evals=results)), indent=2, default=float
      )
      paths.write_text(paths.as_path(out_dir) / "results.json", text)
      print(f"wrote {out_dir}/results.json", flush=True)
  return out


COLUMNS = (
  "psnr_full",
  "psnr_masked",
  "psnr_pasted",
  "best_classical_psnr",
  "psnr_best_classical",
  "psnr_lead_over_best",
  "ssim_pasted",
  "ssim_best_classical",
  "lpips_pasted",
  "best_classical_lpips",
  "lpips_best_classical",
  "psnr_full_interpolation",
  "psnr_full_telea",
  "psnr_full_navier_stokes",
  "psnr_full_biharmonic",
  "psnr_full_mean_fill",
  "psnr_full_masked_input",
  "num_images",
)


def eval_masks_text(config) -> str:
  """The evaluation masks in words, for result files."""
  kind = {"random": "independent (Bernoulli) per-patch", "random_exact": "exact-count random"}.get(
    config.eval_mask_strategy, config.eval_mask_strategy
  )
  return (
    f"{kind} masks, ratio {config.mask_ratio}, {config.mask_grid}x"
    f"{config.mask_grid} patch grid, seed {config.eval_mask_seed}"
  )


def evaluate_workdir(
  workdir: str,
  datasets: str | None = None,
  step: int | None = None,
  max_images: int | None = None,
  mask_strategy: str | None = None,
  output: str | None = None,
) -> tuple[int, dict[str, dict[str, float]]]:
  """Evaluates a workdir's checkpoint; returns (step, {dataset label: metrics}).

  Results go to `output` if given, else `<workdir>/eval/<step>/`, or, if the
  workdir is read-only, a folder under ~/.cache/minr_jax/results named in one
  line (`paths.results_dir`). max_images: 0 = all (as config.dataset.eval_max_images).
  """
  if max_images is not None and (isinstance(max_images, bool) or max_images < 0):
    raise ConfigError(f"--max_images must be >= 0 (0 = all), got {max_images}")
  if output:
    paths.check_reachable(output, "--output")
  r = restore.restore(workdir, step)
  config = r.config
  if max_images is not None:
    config.dataset.eval_max_images = max_images
  if mask_strategy is not None:
    config.eval_mask_strategy = mask_strategy
  families.check(config, num_devices=r.mesh.size)
  entries = (
    scoring.parse_datasets(datasets) if datasets is not None else scoring.eval_datasets(config)
  )
  scoring.check_datasets(
    config, entries, "--datasets" if datasets is not None else "config.eval_datasets"
  )
  spec = datasets or ""  # checked above; empty = the run's evaluation datasets
  evals = ml_collections.ConfigDict(
    dict(
      reconstruction=dict(
        type="reconstruction",
        datasets=spec,
        split="eval",
        classical=registry.declared(config).get("reconstruction", {}).get("classical", True),
      ),
      grids=dict(type="grids", datasets=spec, num_images=config.num_grid_images),
    )
  )
  out_dir = paths.results_dir(r.workdir, "eval", r.step, output)
  found = run_checkpoint(r, config, evals, out_dir)[1]
  results = found["reconstruction"]
  if jax.process_index() == 0:
    rows = [dict(dataset=label, **means) for label, means in results.items()]
    text = eval_masks_text(config)
    scoring.write_results(
      out_dir,
      rows,
      ("dataset",) + COLUMNS,
      [f"Checkpoint step {r.step}; {text}."],
      dict(step=r.step, masking=text, results=results),
    )
    print(f"wrote {out_dir}/results.{{json,csv,md}}")
  return r.step, results
