r"""Linear probes of a checkpoint's embeddings against a random-init twin and raw pixels.

  python benchmarks/probe_baselines.py --workdir=pretrained/celeba64 \
      --folder=/path/to/labelled_images [--kinds=data_mean,weight_mean,modulations] \
      [--seeds=0,1,2] [--output=probe_baselines.md]

`--folder` holds `train/<class>/` and `val/<class>/` image folders. For each
embedding kind the same probe (`minr_jax.probe.probe`: l2 chosen on a
validation split carved from train, then refitted on all of train) is fitted
on three inputs, each embedded from the same images:

- the checkpoint's embeddings (unmasked input),
- the embeddings of the same model with randomly initialised parameters
  (`family.init` with `--seeds`; the mean and spread over seeds are shown):
  what the architecture gives before any training,
- raw pixels, box-downsampled to 8x8 and 16x16 (benchmarks/pixel_probe.py).

An embedding has learned something useful for the labels only where it beats
both the random-init twin and the pixels. Prints a Markdown table (also
written to --output).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time

import jax
import numpy as np

import minr_jax
from minr_jax import families
from minr_jax.inference import embed, probe
from minr_jax.inference import model as model_lib


def _pixel_probe():
  """benchmarks/pixel_probe.py, loaded by path (no sys.path edits)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pixel_probe.py")
  spec = importlib.util.spec_from_file_location("pixel_probe", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


pixel_probe = _pixel_probe()


def random_twin(model: model_lib.Model, seed: int) -> model_lib.Model:
  """`model` with freshly initialised parameters (same config, mesh and batch size)."""
  family = families.get(model.config)
  params = family.init(model.model, jax.random.key(seed))
  return model_lib.Model(
    config=model.config,
    family=family,
    model=model.model,
    params=params,
    step=0,
    mesh=model.mesh,
    batch_size=model.batch_size,
  )


def embed_splits(model: model_lib.Model, folder: str, kind: str) -> tuple[dict, dict]:
  sets = [
    embed.embed_dataset(model, f"image_folder:{folder}", split=s, kind=kind, progress=False)
    for s in ("train", "eval")
  ]
  return sets[0], sets[1]


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--folder", required=True)
  p.add_argument("--kinds", default="data_mean,weight_mean,modulations")
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--output", default=None)
  args = p.parse_args()
  t0 = time.time()
  model = minr_jax.load(args.workdir)
  seeds = [int(s) for s in args.seeds.split(",")]
  rows = []
  for kind in args.kinds.split(","):
    train, test = embed_splits(model, args.folder, kind)
    trained = probe.probe(train, test)
    rand = []
    for seed in seeds:
      rtrain, rtest = embed_splits(random_twin(model, seed), args.folder, kind)
      rand.append(probe.probe(rtrain, rtest)["accuracy"])
    rows.append(
      (
        f"`{kind}`",
        trained["dim"],
        f"{trained['accuracy']:.3f}",
        f"{np.mean(rand):.3f} ± {np.std(rand):.3f}",
        f"{trained['majority_baseline']:.3f}",
      )
    )
    print(
      f"{kind}: trained {trained['accuracy']:.3f}, random init {np.mean(rand):.3f} "
      f"(seeds {seeds}: {', '.join(f'{a:.3f}' for a in rand)})",
      flush=True,
    )
  for size in (8, 16):
    r = probe.probe(
      pixel_probe.load(args.folder, "train", size), pixel_probe.load(args.folder, "val", size)
    )
    rows.append(
      (
        f"raw pixels {size}x{size}x3",
        3 * size * size,
        f"{r['accuracy']:.3f}",
        "-",
        f"{r['majority_baseline']:.3f}",
      )
    )
  header = (
    "| input | dim | test accuracy | same model, random init (mean ± sd over "
    f"{len(seeds)} seeds) | majority class |\n|---|---|---|---|---|\n"
  )
  table = header + "\n".join("| " + " | ".join(str(c) for c in row) + " |" for row in rows)
  note = (
    f"\n\n{args.workdir} (step {model.step}), {args.folder}; jax {jax.__version__}, "
    f"{jax.devices()[0].device_kind}; {time.time() - t0:.0f} s\n"
  )
  print(table + note)
  if args.output:
    with open(args.output, "w") as f:
      f.write(table + note)


if __name__ == "__main__":
  main()
