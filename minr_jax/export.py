"""`minr-export` / `python -m minr_jax.export`.

`inference.export.export`: a small, params-only copy of a checkpoint.
"""

from __future__ import annotations

import json

from absl import flags

from minr_jax import checkpoint, cli
from minr_jax.config import ConfigError
from minr_jax.inference import export


def main() -> None:
  flags.DEFINE_string(
    "workdir", None, "A training workdir (or one of its step directories).", required=True
  )
  flags.DEFINE_string("output", None, "The folder to write (required unless --write_manifest).")
  cli.define_step()
  flags.DEFINE_string(
    "dataset_path",
    None,
    f"dataset.path written into config.json (default {export.PLACEHOLDER_PATH!r}).",
  )
  flags.DEFINE_bool(
    "write_manifest",
    False,
    f"Write no copy: add the missing {checkpoint.MANIFEST} to the step --workdir names "
    "(<workdir>/checkpoints/<step>, or --step), once you have checked it.",
  )
  f = flags.FLAGS

  def body(args: list[str]) -> None:
    del args
    if f.write_manifest:
      if f.output is not None:
        raise ConfigError("--write_manifest writes no copy: leave out --output")
      print(f"wrote {export.write_manifest(f.workdir, f.step)}")
      return
    if f.output is None:
      raise ConfigError("--output is required")
    step = export.export(f.workdir, f.output, f.step, f.dataset_path)
    print(json.dumps(dict(output=f.output, step=step)))

  cli.run(body)


if __name__ == "__main__":
  main()
