"""The one place that maps `config.dataset.name` to its data: `load`, `check`.

To add a dataset: a module with `load(options) -> base.Dataset` (and optionally `check`), one
entry in `_DATASETS`, and, for its own split or augmentation defaults, one in `options.RECIPES`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from minr_jax.config import ConfigError
from minr_jax.data import base, cartoon_faces, catalogue, demo, image_folder, mit_indoor67
from minr_jax.data import options as options_lib


def _no_check(options: options_lib.DataOptions) -> None:
  del options


def _check_image_folder(options: options_lib.DataOptions) -> None:
  image_folder.check_folder(options.path, options.path_field)


def _any_workdir(options: options_lib.DataOptions, workdir: str) -> None:
  del options, workdir


def _workdir_outside_folder(options: options_lib.DataOptions, workdir: str) -> None:
  if options.path:
    image_folder.check_workdir_outside(options.path, workdir, options.path_field)


def _no_eval_images(options: options_lib.DataOptions) -> str:
  field = options.origin or "config.dataset.name"
  return f"{field}: dataset {options.entry!r} has no evaluation images"


@dataclasses.dataclass(frozen=True)
class _Entry:
  """How to check (cheaply, no decoding) and load one dataset.

  `no_eval_images` gives the one-line message for an empty eval split;
  `check_workdir(options, workdir)` refuses a training workdir the dataset
  would read its own outputs from.
  """

  check: Callable[[options_lib.DataOptions], None]
  load: Callable[[options_lib.DataOptions], base.Dataset]
  no_eval_images: Callable[[options_lib.DataOptions], str] = _no_eval_images
  check_workdir: Callable[[options_lib.DataOptions, str], None] = _any_workdir


_DATASETS: dict[str, _Entry] = {
  "image_folder": _Entry(
    check=_check_image_folder,
    load=image_folder.load,
    no_eval_images=image_folder.no_eval_images,
    check_workdir=_workdir_outside_folder,
  ),
  "demo": _Entry(check=_no_check, load=demo.load),
  "cartoon_faces": _Entry(check=_no_check, load=cartoon_faces.load),
  "celeb_a": _Entry(check=catalogue.check, load=catalogue.load),
  "imagenette": _Entry(check=catalogue.check, load=catalogue.load),
  "mit_indoor67": _Entry(check=mit_indoor67.check, load=mit_indoor67.load),
}
NAMES = tuple(_DATASETS)


def _entry(options: options_lib.DataOptions) -> _Entry:
  """The named dataset's entry; ConfigError naming the field that named it."""
  if options.name not in _DATASETS:
    field = options.origin or "config.dataset.name"
    raise ConfigError(
      f"{field}: dataset {options.name!r} is unknown; valid names: {', '.join(NAMES)}"
    )
  return _DATASETS[options.name]


def check(options: options_lib.DataOptions) -> None:
  """Cheap checks of the named dataset; raises ConfigError."""
  _entry(options).check(options)


def load(options: options_lib.DataOptions) -> base.Dataset:
  """Sources and default maps of the named dataset (prepares it if needed)."""
  return _entry(options).load(options)


def check_workdir(options: options_lib.DataOptions, workdir: str) -> None:
  """ConfigError if a training run in `workdir` would feed the named dataset."""
  _entry(options).check_workdir(options, workdir)


def no_eval_images(options: options_lib.DataOptions) -> str:
  """The message for the named dataset's empty eval split, naming its field."""
  return _entry(options).no_eval_images(options)
