r"""CPU-scale, equal-budget comparison of TransINR-MINR, GINR-MINR and MAE.

Trains each model's `:demo` config (64 px, 8x8 mask grid, 75% masking,
0.86-0.94 M parameters) on the same image folder for the same number of
steps of 16 images, then compares their final checkpoints with
`python -m minr_jax.compare` on the evaluation split of that folder and of
the others, under the same fixed exact-count masks (48 of 64 patches hidden
in every image):

  python benchmarks/compare_models.py --train=/path/to/celeba_sample \
      --eval=/path/to/imagenette_sample,/path/to/bsds_scenes \
      --steps=3000 --workdir=runs/compare

Training masks follow each paper: MINR draws each patch independently
(`random`, 75% on average), MAE hides exactly 75% (`random_exact`, its static
token count). Each model keeps its own recipe (MINR: Adam 5e-4 as the demo;
MAE: AdamW, warmup, cosine, peak 5e-4). Writes `<workdir>/<model>/` runs and
`<workdir>/compare/` (table, CSV, JSON, side-by-side figure) with the command,
wall times and machine. Re-running resumes each training.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time

from absl import app, flags

from minr_jax.config import load_file
from minr_jax.training import loop

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
MODELS = ("transinr", "ginr", "mae")

_TRAIN = flags.DEFINE_string("train", None, "Image folder to train on (train/ and val/).")
_EVAL = flags.DEFINE_string("eval", "", "Comma-separated other image folders to evaluate on.")
_STEPS = flags.DEFINE_integer("steps", 3000, "Training steps of 16 images, for every model.")
_MODELS = flags.DEFINE_string("models", "transinr,ginr,mae", "Models to train and compare.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
_DATA_DIR = flags.DEFINE_string(
  "data_dir", "~/tensorflow_datasets", "Where the folders are prepared as TFDS datasets."
)


def make_config(model: str, train_folder: str, steps: int, data_dir: str):
  """`configs/<model>.py:demo` on an image folder for `steps` steps."""
  c = load_file(os.path.join(CONFIG_DIR, f"{model}.py") + ":demo")
  c.dataset.name = "image_folder"
  c.dataset.path = os.path.abspath(train_folder)
  c.dataset.data_dir = data_dir
  c.dataset.flip = True
  c.num_train_steps = steps
  c.eval_every_steps = steps
  c.checkpoint_every_steps = max(steps // 4, 1)
  c.log_every_steps = 100
  c.eval_mask_strategy = "random_exact"  # the comparison's masks, for every model
  return c


def main(argv: list[str]) -> None:
  del argv
  if not _TRAIN.value or not _WORKDIR.value:
    sys.exit("error: --train and --workdir are required")
  models = [m for m in _MODELS.value.split(",") if m]
  unknown = [m for m in models if m not in MODELS]
  if unknown:
    sys.exit(f"error: --models: unknown model {unknown[0]!r}; choose from {','.join(MODELS)}")
  out_dir = os.path.join(_WORKDIR.value, "compare")
  times_path = os.path.join(out_dir, "train_seconds.json")
  recorded = json.load(open(times_path)) if os.path.exists(times_path) else {}
  workdirs, seconds = [], {}
  for model in models:
    config = make_config(model, _TRAIN.value, _STEPS.value, _DATA_DIR.value)
    workdir = os.path.join(_WORKDIR.value, model)
    done = _finished(workdir, _STEPS.value)
    start = time.time()
    loop.train_and_evaluate(config, workdir)
    # A run finished by an earlier invocation keeps that invocation's training time.
    seconds[model] = recorded[model] if done and model in recorded else time.time() - start
    workdirs.append(workdir)
    print(f"{model}: trained in {seconds[model] / 60:.1f} min", flush=True)
  os.makedirs(out_dir, exist_ok=True)
  with open(times_path, "w") as f:
    json.dump(seconds, f, indent=2)
  folders = [os.path.abspath(_TRAIN.value)] + [
    os.path.abspath(f) for f in _EVAL.value.split(",") if f
  ]
  from minr_jax.evaluation import compare

  note = (
    f"Each model trained {_STEPS.value} steps of 16 images on `{_TRAIN.value}` "
    f"(training wall times: "
    + ", ".join(f"{m} {s / 60:.1f} min" for m, s in seconds.items())
    + f"; {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}). "
    f"Command: `python {' '.join(sys.argv)}`"
  )
  compare.compare_workdirs(
    workdirs, ",".join(f"image_folder:{f}" for f in folders), out_dir, note=note
  )


def _finished(workdir: str, steps: int) -> bool:
  """True if workdir already holds the checkpoint of step `steps`."""
  directory = os.path.join(workdir, "checkpoints", str(steps))
  return os.path.isdir(directory)


if __name__ == "__main__":
  app.run(main)
