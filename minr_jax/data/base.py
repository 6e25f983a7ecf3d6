"""What every dataset provides to the pipelines: sources plus default maps."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import grain
import numpy as np

from minr_jax.data import preprocess
from minr_jax.data.options import DataOptions

# Raw example {'image': uint8 [H, W, 3], ...} + per-element rng ->
# {'image': float32 [R, R, 3]}.
TrainTransform = Callable[[dict, np.random.Generator], dict]
# Raw example -> {'image': float32 [R, R, 3]}; deterministic.
EvalTransform = Callable[[dict], dict]


@dataclasses.dataclass(frozen=True)
class Dataset:
  """One dataset, ready for the grain pipelines in `pipeline.py`.

  Attributes:
    train: finite MapDataset of raw training examples (one epoch, any order:
      the pipeline shuffles, shards and repeats it).
    eval: finite MapDataset of raw eval examples, one per eval image, in the
      fixed order that defines the eval image index.
    train_transform: picklable random map, raw example -> {'image': float32
      [R, R, 3]}.
    eval_transform: picklable map, raw example -> {'image': float32
      [R, R, 3]}.
  """

  train: grain.MapDataset
  eval: grain.MapDataset
  train_transform: TrainTransform
  eval_transform: EvalTransform


def whole_image_dataset(
  train: grain.MapDataset, eval_: grain.MapDataset, options: DataOptions
) -> Dataset:
  """A Dataset of whole images with the standard maps of `preprocess`.

  Train: short side to options.train_resize + random crop R if
  options.random_crop, else short side to R + centre crop R; then a random
  horizontal flip if options.flip. Eval: short side to R + centre crop R.

  Args:
    train: raw training examples {'image': uint8 [H, W, C], ...}.
    eval_: raw eval examples, in eval-index order.
    options: uses resolution, train_resize, random_crop, flip.

  Returns:
    The Dataset; both maps give {'image': float32 [R, R, 3]} in [0, 1].
  """
  return Dataset(
    train=train,
    eval=eval_,
    train_transform=functools.partial(
      preprocess.train_transform,
      resolution=options.resolution,
      resize_to=options.train_resize,
      random=options.random_crop,
      flip=options.flip,
    ),
    eval_transform=functools.partial(preprocess.eval_transform, resolution=options.resolution),
  )
