"""`celeb_a` and `imagenette`: the TFDS catalogue datasets, prepared without TensorFlow.

Subclasses of the catalogue builders replace only the steps that need TF (reading the zip/tgz),
so the prepared data are the catalogue's, checked against TFDS's checksums. Nothing is
downloaded: the manual steps are in docs/datasets.md.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import os
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from typing import Any

import tensorflow_datasets as tfds
from absl import logging
from tensorflow_datasets.core.download import download_manager

from minr_jax.config import ConfigError
from minr_jax.data import base, image_folder, tfds_utils
from minr_jax.data import options as options_lib

IMAGENETTE_CONFIG = "320px-v2"


class _CatalogueUrlInfos:
  """Class attribute giving the catalogue parent's registered checksums.

  TFDS looks for `checksums.tsv` next to the module defining a builder class,
  so a subclass defined here must borrow its parent's.
  """

  def __get__(self, instance: Any, owner: type) -> dict | None:
    return owner.__bases__[0].url_infos


# ---------------------------------------------------------------- CelebA

_CelebABase: Any = tfds.builder_cls("celeb_a")
_celeb_a_lib = sys.modules[_CelebABase.__module__]
# The catalogue's download keys -> URLs (the files are named in checksums.tsv).
_CELEB_A_URLS = {
  "img_align_celeba": _celeb_a_lib.IMG_ALIGNED_DATA,
  "list_eval_partition": _celeb_a_lib.EVAL_LIST,
  "list_attr_celeba": _celeb_a_lib.ATTR_DATA,
  "landmarks_celeba": _celeb_a_lib.LANDMARKS_DATA,
  "identity_celeba": _celeb_a_lib.IDENTITY_DATA,
}
_CELEB_A_SPLITS = ("train", "validation", "test")  # list_eval_partition 0/1/2.


class _ZipImages(collections.abc.Mapping):
  """{'000001.jpg': encoded bytes} read lazily from img_align_celeba.zip."""

  def __init__(self, archive: zipfile.ZipFile, path: str):
    self._archive = archive
    self._path = path
    self._members = {
      os.path.basename(info.filename): info for info in archive.infolist() if not info.is_dir()
    }

  def __getitem__(self, name: str) -> bytes:
    if name not in self._members:
      raise ConfigError(
        f"config.dataset.path: {self._path} has no image {name} (listed in list_eval_partition.txt)"
      )
    return self._archive.read(self._members[name])

  def __iter__(self) -> Iterator[str]:
    return iter(self._members)

  def __len__(self) -> int:
    return len(self._members)


class CelebAFromManualFiles(_CelebABase, skip_registration=True):
  """TFDS's `celeb_a` builder, reading its zip with Python instead of TF.

  The catalogue builder decodes nothing but reads the zip through
  `tf.io.gfile`; this one reads it with `zipfile`, one image at a time
  instead of all of them in memory. Everything else (features, split rule,
  keys, attribute parsing) is the catalogue's own code.
  """

  name = "celeb_a"
  url_infos = _CatalogueUrlInfos()

  @classmethod
  def _get_pkg_dir_path(cls):
    return _CelebABase._get_pkg_dir_path()  # Its README and citation.

  def _split_generators(self, dl_manager):
    # Resolved from the manual directory and checksum-checked by TFDS.
    paths = dl_manager.download(_CELEB_A_URLS)
    return {split: self._examples(file_id, paths) for file_id, split in enumerate(_CELEB_A_SPLITS)}

  def _examples(self, file_id: int, paths: dict):
    zip_path = os.fspath(paths["img_align_celeba"])
    with zipfile.ZipFile(zip_path) as archive:
      yield from self._generate_examples(
        file_id=file_id, downloaded_dirs=paths, downloaded_images=_ZipImages(archive, zip_path)
      )


# ------------------------------------------------------------ Imagenette

_ImagenetteBase: Any = tfds.builder_cls("imagenette")
_imagenette_lib = sys.modules[_ImagenetteBase.__module__]
_IMAGENETTE_SPLIT_DIRS = {"train": "train", "validation": "val"}


class ImagenetteFromManualFiles(_ImagenetteBase, skip_registration=True):
  """TFDS's `imagenette` builder, reading the .tgz (or its folder) without TF.

  The catalogue builder extracts the archive and lists it with
  `tf.io.gfile`; this one streams the archive with `tarfile` (or walks the
  extracted folder). Keys (file names) and labels (WordNet ids) are the
  catalogue's; images are stored as RGB (`image_folder.rgb_image_bytes`).
  """

  name = "imagenette"
  url_infos = _CatalogueUrlInfos()

  def __init__(self, *, extracted_dir: str | None = None, **kwargs):
    """`extracted_dir`: the archive's top folder, used instead of the .tgz."""
    self._extracted_dir = extracted_dir
    super().__init__(**kwargs)

  @classmethod
  def _get_pkg_dir_path(cls):
    return _ImagenetteBase._get_pkg_dir_path()

  def _split_generators(self, dl_manager):
    if self._extracted_dir is not None:
      return {
        split: self._folder_examples(os.path.join(self._extracted_dir, directory))
        for split, directory in _IMAGENETTE_SPLIT_DIRS.items()
      }
    archive = os.fspath(dl_manager.download(imagenette_url(self.builder_config.dirname)))
    return {
      split: self._archive_examples(archive, directory)
      for split, directory in _IMAGENETTE_SPLIT_DIRS.items()
    }

  def _folder_examples(self, split_dir: str):
    for wnid in sorted(os.listdir(split_dir)):
      class_dir = os.path.join(split_dir, wnid)
      if not os.path.isdir(class_dir):
        continue
      for name in sorted(os.listdir(class_dir)):
        if name.endswith(".JPEG"):
          path = os.path.join(class_dir, name)
          yield name, {"image": image_folder.encoded_rgb(path), "label": wnid}

  def _archive_examples(self, archive: str, split_dir: str):
    with tarfile.open(archive, "r|*") as tar:  # Streamed: one pass.
      for member in tar:
        parts = member.name.split("/")
        if (
          not member.isfile()
          or len(parts) < 3
          or parts[-3] != split_dir
          or not parts[-1].endswith(".JPEG")
        ):
          continue
        handle = tar.extractfile(member)
        data = handle.read() if handle else b""
        yield (
          parts[-1],
          {
            "image": image_folder.rgb_image_bytes(data, f"{archive}:{member.name}"),
            "label": parts[-2],
          },
        )


def imagenette_url(dirname: str) -> str:
  """The catalogue's download URL of an Imagenette archive ('<dirname>.tgz')."""
  return f"{_imagenette_lib._URL_PREFIX}{dirname}.tgz"  # pylint: disable=protected-access


# --------------------------------------------------------------- shared


@dataclasses.dataclass(frozen=True)
class _Spec:
  """One catalogue dataset."""

  name: str  # config.dataset.name.
  tfds_name: str  # For tfds.builder.
  preparer: type  # TF-free subclass of the catalogue builder.
  config: str | None  # Builder config of `preparer`.


_SPECS = {
  "celeb_a": _Spec("celeb_a", "celeb_a", CelebAFromManualFiles, None),
  "imagenette": _Spec(
    "imagenette", f"imagenette/{IMAGENETTE_CONFIG}", ImagenetteFromManualFiles, IMAGENETTE_CONFIG
  ),
}


def manual_dir(options: options_lib.DataOptions) -> str:
  """config.dataset.path, else TFDS's `<data_dir>/downloads/manual`."""
  return options.path or os.path.join(options.data_dir, "downloads", "manual")


def reader(options: options_lib.DataOptions) -> tfds.core.DatasetBuilder:
  """The catalogue builder over `options.data_dir` (prepared or not)."""
  return tfds.builder(_SPECS[options.name].tfds_name, data_dir=options.data_dir)


def manual_files(name: str) -> tuple[str, ...]:
  """The files the manual directory must hold (names from checksums.tsv)."""
  if name == "imagenette":
    config = _ImagenetteBase.builder_configs[IMAGENETTE_CONFIG]
    return (f"{config.dirname}.tgz",)
  return tuple(info.filename for info in _CelebABase.url_infos.values())


def _extracted_imagenette(directory: str) -> str | None:
  """`directory/imagenette2-320` if it holds train/ and val/, else None."""
  config = _ImagenetteBase.builder_configs[IMAGENETTE_CONFIG]
  top = os.path.join(directory, config.dirname)
  if all(os.path.isdir(os.path.join(top, d)) for d in _IMAGENETTE_SPLIT_DIRS.values()):
    return top
  return None


def _check_prepared_format(builder: tfds.core.DatasetBuilder) -> None:
  file_format = builder.info.file_format
  if file_format is not None and (file_format != tfds.core.FileFormat.ARRAY_RECORD):
    raise ConfigError(
      f"config.dataset.data_dir: {builder.data_dir} holds {builder.name} as "
      f"{file_format.value}, not array_record; use another data_dir to "
      "prepare it again"
    )


def check(options: options_lib.DataOptions) -> None:
  """Cheap: prepared data in data_dir, or the manual files; no network.

  Args:
    options: uses name, data_dir, path.

  Raises:
    ConfigError: neither is there (one line saying what to download where),
      the path is not a directory, or the prepared data are not array_record.
  """
  builder = reader(options)
  if tfds_utils.is_prepared(builder):
    _check_prepared_format(builder)
    return
  directory = manual_dir(options)
  if options.path is not None and not os.path.isdir(options.path):
    problem = " is not a directory" if os.path.exists(options.path) else ": no such directory"
    raise ConfigError(
      f"{options.path_field}{problem}: {options.path} ({options.name} is "
      f"not prepared in {builder.data_dir} either)"
    )
  if options.name == "imagenette" and _extracted_imagenette(directory):
    return
  missing = [
    f for f in manual_files(options.name) if not os.path.isfile(os.path.join(directory, f))
  ]
  if missing:
    where = (
      options.path_field
      if options.path
      else f"{options.path_field} is unset and the default manual dir"
    )
    raise ConfigError(
      f"{options.name} is not prepared in {builder.data_dir} and {where} "
      f"{directory} lacks {', '.join(missing)}; download them by hand (no "
      "network access is tried; steps in minr_jax/data/catalogue.py)"
    )


def prepare(options: options_lib.DataOptions) -> None:
  """Prepares the dataset into data_dir from the manual directory.

  Args:
    options: uses name, data_dir, path.

  Raises:
    ConfigError: see `check`; a manual file whose size or checksum differs
      from TFDS's registered one; an image listed but absent or unreadable.
  """
  spec = _SPECS[options.name]
  directory = manual_dir(options)
  kwargs: dict[str, Any] = {}
  if options.name == "imagenette" and not os.path.isfile(
    os.path.join(directory, manual_files("imagenette")[0])
  ):
    kwargs["extracted_dir"] = _extracted_imagenette(directory)
  builder = spec.preparer(
    data_dir=options.data_dir, config=spec.config, file_format=tfds_utils.FILE_FORMAT, **kwargs
  )
  if tfds_utils.is_prepared(builder):
    return
  logging.info("Preparing %s from %s into %s", options.name, directory, builder.data_dir)
  try:
    tfds_utils.prepare(builder, manual_dir=directory)
  except download_manager.NonMatchingChecksumError as e:
    raise ConfigError(
      f"{options.path_field}: a file in {directory} differs from the one "
      f"TFDS registered for {options.name} (size or sha256); download the "
      f"official {', '.join(manual_files(options.name))} again"
    ) from e


def load(options: options_lib.DataOptions) -> base.Dataset:
  """The train split and the eval split with the recipe's maps.

  Args:
    options: uses name, data_dir, path, eval_split, resolution,
      train_resize, random_crop, flip.

  Returns:
    Sources of {'image': uint8 [H, W, 3], ...} (celeb_a also has landmarks,
    attributes and identity; imagenette a label) and maps to
    {'image': float32 [R, R, 3]}.

  Raises:
    ConfigError: see `check` and `prepare`.
  """
  check(options)
  builder = reader(options)
  if not tfds_utils.is_prepared(builder):
    prepare(options)
    builder = reader(options)
  return base.whole_image_dataset(
    tfds_utils.split_source(builder, "train"),
    tfds_utils.split_source(builder, options.eval_split),
    options,
  )
