"""Every config field the data layer reads, checked once: `from_config(config)` -> `DataOptions`.

The rest of the data layer works on the frozen, picklable `DataOptions` (so it can be sent to
grain worker processes). Per-dataset defaults of the split and augmentation fields: `RECIPES`
(docs/datasets.md); the fields themselves: docs/configs.md.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from minr_jax import paths
from minr_jax.config import ConfigError

# Data fields the configs gained after the first release, with the value that
# reproduces runs whose saved config.json predates them (no other field has a
# default outside the config files).
ADDED_FIELDS: dict[str, Any] = {
  "eval_split": None,
}
_MISSING = object()


@dataclasses.dataclass(frozen=True)
class Recipe:
  """A dataset's splits and its defaults for the unset fields.

  Attributes:
    splits: TFDS split names; 'train' is the training split.
    eval_split: default of config.dataset.eval_split.
    random_crop: default of config.dataset.random_crop.
    flip: default of config.dataset.flip.
    train_scale: (a, b): an unset train_resize becomes R * a // b.
  """

  splits: tuple[str, ...]
  eval_split: str
  random_crop: bool = False
  flip: bool = False
  train_scale: tuple[int, int] = (1, 1)


# Datasets with a choice of eval split and their own defaults (the precedence
# table is in docs/datasets.md).
RECIPES: dict[str, Recipe] = {
  "celeb_a": Recipe(splits=("train", "validation", "test"), eval_split="test"),
  "imagenette": Recipe(
    splits=("train", "validation"),
    eval_split="validation",
    random_crop=True,
    flip=True,
    train_scale=(320, 182),
  ),
  "mit_indoor67": Recipe(splits=("train", "test"), eval_split="test", flip=True),
}


@dataclasses.dataclass(frozen=True)
class DataOptions:
  """The data settings of one run (meanings: docs/configs.md).

  `origin` says where `name` and `path` came from, for error messages: ''
  for config.dataset, else the field or flag that named the dataset (e.g.
  'config.eval_datasets').
  """

  name: str
  path: str | None
  data_dir: str  # Absolute, user-expanded; a URL's local mirror (`paths.local_mirror`).
  resolution: int
  seed: int
  eval_split: str  # Resolved; '' for datasets without a choice.
  random_crop: bool  # Resolved (`RECIPES`).
  train_resize: int  # Already resolved: never 0 here.
  flip: bool  # Resolved (`RECIPES`).
  crop_size: int
  eval_crops_per_image: int
  eval_fraction: float
  eval_max_images: int
  num_workers: int
  prefetch_buffer: int
  origin: str = ""

  @property
  def entry(self) -> str:
    """'name' or 'name:path', as written in config.eval_datasets."""
    return f"{self.name}:{self.path}" if self.path else self.name

  @property
  def path_field(self) -> str:
    """What to call `path` in an error message."""
    if not self.origin:
      return "config.dataset.path"
    return f"the path of {self.origin} entry {self.entry!r}"


def _dataset_field(config: Any, field: str) -> Any:
  """`config.dataset.<field>`; ConfigError if the config lacks it.

  A field of `ADDED_FIELDS` that is missing takes its value there.
  """
  dataset = config.dataset
  value = (
    dataset.get(field, _MISSING) if hasattr(dataset, "get") else getattr(dataset, field, _MISSING)
  )
  if value is not _MISSING:
    return value
  if field in ADDED_FIELDS:
    return ADDED_FIELDS[field]
  raise ConfigError(
    f"config.dataset.{field} is missing (configs/transinr.py sets every data field)"
  )


def _positive_int(value: Any, field: str, *, allow_zero: bool = False) -> int:
  """Returns `value` as an int, or raises ConfigError naming `field`."""
  low = 0 if allow_zero else 1
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    kind = "a non-negative" if allow_zero else "a positive"
    raise ConfigError(f"config.{field} must be {kind} integer, got {value!r}")
  return value


def _local_data_dir(data_dir: str) -> str:
  """A local data_dir made absolute; a URL's local mirror (`tfds_utils` syncs the two).

  Prepared data are array_record files, which are read and written with local
  file I/O only: with data_dir = gs://B/D they are prepared (or fetched) in
  `paths.local_mirror('gs://B/D')` and uploaded to gs://B/D once complete.
  """
  if paths.is_url(data_dir):
    paths.check_scheme(data_dir, "config.dataset.data_dir")
    return paths.local_mirror(data_dir)
  return os.path.abspath(os.path.expanduser(data_dir))


def _optional_bool(config: Any, field: str, default: bool) -> bool:
  """`config.dataset.<field>` as a bool; `default` when unset (None)."""
  value = _dataset_field(config, field)
  if value is None:
    return default
  if not isinstance(value, (bool, np.bool_)):
    raise ConfigError(
      f"config.dataset.{field} must be a bool (or None for the dataset default), got {value!r}"
    )
  return bool(value)


def _eval_split(config: Any, name: str, same_dataset: bool) -> str:
  """The resolved eval split of dataset `name` ('' if it has no choice)."""
  value = _dataset_field(config, "eval_split") if same_dataset else None
  recipe = RECIPES.get(name)
  if value in (None, ""):
    return recipe.eval_split if recipe else ""
  if recipe is None:
    raise ConfigError(
      f"config.dataset.eval_split={value!r} is not used by "
      f"dataset.name={name!r} (only by {', '.join(RECIPES)}); leave it unset"
    )
  if value not in recipe.splits:
    raise ConfigError(
      f"config.dataset.eval_split={value!r} is not a split of {name}; "
      f"valid: {', '.join(recipe.splits)}"
    )
  return value


def from_config(
  config: Any,
  name: str | None = None,
  path: str | None = None,
  *,
  origin: str = "config.eval_datasets",
) -> DataOptions:
  """Reads and checks the data fields of `config` (no file system access).

  Args:
    config: a ConfigDict-like object with the data fields (docs/configs.md).
    name: dataset name overriding `config.dataset.name`.
    path: dataset path overriding `config.dataset.path`. When `name` names a
      different dataset than the config, the config's path is not used.
    origin: the field or flag that gave `name` and `path`, named in error
      messages when they are not the config's own dataset.

  Returns:
    The frozen options, with the unset fields resolved (`RECIPES`).

  Raises:
    ConfigError: a field is missing or has a wrong type or range, or
      eval_split is not a split of the dataset.
  """
  config_name = config.dataset.get("name", None)
  config_path = _dataset_field(config, "path")
  own = (name is None or name == config_name) and (path is None or path == config_path)
  name = config_name if name is None else name
  if not isinstance(name, str) or not name:
    field = "config.dataset.name" if own else origin
    raise ConfigError(f"{field} must be a non-empty string, got {name!r}")
  if path is None and name == config_name:
    path = config_path
  resolution = _positive_int(config.get("resolution", None), "resolution")
  recipe = RECIPES.get(name, Recipe(splits=(), eval_split=""))
  train_resize = _positive_int(
    _dataset_field(config, "train_resize"), "dataset.train_resize", allow_zero=True
  )
  scale_up, scale_down = recipe.train_scale
  if 0 < train_resize < resolution:
    raise ConfigError(
      f"config.dataset.train_resize={train_resize} is smaller than "
      f"config.resolution={resolution} (use 0 for the dataset default)"
    )
  eval_fraction = _dataset_field(config, "eval_fraction")
  if (
    isinstance(eval_fraction, bool)
    or not isinstance(eval_fraction, (int, float))
    or not 0 <= eval_fraction < 1
  ):
    raise ConfigError(f"config.dataset.eval_fraction must be in [0, 1), got {eval_fraction!r}")
  data_dir = _dataset_field(config, "data_dir")
  if not isinstance(data_dir, (str, os.PathLike)) or not str(data_dir):
    raise ConfigError(f"config.dataset.data_dir must be a path, got {data_dir!r}")
  if path in (None, ""):
    path = None
  elif isinstance(path, (str, os.PathLike)):
    path = os.path.expanduser(os.fspath(path))
  else:
    raise ConfigError(f"config.dataset.path must be a path, got {path!r}")
  seed = config.get("seed", None)
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
    raise ConfigError(f"config.seed must be a non-negative integer, got {seed!r}")
  return DataOptions(
    name=name,
    path=path,
    data_dir=_local_data_dir(os.fspath(data_dir)),
    resolution=resolution,
    seed=seed,
    eval_split=_eval_split(config, name, same_dataset=name == config_name),
    random_crop=_optional_bool(config, "random_crop", recipe.random_crop),
    train_resize=train_resize or resolution * scale_up // scale_down,
    flip=_optional_bool(config, "flip", recipe.flip),
    crop_size=_positive_int(_dataset_field(config, "crop_size"), "dataset.crop_size"),
    eval_crops_per_image=_positive_int(
      _dataset_field(config, "eval_crops_per_image"), "dataset.eval_crops_per_image"
    ),
    eval_fraction=float(eval_fraction),
    eval_max_images=_positive_int(
      _dataset_field(config, "eval_max_images"), "dataset.eval_max_images", allow_zero=True
    ),
    num_workers=_positive_int(
      _dataset_field(config, "num_workers"), "dataset.num_workers", allow_zero=True
    ),
    prefetch_buffer=_positive_int(
      _dataset_field(config, "prefetch_buffer"), "dataset.prefetch_buffer"
    ),
    origin="" if own else origin,
  )
