"""What every dataset provides to the pipelines: sources plus default maps."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import grain
import numpy as np

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
