r"""Command line: train and evaluate MINR, or print the model's parameters.

  python -m minr_jax.main --config=configs/transinr.py:demo --workdir=runs/demo
  python -m minr_jax.main --config=configs/transinr.py --summary
  python -m minr_jax.main --config=configs/transinr.py --workdir=runs/x \
      --config.dataset.path=/data/images --config.batch_size=32

Re-running the same command on the same workdir resumes from its newest
checkpoint. Bad input stops with one line, `error: ...`, before any compile.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from minr_jax.config import ConfigError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/transinr.py:demo.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, "
                               "metrics.jsonl, TensorBoard files and PNG grids.")
_SUMMARY = flags.DEFINE_bool("summary", False, "Print the parameter table and exit.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # INFO lines from JAX and TFDS (backend probing, dataset info) drown the
  # progress lines; warnings still show.
  logging.set_verbosity(logging.WARNING)
  # Imported here so that `--help` and flag errors don't wait for JAX.
  from minr_jax import train

  config = _CONFIG.value
  try:
    if _SUMMARY.value:
      print(train.summary(config))
      return
    if not _WORKDIR.value:
      raise ConfigError("--workdir is required to train")
    train.train_and_evaluate(config, _WORKDIR.value)
  except ConfigError as e:
    sys.exit(f"error: {e}")


def run() -> None:
  flags.mark_flag_as_required("config")
  app.run(main)


if __name__ == "__main__":
  run()
