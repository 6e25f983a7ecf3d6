"""The one place that maps `config.dataset.name` to its data.

To add a dataset, write a module with
  `load(options: DataOptions) -> base.Dataset`   (prepares if needed)
and, if it has cheap pre-compile checks, `check(options) -> None`, then add
one entry to `_DATASETS`. For example, a TFDS catalogue dataset such as
`celeb_a` or `imagenette` would be prepared with
`tfds.builder(name, data_dir=options.data_dir, file_format='array_record')`
(+ `tfds_utils.prepare`), read with `tfds_utils.split_source(builder,
'train' / 'validation')` and mapped with `preprocess.train_transform` /
`preprocess.eval_transform` (the Imagenette recipe is random_crop=True with
train_resize > R); `mit_indoor67` would be a GeneratorBasedBuilder like
`image_folder.ImageFolderBuilder`. Catalogue builders must be prepared without
TensorFlow, which not all of them allow: check before relying on one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from minr_jax.config import ConfigError
from minr_jax.data import base, demo, image_folder
from minr_jax.data import options as options_lib


def _no_check(options: options_lib.DataOptions) -> None:
  del options


def _check_image_folder(options: options_lib.DataOptions) -> None:
  image_folder.check_folder(options.path)


@dataclasses.dataclass(frozen=True)
class _Entry:
  """How to check (cheaply, no decoding) and load one dataset."""

  check: Callable[[options_lib.DataOptions], None]
  load: Callable[[options_lib.DataOptions], base.Dataset]


_DATASETS: dict[str, _Entry] = {
    'image_folder': _Entry(check=_check_image_folder, load=image_folder.load),
    'demo': _Entry(check=_no_check, load=demo.load),
}
NAMES = tuple(_DATASETS)


def _entry(name: str) -> _Entry:
  if name not in _DATASETS:
    raise ConfigError(f'config.dataset.name={name!r} is unknown; valid names: '
                      f"{', '.join(NAMES)}")
  return _DATASETS[name]


def check(options: options_lib.DataOptions) -> None:
  """Cheap checks of the named dataset; raises ConfigError."""
  _entry(options.name).check(options)


def load(options: options_lib.DataOptions) -> base.Dataset:
  """Sources and default maps of the named dataset (prepares it if needed)."""
  return _entry(options.name).load(options)
