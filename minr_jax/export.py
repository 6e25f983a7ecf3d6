r"""Export a trained workdir as a small, shareable one: config.json + parameters only.

  python -m minr_jax.export --workdir=runs/celeba64 --output=pretrained/celeba64 \
      [--step=N] [--dataset_path=/path/to/your/images]

The output is a workdir that `minr_jax.load`, `python -m minr_jax.evaluate`,
robustness, compare and embed read like any other:

  <output>/config.json                   the run's config, dataset.path replaced
  <output>/checkpoints/<step>/state      {'params': ...} only, float32
  <output>/checkpoints/<step>/config     the same config (what restores read first)

No optimizer state (Adam's moments are twice the parameters) and no data
iterator position are kept, so it cannot resume training. The config's
`dataset.path` (a folder on the machine that trained it) is replaced by
`--dataset_path`, default `PLACEHOLDER_PATH`; give your own folder to
evaluate with `--config`-free commands, e.g.
`python -m minr_jax.evaluate --workdir=<output> --datasets=image_folder:/my/faces`.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import numpy as np
from absl import app, flags, logging

from minr_jax.config import ConfigError

PLACEHOLDER_PATH = "/path/to/your/images"


def export(workdir: str, output: str, step: int | None = None,
           dataset_path: str | None = None) -> int:
  """Writes `output` (config.json + a params-only checkpoint); returns the step exported.

  Raises ConfigError if workdir has no such (intact) checkpoint or output
  already holds checkpoints.
  """
  from minr_jax import api, checkpoint  # noqa: PLC0415
  from minr_jax.config import load_saved  # noqa: PLC0415

  target = os.path.join(os.path.abspath(output), "checkpoints")
  if os.path.exists(target) and os.listdir(target):
    raise ConfigError(f"{target} already holds checkpoints; export into an empty folder")
  restored = api.restore(workdir, step, devices=1)
  params = jax.tree.map(lambda x: np.asarray(x, np.float32), restored.params)
  config = load_saved(restored.workdir)
  config.dataset.path = dataset_path or PLACEHOLDER_PATH
  os.makedirs(output, exist_ok=True)
  with open(os.path.join(output, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
    f.write("\n")
  manager = checkpoint.make_manager(output, keep=1)
  try:
    checkpoint.save(manager, restored.step, {"params": params}, None,
                    json.loads(config.to_json_best_effort()))
  finally:
    manager.close()
  return restored.step


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  try:
    step = export(f.workdir, f.output, f.step, f.dataset_path)
  except ConfigError as e:
    sys.exit(f"error: {e}")
  print(json.dumps(dict(output=f.output, step=step)))


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "A training workdir (or one of its step directories).",
                      required=True)
  flags.DEFINE_string("output", None, "The folder to write.", required=True)
  flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).")
  flags.DEFINE_string("dataset_path", None,
                      f"dataset.path written into config.json (default {PLACEHOLDER_PATH!r}).")
  app.run(main)
