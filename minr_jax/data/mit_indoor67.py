"""`mit_indoor67`: MIT Indoor Scenes (67 classes) as a TFDS dataset, prepared without TensorFlow.

The official TrainImages.txt / TestImages.txt split (5,360 / 1,340 images); the manual download
is in docs/datasets.md.
"""

from __future__ import annotations

import dataclasses
import os
import tarfile
from collections.abc import Iterator

import tensorflow_datasets as tfds
from absl import logging

from minr_jax.config import ConfigError
from minr_jax.data import base, image_folder, tfds_utils
from minr_jax.data import options as options_lib

BUILDER_NAME = "mit_indoor67"
ARCHIVE = "indoorCVPR_09.tar"
IMAGES_DIR = "Images"
SPLIT_FILES = {"train": "TrainImages.txt", "test": "TestImages.txt"}


@dataclasses.dataclass(frozen=True)
class Source:
  """What preparation reads: the lists and where the images are."""

  root: str  # DIR (absolute).
  archive: str | None  # DIR/indoorCVPR_09.tar, or None to read DIR/Images/.
  class_names: tuple[str, ...]  # Sorted.
  splits: tuple[tuple[str, tuple[str, ...]], ...]  # (split, 'class/file'...).


def check_manual_dir(path: str | None, field: str = "config.dataset.path") -> None:
  """Cheap checks of DIR: set, a directory, both lists, images or tar.

  Args:
    path: config.dataset.path.
    field: what to call `path` in messages.

  Raises:
    ConfigError: naming the field or the missing path.
  """
  if not path:
    raise ConfigError(
      f"{field} is not set (dataset mit_indoor67 needs "
      f"a directory with {ARCHIVE} or {IMAGES_DIR}/, "
      f"{' and '.join(SPLIT_FILES.values())})"
    )
  if not os.path.isdir(path):
    problem = " is not a directory" if os.path.exists(path) else (": no such directory")
    raise ConfigError(f"{field}{problem}: {path}")
  for name in SPLIT_FILES.values():
    if not os.path.isfile(os.path.join(path, name)):
      raise ConfigError(f"{field}: missing split file {os.path.join(path, name)}")
  if not (
    os.path.isdir(os.path.join(path, IMAGES_DIR)) or os.path.isfile(os.path.join(path, ARCHIVE))
  ):
    raise ConfigError(
      f"{field}: neither {os.path.join(path, IMAGES_DIR)}/ nor {os.path.join(path, ARCHIVE)} exists"
    )


def read_split_file(path: str, field: str = "config.dataset.path") -> tuple[str, ...]:
  """The `class/file` lines of a list, in order, blank lines and repeats out.

  Args:
    path: TrainImages.txt or TestImages.txt.
    field: what to call the manual directory in messages.

  Returns:
    Relative image paths (POSIX) below Images/.

  Raises:
    ConfigError: missing file, or a line that is not `class/file`.
  """
  try:
    with open(path, encoding="utf-8") as handle:
      lines = handle.read().splitlines()
  except (OSError, UnicodeDecodeError) as e:
    reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
    raise ConfigError(f"{field}: cannot read split file {path}: {reason or e}") from e
  entries = {}
  for number, line in enumerate(lines, start=1):
    entry = line.strip()
    if not entry:
      continue
    parts = entry.split("/")
    if len(parts) < 2 or not all(parts):
      raise ConfigError(f"{field}: {path} line {number} is {entry!r}, not <class>/<file>")
    entries.setdefault(entry, None)
  if len(entries) != sum(1 for line in lines if line.strip()):
    logging.warning("%s lists some images twice; each is used once", path)
  return tuple(entries)


def _archive_key(member_name: str) -> str | None:
  """'…/Images/<class>/<file>' -> '<class>/<file>' (None if not below one)."""
  parts = member_name.split("/")
  head = parts[:-2]
  if IMAGES_DIR not in head:
    return None
  start = len(head) - 1 - head[::-1].index(IMAGES_DIR)
  return "/".join(parts[start + 1 :])


def archive_index(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
  """{'<class>/<file>': member} of the files below an Images/ folder."""
  index = {}
  for member in tar.getmembers():
    key = _archive_key(member.name) if member.isfile() else None
    if key is not None:
      index[key] = member
  return index


def list_source(path: str, field: str = "config.dataset.path") -> Source:
  """Reads both lists and checks every listed image is there.

  Args:
    path: DIR, the manual download directory (docs/datasets.md).
    field: what to call `path` in messages.

  Returns:
    The source, splits in SPLIT_FILES order.

  Raises:
    ConfigError: see `check_manual_dir`; a listed image is absent.
  """
  check_manual_dir(path, field)
  root = os.path.abspath(path)
  splits = tuple(
    (split, read_split_file(os.path.join(root, name), field)) for split, name in SPLIT_FILES.items()
  )
  images_dir = os.path.join(root, IMAGES_DIR)
  archive = None if os.path.isdir(images_dir) else os.path.join(root, ARCHIVE)
  if archive is None:
    present = lambda entry: os.path.isfile(os.path.join(images_dir, *entry.split("/")))
    where = lambda entry: os.path.join(images_dir, *entry.split("/"))
  else:
    try:
      with tarfile.open(archive, "r:*") as tar:
        members = archive_index(tar)
    except (OSError, tarfile.TarError) as e:
      raise ConfigError(f"{field}: cannot read {archive}: {' '.join(str(e).split())}") from e
    present = members.__contains__
    where = lambda entry: f"{archive}:{IMAGES_DIR}/{entry}"
  for split, entries in splits:
    missing = [e for e in entries if not present(e)]
    if missing:
      others = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
      raise ConfigError(
        f"{field}: image {where(missing[0])} listed in {SPLIT_FILES[split]} does not exist{others}"
      )
  class_names = tuple(sorted({e.split("/")[0] for _, es in splits for e in es}))
  return Source(root, archive, class_names, splits)


class MitIndoor67Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """TFDS builder of MIT-Indoor67 from a manual directory (docs/datasets.md)."""

  name = BUILDER_NAME
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}
  # Nothing to download. Also keeps TFDS from looking for a checksums file
  # next to this module.
  url_infos = None

  def __init__(self, *, source: Source | None = None, **kwargs):
    """`source` is needed to prepare, not to read prepared data.

    Pickled copies (e.g. in grain workers) are rebuilt from the constructor
    arguments minus `source` and read the prepared files, whose metadata
    hold the class names.

    Args:
      source: the listed images.
      **kwargs: DatasetBuilder arguments (data_dir, file_format).
    """
    self._source = source
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    if self._source is not None:
      label = tfds.features.ClassLabel(names=list(self._source.class_names))
    else:  # Names are restored from the prepared data.
      label = tfds.features.ClassLabel()
    return tfds.core.DatasetInfo(
      builder=self,
      description="MIT Indoor Scenes (Quattoni and Torralba, CVPR 2009), "
      "official 80/20 per-class train/test lists.",
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(None, None, 3)),
          "label": label,
          "id": tfds.features.Text(),
        }
      ),
      homepage="https://web.mit.edu/torralba/www/indoor.html",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    if self._source is None:
      raise ValueError("MitIndoor67Builder needs a source to prepare")
    return {split: self._generate_examples(entries) for split, entries in self._source.splits}

  def _generate_examples(self, entries: tuple[str, ...]):
    source = self._source
    labels = {name: i for i, name in enumerate(source.class_names)}
    for entry, name, data in _read_images(source, entries):
      yield (
        entry,
        {
          "image": image_folder.rgb_image_bytes(data, name),
          "label": labels[entry.split("/")[0]],
          "id": entry,
        },
      )


def _read_images(source: Source, entries: tuple[str, ...]) -> Iterator[tuple[str, str, bytes]]:
  """(entry, path for messages, encoded bytes) of each listed image."""
  if source.archive is None:
    for entry in entries:
      path = os.path.join(source.root, IMAGES_DIR, *entry.split("/"))
      try:
        with open(path, "rb") as handle:
          data = handle.read()
      except OSError as e:
        raise ConfigError(f"cannot read image {path}: {e.strerror or e}") from e
      yield entry, path, data
    return
  with tarfile.open(source.archive, "r:*") as tar:
    members = archive_index(tar)
    for entry in entries:
      member = members[entry]
      handle = tar.extractfile(member)
      yield (entry, f"{source.archive}:{member.name}", handle.read() if handle else b"")


def _builder(options: options_lib.DataOptions, source: Source | None = None) -> MitIndoor67Builder:
  return MitIndoor67Builder(
    source=source, data_dir=options.data_dir, file_format=tfds_utils.FILE_FORMAT
  )


def check(options: options_lib.DataOptions) -> None:
  """Cheap: prepared data in data_dir, or a complete-looking manual dir.

  Args:
    options: uses data_dir, path.

  Raises:
    ConfigError: see `check_manual_dir` (only when nothing is prepared).
  """
  if not tfds_utils.is_prepared(_builder(options)):
    check_manual_dir(options.path, options.path_field)


def load(options: options_lib.DataOptions) -> base.Dataset:
  """Prepares from config.dataset.path if needed; train and eval sources.

  Args:
    options: uses data_dir, path, eval_split, resolution, train_resize,
      random_crop, flip.

  Returns:
    Sources of {'image': uint8 [H, W, 3], 'label': int64, 'id': bytes} and
    maps to {'image': float32 [R, R, 3]}.

  Raises:
    ConfigError: one line (a missing list, archive or image; an unreadable image).
  """
  builder = _builder(options)
  if not tfds_utils.is_prepared(builder):
    source = list_source(options.path, options.path_field)
    logging.info("Preparing %s from %s into %s", BUILDER_NAME, source.root, builder.data_dir)
    tfds_utils.prepare(_builder(options, source))
    builder = _builder(options)
  return base.whole_image_dataset(
    tfds_utils.split_source(builder, "train"),
    tfds_utils.split_source(builder, options.eval_split),
    options,
  )
