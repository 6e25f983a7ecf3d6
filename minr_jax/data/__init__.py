"""Input pipelines of minr_jax: TFDS array_record data sources + grain.

No TensorFlow at run time. Datasets (config.dataset.name):
  image_folder  a folder of images (config.dataset.path); `image_folder.py`.
  demo          crops of scikit-image's bundled photos; `demo.py`.
  celeb_a       CelebA, TFDS catalogue, manual download; `catalogue.py`.
  imagenette    Imagenette 320 px (v2), TFDS catalogue; `catalogue.py`.
  mit_indoor67  MIT Indoor Scenes, manual download; `mit_indoor67.py`.
Adding one: `datasets.py`. Config fields read and their defaults:
`options.py`. Pipeline design (sharding, batching, prefetch, eval padding):
`pipeline.py`. Host-side image ops: `preprocess.py`.

All images leave as float32 in [0, 1], RGB, [R, R, 3] with
R = config.resolution. Every bad input raises `minr_jax.config.ConfigError`.
"""

from __future__ import annotations

from typing import Any

from minr_jax.data import datasets
from minr_jax.data import options as options_lib
from minr_jax.data.pipeline import (
  dataset_info,
  make_eval_batches,
  make_train_iterator,
  num_eval_images,
)

__all__ = [
    'check_dataset',
    'dataset_info',
    'make_eval_batches',
    'make_train_iterator',
    'num_eval_images',
]


def check_dataset(config: Any) -> None:
  """Cheap checks before any compile; no decoding, no preparation.

  Unknown dataset.name (the message lists the valid names), bad data field
  types or ranges, and for image_folder a dataset.path that is unset,
  missing, not a directory or holding no images; for celeb_a / imagenette
  neither prepared data in dataset.data_dir nor the manual files in
  dataset.path (no network access is tried); for mit_indoor67 neither
  prepared data nor a dataset.path with both lists and the images: each a
  ConfigError naming the field or path.

  Args:
    config: the run config.

  Raises:
    ConfigError: see above.
  """
  datasets.check(options_lib.from_config(config))
