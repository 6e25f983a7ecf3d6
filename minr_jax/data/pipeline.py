"""The grain pipelines behind `minr_jax.data`: `make_train_iterator`, `make_eval_batches`.

Batching happens before any prefetching, so a process gets the same batches for any
num_workers, and the iterator state restores the exact stream. Eval data are padded to whole
global batches (padding rows: valid=False, index=-1).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator
from typing import Any

import grain
import numpy as np
from absl import flags

from minr_jax.config import ConfigError
from minr_jax.data import datasets, workers
from minr_jax.data import options as options_lib

_MAX_THREADS = 16


def _check_process(process_index: int, process_count: int) -> None:
  if not 0 <= process_index < process_count:
    raise ConfigError(f"process_index={process_index} is not in [0, process_count={process_count})")


def _local_batch_size(global_size: Any, field: str, process_count: int) -> int:
  """Per-process batch size; ConfigError unless a positive multiple."""
  if (
    isinstance(global_size, bool)
    or not isinstance(global_size, int)
    or global_size <= 0
    or global_size % process_count
  ):
    raise ConfigError(
      f"config.{field}={global_size!r} must be a positive multiple of the "
      f"process count ({process_count})"
    )
  return global_size // process_count


def _threads(wanted: int) -> int:
  return max(1, min(wanted, os.cpu_count() or 1, _MAX_THREADS))


def _process_seed(seed: int, process_index: int) -> int:
  """A 32-bit seed per (config.seed, process) for shuffle and augmentation."""
  return int(np.random.SeedSequence([seed, process_index]).generate_state(1)[0])


def _ensure_absl_flags_parsed() -> None:
  """grain's worker start-up reads an absl flag, which fails if flags were
  never parsed (plain scripts, tests); under absl.app this does nothing."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def make_train_iterator(
  config: Any, *, process_index: int = 0, process_count: int = 1
) -> grain.DatasetIterator:
  """Infinite iterator of {'image': float32 [B, R, R, 3]} batches.

  B = config.batch_size // process_count, R = config.resolution. Shuffled
  with config.seed (and the process index), repeated over epochs, this
  process's shard only, prefetched in the background by
  config.dataset.num_workers processes (0 = threads of this process). Supports
  get_state()/set_state() and grain.checkpoint.CheckpointSave/Restore.

  Args:
    config: the run config (fields: see `minr_jax.data.options`).
    process_index: this process's index (jax.process_index()).
    process_count: number of processes (jax.process_count()).

  Returns:
    A grain DatasetIterator; call `.close()` when done if num_workers > 0.

  Raises:
    ConfigError: bad config, folder or image, or an empty shard.
  """
  options = options_lib.from_config(config)
  datasets.check(options)
  _check_process(process_index, process_count)
  local_batch = _local_batch_size(config.get("batch_size", None), "batch_size", process_count)
  dataset = datasets.load(options)
  shard = dataset.train[process_index::process_count]
  if not len(shard):  # pylint: disable=g-explicit-length-test
    raise ConfigError(
      f"{options.name}: {len(dataset.train)} training examples cannot be "
      f"sharded over {process_count} processes"
    )
  batches = (
    shard.seed(_process_seed(options.seed, process_index))
    .shuffle()
    .repeat()
    .random_map(dataset.train_transform)
    .batch(local_batch, drop_remainder=True)
  )
  if options.num_workers == 0:
    read = grain.ReadOptions(
      num_threads=_threads(options.prefetch_buffer), prefetch_buffer_size=options.prefetch_buffer
    )
    return iter(batches.to_iter_dataset(read))
  _ensure_absl_flags_parsed()
  read = grain.ReadOptions(num_threads=1, prefetch_buffer_size=1)
  processes = grain.MultiprocessingOptions(
    num_workers=options.num_workers, per_worker_buffer_size=options.prefetch_buffer
  )
  # Each worker ends within a second of this process ending, however it ends.
  exit_with_us = functools.partial(workers.exit_with_parent, parent_pid=os.getpid())
  return iter(batches.to_iter_dataset(read).mp_prefetch(processes, worker_init_fn=exit_with_us))


def _eval_count(options: options_lib.DataOptions, available: int) -> int:
  if options.eval_max_images:
    return min(available, options.eval_max_images)
  return available


def _eval_positions(
  count: int, global_batch: int, process_index: int, process_count: int
) -> list[int]:
  """This process's global eval positions, batch after batch (see module)."""
  local = global_batch // process_count
  return [
    b * global_batch + process_index * local + j
    for b in range(math.ceil(count / global_batch))
    for j in range(local)
  ]


def _eval_element(
  position: int, *, source: grain.MapDataset, transform: Any, count: int, resolution: int
) -> dict:
  """{'image': float32 [R, R, 3], 'index': int32 [], 'valid': bool []}."""
  if position < count:
    image = transform(source[position])["image"]
    return {"image": image, "index": np.int32(position), "valid": np.bool_(True)}
  return {
    "image": np.zeros((resolution, resolution, 3), np.float32),
    "index": np.int32(-1),
    "valid": np.bool_(False),
  }


def make_eval_batches(
  config: Any,
  name: str | None = None,
  path: str | None = None,
  *,
  process_index: int = 0,
  process_count: int = 1,
  origin: str = "config.eval_datasets",
) -> Iterator[dict]:
  """One deterministic pass over the eval split of dataset `name`.

  Args:
    config: the run config; `name` / `path` default to config.dataset.name /
      .path (the config's path is only used for the config's dataset).
    name: dataset name.
    path: dataset path (image_folder).
    process_index: this process's index.
    process_count: number of processes.
    origin: the field or flag that named (name, path) when they are not the
      config's own dataset (for error messages).

  Returns:
    Iterator of {'image': float32 [L, R, R, 3], 'index': int32 [L] (global
    eval image index, stable across runs; -1 for padding), 'valid': bool [L]
    (False for padding)}, L = config.eval_batch_size // process_count. At most
    config.dataset.eval_max_images images (0 = all); the same order and
    content on every call. Empty if the eval split is empty.

  Raises:
    ConfigError: bad config, folder or image.
  """
  options = options_lib.from_config(config, name, path, origin=origin)
  datasets.check(options)
  _check_process(process_index, process_count)
  local_batch = _local_batch_size(
    config.get("eval_batch_size", None) or config.get("batch_size", None),
    "eval_batch_size",
    process_count,
  )
  dataset = datasets.load(options)
  count = _eval_count(options, len(dataset.eval))
  positions = _eval_positions(count, local_batch * process_count, process_index, process_count)
  if not positions:
    return iter(())
  element = functools.partial(
    _eval_element,
    source=dataset.eval,
    transform=dataset.eval_transform,
    count=count,
    resolution=options.resolution,
  )
  read = grain.ReadOptions(
    num_threads=_threads(_MAX_THREADS), prefetch_buffer_size=local_batch * options.prefetch_buffer
  )
  elements = grain.MapDataset.source(positions).map(element)
  return iter(elements.to_iter_dataset(read).batch(local_batch))


def num_eval_images(
  config: Any,
  name: str | None = None,
  path: str | None = None,
  *,
  origin: str = "config.eval_datasets",
) -> int:
  """Number of real (valid) images `make_eval_batches` yields in total."""
  options = options_lib.from_config(config, name, path, origin=origin)
  datasets.check(options)
  return _eval_count(options, len(datasets.load(options).eval))


def check_eval_images(
  config: Any,
  name: str | None = None,
  path: str | None = None,
  *,
  origin: str = "config.eval_datasets",
) -> int:
  """`num_eval_images`, refusing an empty eval split before anything compiles.

  Prepares the dataset if needed.

  Raises:
    ConfigError: bad config, folder or image; an eval split without images
      (one line naming the dataset's field and path).
  """
  options = options_lib.from_config(config, name, path, origin=origin)
  datasets.check(options)
  available = len(datasets.load(options).eval)
  if not available:
    raise ConfigError(datasets.no_eval_images(options))
  return _eval_count(options, available)
