"""Preparing a TFDS builder as array_record files and reading it back, no TF.

`prepare` runs `download_and_prepare` once (under a file lock, so two
processes on one host do not write the same directory); later calls find the
data and return at once. `split_source` opens a split as a random-access
data source (decoding happens on `__getitem__`, with PIL).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from typing import Any

import grain
import tensorflow_datasets as tfds

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


def is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
  """Whether `builder.data_dir` holds finished data (quietly, unlike TFDS's)."""
  return all(
      os.path.isfile(os.path.join(builder.data_dir, name))
      for name in ('dataset_info.json', 'features.json'))


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
  (TFDS removes its partial output).

  Args:
    builder: a builder constructed with `file_format='array_record'`.
    manual_dir: TFDS's manual download directory (default
      `<data_dir>/downloads/manual`).
  """
  if is_prepared(builder):
    return
  with _file_lock(_lock_path(builder)):
    if is_prepared(builder):  # Another process finished it meanwhile.
      return
    builder.download_and_prepare(
        download_dir=os.path.join(builder.data_dir_root, 'downloads'),
        download_config=tfds.download.DownloadConfig(
            try_download_gcs=False, manual_dir=manual_dir),
        file_format=FILE_FORMAT)


def split_source(builder: tfds.core.DatasetBuilder,
                 split: str) -> grain.MapDataset:
  """The decoded examples of `split` (an empty dataset if the split is absent).

  Args:
    builder: a prepared builder.
    split: split name, e.g. 'train'.

  Returns:
    A finite MapDataset of example dicts (images as uint8 [H, W, C]).
  """
  if split not in builder.info.splits:
    return grain.MapDataset.source([])
  source: Any = builder.as_data_source(split=split, file_format=FILE_FORMAT)
  return grain.MapDataset.source(source)
