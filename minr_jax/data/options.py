"""Every config field the data layer reads, with its default, in one place.

The data layer never touches the config after `from_config`: the rest of the
package works on the frozen, picklable `DataOptions` (so it can be sent to
grain worker processes) and on the batch sizes passed explicitly.

Fields read (a missing `config.dataset.*` field takes the default below;
`config.resolution` is required):

  config.seed                        int   0      shuffle / augmentation seed
  config.resolution                  int   -      output images are [R, R, 3]
  config.batch_size                  int   -      global train batch size
  config.eval_batch_size             int   batch_size  global eval batch size
  config.dataset.name                str   -      'image_folder' or 'demo'
  config.dataset.path                str   None   image_folder: the folder
  config.dataset.data_dir            str   '~/tensorflow_datasets'
                                                  where prepared TFDS data live
  config.dataset.random_crop         bool  False  image_folder train: resize
                                                  short side to train_resize,
                                                  then random crop R (else
                                                  centre crop R)
  config.dataset.train_resize        int   0      0 = resolution
  config.dataset.flip                bool  False  random horizontal flip (train)
  config.dataset.crop_size           int   128    demo: crop side in pixels of
                                                  the photo (clamped to the
                                                  photo's short side)
  config.dataset.eval_crops_per_image int  16     demo: fixed crops per held-out
                                                  photo
  config.dataset.eval_fraction       float 0.1    image_folder without
                                                  train/ + val/: share of files
                                                  (by path hash) held out
  config.dataset.eval_max_images     int   0      cap on eval images (0 = all)
  config.dataset.num_workers         int   0      grain worker processes for
                                                  training (0 = threads in the
                                                  main process)
  config.dataset.prefetch_buffer     int   2      batches prepared ahead (per
                                                  worker when num_workers > 0)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from minr_jax.config import ConfigError

DEFAULT_DATA_DIR = '~/tensorflow_datasets'

# Default of each optional `config.dataset.*` field.
DATASET_DEFAULTS: dict[str, Any] = {
    'path': None,
    'data_dir': DEFAULT_DATA_DIR,
    'random_crop': False,
    'train_resize': 0,
    'flip': False,
    'crop_size': 128,
    'eval_crops_per_image': 16,
    'eval_fraction': 0.1,
    'eval_max_images': 0,
    'num_workers': 0,
    'prefetch_buffer': 2,
}


@dataclasses.dataclass(frozen=True)
class DataOptions:
  """The data settings of one run (see the module docstring for meanings)."""

  name: str
  path: str | None
  data_dir: str  # Absolute, user-expanded.
  resolution: int
  seed: int = 0
  random_crop: bool = False
  train_resize: int = 0  # Already resolved: never 0 here.
  flip: bool = False
  crop_size: int = 128
  eval_crops_per_image: int = 16
  eval_fraction: float = 0.1
  eval_max_images: int = 0
  num_workers: int = 0
  prefetch_buffer: int = 2


def _dataset_field(config: Any, field: str) -> Any:
  """Returns `config.dataset.<field>`, or its default when missing or None."""
  dataset = config.dataset
  value = dataset.get(field, None) if hasattr(dataset, 'get') else getattr(
      dataset, field, None)
  return DATASET_DEFAULTS[field] if value is None else value


def _positive_int(value: Any, field: str, *, allow_zero: bool = False) -> int:
  """Returns `value` as an int, or raises ConfigError naming `field`."""
  low = 0 if allow_zero else 1
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    kind = 'a non-negative' if allow_zero else 'a positive'
    raise ConfigError(f'config.{field} must be {kind} integer, got {value!r}')
  return value


def from_config(config: Any, name: str | None = None,
                path: str | None = None) -> DataOptions:
  """Reads and checks the data fields of `config` (no file system access).

  Args:
    config: a ConfigDict-like object with the fields listed in the module
      docstring.
    name: dataset name overriding `config.dataset.name`.
    path: dataset path overriding `config.dataset.path`. When `name` names a
      different dataset than the config, the config's path is not used.

  Returns:
    The frozen options.

  Raises:
    ConfigError: a field has a wrong type or range.
  """
  config_name = config.dataset.get('name', None)
  name = config_name if name is None else name
  if not isinstance(name, str) or not name:
    raise ConfigError(f'config.dataset.name must be a non-empty string, '
                      f'got {name!r}')
  if path is None and name == config_name:
    path = _dataset_field(config, 'path')
  resolution = _positive_int(config.get('resolution', None), 'resolution')
  train_resize = _positive_int(_dataset_field(config, 'train_resize'),
                               'dataset.train_resize', allow_zero=True)
  if 0 < train_resize < resolution:
    raise ConfigError(
        f'config.dataset.train_resize={train_resize} is smaller than '
        f'config.resolution={resolution} (use 0 for the resolution)')
  eval_fraction = _dataset_field(config, 'eval_fraction')
  if (isinstance(eval_fraction, bool)
      or not isinstance(eval_fraction, (int, float))
      or not 0 <= eval_fraction < 1):
    raise ConfigError(f'config.dataset.eval_fraction must be in [0, 1), '
                      f'got {eval_fraction!r}')
  data_dir = _dataset_field(config, 'data_dir')
  if not isinstance(data_dir, (str, os.PathLike)) or not str(data_dir):
    raise ConfigError(f'config.dataset.data_dir must be a path, '
                      f'got {data_dir!r}')
  if path in (None, ''):
    path = None
  elif isinstance(path, (str, os.PathLike)):
    path = os.path.expanduser(os.fspath(path))
  else:
    raise ConfigError(f'config.dataset.path must be a path, got {path!r}')
  seed = config.get('seed', 0)
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
    raise ConfigError(f'config.seed must be a non-negative integer, '
                      f'got {seed!r}')
  return DataOptions(
      name=name,
      path=path,
      data_dir=os.path.abspath(os.path.expanduser(os.fspath(data_dir))),
      resolution=resolution,
      seed=seed,
      random_crop=bool(_dataset_field(config, 'random_crop')),
      train_resize=train_resize or resolution,
      flip=bool(_dataset_field(config, 'flip')),
      crop_size=_positive_int(_dataset_field(config, 'crop_size'),
                              'dataset.crop_size'),
      eval_crops_per_image=_positive_int(
          _dataset_field(config, 'eval_crops_per_image'),
          'dataset.eval_crops_per_image'),
      eval_fraction=float(eval_fraction),
      eval_max_images=_positive_int(_dataset_field(config, 'eval_max_images'),
                                    'dataset.eval_max_images',
                                    allow_zero=True),
      num_workers=_positive_int(_dataset_field(config, 'num_workers'),
                                'dataset.num_workers', allow_zero=True),
      prefetch_buffer=_positive_int(_dataset_field(config, 'prefetch_buffer'),
                                    'dataset.prefetch_buffer'),
  )
