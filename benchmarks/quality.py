r"""CPU-scale quality benchmark: in-domain and cross-domain PSNR on real images.

Trains a small TransINR-MINR (64 px, 8x8 mask grid, 75% masking, the `:demo`
hypernetwork) on one image folder for a fixed number of steps, then evaluates
its final checkpoint on the evaluation split of that folder and of the others
with fixed seeded masks, and writes a Markdown table with the mean-colour-fill
and masked-input baselines on the same images and masks:

  python benchmarks/quality.py --train=/path/to/celeba_sample \
      --eval=/path/to/imagenette_sample,/path/to/bsds_scenes \
      --steps=4000 --workdir=runs/quality_celeba

Each folder needs `train/` and `val/` (or `test/`) subfolders. The command,
the wall time and the machine are written beside the table
(`<workdir>/quality.md`). Re-running resumes the training.
"""

from __future__ import annotations

import os
import platform
import sys
import time

from absl import app, flags

from minr_jax.config import load_file
from minr_jax.evaluation import runner
from minr_jax.training import loop

TRANSINR = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "transinr.py"
)

_TRAIN = flags.DEFINE_string("train", None, "Image folder to train on.")
_EVAL = flags.DEFINE_string("eval", "", "Comma-separated other image folders to evaluate on.")
_STEPS = flags.DEFINE_integer("steps", 4000, "Training steps (batch 16).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
_DATA_DIR = flags.DEFINE_string(
  "data_dir", "~/tensorflow_datasets", "Where the folders are prepared as TFDS datasets."
)


def make_config(train_folder: str, steps: int, data_dir: str):
  """The `:demo` model and schedule on an image folder, for `steps` steps."""
  c = load_file(TRANSINR + ":demo")
  c.dataset.name = "image_folder"
  c.dataset.path = os.path.abspath(train_folder)
  c.dataset.data_dir = data_dir
  c.dataset.flip = True
  c.num_train_steps = steps
  c.eval_every_steps = steps
  c.checkpoint_every_steps = max(steps // 4, 1)
  c.log_every_steps = 100
  return c


def main(argv: list[str]) -> None:
  del argv
  if not _TRAIN.value or not _WORKDIR.value:
    sys.exit("error: --train and --workdir are required")
  config = make_config(_TRAIN.value, _STEPS.value, _DATA_DIR.value)
  start = time.time()
  loop.train_and_evaluate(config, _WORKDIR.value)
  train_seconds = time.time() - start
  folders = [config.dataset.path] + [os.path.abspath(f) for f in _EVAL.value.split(",") if f]
  step, results = runner.evaluate_workdir(
    _WORKDIR.value, ",".join(f"image_folder:{f}" for f in folders)
  )
  lines = [
    f"Trained on `{_TRAIN.value}` for {step} steps of 16 images ({config.resolution} px, "
    f"{config.mask_grid}x{config.mask_grid} mask grid, ratio {config.mask_ratio}).",
    f"Wall time of this invocation's training + evaluation: {train_seconds / 60:.1f} min "
    f"on {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}).",
    "Command: `python " + " ".join(sys.argv) + "`",
    "",
    "| eval dataset | images | psnr_full | psnr_masked | psnr_pasted | mean-colour fill "
    "| masked input |",
    "|---|---|---|---|---|---|---|",
  ]
  for label, r in results.items():
    lines.append(
      f"| {label} | {int(r['num_images'])} | {r['psnr_full']:.2f} | "
      f"{r['psnr_masked']:.2f} | {r['psnr_pasted']:.2f} | "
      f"{r['psnr_full_mean_fill']:.2f} | {r['psnr_full_masked_input']:.2f} |"
    )
  text = "\n".join(lines) + "\n"
  with open(os.path.join(_WORKDIR.value, "quality.md"), "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  app.run(main)
