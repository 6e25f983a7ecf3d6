"""What every command shares: flags defined only when run, one-line errors.

Each command module defines its flags inside `if __name__ == "__main__":` (so
importing it from a notebook, a test or another module defines none) and
hands its body to `run`:

  if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "...", required=True)
    cli.run(lambda args: evaluate_workdir(flags.FLAGS.workdir, ...))

`run` checks for stray arguments (unless the command takes positional ones),
keeps the log at WARNING (JAX's and TFDS's INFO lines drown the progress
lines), and turns a ConfigError into `error: <message>` on one line with exit
status 1, before anything compiles.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import app, logging

from minr_jax.config import ConfigError


def run(body: Callable[[list[str]], object], *, positional: bool = False) -> None:
  """Runs body(positional arguments) as an absl app (module docstring)."""

  def main(argv: list[str]) -> None:
    if not positional and len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    try:
      body(argv[1:])
    except ConfigError as e:
      sys.exit(f"error: {e}")

  app.run(main)
