r"""Evaluate a trained workdir's checkpoint on one or more datasets.

  python -m minr_jax.evaluate --workdir=runs/demo
  python -m minr_jax.evaluate --workdir=runs/celeba \
      --datasets=celeb_a,imagenette,mit_indoor67:/data/indoor67 [--step=N]

Restores only the parameters (no optimizer state) of the newest checkpoint
(or `--step`) onto whatever devices are present, evaluates every listed
dataset's evaluation split under the fixed, seeded masks of the run's config
(`eval_mask_seed`; `--mask_strategy=random_exact` for exact-count masks), and writes
`DIR/eval/<step>/results.{json,csv,md}` with the three PSNR figures, the
mean-colour-fill and masked-input baselines and the image count per dataset,
plus a PNG grid per dataset. Without `--datasets` it evaluates the datasets
the run evaluated during training.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import sys
from typing import Any

import jax
import ml_collections
from absl import app, flags, logging

from minr_jax import checkpoint, metrics, sharding, train
from minr_jax.config import ConfigError, load_saved, validate

COLUMNS = ("psnr_full", "psnr_masked", "psnr_pasted", "psnr_full_mean_fill",
           "psnr_full_masked_input", "num_images")


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a workdir was trained with (its config.json; `config.load_saved`)."""
  return load_saved(workdir)


def write_results(out_dir: str, step: int, results: dict[str, dict[str, float]],
                  config: ml_collections.ConfigDict) -> None:
  """results.json, results.csv and results.md in out_dir."""
  os.makedirs(out_dir, exist_ok=True)
  kind = {"random": "independent (Bernoulli) per-patch",
          "random_exact": "exact-count random"}.get(config.eval_mask_strategy,
                                                    config.eval_mask_strategy)
  masking = (f"{kind} masks, ratio {config.mask_ratio}, {config.mask_grid}x"
             f"{config.mask_grid} patch grid, seed {config.eval_mask_seed}")
  with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump(dict(step=step, masking=masking, results=results), f, indent=2)
  with open(os.path.join(out_dir, "results.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(("dataset",) + COLUMNS)
    for label, r in results.items():
      w.writerow((label,) + tuple(r[c] for c in COLUMNS))
  lines = [f"Checkpoint step {step}; {masking}.", "",
           "| dataset | " + " | ".join(COLUMNS) + " |",
           "|---" * (len(COLUMNS) + 1) + "|"]
  for label, r in results.items():
    cells = [f"{r[c]:.3f}" if c != "num_images" else str(int(r[c])) for c in COLUMNS]
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  with open(os.path.join(out_dir, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def restore_model(workdir: str, config: ml_collections.ConfigDict, mesh,
                  step: int | None = None) -> tuple[int, Any, Any, Any]:
  """Restores only the parameters of checkpoint `step` (default: newest) onto mesh.

  Returns (step, model, params, params_sharding). Raises ConfigError if there
  is no such checkpoint or it holds a model of another shape.
  """
  model = train.build_model(config)
  abstract = jax.eval_shape(functools.partial(train.init_params, model),
                            jax.random.key(0))
  params_sharding = sharding.state_shardings(mesh, abstract)
  abstract = sharding.with_shardings(abstract, params_sharding)
  manager = checkpoint.make_manager(workdir, config.keep_checkpoints)
  step = checkpoint.latest_step(manager) if step is None else step
  if step is None or step not in manager.all_steps():
    raise ConfigError(f"no checkpoint {'' if step is None else step} in "
                      f"{os.path.join(workdir, 'checkpoints')}")
  checkpoint.check_compatible(manager, step, abstract)
  params = checkpoint.restore_params(manager, step, abstract)
  manager.close()
  return step, model, params, params_sharding


def restore_eval_step(workdir: str, config: ml_collections.ConfigDict,
                      step: int | None = None) -> tuple[Any, int, Any, Any]:
  """(mesh, step, params, jitted train.eval_step) for a workdir's checkpoint under config.

  The mesh is config's over the devices present; the batch sizes are checked
  against it before anything is restored.
  """
  mesh = sharding.make_mesh(config)
  validate(config, num_devices=sharding.batch_devices(mesh))
  step, model, params, params_sharding = restore_model(workdir, config, mesh, step)
  eval_fn = jax.jit(functools.partial(train.eval_step, model=model, config=config),
                    in_shardings=(params_sharding, sharding.batch_sharding(mesh)))
  return mesh, step, params, eval_fn


def evaluate_workdir(workdir: str, datasets: str | None = None, step: int | None = None,
                     max_images: int | None = None, mask_strategy: str | None = None
                     ) -> tuple[int, dict[str, dict[str, float]]]:
  """Evaluates a workdir's checkpoint; returns (step, {dataset label: metrics})."""
  config = load_config(workdir)
  if max_images is not None:
    config.dataset.eval_max_images = max_images
  if mask_strategy is not None:
    config.eval_mask_strategy = mask_strategy
  validate(config)
  entries = train.parse_datasets(datasets) if datasets else train.eval_datasets(config)
  train.check_eval_datasets(config, entries)
  mesh, step, params, eval_fn = restore_eval_step(workdir, config, step)
  out_dir = os.path.join(workdir, "eval", str(step))
  with metrics.MetricWriter(out_dir, tensorboard=False,
                            enabled=jax.process_index() == 0) as writer:
    results = train.evaluate_datasets(eval_fn, params, config, mesh, entries, step,
                                      writer, out_dir)
  if jax.process_index() == 0:
    write_results(out_dir, step, results, config)
    print(f"wrote {out_dir}/results.{{json,csv,md}}")
  return step, results


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  try:
    evaluate_workdir(f.workdir, f.datasets, f.step, f.max_images, f.mask_strategy)
  except ConfigError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  # Flags are defined only for the command line, so that importing this module
  # (benchmarks, notebooks) defines none.
  flags.DEFINE_string("workdir", None, "A training workdir.", required=True)
  flags.DEFINE_string("datasets", None, "Comma-separated name[:path] entries, e.g. "
                      "'celeb_a,image_folder:/data/x'. Default: the run's evaluation datasets.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).")
  flags.DEFINE_integer("max_images", None, "Evaluate at most this many images per dataset.")
  flags.DEFINE_string("mask_strategy", None, "Evaluation mask strategy, e.g. random_exact "
                      "(default: the run's config.eval_mask_strategy).")
  app.run(main)
