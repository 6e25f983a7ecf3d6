r"""MINR with the TransINR hypernetwork.

The default is the paper's model and training setup (182 px, 14x14 mask grid,
75% of patches masked, 44,462,851 parameters); give it your images with
`--config.dataset.path`:

  python -m minr_jax.main --config=configs/transinr.py --workdir=runs/paper \
      --config.dataset.path=/data/my_images

Variants, after a colon:
  celeba      the paper's CelebA run: 30 epochs of 162,770 images at batch 16
  imagenette  the paper's Imagenette run: 400 epochs of 9,469 images
  indoor      the paper's MIT-Indoor67 run: 400 epochs of 5,360 images
              (each: --config.dataset.path=<manual download dir>; docs/datasets.md)
  demo   64 px, a narrow hypernetwork, procedurally drawn cartoon faces
         (no download; about 10 minutes on 2 CPU cores; docs/demo.md):
           python -m minr_jax.main --config=configs/transinr.py:demo --workdir=runs/demo
  celeba64  the demo's model on 64-px faces of an image folder (--config.dataset.path):
           the run behind pretrained/celeba64 (docs/pretrained.md).
  photos64  the same on 64-px general photos: the run behind pretrained/photos64
           (docs/pretrained_photos.md).
  photos64_lpips  pretrained/photos64 fine-tuned with an LPIPS term in the loss
           (config.lpips_weight; not the paper's loss: docs/ood.md).
  tiny   a few-second smoke run on scikit-image's photos (what the tests build on).
"""

from __future__ import annotations

import os

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The paper config, changed by the variant named in `arg` ('', demo, tiny)."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # int: root of every random number (init, masks, data order).

  # Data.
  c.resolution = 182  # int: images are [resolution, resolution, 3] in [0, 1].
  c.batch_size = 16  # int: global batch, split over the mesh's data axis.
  c.eval_batch_size = 16  # int: global evaluation batch.
  # Every data field is set here and nowhere else (minr_jax/data/options.py reads them).
  c.dataset = ml_collections.ConfigDict()
  # str: image_folder | demo | cartoon_faces | celeb_a | imagenette | mit_indoor67.
  c.dataset.name = "image_folder"
  c.dataset.path = ml_collections.config_dict.placeholder(str)  # str: image_folder's folder.
  c.dataset.data_dir = "~/tensorflow_datasets"  # str: where prepared TFDS data is kept.
  # Unset (None) augmentation fields take the dataset's recipe (minr_jax/data/options.py):
  # random crop + flip for imagenette, flip for mit_indoor67, neither otherwise.
  c.dataset.random_crop = ml_collections.config_dict.placeholder(bool)  # bool: random crops.
  c.dataset.train_resize = 0  # int: short side before the training crop (0 = resolution).
  c.dataset.flip = ml_collections.config_dict.placeholder(bool)  # bool: random h-flips.
  c.dataset.eval_split = ml_collections.config_dict.placeholder(str)  # str: None = dataset's.
  c.dataset.crop_size = 128  # int: demo only: side of the crops cut from each photo.
  c.dataset.eval_crops_per_image = 16  # int: demo only: fixed crops per held-out photo.
  c.dataset.eval_fraction = 0.1  # float: image_folder without train/ val/: share held out.
  c.dataset.eval_max_images = 0  # int: evaluate on at most this many images (0 = all).
  c.dataset.num_workers = 2  # int: grain worker processes (0 = threads in this process).
  c.dataset.prefetch_buffer = 4  # int: batches prepared ahead of the step.
  # str: more evaluation datasets, 'name[:path],...' (e.g. 'demo,image_folder:/data/x');
  # the training dataset is evaluated first unless eval_train_dataset is False.
  c.eval_datasets = ""
  # bool: also evaluate the training dataset's eval split. False for a training
  # folder used whole (dataset.eval_fraction=0, no val/) with held-out folders
  # given in eval_datasets.
  c.eval_train_dataset = True

  # Masking (drawn on device inside the step).
  c.mask_ratio = 0.75  # float in [0, 1): share of patches masked.
  c.mask_grid = 14  # int: masks live on a mask_grid x mask_grid grid of patches.
  c.mask = ml_collections.ConfigDict()
  # str: random (each patch w.p. ratio, the paper's) | random_exact (exactly
  # round(ratio*N), MAE's) | block | center | outpaint | noise_filtered.
  c.mask.strategy = "random"
  # float: if both set, each training image draws its ratio from [min, max].
  c.mask.ratio_min = ml_collections.config_dict.placeholder(float)
  c.mask.ratio_max = ml_collections.config_dict.placeholder(float)
  c.mask.block_min_patches = 4  # int: block: smallest rectangle, in patches.
  c.mask.block_aspect_min = 0.3  # float: block: aspect ratios in [min, 1/min].
  c.mask.filter = "lowpass"  # str: noise_filtered: lowpass|highpass|bandpass|bandstop.
  c.mask.cutoff_low = ml_collections.config_dict.placeholder(float)  # None: filter's default.
  c.mask.cutoff_high = ml_collections.config_dict.placeholder(float)  # (fractions of Nyquist)
  c.eval_mask_strategy = "random"  # str: strategy of the fixed evaluation masks.
  c.eval_mask_seed = 2023  # int: evaluation masks depend on this and the image index only.

  # Optimisation: Adam, learning rate x lr_decay_factor after lr_decay_at of training.
  c.num_train_steps = 305_220  # int: CelebA: ceil(162,770 / 16) = 10,174 steps an epoch x 30.
  c.learning_rate = 1e-4  # float.
  c.lr_decay_at = 0.8  # float: fraction of num_train_steps where the rate drops.
  c.lr_decay_factor = 0.1  # float.
  # int: linear warm-up of the rate over the first steps (0 = none, the paper's).
  c.warmup_steps = 0
  # float: weight of an LPIPS (AlexNet) term on the pasted prediction, added to the
  # paper's whole-image MSE (0 = off, the paper's loss; TransINR / GINR only; renders
  # whole images, so model.inr_chunk is not used while it is on).
  c.lpips_weight = 0.0
  # str: start from the parameters of this workdir or checkpoints/<step> (same model
  # shapes), with a fresh optimizer and step 0 ('' = random init); a resumed run ignores it.
  c.init_from = ""

  # Model (the reference TransINR-MINR).
  c.model = ml_collections.ConfigDict()
  c.model.family = "transinr"  # str: transinr | ginr | mae (minr_jax/families.py).
  c.model.patch_size = 9  # int: tokenizer patch side.
  c.model.padding = 1  # int: zero padding on each side before patching.
  c.model.dim = 768  # int: transformer width.
  c.model.depth = 6  # int: transformer blocks.
  c.model.num_heads = 12  # int.
  c.model.head_dim = 64  # int.
  c.model.mlp_dim = 3072  # int.
  c.model.qkv_bias = False  # bool.
  c.model.ln_epsilon = 1e-5  # float: PyTorch's LayerNorm default.
  c.model.exact_gelu = True  # bool: erf GELU as PyTorch (False: tanh approximation).
  c.model.dropout = 0.0  # float: residual dropout.
  c.model.remat = False  # bool: recompute transformer blocks in the backward pass.
  # str: auto | batched | per_head: how attention is computed (same maths);
  # auto = per_head on a single CPU device (faster there), else batched.
  c.model.attention_impl = "auto"
  c.model.inr_hidden_dim = 256  # int: INR width.
  c.model.inr_num_layers = 5  # int: INR linear layers.
  c.model.ff_num_freqs = 64  # int: Fourier frequencies per coordinate axis.
  c.model.ff_sigma = 1024.0  # float: highest Fourier frequency.
  c.model.num_groups = 64  # int: weight tokens per INR layer (capped at its width).
  c.model.output_bias = 0.5  # float: added to the INR's output.
  # str: float32 | bfloat16: computation dtype of the tokenizer, transformer and
  # heads (parameters, softmax, LayerNorm statistics and Adam stay float32).
  c.model.dtype = "float32"
  # str: '' (follow model.dtype) | float32 | bfloat16: dtype of the INR's matmuls
  # (accumulated in float32; the Fourier features are computed in float32).
  c.model.inr_dtype = ""
  # int: training loss in chunks of at most this many pixels per image (same
  # maths, nothing [B, H, W, width] is built); 0 = render whole images first;
  # -1 = auto: 4096 on a single CPU device (faster there), else 0.
  c.model.inr_chunk = -1

  # Loop.
  c.log_every_steps = 50  # int: train metrics and progress line.
  c.eval_every_steps = 5000  # int: evaluation, PNG grid (and at the end).
  c.checkpoint_every_steps = 5000  # int: checkpoint (and at the end).
  # float: also checkpoint about this often in wall time (0 = off), so slow steps or
  # Spot capacity lose little; SIGTERM / Ctrl-C always save the step reached.
  c.checkpoint_every_secs = 600.0
  c.keep_checkpoints = 3  # int: newest checkpoints kept.
  c.keep_period = 0  # int: also keep every checkpoint whose step is a multiple (0 = none).
  # str: XLA's persistent compilation cache (local or gs://; '' = off): restarts skip compiling.
  c.compilation_cache_dir = "~/.cache/minr_jax/xla"
  c.num_grid_images = 8  # int: rows in each reconstruction PNG grid.
  # What is evaluated, declared as every config may (docs/evaluators.md): training runs
  # these every `every_steps` (linked to eval_every_steps) and `python -m minr_jax.evaluate
  # --evals=...` runs them on a checkpoint. reconstruction: the three PSNR figures beside
  # the classical inpainters on every evaluation dataset; grids: PNG grids of
  # num_grid_images images each.
  c.evals = ml_collections.ConfigDict()
  c.evals.reconstruction = ml_collections.ConfigDict(dict(type="reconstruction", split="eval"))
  c.evals.reconstruction.every_steps = c.get_ref("eval_every_steps")
  # str: the host-side classical inpainters scored beside the model, once per dataset
  # (docs/metrics.md). Biharmonic is left out at 182 px: its sparse solve per image would
  # hold a paper run's first evaluation for hours on the host; the 64-px variants add it.
  c.evals.reconstruction.classical = "telea,navier_stokes"
  c.evals.grids = ml_collections.ConfigDict(dict(type="grids"))
  c.evals.grids.every_steps = c.get_ref("eval_every_steps")
  c.tensorboard = True  # bool: also write TensorBoard event files.
  # str: 'START:STOP' traces steps START+1..STOP with jax.profiler into
  # <workdir>/tensorboard/plugins/profile/ (docs/speed.md); '' = no trace.
  c.profile = ""

  # Devices: a (data, fsdp) mesh; -1 means all remaining devices. Batches are split
  # over data x fsdp devices; parameters and Adam moments with at least
  # fsdp_min_size elements are split over fsdp (minr_jax/sharding.py).
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # int.
  c.mesh.fsdp = 1  # int: 1 = plain data parallelism (everything replicated).
  c.fsdp_min_size = 2**18  # int: smaller arrays stay replicated.

  variant = arg or ""
  if variant in PAPER_DATASETS:
    _paper_dataset(c, variant)
  elif variant == "demo":
    _demo(c)
  elif variant == "celeba64":
    _demo(c)
    _celeba64(c)
  elif variant == "photos64":
    _demo(c)
    _photos64(c)
  elif variant == "photos64_lpips":
    _demo(c)
    _photos64(c)
    _photos64_lpips(c)
  elif variant == "tiny":
    _demo(c)
    _tiny(c)
  elif variant:
    raise ValueError(
      f"unknown variant {variant!r} of configs/transinr.py: use '', "
      f"{', '.join(PAPER_DATASETS)}, 'demo', 'celeba64', 'photos64', 'photos64_lpips' or 'tiny'"
    )
  return c


# variant: (dataset.name, training images, epochs). Steps = ceil(images / 16) x epochs:
# the pipeline repeats and shuffles without epoch boundaries, so a step count is
# what is set; the learning rate drops x0.1 after 80% of it, as in the reference.
PAPER_DATASETS = {
  "celeba": ("celeb_a", 162_770, 30),  # 10,174 x 30 = 305,220 steps
  "imagenette": ("imagenette", 9_469, 400),  # 592 x 400 = 236,800 steps
  "indoor": ("mit_indoor67", 5_360, 400),  # 335 x 400 = 134,000 steps
}


def steps_for_epochs(num_images: int, epochs: int, batch_size: int) -> int:
  """Optimizer steps for `epochs` passes over `num_images` images."""
  return -(-num_images // batch_size) * epochs


def _paper_dataset(c: ml_collections.ConfigDict, variant: str) -> None:
  """The reference hyperparameters on one of the paper's datasets."""
  name, num_images, epochs = PAPER_DATASETS[variant]
  c.dataset.name = name
  c.num_train_steps = steps_for_epochs(num_images, epochs, c.batch_size)


def _demo(c: ml_collections.ConfigDict) -> None:
  """64-px cartoon faces (drawn, no download) and a narrow hypernetwork, for CPUs.

  docs/demo.md: why faces (an aligned domain) and not generic photos, and how
  the learning rate and warm-up were chosen.
  """
  c.dataset.name = "cartoon_faces"
  c.dataset.flip = True
  c.dataset.num_workers = 0  # threads: the 2-core machines it targets are busy with XLA
  c.resolution = 64
  c.mask_grid = 8
  c.batch_size = 16
  c.eval_batch_size = 16
  c.num_train_steps = 2400
  c.learning_rate = 1e-3
  c.warmup_steps = 50
  c.log_every_steps = 50
  c.eval_every_steps = 600
  c.checkpoint_every_steps = 600
  c.model.patch_size = 8
  c.model.padding = 0
  c.model.dim = 128
  c.model.depth = 4
  c.model.num_heads = 2
  c.model.head_dim = 64
  c.model.mlp_dim = 512
  c.model.inr_hidden_dim = 64
  c.model.ff_num_freqs = 32
  c.model.ff_sigma = 8.0
  c.model.num_groups = 16
  c.evals.reconstruction.classical = "telea,navier_stokes,biharmonic"  # cheap at 64 px


def _celeba64(c: ml_collections.ConfigDict) -> None:
  """The demo's model on 64-px faces from an image folder (the pretrained checkpoint's run).

  Give the folder (train/ and val/ subfolders, or a flat folder) with
  --config.dataset.path; docs/pretrained.md has the command and its figures.
  """
  c.dataset.name = "image_folder"
  c.dataset.flip = True
  c.num_train_steps = 6000
  c.learning_rate = 5e-4
  c.warmup_steps = 100
  c.eval_every_steps = 1000
  c.checkpoint_every_steps = 1000


def _photos64(c: ml_collections.ConfigDict) -> None:
  """The demo's model on 64-px general photos (the pretrained/photos64 run).

  Give a training folder with --config.dataset.path (e.g. Imagenette's train/
  folder at 96 px) and held-out folders with --config.eval_datasets;
  docs/pretrained_photos.md has the command and its figures.
  """
  c.dataset.name = "image_folder"
  c.dataset.flip = True
  c.dataset.random_crop = True
  c.dataset.train_resize = 72
  c.num_train_steps = 10000
  c.learning_rate = 5e-4
  c.warmup_steps = 200
  c.eval_every_steps = 2000
  c.checkpoint_every_steps = 2000


# The checkout's shipped photo model: what photos64_lpips fine-tunes.
PRETRAINED_PHOTOS64 = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pretrained", "photos64"
)


def _photos64_lpips(c: ml_collections.ConfigDict) -> None:
  """pretrained/photos64 fine-tuned 2,000 steps with an LPIPS term beside the paper's
  MSE (not the paper's loss: docs/ood.md#a-perceptual-term), at a fifth of its rate."""
  c.init_from = PRETRAINED_PHOTOS64
  c.lpips_weight = 0.1
  c.num_train_steps = 2000
  c.learning_rate = 1e-4
  c.warmup_steps = 100
  c.eval_every_steps = 1000
  c.checkpoint_every_steps = 1000


def _tiny(c: ml_collections.ConfigDict) -> None:
  """Seconds-long runs: a 16-px image, a two-block hypernetwork, scikit-image's photos."""
  c.dataset.name = "demo"
  c.learning_rate = 5e-4
  c.warmup_steps = 0
  c.resolution = 16
  c.mask_grid = 4
  c.batch_size = 4
  c.eval_batch_size = 4
  c.num_train_steps = 4
  c.log_every_steps = 1
  c.eval_every_steps = 2
  c.checkpoint_every_steps = 2
  c.dataset.crop_size = 32
  c.dataset.eval_crops_per_image = 2
  c.dataset.num_workers = 0
  c.model.patch_size = 4
  c.model.dim = 32
  c.model.depth = 2
  c.model.num_heads = 2
  c.model.head_dim = 16
  c.model.mlp_dim = 64
  c.model.inr_hidden_dim = 16
  c.model.inr_num_layers = 3
  c.model.ff_num_freqs = 8
  c.model.ff_sigma = 8.0
  c.model.num_groups = 4
  c.num_grid_images = 2
  c.tensorboard = False
