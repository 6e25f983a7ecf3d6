r"""MINR with the GINR hypernetwork (instance pattern composers).

Everything not set here is configs/transinr.py's (data, masking, loop, mesh).
The default is the paper's GINR model on CelebA's settings (182 px, 75% of a
14x14 mask grid, 43,680,771 parameters: minr_jax/models/ginr.py), with your
images from `--config.dataset.path`:

  python -m minr_jax.main --config=configs/ginr.py --workdir=runs/ginr \
      --config.dataset.path=/data/my_images

Variants, after a colon:
  celeba      30 epochs of 162,770 images at batch 32, Fourier sigma 64
  imagenette  400 epochs of 9,469 images, sigma 128, coordinate noise
  indoor      400 epochs of 5,360 images, sigma 128, coordinate noise
  demo        64 px, a narrow hypernetwork, scikit-image's photos (no download)
  photos64    the demo's GINR on 64-px general photos, 30,000 steps (an image folder:
              --config.dataset.path; docs/pretrained_ginr_photos.md)
  photos64_lpips  pretrained/ginr_photos64 fine-tuned 2,000 steps with an LPIPS term in
              the loss (config.lpips_weight; not the paper's loss: docs/ood.md)
  tiny        a few-second smoke run on the demo data (what the tests build on)

GINR-only model fields: family ('ginr': minr_jax/families.py builds the model),
ginr_rank, ginr_layer, ginr_normalize_shared and coord_noise. model.num_groups
is TransINR's and unused here.
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections


def _sibling(name: str):
  """configs/<name>.py as a module, however this file was loaded (by path or as a package)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"minr_jax_configs_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


transinr = _sibling("transinr")  # configs/transinr.py

# variant: (Fourier sigma, coord_noise). Epochs and image counts: transinr.PAPER_DATASETS.
PAPER_GINR = {
  "celeba": (64.0, 0.0),
  "imagenette": (128.0, 0.5),
  "indoor": (128.0, 0.5),
}


# The checkout's shipped GINR photo model: what photos64_lpips fine-tunes.
PRETRAINED_GINR_PHOTOS64 = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pretrained", "ginr_photos64"
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The paper's GINR config, changed by the variant named in `arg`."""
  variant = arg or ""
  own = ("demo", "photos64", "photos64_lpips", "tiny")
  if variant and variant not in PAPER_GINR and variant not in own:
    raise ValueError(
      f"unknown variant {variant!r} of configs/ginr.py: use '', "
      f"{', '.join(PAPER_GINR)}, 'demo', 'photos64', 'photos64_lpips' or 'tiny'"
    )
  c = transinr.get_config(arg)
  m = c.model
  m.family = "ginr"  # str: transinr | ginr | mae (minr_jax/families.py).
  m.qkv_bias = True  # bool: GINR's query/key/value projections have biases.
  m.dropout = 0.1  # float: GINR's residual dropout (needs a 'dropout' rng in training).
  m.ginr_rank = 256  # int: weight tokens = rank of the instance-specific layer U @ V.
  m.ginr_layer = 1  # int: index of the one instance-specific INR layer.
  # bool: shared INR layers' weight columns normalised to unit norm too (GINR's default).
  m.ginr_normalize_shared = True
  # float: training-only per-coordinate jitter, in pixel spacings (2 / H): every
  # coordinate of every pixel gets its own U(-coord_noise, coord_noise) x 2 / H,
  # independently per image and axis, while targets stay the grid's pixels.
  # GINR's 'coordwise' noise is 0.5 (Imagenette, Indoor); 0 = off. Applied in
  # the training step only (evaluation renders the exact grid).
  m.coord_noise = 0.0

  if variant in ("", *PAPER_GINR):
    m.ff_sigma, m.coord_noise = PAPER_GINR[variant or "celeba"]
    c.batch_size = 32  # int: GINR-MINR's batch.
    c.learning_rate = 1e-4
    c.lr_decay_at = 0.8  # the rate drops x0.1 after 80% of the steps, as TransINR's
    _, num_images, epochs = transinr.PAPER_DATASETS[variant or "celeba"]
    # CelebA 5,087 x 30 = 152,610; Imagenette 296 x 400 = 118,400; Indoor 168 x 400 = 67,200.
    c.num_train_steps = transinr.steps_for_epochs(num_images, epochs, c.batch_size)
  elif variant == "demo":
    m.ginr_rank = 64
  elif variant in ("photos64", "photos64_lpips"):
    # transinr's photos64 recipe (data, crops, flips, Adam 5e-4, warm-up) on GINR, three
    # times as long: the 10,000-step TransINR run's lead was still growing at its end, and
    # GINR led TransINR at equal compute on every panel of docs/ood.md's study.
    m.ginr_rank = 64
    c.num_train_steps = 30000
    c.eval_every_steps = 5000
    c.checkpoint_every_steps = 5000
    if variant == "photos64_lpips":
      # The shipped GINR photo model fine-tuned as transinr's photos64_lpips fine-tunes
      # pretrained/photos64 (same weight, rate and length), so the two compare.
      transinr._photos64_lpips(c)
      c.init_from = PRETRAINED_GINR_PHOTOS64
  elif variant == "tiny":
    m.ginr_rank = 8
  return c
