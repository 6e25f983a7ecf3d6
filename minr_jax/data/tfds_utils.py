"""Preparing a TFDS builder as array_record files and reading it back, no TF.

`prepare` runs `download_and_prepare` once (under a file lock, so two
processes on one host do not write the same directory); later calls find the
data and return at once. `split_source` opens a split as a random-access
data source (decoding happens on `__getitem__`, with PIL). A URL data_dir
(gs://...) is used through a local mirror, since array_record files are
read and written with local file I/O: finished data are fetched from the
URL, or prepared locally and then uploaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
from collections.abc import Iterator
from typing import Any

import grain
import tensorflow_datasets as tfds

from minr_jax import paths


class _NoOpenCVNote(logging.Filter):
  """TFDS warns on every image decode that OpenCV is not installed; PIL decodes fine."""

  def filter(self, record: logging.LogRecord) -> bool:
    return 'OpenCV is not installed' not in record.getMessage()


logging.getLogger('absl').addFilter(_NoOpenCVNote())

FILE_FORMAT = 'array_record'


@contextlib.contextmanager
def _file_lock(path: str) -> Iterator[None]:
  """Holds an exclusive flock on `path` (created if needed) while inside."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'a') as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)


# TFDS writes these last: a data_dir holding both holds finished data.
_DONE_FILES = ('dataset_info.json', 'features.json')


def _prepared_here(builder: tfds.core.DatasetBuilder) -> bool:
  return all(os.path.isfile(os.path.join(builder.data_dir, name))
             for name in _DONE_FILES)


def _remote(builder: tfds.core.DatasetBuilder) -> str | None:
  """The URL whose local mirror `builder.data_dir` is (data_dir = gs://...), else None."""
  return paths.remote_of(os.fspath(builder.data_dir))


def _prepared_remote(builder: tfds.core.DatasetBuilder) -> bool:
  remote = _remote(builder)
  return remote is not None and all(
      paths.as_path(remote).joinpath(name).exists() for name in _DONE_FILES)


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
  root = os.fspath(builder.data_dir_root)
  relative = os.path.relpath(builder.data_dir, root).replace(os.sep, '_')
  return os.path.join(root, '.locks', relative + '.lock')


def prepare(builder: tfds.core.DatasetBuilder,
            manual_dir: str | None = None) -> None:
  """Writes `builder`'s splits to `builder.data_dir` unless already there.

  No network access: the builders here download nothing (the catalogue ones
  are only prepared once their files are in `manual_dir`) and GCS look-ups
  are off. Errors raised by the builder's generator propagate unchanged
  (TFDS removes its partial output). When `builder.data_dir` mirrors a URL
  data_dir (`options.from_config`), finished data at the URL are copied in
  instead of prepared, and data prepared here are uploaded to the URL.

  Args:
    builder: a builder constructed with `file_format='array_record'`.
    manual_dir: TFDS's manual download directory (default
      `<data_dir>/downloads/manual`).
  """
  if _prepared_here(builder):
    return
  with _file_lock(_lock_path(builder)):
    if _prepared_here(builder):  # Another process finished it meanwhile.
      return
    if _prepared_remote(builder):
      _fetch(builder)
      return
    # One line instead of TFDS's "Downloading and preparing ... Unknown size"
    # and its progress bars (escape sequences in log files).
    print(f'preparing the {builder.name} dataset in {builder.data_dir} (once; nothing '
          'is downloaded)', flush=True)
    tfds.disable_progress_bar()
    with contextlib.redirect_stdout(io.StringIO()):
      builder.download_and_prepare(
          download_dir=os.path.join(builder.data_dir_root, 'downloads'),
          download_config=tfds.download.DownloadConfig(
              try_download_gcs=False, manual_dir=manual_dir),
          file_format=FILE_FORMAT)
    remote = _remote(builder)
    if remote is not None:  # The info files go last: the URL is then complete.
      paths.copy_tree(builder.data_dir, remote, last=_DONE_FILES)


def split_source(builder: tfds.core.DatasetBuilder,
                 split: str) -> grain.MapDataset:
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
