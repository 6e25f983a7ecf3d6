"""`minr-embed` / `python -m minr_jax.embed`.

`inference.embed.run`: embeddings of a dataset from a checkpoint.
"""

from __future__ import annotations

from absl import flags

from minr_jax import cli
from minr_jax.inference import embed


def main() -> None:
  flags.DEFINE_string(
    "workdir", None, "A training workdir (or <workdir>/checkpoints/<step>).", required=True
  )
  flags.DEFINE_string(
    "dataset", None, "NAME or NAME:PATH, e.g. demo or image_folder:/data/x.", required=True
  )
  flags.DEFINE_enum("split", "eval", list(embed.SPLITS), "Which split to embed.")
  flags.DEFINE_string(
    "kind",
    "data_mean",
    "data_mean | weight_tokens | weight_mean | modulations (MINR); data_mean | cls (MAE).",
  )
  flags.DEFINE_string("output", None, "FILE.npz or FILE.array_record.", required=True)
  flags.DEFINE_bool("masked", False, "Hide patches with the run's fixed evaluation masks.")
  flags.DEFINE_integer(
    "max_images", None, "Embed at most this many images, >= 1 (default: all).", lower_bound=1
  )
  flags.DEFINE_integer(
    "batch_size",
    None,
    "Images per device call (default: the run's eval_batch_size).",
    lower_bound=1,
  )
  cli.define_step()
  f = flags.FLAGS
  cli.run(
    lambda args: embed.run(
      f.workdir, f.dataset, f.output, f.split, f.kind, f.masked, f.max_images, f.batch_size, f.step
    )
  )


if __name__ == "__main__":
  main()
