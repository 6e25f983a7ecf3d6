"""`minr-probe` / `python -m minr_jax.probe`.

`inference.probe`: a linear probe on saved embeddings.
"""

from __future__ import annotations

from absl import flags

from minr_jax import cli
from minr_jax.errors import ConfigError
from minr_jax.inference import probe


def _body(args: list[str]) -> None:
  del args
  f = flags.FLAGS
  try:
    sweep = [float(v) for v in f.l2_sweep]
  except ValueError:
    raise ConfigError(
      f"--l2_sweep must be comma-separated numbers, got {','.join(f.l2_sweep)}"
    ) from None
  probe.run(f.train, f.test, f.steps, f.lr, f.l2, f.output, sweep, f.val_fraction, f.split_seed)


def main() -> None:
  flags.DEFINE_string("train", None, "Embeddings to fit on (.npz or .array_record).", required=True)
  flags.DEFINE_string("test", None, "Embeddings to score.", required=True)
  flags.DEFINE_integer("steps", probe.DEFAULT_STEPS, "Full-batch Adam steps (>= 1).", lower_bound=1)
  flags.DEFINE_float("lr", probe.DEFAULT_LR, "Adam learning rate (> 0).", lower_bound=0.0)
  cli.exclusive("lr", low=0.0)
  flags.DEFINE_float(
    "l2",
    None,
    "Weight of l2 * ||W||^2, >= 0; unset: chosen from --l2_sweep on a validation split of --train.",
    lower_bound=0.0,
  )
  flags.DEFINE_list(
    "l2_sweep",
    [f"{v:g}" for v in probe.DEFAULT_L2_SWEEP],
    "l2 values tried on the validation split.",
  )
  flags.DEFINE_float(
    "val_fraction",
    probe.DEFAULT_VAL_FRACTION,
    "Fraction of each training class held out to choose l2, in (0, 1).",
    lower_bound=0.0,
  )
  cli.exclusive("val_fraction", low=0.0, high=1.0)
  flags.DEFINE_integer(
    "split_seed", probe.DEFAULT_SPLIT_SEED, "Seed of the validation split.", lower_bound=0
  )
  flags.DEFINE_string("output", None, "Write the results as JSON here.")
  cli.run(_body)


if __name__ == "__main__":
  main()
