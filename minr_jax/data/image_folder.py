"""`image_folder`: a folder of JPEG/PNG/BMP/WebP images as a TFDS dataset (`load`).

Splits, labels, preparation and the workdir check: docs/datasets.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import stat as stat_lib
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image, UnidentifiedImageError

from minr_jax import paths
from minr_jax.config import ConfigError
from minr_jax.data import base, preprocess, tfds_utils
from minr_jax.data import options as options_lib

BUILDER_NAME = "image_folder"
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
EVAL_DIR_NAMES = ("val", "validation", "test")
TRAIN, EVAL = "train", "validation"  # TFDS split names.
UNLABELLED = -1
# Bump when the listing / split rule changes, so old preparations are unused.
_LAYOUT_VERSION = 1
_EXIF_ORIENTATION = 0x0112


@dataclasses.dataclass(frozen=True)
class ImageFile:
  """One image of the folder."""

  relpath: str  # POSIX path relative to DIR; the example's `id`.
  split: str  # TRAIN or EVAL.
  label: int  # Index into Listing.class_names, or UNLABELLED.
  size: int  # Bytes.
  mtime_ns: int


@dataclasses.dataclass(frozen=True)
class Listing:
  """Everything preparation needs to know about a folder."""

  root: str  # Absolute DIR.
  split_rule: str  # 'dirs' or 'hash:<eval_fraction>'.
  class_names: tuple[str, ...]
  files: tuple[ImageFile, ...]  # Sorted by relpath.
  skipped: tuple[str, ...] = ()  # Image names that are not regular files.


def is_image_name(name: str) -> bool:
  """True for a visible file name with an image extension (any case)."""
  return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def shown(path: str) -> str:
  """`path` printable as UTF-8 (bytes of a non-UTF-8 name as \\xNN escapes)."""
  return os.fsencode(path).decode("utf-8", "backslashreplace")


def _unreadable_folder(error: OSError) -> None:
  """os.walk's onerror: a folder that cannot be listed stops the run."""
  raise ConfigError(f"cannot read folder {shown(error.filename)}: {_one_line(error)}") from error


def _image_stat(path: str) -> os.stat_result:
  """The stat of image `path`, or one-line ConfigError naming it.

  Raises:
    ConfigError: `cannot read image <path>: <reason>` for a name that is not
      valid UTF-8, a broken symbolic link, a symbolic link loop, or any other
      error of stat.
  """
  try:
    path.encode("utf-8")
  except UnicodeEncodeError:
    raise ConfigError(
      f"cannot read image {shown(path)}: the file name is not valid UTF-8 (rename the file)"
    ) from None
  try:
    return os.stat(path)
  except OSError as e:
    if isinstance(e, FileNotFoundError) and os.path.islink(path):
      reason = f"broken symbolic link to {shown(os.readlink(path))}"
    else:
      reason = _one_line(e)
    raise ConfigError(f"cannot read image {shown(path)}: {reason}") from e


class _ObjectStat(NamedTuple):
  """What `_image_file` reads of a stat, for an object in a bucket."""

  st_size: int
  st_mtime_ns: int


def walk_images(
  directory: str, skipped: list[str] | None = None
) -> Iterator[tuple[str, os.stat_result]]:
  """Absolute paths of the images below `directory` and their stat, lazily.

  Hidden files and folders are skipped; symlinked folders are followed once
  (a folder reached again through a link loop is not re-entered). An image
  name that is not a regular file (after following links: a FIFO, a device,
  a socket) is skipped and appended to `skipped`.

  Args:
    directory: an existing directory.
    skipped: receives the paths of the image names that are not regular
      files.

  Yields:
    (absolute file path, its os.stat_result) in sorted walk order.

  Raises:
    ConfigError: a folder that cannot be listed (`cannot read folder <path>:
      <reason>`), or an image whose name is not UTF-8 or whose stat fails,
      e.g. a broken or looping symbolic link (`cannot read image <path>:
      <reason>`).
  """
  if paths.is_url(directory):  # An object store: one listing, no links.
    for rel, (size, mtime_ns) in sorted(paths.url_files(directory).items()):
      parts = rel.split("/")
      if not any(p.startswith(".") for p in parts[:-1]) and is_image_name(parts[-1]):
        yield f"{directory.rstrip('/')}/{rel}", _ObjectStat(size, mtime_ns)
    return
  seen = set()
  for current, dirs, files in os.walk(directory, onerror=_unreadable_folder, followlinks=True):
    real = os.path.realpath(current)
    if real in seen:
      dirs[:] = []
      continue
    seen.add(real)
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    for name in sorted(files):
      if is_image_name(name):
        path = os.path.join(current, name)
        stat = _image_stat(path)
        if stat_lib.S_ISREG(stat.st_mode):
          yield path, stat
        elif skipped is not None:
          skipped.append(path)


def _url_isdir(url: str) -> bool:
  return paths.as_path(url).is_dir()


def split_dirs(root: str) -> tuple[str, str | None]:
  """(train directory, eval directory or None for a hash split) of DIR."""
  isdir = _url_isdir if paths.is_url(root) else os.path.isdir
  train_dir = os.path.join(root, "train")
  if not isdir(train_dir):
    return root, None
  for name in EVAL_DIR_NAMES:
    eval_dir = os.path.join(root, name)
    if isdir(eval_dir):
      return train_dir, eval_dir
  return train_dir, None


def check_folder(path: str | None, field: str = "config.dataset.path") -> None:
  """Cheap checks of the folder (stops at the first image found).

  Args:
    path: the configured folder.
    field: what to call `path` in messages (the config field it came from).

  Raises:
    ConfigError: path unset, missing, not a directory, or without images;
      an unreadable sub-folder or bad image file met on the way (see
      `walk_images`).
  """
  if not path:
    raise ConfigError(f"{field} is not set (dataset image_folder needs a folder of images)")
  if paths.is_url(path):
    paths.check_reachable(path, field)
    if not _url_isdir(path):  # A bucket has folders only above objects.
      raise ConfigError(f"{field}: no such directory: {path}")
  elif not os.path.exists(path):
    raise ConfigError(f"{field}: no such directory: {path}")
  elif not os.path.isdir(path):
    raise ConfigError(f"{field} is not a directory: {path}")
  train_dir, _ = split_dirs(paths.abspath(path))
  skipped = []
  if next(walk_images(train_dir, skipped), None) is None:
    extensions = "/".join(sorted(e[1:] for e in IMAGE_EXTENSIONS))
    more = f" and {len(skipped) - 1} more" if len(skipped) > 1 else ""
    others = f" (skipped, not regular files: {shown(skipped[0])}{more})" if skipped else ""
    raise ConfigError(f"{field}: no images ({extensions}) in {train_dir}{others}")


def check_workdir_outside(path: str, workdir: str, field: str = "config.dataset.path") -> None:
  """Refuses a training workdir inside the image folder: its PNG grids would become training images.

  Args:
    path: the configured folder.
    workdir: the run's --workdir.
    field: what to call `path` in messages.

  Raises:
    ConfigError: `--workdir=W is inside <field> DIR: ...` (one line).
  """
  if paths.is_url(path) != paths.is_url(workdir):
    return
  if paths.is_url(path):
    folder, work = path.rstrip("/"), workdir.rstrip("/")
  else:
    folder = os.path.realpath(paths.abspath(path))
    work = os.path.realpath(paths.abspath(workdir))
  if work != folder and not work.startswith(folder.rstrip("/") + "/"):
    return
  relative = work[len(folder) :].strip("/")
  if any(part.startswith(".") for part in relative.split("/") if part):
    return  # Hidden: listings skip it.
  raise ConfigError(
    f"--workdir={workdir} is inside {field} {path}: the run's PNG grids "
    "would become training images the next time the folder is prepared; use "
    "a workdir outside the folder (or a hidden one, named .something)"
  )


def hash_fraction(relpath: str) -> float:
  """Deterministic number in [0, 1) from a relative path."""
  digest = hashlib.sha256(relpath.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64


def _class_of(path: str, split_dir: str) -> str | None:
  """First sub-folder of `path` below `split_dir`, None if directly in it."""
  parts = os.path.relpath(path, split_dir).split(os.sep)
  return parts[0] if len(parts) > 1 else None


def _image_file(path: str, stat: os.stat_result, root: str, split: str, label: int) -> ImageFile:
  relpath = os.path.relpath(path, root).replace(os.sep, "/")
  return ImageFile(relpath, split, label, stat.st_size, stat.st_mtime_ns)


def list_folder(root: str, eval_fraction: float) -> Listing:
  """Walks DIR once: every image with its split, label, size and mtime.

  Args:
    root: absolute DIR (checked by `check_folder`).
    eval_fraction: share of files held out by the hash split.

  Returns:
    The listing, files sorted by relative path.

  Raises:
    ConfigError: see `walk_images`.
  """
  train_dir, eval_dir = split_dirs(root)
  skipped = []
  # (absolute path, stat, split, class name or None).
  found = [(p, st, TRAIN, _class_of(p, train_dir)) for p, st in walk_images(train_dir, skipped)]
  if eval_dir is None:
    rule = f"hash:{eval_fraction!r}"
    found = [
      (
        p,
        st,
        EVAL
        if hash_fraction(os.path.relpath(p, root).replace(os.sep, "/")) < eval_fraction
        else TRAIN,
        c,
      )
      for p, st, _, c in found
    ]
  else:
    rule = "dirs"
    found += [(p, st, EVAL, _class_of(p, eval_dir)) for p, st in walk_images(eval_dir, skipped)]
  class_names = tuple(sorted({c for _, _, _, c in found if c is not None}))
  index = {name: i for i, name in enumerate(class_names)}
  files = [_image_file(p, st, root, s, index.get(c, UNLABELLED)) for p, st, s, c in found]
  files.sort(key=lambda f: f.relpath)
  return Listing(root, rule, class_names, tuple(files), tuple(skipped))


def fingerprint(listing: Listing) -> str:
  """12 hex digits that change whenever the prepared data would change."""
  payload = json.dumps(
    [
      _LAYOUT_VERSION,
      listing.root,
      listing.split_rule,
      [(f.relpath, f.size, f.mtime_ns) for f in listing.files],
    ]
  )
  return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]


def config_name(listing: Listing) -> str:
  """'<slug>-<hash>': the prepared data's directory under image_folder/."""
  slug = re.sub(r"[^a-z0-9]+", "_", os.path.basename(listing.root).lower())
  slug = slug.strip("_")[:40] or "root"
  return f"{slug}-{fingerprint(listing)}"


def _one_line(error: BaseException) -> str:
  """The reason of a read error, on one line, without PIL's buffer repr.

  For an OSError, its strerror (e.g. 'Permission denied'): the message names
  the path already.
  """
  if isinstance(error, UnidentifiedImageError):
    return "not an image file PIL can identify"
  if isinstance(error, OSError) and error.strerror:
    return error.strerror
  return " ".join(str(error).split()) or type(error).__name__


def _needs_reencoding(image: Image.Image) -> bool:
  """False if TFDS can store the file's bytes as they are (RGB JPEG/PNG)."""
  return (
    image.format not in ("JPEG", "PNG")
    or image.mode != "RGB"
    or "transparency" in image.info
    or image.getexif().get(_EXIF_ORIENTATION, 1) != 1
  )


def rgb_image_bytes(data: bytes, name: str) -> bytes:
  """Encoded image `data` as RGB JPEG/PNG bytes (`data` itself if possible).

  RGB JPEG/PNG without transparency or EXIF rotation are kept byte for byte;
  anything else PIL reads (greyscale, CMYK, palette, alpha, other formats) is
  converted by `preprocess.pil_to_rgb` and re-encoded losslessly as PNG.

  Args:
    data: the encoded file.
    name: the file's path (or archive member) for the error message.

  Returns:
    Encoded bytes that decode to uint8 [H, W, 3].

  Raises:
    ConfigError: `cannot read image <name>: <reason>` (one line).
  """
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()  # Decodes fully: catches truncated files.
      if not _needs_reencoding(image):
        return data
      rgb = preprocess.pil_to_rgb(image)
  except Exception as e:  # PIL raises many types; any means unreadable.
    raise ConfigError(f"cannot read image {name}: {_one_line(e)}") from e
  buffer = io.BytesIO()
  rgb.save(buffer, format="PNG")
  return buffer.getvalue()


def _open_nonblocking(path: str, flags: int) -> int:
  """os.open with O_NONBLOCK: opening a file turned into a FIFO since the
  listing returns at once instead of waiting for a writer; a regular file
  reads as usual."""
  return os.open(path, flags | os.O_NONBLOCK)


def encoded_rgb(path: str) -> bytes:
  """The image at `path` as RGB JPEG/PNG bytes (original bytes if possible).

  Args:
    path: an image file.

  Returns:
    Encoded bytes that decode to uint8 [H, W, 3].

  Raises:
    ConfigError: `cannot read image <path>: <reason>` (one line).
  """
  try:
    if paths.is_url(path):
      data = paths.as_path(path).read_bytes()
    else:
      with open(path, "rb", opener=_open_nonblocking) as handle:
        if not stat_lib.S_ISREG(os.fstat(handle.fileno()).st_mode):
          raise ConfigError(f"cannot read image {path}: not a regular file")
        data = handle.read()
  except OSError as e:
    raise ConfigError(f"cannot read image {path}: {_one_line(e)}") from e
  return rgb_image_bytes(data, path)


class ImageFolderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """TFDS builder of one folder listing."""

  name = BUILDER_NAME
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}
  # Nothing to download. Also keeps TFDS from looking for a checksums file
  # next to this module, which needs the `importlib_resources` package.
  url_infos = None

  def __init__(self, *, listing: Listing | None = None, **kwargs):
    """`listing` is needed to prepare, not to read prepared data.

    TFDS pickles a builder (e.g. into grain workers, with its data source) as
    its constructor arguments minus `listing`, which may be large: the copy
    reads the prepared files and their stored metadata.

    Args:
      listing: the folder's files.
      **kwargs: DatasetBuilder arguments (data_dir, config, file_format).
    """
    self._listing = listing
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    metadata = tfds.core.MetadataDict()
    if self._listing is not None:
      metadata.update(
        root=self._listing.root,
        split_rule=self._listing.split_rule,
        class_names=list(self._listing.class_names),
      )
    return tfds.core.DatasetInfo(
      builder=self,
      description="Images of a folder (see metadata.json: root).",
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(None, None, 3)),
          "label": tfds.features.Tensor(shape=(), dtype=np.int64),
          "id": tfds.features.Text(),
        }
      ),
      metadata=metadata,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    if self._listing is None:
      raise ValueError("ImageFolderBuilder needs a listing to prepare")
    present = {f.split for f in self._listing.files}
    # TFDS cannot write an empty split: an absent split reads as empty.
    return {s: self._generate_examples(s) for s in (TRAIN, EVAL) if s in present}

  def _generate_examples(self, split: str):
    for f in self._listing.files:
      if f.split == split:
        path = os.path.join(self._listing.root, *f.relpath.split("/"))
        yield f.relpath, {"image": encoded_rgb(path), "label": f.label, "id": f.relpath}


def prepare(
  path: str, data_dir: str, eval_fraction: float, field: str = "config.dataset.path"
) -> ImageFolderBuilder:
  """Lists the folder and prepares it unless an identical copy exists.

  Args:
    path: DIR.
    data_dir: TFDS data_dir (absolute).
    eval_fraction: share held out by the hash split.
    field: what to call `path` in messages.

  Returns:
    The prepared builder; its `data_dir` is
    `<data_dir>/image_folder/<slug>-<hash>/1.0.0`.

  Raises:
    ConfigError: bad folder or unreadable image.
  """
  check_folder(path, field)
  listing = list_folder(paths.abspath(path), eval_fraction)
  builder = ImageFolderBuilder(
    listing=listing,
    data_dir=data_dir,
    config=tfds.core.BuilderConfig(name=config_name(listing)),
    file_format=tfds_utils.FILE_FORMAT,
  )
  if not tfds_utils.is_prepared(builder):
    logging.info(
      "Preparing %d images of %s into %s", len(listing.files), listing.root, builder.data_dir
    )
  note = ""
  if listing.skipped:
    note = (
      f"; skipped {len(listing.skipped)} image name(s) that are not regular "
      f"files (FIFO, device or socket), e.g. {shown(listing.skipped[0])}"
    )
  tfds_utils.prepare(builder, note=note, source_bytes=sum(f.size for f in listing.files))
  return builder


# (path, data_dir, eval_fraction) -> the builder prepared in this process.
_PREPARED: dict[tuple[str, str, float], ImageFolderBuilder] = {}


def _prepared(path: str, data_dir: str, eval_fraction: float, field: str) -> ImageFolderBuilder:
  """`prepare` once per process and folder (the run's snapshot of it)."""
  key = (path, data_dir, eval_fraction)
  if key not in _PREPARED:
    _PREPARED[key] = prepare(path, data_dir, eval_fraction, field)
  return _PREPARED[key]


def no_eval_images(options: options_lib.DataOptions) -> str:
  """The one-line reason why the folder's eval split is empty (for ConfigError)."""
  _, eval_dir = split_dirs(paths.abspath(options.path))
  if eval_dir is not None:
    why = f"{eval_dir} holds no images"
  else:
    why = (
      "none fell in the held-out share, config.dataset.eval_fraction="
      f"{options.eval_fraction!r}, by the hash of its path; add images, raise "
      "config.dataset.eval_fraction, or make train/ and val/ sub-folders"
    )
  return f"{options.path_field}: no evaluation images in {options.path} ({why})"


def load(options: options_lib.DataOptions) -> base.Dataset:
  """The prepared folder with the default whole-image preprocessing.

  Args:
    options: uses path, data_dir, eval_fraction, resolution, random_crop,
      train_resize, flip.

  Returns:
    Train/eval sources of {'image': uint8 [H, W, 3], 'label', 'id'} and maps
    to {'image': float32 [R, R, 3]}.

  Raises:
    ConfigError: bad folder, unreadable image, or no training image.
  """
  check_folder(options.path, options.path_field)
  builder = _prepared(
    paths.abspath(options.path), options.data_dir, options.eval_fraction, options.path_field
  )
  train = tfds_utils.split_source(builder, TRAIN)
  if not len(train):  # pylint: disable=g-explicit-length-test
    raise ConfigError(
      f"{options.path_field}: no training images in {options.path} (all "
      "fell in the eval split; lower config.dataset.eval_fraction)"
    )
  return base.whole_image_dataset(train, tfds_utils.split_source(builder, EVAL), options)
