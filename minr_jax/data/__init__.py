"""Input pipelines of minr_jax: TFDS array_record data sources + grain, no TensorFlow.

Images leave as float32 [R, R, 3] in [0, 1]; bad input raises `ConfigError`. Datasets are mapped
in `datasets.py`, the config fields read in `options.py` (docs/datasets.md).
"""

from __future__ import annotations

from typing import Any

from minr_jax.data import datasets
from minr_jax.data import options as options_lib
from minr_jax.data.pipeline import (
  check_eval_images,
  make_eval_batches,
  make_train_iterator,
  num_eval_images,
)

__all__ = [
  "check_dataset",
  "check_eval_images",
  "check_workdir_outside",
  "make_eval_batches",
  "make_train_iterator",
  "num_eval_images",
]


def check_dataset(
  config: Any,
  name: str | None = None,
  path: str | None = None,
  *,
  origin: str = "config.eval_datasets",
) -> None:
  """Cheap checks before any compile; no decoding, no preparation.

  Unknown dataset name (the message lists the valid names), bad data field
  types or ranges, and for image_folder a path that is unset, missing, not a
  directory or holding no images; for celeb_a / imagenette neither prepared
  data in dataset.data_dir nor the manual files in the path (no network
  access is tried); for mit_indoor67 neither prepared data nor a path with
  both lists and the images: each a ConfigError naming the field or path.

  Args:
    config: the run config.
    name: the dataset to check (default config.dataset.name), as
      `make_eval_batches` takes it.
    path: its path (default config.dataset.path for the config's dataset).
    origin: the field or flag that named a dataset other than the config's
      own, named in the messages about it.

  Raises:
    ConfigError: see above.
  """
  datasets.check(options_lib.from_config(config, name, path, origin=origin))


def check_workdir_outside(
  config: Any,
  workdir: str,
  name: str | None = None,
  path: str | None = None,
  *,
  origin: str = "config.eval_datasets",
) -> None:
  """Refuses a training workdir inside an image folder the run reads.

  Its PNG grids would become images of the folder (see `image_folder`). Other
  datasets are not listed from a folder, so any workdir suits them.

  Raises:
    ConfigError: one line naming --workdir, the field and the folder.
  """
  datasets.check_workdir(options_lib.from_config(config, name, path, origin=origin), workdir)
