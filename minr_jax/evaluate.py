r"""Evaluate a trained workdir's checkpoint on one or more datasets.

An alias of the one evaluation command (`minr_jax.eval_only`, docs/evaluators.md):
its `reconstruction` and `grids` evaluators on --datasets, plus a results table.

  python -m minr_jax.evaluate --workdir=runs/demo
  python -m minr_jax.evaluate --workdir=runs/celeba \
      --datasets=celeb_a,imagenette,mit_indoor67:/data/indoor67 [--step=N]

`--workdir` is a workdir or one of its `checkpoints/<step>` directories.
Restores only the parameters (no optimizer state) of the newest checkpoint
(or `--step`), read-only, onto whatever devices are present, evaluates every
listed dataset's evaluation split under the fixed, seeded masks of the run's
config (`eval_mask_seed`; `--mask_strategy=random_exact` for exact-count
masks), and writes `DIR/eval/<step>/results.{json,csv,md}` with the three
PSNR figures, the interpolation, mean-colour-fill and masked-input baselines
and the image count per dataset, plus a PNG grid per dataset. Without
`--datasets` it evaluates the datasets the run evaluated during training.
`--output=DIR` writes them to DIR instead, leaving the workdir untouched; on a
read-only workdir without `--output` they go to
`~/.cache/minr_jax/results/<workdir name>/eval/<step>/`, said in one line.
"""

from __future__ import annotations

import jax
import ml_collections

from minr_jax import api, eval_only, evaluation, families, paths
from minr_jax.config import ConfigError

COLUMNS = (
  "psnr_full",
  "psnr_masked",
  "psnr_pasted",
  "psnr_full_interpolation",
  "psnr_full_mean_fill",
  "psnr_full_masked_input",
  "num_images",
)


def masking_text(config) -> str:
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
  r = api.restore(workdir, step)
  config = r.config
  if max_images is not None:
    config.dataset.eval_max_images = max_images
  if mask_strategy is not None:
    config.eval_mask_strategy = mask_strategy
  families.check(config, num_devices=r.mesh.size)
  entries = (
    evaluation.parse_datasets(datasets)
    if datasets is not None
    else evaluation.eval_datasets(config)
  )
  evaluation.check_datasets(
    config, entries, "--datasets" if datasets is not None else "config.eval_datasets"
  )
  spec = datasets or ""  # checked above; empty = the run's evaluation datasets
  evals = ml_collections.ConfigDict(
    dict(
      reconstruction=dict(type="reconstruction", datasets=spec, split="eval"),
      grids=dict(type="grids", datasets=spec, num_images=config.num_grid_images),
    )
  )
  out_dir = paths.results_dir(r.workdir, "eval", r.step, output)
  found = eval_only.run_checkpoint(r, config, evals, out_dir)[1]
  results = found["reconstruction"]
  if jax.process_index() == 0:
    rows = [dict(dataset=label, **means) for label, means in results.items()]
    text = masking_text(config)
    evaluation.write_results(
      out_dir,
      rows,
      ("dataset",) + COLUMNS,
      [f"Checkpoint step {r.step}; {text}."],
      dict(step=r.step, masking=text, results=results),
    )
    print(f"wrote {out_dir}/results.{{json,csv,md}}")
  return r.step, results


if __name__ == "__main__":  # the flags live in minr_jax.commands.evaluate
  from minr_jax.commands import evaluate as _command

  _command.main()
