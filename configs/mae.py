r"""The MAE baseline (minr_jax/models/mae.py) on MINR's data and masks.

Same data, resolution (182 px) and mask grid (14x14) as configs/transinr.py; a
13-pixel patch makes MAE's patch grid that same 14x14 grid, so both models
see the same masks. MAE masks exactly round(0.75 x 196) = 147 patches per
image ("random_exact", for training and the fixed evaluation masks); it
cannot take MINR's per-patch Bernoulli masks (a varying count of tokens).

Variants after a colon, comma-separated: at most one model size and at most
one data part.
  base        ViT-B encoder (12 blocks, 768 wide, 12 heads): the default
  large       ViT-L encoder (24 blocks, 1024 wide, 16 heads)
  celeba | imagenette | indoor
              the paper's datasets, as many epochs as the MINR runs there
              (30 / 400 / 400) at batch 64 (PAPER_BATCH_SIZE); without a
              data part: your images (--config.dataset.path) on CelebA's budget
  demo        64 px, patch 8 on the 8x8 mask grid, a narrow MAE, scikit-image's
              photos (no download); add base / large for the full-width model
  photos64    the demo MAE on 64-px general photos (an image folder: --config.dataset.path)
              with transinr's photos64 data recipe, for the training FLOPs of
              pretrained/photos64 (PHOTOS64_STEPS; docs/pretrained_mae_photos.md)
  tiny        a few-second smoke run on the demo data (what tests build on)
e.g.
  python -m minr_jax.main --config=configs/mae.py:base,celeba --workdir=runs/mae_b_celeba \
      --config.dataset.data_dir=...
  python -m minr_jax.main --config=configs/mae.py:demo --workdir=runs/mae_demo

Optimisation is MAE's recipe: AdamW (0.9, 0.95), weight decay 0.05 on
parameters with at least 2 dimensions (`mae.weight_decay_mask`: not on biases
and LayerNorms), learning_rate = base_learning_rate x batch_size / 256, linear
warmup then cosine decay to end_learning_rate (`mae.make_optimizer`).
learning_rate, warmup_steps and the paper datasets' num_train_steps are
linked to batch_size / num_train_steps (ml_collections references), so
`--config.batch_size=N` rescales them; setting one of them directly breaks
only that link.
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

MODEL_SIZES = ("base", "large")
DATA_PARTS = tuple(transinr.PAPER_DATASETS) + ("demo", "photos64", "tiny")

# pretrained/photos64 trained 10,000 TransINR steps of 18,103,791,616 FLOPs (XLA's count,
# docs/ood_study.json); a :demo MAE step is 2,349,839,616 FLOPs, so 77,042 MAE steps
# spend the same 181.0 TFLOP (ten times the equal-compute study's budget).
PHOTOS64_STEPS = 77_042

# MAE pretrains 800 epochs with 40 of warmup: 5% of training. Our budgets are
# far shorter (30-400 epochs), and we keep the same fraction.
WARMUP_FRACTION_DENOMINATOR = 20  # warmup_steps = num_train_steps // 20


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """MAE's config for `arg` = 'size,data' parts (see the module docstring); '' = base."""
  parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
  unknown = [p for p in parts if p not in MODEL_SIZES + DATA_PARTS]
  if unknown:
    raise ValueError(
      f"unknown variant {unknown[0]!r} of configs/mae.py: use a size "
      f"({', '.join(MODEL_SIZES)}) and/or a data part "
      f"({', '.join(DATA_PARTS)}), comma-separated"
    )
  sizes = [p for p in parts if p in MODEL_SIZES]
  datas = [p for p in parts if p in DATA_PARTS]
  if len(sizes) > 1 or len(datas) > 1:
    raise ValueError(f"configs/mae.py:{arg}: give at most one model size and one data part")
  size = sizes[0] if sizes else None
  data = datas[0] if datas else ""

  # Data, masks, loop, mesh: TransINR's (its model and Adam step-decay fields are replaced).
  c = transinr.get_config(data)
  del c["lr_decay_at"], c["lr_decay_factor"]

  # Masking: exactly round(mask_ratio * N) hidden per image, N = mask_grid^2.
  c.mask.strategy = "random_exact"  # str: MAE needs an exact count (a static token count).
  c.eval_mask_strategy = "random_exact"  # str: fixed, seeded evaluation masks, same count.
  # mask.ratio_min / ratio_max must stay unset: the count of visible tokens is static.

  # Optimisation (MAE): AdamW, warmup then cosine.
  c.optimizer = "adamw"  # str: the only one mae.make_optimizer builds.
  c.adam_b1 = 0.9  # float.
  c.adam_b2 = 0.95  # float: MAE's (not Adam's default 0.999).
  c.weight_decay = 0.05  # float: decoupled, on parameters with ndim >= 2 only.
  c.base_learning_rate = 1.5e-4  # float: the rate at batch 256 (linear scaling rule).
  # float: peak rate = base_learning_rate * batch_size / 256 (a linked reference).
  c.learning_rate = c.get_ref("base_learning_rate") * c.get_ref("batch_size") / 256
  c.lr_schedule = "warmup_cosine"  # str: linear 0 -> peak, cosine peak -> end.
  c.end_learning_rate = 0.0  # float: the cosine's final rate (MAE's min_lr = 0).

  if data in transinr.PAPER_DATASETS:
    _paper_dataset(c, data)
  elif not data:  # your own images (dataset.path): CelebA's budget, as configs/transinr.py
    _paper_budget(c, "celeba")
  # int: linear warmup steps: 5% of training (MAE: 40 of 800 epochs), linked.
  c.warmup_steps = c.get_ref("num_train_steps") // WARMUP_FRACTION_DENOMINATOR

  c.model = _model()
  if data == "demo":
    _demo(c)
  elif data == "photos64":
    _demo(c)
    _photos64(c)
  elif data == "tiny":
    _demo(c)
    _tiny(c)
  if size is not None or data not in ("demo", "photos64", "tiny"):
    _size(c.model, size or "base")
  return c


def _model() -> ml_collections.ConfigDict:
  """MAE's model fields; encoder sizes are set by `_size` (or demo / tiny)."""
  m = ml_collections.ConfigDict()
  m.family = "mae"  # str: transinr | ginr | mae (minr_jax/families.py).
  m.patch_size = 13  # int: patch side; resolution / patch_size must equal mask_grid.
  # Encoder ViT (over the visible patches plus a class token).
  m.dim = 768  # int: encoder width D.
  m.depth = 12  # int: encoder blocks.
  m.num_heads = 12  # int.
  m.head_dim = 64  # int: num_heads * head_dim = dim in ViTs.
  m.mlp_dim = 3072  # int: 4 x dim.
  # Decoder (over all patches: encoded visible ones plus mask tokens).
  m.decoder_dim = 512  # int.
  m.decoder_depth = 8  # int.
  m.decoder_num_heads = 16  # int.
  m.decoder_head_dim = 32  # int: 16 x 32 = 512.
  m.decoder_mlp_dim = 2048  # int: 4 x decoder_dim.
  # Blocks as timm's ViT in MAE.
  m.qkv_bias = True  # bool: biases on query / key / value.
  m.ln_epsilon = 1e-6  # float: every LayerNorm (MAE's).
  m.exact_gelu = True  # bool: erf GELU (PyTorch's nn.GELU).
  m.dropout = 0.0  # float: residual dropout (MAE pretrains without).
  m.remat = False  # bool: recompute blocks in the backward pass.
  # str: auto | batched | per_head: how attention is computed (same maths);
  # auto = per_head on a single CPU device (faster there), else batched.
  m.attention_impl = "auto"
  # bool: loss against per-patch normalised pixels. Off by default: its
  # de-normalisation for metrics needs each hidden patch's true mean and
  # variance (a leak; see mae.to_pixels), so PSNR would be optimistic.
  m.norm_pix = False
  m.dtype = "float32"  # str: float32 | bfloat16 computation dtype (params stay float32).
  return m


def _size(m: ml_collections.ConfigDict, size: str) -> None:
  """ViT-B or ViT-L encoder; the decoder is MAE's 8 x 512 for both."""
  if size == "base":
    m.dim, m.depth, m.num_heads, m.head_dim, m.mlp_dim = 768, 12, 12, 64, 3072
  else:  # large
    m.dim, m.depth, m.num_heads, m.head_dim, m.mlp_dim = 1024, 24, 16, 64, 4096
  m.decoder_dim, m.decoder_depth, m.decoder_num_heads = 512, 8, 16
  m.decoder_head_dim, m.decoder_mlp_dim = 32, 2048


# Batch for the paper datasets. MINR's MAE batch is not published (MAE itself
# uses 4096); 64 keeps the peak rate at 1.5e-4 x 64 / 256 = 3.75e-5 and fits
# the ViT-L on one accelerator. Epochs are the MINR runs', so both models see
# the same number of images.
PAPER_BATCH_SIZE = 64


def _paper_dataset(c: ml_collections.ConfigDict, data: str) -> None:
  """One of the paper's datasets for as many epochs as MINR was trained there."""
  c.dataset.name = transinr.PAPER_DATASETS[data][0]
  _paper_budget(c, data)


def _paper_budget(c: ml_collections.ConfigDict, data: str) -> None:
  """Batch PAPER_BATCH_SIZE for the number of epochs MINR ran on dataset `data`."""
  _, num_images, epochs = transinr.PAPER_DATASETS[data]
  c.batch_size = PAPER_BATCH_SIZE
  c.eval_batch_size = PAPER_BATCH_SIZE
  # int: ceil(num_images / batch_size) * epochs (transinr.steps_for_epochs), linked
  # to batch_size: CelebA at 64 -> 2,544 x 30 = 76,320 steps.
  c.num_train_steps = -((-num_images) // c.get_ref("batch_size")) * epochs
  if c.num_train_steps != transinr.steps_for_epochs(num_images, epochs, c.batch_size):
    raise AssertionError("num_train_steps reference disagrees with steps_for_epochs")


def _demo(c: ml_collections.ConfigDict) -> None:
  """64 px (transinr's demo data and loop), patch 8 on the 8x8 grid, a narrow MAE."""
  m = c.model
  m.patch_size = 8
  m.dim, m.depth, m.num_heads, m.head_dim, m.mlp_dim = 128, 4, 4, 32, 512
  m.decoder_dim, m.decoder_depth, m.decoder_num_heads = 64, 2, 2
  m.decoder_head_dim, m.decoder_mlp_dim = 32, 256
  # Peak rate 8e-3 x 16 / 256 = 5e-4 at the demo's batch of 16 (transinr's demo rate).
  c.base_learning_rate = 8e-3


def _photos64(c: ml_collections.ConfigDict) -> None:
  """PHOTOS64_STEPS on transinr's photos64 data recipe (get_config starts from it)."""
  c.num_train_steps = PHOTOS64_STEPS
  c.eval_every_steps = 7700
  c.checkpoint_every_steps = 7700


def _tiny(c: ml_collections.ConfigDict) -> None:
  """16 px (transinr's tiny data and loop), patch 4 on the 4x4 grid, two small blocks."""
  m = c.model
  m.patch_size = 4
  m.dim, m.depth, m.num_heads, m.head_dim, m.mlp_dim = 32, 2, 2, 16, 64
  m.decoder_dim, m.decoder_depth, m.decoder_num_heads = 32, 1, 2
  m.decoder_head_dim, m.decoder_mlp_dim = 16, 64
