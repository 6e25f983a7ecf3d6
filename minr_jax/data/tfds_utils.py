"""Preparing a TFDS builder as array_record files and reading it back, no TF.

`prepare` runs `download_and_prepare` once (under a lock, see docs/datasets.md); `split_source`
opens a split as a random-access data source. A gs:// data_dir is used through a local mirror.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import logging
import os
import shutil
from collections.abc import Iterator
from typing import Any

import grain
import tensorflow_datasets as tfds

from minr_jax import paths
from minr_jax.config import ConfigError


class _NoOpenCVNote(logging.Filter):
  """TFDS warns on every image decode that OpenCV is not installed; PIL decodes fine."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "OpenCV is not installed" not in record.getMessage()


logging.getLogger("absl").addFilter(_NoOpenCVNote())

FILE_FORMAT = "array_record"


def _no_bucket_info(info: tfds.core.DatasetInfo) -> None:
  """Replaces DatasetInfo.initialize_from_bucket: no look-up, no temp directory.

  TFDS's version makes `tempfile.mkdtemp('tfds')` before asking whether the
  bucket look-up is enabled, and never removes it.
  """
  del info


tfds.core.DatasetInfo.initialize_from_bucket = _no_bucket_info


class NoSpaceError(ConfigError):
  """The disk of data_dir filled up during a preparation (nothing partial kept)."""


@contextlib.contextmanager
def _file_lock(path: str, wait: bool = True) -> Iterator[bool]:
  """Holds an exclusive flock on `path` (created if needed) while inside.

  Yields True once held; with `wait=False`, yields False at once if another
  process holds it.
  """
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "a") as handle:
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
      yield False
      return
    try:
      yield True
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)


# TFDS writes these last: a data_dir holding both holds finished data.
_DONE_FILES = ("dataset_info.json", "features.json")


def _prepared_here(builder: tfds.core.DatasetBuilder) -> bool:
  return all(os.path.isfile(os.path.join(builder.data_dir, name)) for name in _DONE_FILES)


def _remote(builder: tfds.core.DatasetBuilder) -> str | None:
  """The URL whose local mirror `builder.data_dir` is (data_dir = gs://...), else None."""
  return paths.remote_of(os.fspath(builder.data_dir))


def _prepared_remote(builder: tfds.core.DatasetBuilder) -> bool:
  remote = _remote(builder)
  return remote is not None and all(
    paths.as_path(remote).joinpath(name).exists() for name in _DONE_FILES
  )


def is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
  """Whether `builder.data_dir` holds finished data (quietly, unlike TFDS's).

  For a URL data_dir: finished data in the local mirror or at the URL.
  """
  return _prepared_here(builder) or _prepared_remote(builder)


def _fetch(builder: tfds.core.DatasetBuilder) -> None:
  """Copies a URL data_dir's finished data into the local mirror and reads its info."""
  paths.copy_tree(_remote(builder), builder.data_dir, last=_DONE_FILES)
  builder.info.read_from_directory(builder.data_dir)


def _lock_path(builder: tfds.core.DatasetBuilder) -> str:
  """`<data_dir>/.locks/<name>_<config>_<version>.lock`, outside TFDS dirs."""
  return _lock_of(os.fspath(builder.data_dir_root), os.fspath(builder.data_dir))


def _lock_of(root: str, version_dir: str) -> str:
  relative = os.path.relpath(version_dir, root).replace(os.sep, "_")
  return os.path.join(root, ".locks", relative + ".lock")


_INCOMPLETE = "incomplete."  # TFDS: incomplete.XXXXXX_<version> beside <version>.


def remove_incomplete(builder: tfds.core.DatasetBuilder, holding: str | None = None) -> list[str]:
  """Removes the `incomplete.*` folders of killed preparations of builder's dataset.

  Looks in `<data_dir>/<name>/` and `<data_dir>/<name>/<config>/` (any
  config: the folder may have changed since). A folder is removed only if no
  process holds the lock of the version it was becoming, i.e. no preparation
  of it is running, or if that lock is `holding` (held by the caller, which
  is not preparing it at the moment).

  Returns:
    The folders removed.
  """
  root = os.fspath(builder.data_dir_root)
  top = os.path.join(root, builder.name)
  removed = []
  for parent in [top] + sorted(e.path for e in _scandir(top) if e.is_dir()):
    for entry in sorted(_scandir(parent), key=lambda e: e.name):
      if not (
        entry.name.startswith(_INCOMPLETE)
        and "_" in entry.name
        and entry.is_dir(follow_symlinks=False)
      ):
        continue
      lock = _lock_of(root, os.path.join(parent, entry.name.split("_", 1)[1]))
      if lock == holding:
        held = contextlib.nullcontext(True)
      else:
        held = _file_lock(lock, wait=False)
      try:
        with held as free:
          if free:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
      except OSError:  # A lock that cannot be made (read-only data_dir): leave it.
        pass
  return removed


def _scandir(path: str) -> list[os.DirEntry]:
  try:
    with os.scandir(path) as entries:
      return list(entries)
  except OSError:
    return []


def _is_no_space(error: BaseException) -> bool:
  """Whether `error` (or what it wraps) is a full disk or quota.

  array_record reports it as a RuntimeError whose text holds strerror.
  """
  for _ in range(10):  # The error and what it wraps.
    if error is None:
      return False
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    if any(os.strerror(n) in str(error) for n in (errno.ENOSPC, errno.EDQUOT)):
      return True
    error = error.__cause__ or error.__context__
  return False


def _megabytes(n: int) -> str:
  return f"{n / 1e6:,.1f} MB"


def _no_space(builder: tfds.core.DatasetBuilder, needed: int | None) -> NoSpaceError:
  root = os.fspath(builder.data_dir_root)
  usage = shutil.disk_usage(root)
  need = f"; the source files take {_megabytes(needed)}" if needed else ""
  return NoSpaceError(
    f"config.dataset.data_dir: no space left on the device of {root} while "
    f"preparing {builder.name} ({_megabytes(usage.free)} free of "
    f"{_megabytes(usage.total)}{need}); nothing partial was kept: free "
    "space or set config.dataset.data_dir to a larger disk"
  )


def _read_info(builder: tfds.core.DatasetBuilder) -> None:
  """Loads the finished data's metadata into a builder made before they existed."""
  if not builder.info.splits:
    builder.info.read_from_directory(builder.data_dir)


def prepare(
  builder: tfds.core.DatasetBuilder,
  manual_dir: str | None = None,
  *,
  note: str = "",
  source_bytes: int | None = None,
) -> None:
  """Writes `builder`'s splits to `builder.data_dir` unless already there.

  No network access: the builders here download nothing (the catalogue ones
  are only prepared once their files are in `manual_dir`) and GCS look-ups
  are off. Errors raised by the builder's generator propagate unchanged
  (TFDS removes its partial output). When `builder.data_dir` mirrors a URL
  data_dir (`options.from_config`), finished data at the URL are copied in
  instead of prepared, and data prepared here are uploaded to the URL. On
  return, `builder.info` describes the finished data.

  Args:
    builder: a builder constructed with `file_format='array_record'`.
    manual_dir: TFDS's manual download directory (default
      `<data_dir>/downloads/manual`).
    note: appended to the one line announcing a preparation.
    source_bytes: the size of what is prepared, if known (for NoSpaceError).

  Raises:
    NoSpaceError: the disk of data_dir filled up.
  """
  if os.path.isdir(builder.data_dir_root):
    remove_incomplete(builder)  # Left by killed preparations.
  if _prepared_here(builder):
    _read_info(builder)
    return
  lock = _lock_path(builder)
  with _file_lock(lock):
    if _prepared_here(builder):  # Another process finished it meanwhile.
      _read_info(builder)
      return
    remove_incomplete(builder, lock)  # Left by killed preparations.
    if _prepared_remote(builder):
      _fetch(builder)
      return
    # One line instead of TFDS's "Downloading and preparing ... Unknown size"
    # and its progress bars (escape sequences in log files).
    print(
      f"preparing the {builder.name} dataset in {builder.data_dir} (once; nothing "
      f"is downloaded){note}",
      flush=True,
    )
    tfds.disable_progress_bar()
    try:
      with contextlib.redirect_stdout(io.StringIO()):
        builder.download_and_prepare(
          download_dir=os.path.join(builder.data_dir_root, "downloads"),
          download_config=tfds.download.DownloadConfig(
            try_download_gcs=False, manual_dir=manual_dir
          ),
          file_format=FILE_FORMAT,
        )
    except Exception as e:
      remove_incomplete(builder, lock)  # TFDS removes its own; this makes sure.
      if _is_no_space(e):
        raise _no_space(builder, source_bytes) from e
      raise
    remote = _remote(builder)
    if remote is not None:  # The info files go last: the URL is then complete.
      paths.copy_tree(builder.data_dir, remote, last=_DONE_FILES)


def split_source(builder: tfds.core.DatasetBuilder, split: str) -> grain.MapDataset:
  """The decoded examples of `split` (an empty dataset if the split is absent).

  Args:
    builder: a prepared builder.
    split: split name, e.g. 'train'.

  Returns:
    A finite MapDataset of example dicts (images as uint8 [H, W, C]).
  """
  if not _prepared_here(builder) and _prepared_remote(builder):
    prepare(builder)  # Fetches the URL data_dir's data into the local mirror.
  if split not in builder.info.splits:
    return grain.MapDataset.source([])
  source: Any = builder.as_data_source(split=split, file_format=FILE_FORMAT)
  return grain.MapDataset.source(source)
