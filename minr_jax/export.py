"""`minr-export` / `python -m minr_jax.export`.

`inference.export.export`: a small, params-only copy of a checkpoint.
"""

from __future__ import annotations

import json

from absl import flags

from minr_jax import cli
from minr_jax.inference import export


def main() -> None:
  flags.DEFINE_string(
    "workdir", None, "A training workdir (or one of its step directories).", required=True
  )
  flags.DEFINE_string("output", None, "The folder to write.", required=True)
  flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).")
  flags.DEFINE_string(
    "dataset_path",
    None,
    f"dataset.path written into config.json (default {export.PLACEHOLDER_PATH!r}).",
  )
  f = flags.FLAGS

  def body(args: list[str]) -> None:
    del args
    step = export.export(f.workdir, f.output, f.step, f.dataset_path)
    print(json.dumps(dict(output=f.output, step=step)))

  cli.run(body)


if __name__ == "__main__":
  main()
