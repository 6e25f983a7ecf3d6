r"""Export a trained workdir as a small, shareable one: config.json + parameters only (`export`).

The body of `python -m minr_jax.export` (docs/pretrained.md). The copy cannot resume training,
and its config names no path of the machine that trained it.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from minr_jax import checkpoint, paths
from minr_jax.config import ConfigError
from minr_jax.inference import restore

PLACEHOLDER_PATH = "/path/to/your/images"


def export(
  workdir: str, output: str, step: int | None = None, dataset_path: str | None = None
) -> int:
  """Writes `output` (config.json + a params-only checkpoint); returns the step exported.

  `output` may be a local folder or a URL (gs://...), like every path of a run.
  Raises ConfigError if workdir has no such (intact) checkpoint, output's bucket
  is unreachable, output is a file, or output already holds checkpoints.
  """
  from minr_jax.config import load_saved  # noqa: PLC0415

  paths.check_reachable(output, "--output")
  if (
    not paths.is_url(output)
    and os.path.lexists(paths.abspath(output))
    and not os.path.isdir(paths.abspath(output))
  ):
    raise ConfigError(f"--output={output} is a file, not a folder; export into an empty folder")
  target = paths.as_path(output, "--output") / "checkpoints"
  if target.exists() and any(target.iterdir()):
    raise ConfigError(f"{target} already holds checkpoints; export into an empty folder")
  restored = restore.restore(workdir, step, devices=1)
  params = jax.tree.map(lambda x: np.asarray(x, np.float32), restored.params)
  config = load_saved(restored.workdir)
  config.dataset.path = dataset_path or PLACEHOLDER_PATH
  # Folders of the training machine: evaluate the folder given above by default.
  config.eval_datasets = ""
  config.eval_train_dataset = True
  paths.makedirs(output)
  paths.write_text(
    os.path.join(paths.abspath(output), "config.json"), config.to_json_best_effort(indent=2) + "\n"
  )
  manager = checkpoint.make_manager(output, keep=1)
  try:
    checkpoint.save(
      manager, restored.step, {"params": params}, None, json.loads(config.to_json_best_effort())
    )
  finally:
    manager.close()
  return restored.step


def write_manifest(path: str, step: int | None = None) -> str:
  """Writes the checksum manifest of a step that has none (saved before manifests
  existed, or copied without one), once it restores; returns the manifest's path.

  For a step the user has checked (evaluated, compared with its source): later
  loads verify it against these checksums. ConfigError if no step is named,
  the step already has a manifest (rewriting it would hide a file that changed
  since) or it does not restore.
  """
  workdir, step = restore.resolve_path(path, step)
  if step is None:
    raise ConfigError(
      "--write_manifest needs one step: --workdir=<workdir>/checkpoints/<step>, or --step"
    )
  directory = checkpoint.as_path(workdir) / "checkpoints" / str(step)
  if not directory.is_dir():
    raise ConfigError(f"no checkpoint {directory}")
  if (directory / checkpoint.MANIFEST).exists():
    raise ConfigError(
      f"{directory} already has its {checkpoint.MANIFEST}, checked on every load; "
      "it is not rewritten"
    )
  checkpoint.warn_unverified(directory, warn=lambda line: None)  # the step being fixed
  restore.restore(workdir, step, devices=1)  # a step that does not restore is refused
  checkpoint.write_manifest(directory)
  return str(directory / checkpoint.MANIFEST)
