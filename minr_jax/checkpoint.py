"""Orbax checkpoints: train state, grain iterator position, the config, checksums.

`<workdir>/checkpoints/<step>/{state, data, config}` plus `minr_checksums.json`; `verify`
checks a step before a restore and `restore_newest_intact` skips damaged ones
(docs/training.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging as std_logging
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from minr_jax import paths
from minr_jax.config import ConfigError

PyTree = Any


MANIFEST = "minr_checksums.json"


def _run_in_new_loop_then_drain(coro):
  """orbax's `asyncio_utils._run_sync_via_new_loop`, but the loop is closed only once
  every task it started has ended.

  Orbax runs each save or restore in a fresh event loop and closes it as soon as
  the coroutine returns. When one read of a damaged step fails, `asyncio.gather`
  raises at once while its sibling tasks still await tensorstore futures; those
  complete later on tensorstore's threads, call `loop.call_soon_threadsafe` on
  the closed loop and print `RuntimeError: Event loop is closed` tracebacks,
  after the command has succeeded. Waiting for the siblings (a minute at most)
  before closing removes the cause.
  """
  loop = asyncio.new_event_loop()
  try:
    asyncio.set_event_loop(loop)
    return loop.run_until_complete(coro)
  finally:
    try:
      pending = asyncio.all_tasks(loop)
      if pending:
        loop.run_until_complete(asyncio.wait(pending, timeout=60))
        for task in pending:  # their errors are the one already raised
          if task.done() and not task.cancelled():
            task.exception()
    finally:
      asyncio.set_event_loop(None)
      loop.close()


def _drain_orbax_loops() -> None:
  from orbax.checkpoint._src import asyncio_utils  # noqa: PLC0415 (private: checked)

  if callable(getattr(asyncio_utils, "_run_sync_via_new_loop", None)):
    asyncio_utils._run_sync_via_new_loop = _run_in_new_loop_then_drain


_drain_orbax_loops()


def as_path(path: str | os.PathLike) -> epath.Path:
  """An epath.Path: URLs as given (ConfigError for a scheme nothing serves), local
  paths made absolute (~ expanded); `paths.as_path`."""
  return paths.as_path(path, "workdir")


# Orbax splits a replicated array's write over its replicas ("replica-parallel").
# For a small array that buys nothing and costs a device slice per replica: with
# the tiny model's ~130 replicated leaves on 8 devices it was 0.5 s of a 0.8 s
# save. Arrays under 1 MiB per replica are written whole by one replica; the big
# ones of a paper model are still split. The files written are the same.
MIN_REPLICA_PARALLEL_BYTES = 1 << 20


def _handlers() -> dict[str, Any]:
  # orbax's default types (its private default list, rebuilt from public classes;
  # the placeholder type is not used here), with the jax.Array handler above.
  th = ocp.type_handlers
  scalars = th.ScalarHandler()
  registry = th.create_type_handler_registry(
    *[(t, scalars) for t in (int, float, bytes, np.number)],
    (np.ndarray, th.NumpyHandler()),
    (jax.Array, th.ArrayHandler(min_slice_bytes_for_replica_parallel=MIN_REPLICA_PARALLEL_BYTES)),
    (str, th.StringHandler()),
  )
  return dict(
    state=ocp.PyTreeCheckpointHandler(type_handler_registry=registry),
    data=grain.checkpoint.CheckpointHandler(),
    config=ocp.JsonCheckpointHandler(),
  )


def make_manager(workdir: str, keep: int, keep_period: int | None = None) -> ocp.CheckpointManager:
  """A manager of `<workdir>/checkpoints` keeping the newest `keep` steps, and every
  step that is a multiple of `keep_period` (if set) for good."""
  options = ocp.CheckpointManagerOptions(
    max_to_keep=keep,
    keep_period=keep_period or None,
    create=True,
    enable_async_checkpointing=False,
    cleanup_tmp_directories=True,
  )
  return ocp.CheckpointManager(
    as_path(workdir) / "checkpoints", options=options, item_handlers=_handlers()
  )


def open_read_only(workdir: str) -> ocp.CheckpointManager:
  """A read-only manager of `<workdir>/checkpoints`, for inference.

  Unlike `make_manager` it neither creates directories nor cleans up
  temporary ones, so evaluating, embedding or loading never touches a
  workdir whose run may still be saving. ConfigError if there is no such
  directory.
  """
  from absl import logging  # noqa: PLC0415

  directory = as_path(workdir) / "checkpoints"
  if not directory.is_dir():
    raise ConfigError(f"no checkpoints in {directory}")
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # orbax warns that read_only is read only
  try:
    options = ocp.CheckpointManagerOptions(
      read_only=True, create=False, enable_async_checkpointing=False
    )
    return ocp.CheckpointManager(directory, options=options, item_handlers=_handlers())
  finally:
    logging.set_verbosity(verbosity)


def step_dir(manager: ocp.CheckpointManager, step: int) -> epath.Path:
  return epath.Path(manager.directory) / str(step)


def _files(directory: epath.Path) -> list[epath.Path]:
  """Every file under directory, sorted (epath has no recursive glob on buckets)."""
  out = []
  for path in sorted(directory.iterdir()):
    out.extend(_files(path) if path.is_dir() else [path])
  return out


def _digests(directory: epath.Path) -> dict[str, str]:
  """{relative path: sha256} of every file under directory but the manifest."""
  out = {}
  for path in _files(directory):
    if path.name == MANIFEST:
      continue
    h = hashlib.sha256()
    with path.open("rb") as f:
      for chunk in iter(lambda f=f: f.read(1 << 22), b""):
        h.update(chunk)
    out[str(path.relative_to(directory))] = h.hexdigest()
  return out


def save(
  manager: ocp.CheckpointManager,
  step: int,
  state: PyTree,
  data_iter: grain.DatasetIterator | None,
  config: dict | None = None,
) -> None:
  """Saves state (and the data iterator and config, if given) as checkpoint `step`,
  then (process 0) its checksum manifest.

  A full disk (ENOSPC, or tensorstore's RESOURCE_EXHAUSTED) is a ConfigError
  naming the directory, the space needed and free; the half-written step is
  removed and the earlier checkpoints are intact (orbax only renames a
  complete step), so the next start resumes from the newest of them.
  """
  items = dict(state=ocp.args.PyTreeSave(state))
  if data_iter is not None:
    items["data"] = grain.checkpoint.CheckpointSave(data_iter)
  if config is not None:
    items["config"] = ocp.args.JsonSave(config)
  quiet = QuietOrbax()
  try:
    manager.save(step, args=ocp.args.Composite(**items), force=True)
    manager.wait_until_finished()
    if jax.process_index() == 0:
      # Whole or absent: a local temp file renamed over it, or one object upload
      # (a rename in an object store is a copy and a delete; on the GCS
      # emulator it took 33 s).
      write_manifest(step_dir(manager, step))
  except Exception as e:
    if not disk_full(e):
      quiet.remove()
      raise
    _remove_partial(manager, step)
    raise ConfigError(
      f"no space left on the device of {manager.directory} while saving "
      f"step {step} (the state is {_size(_nbytes(state))}, "
      f"{_size(free_bytes(manager.directory))} free); the earlier "
      "checkpoints there are intact"
    ) from None
  quiet.remove()


class QuietOrbax:
  """While installed, drops the log records and thread / callback tracebacks that
  orbax's threads and tensorstore print, each its own way, for one failed save
  (RESOURCE_EXHAUSTED for a full disk; 'Event loop is closed', whose cause
  `_run_in_new_loop_then_drain` removes, is kept in the list as a safety net).
  Left installed after a failure: they keep coming after the one line that says
  it all."""

  def __init__(
    self, noise=("RESOURCE_EXHAUSTED", "No space left on device", "Event loop is closed")
  ):
    self.NOISE = tuple(noise)
    self.loggers = [std_logging.getLogger("absl"), std_logging.getLogger("asyncio")]
    for logger in self.loggers:
      logger.addFilter(self._keep)
    self.hooks = sys.excepthook, sys.unraisablehook, threading.excepthook
    sys.excepthook = lambda kind, value, tb: (
      self._keep_error(value) and self.hooks[0](kind, value, tb)
    )
    sys.unraisablehook = lambda u: self._keep_error(u.exc_value) and self.hooks[1](u)
    threading.excepthook = lambda a: self._keep_error(a.exc_value) and self.hooks[2](a)

  def _keep(self, record: std_logging.LogRecord) -> bool:
    return self._keep_error(record.getMessage()) and self._keep_error(record.exc_info)

  def _keep_error(self, value) -> bool:
    text = str(value)
    return not any(n in text for n in self.NOISE)

  def remove(self) -> None:
    for logger in self.loggers:
      logger.removeFilter(self._keep)
    sys.excepthook, sys.unraisablehook, threading.excepthook = self.hooks


def disk_full(error: BaseException) -> bool:
  """Whether an exception (OSError, or tensorstore's ValueError text) means ENOSPC."""
  if isinstance(error, OSError) and error.errno == 28:
    return True
  text = str(error)
  return "RESOURCE_EXHAUSTED" in text or "No space left on device" in text


def free_bytes(directory) -> int | None:
  """Free bytes on a local directory's device; None for a URL or an unreadable one."""
  text = os.fspath(directory)
  if paths.is_url(text):
    return None
  try:
    return shutil.disk_usage(text).free
  except OSError:
    return None


def _nbytes(tree: PyTree) -> int:
  return sum(int(getattr(x, "nbytes", 0)) for x in jax.tree.leaves(tree))


def _size(num: int | None) -> str:
  if num is None:
    return "an unknown amount"
  for unit in ("bytes", "KB", "MB", "GB", "TB"):
    if num < 1024 or unit == "TB":
      return f"{num} {unit}" if unit == "bytes" else f"{num:.1f} {unit}"
    num /= 1024
  return ""


def _remove_partial(manager: ocp.CheckpointManager, step: int) -> None:
  """Deletes what a failed save of `step` left: orbax's temporary folder (a step
  orbax committed is complete and stays; a manifest write that fails removes its
  own temporary file)."""
  try:  # orbax's writer threads may still be at work on the failed step
    manager.wait_until_finished()
  except Exception:  # pylint: disable=broad-except
    pass
  parent = epath.Path(manager.directory)
  deadline, clean_since = time.monotonic() + 15, None
  while time.monotonic() < deadline:  # a straggling writer can recreate a file after
    try:  # a clean look: done only once it has stayed clean for a second
      for path in parent.glob(f"{step}.orbax-checkpoint-tmp*"):
        path.rmtree() if path.is_dir() else path.unlink()
    except OSError:
      pass
    if any(parent.glob(f"{step}.orbax-checkpoint-tmp*")):
      clean_since = None
    elif clean_since is None:
      clean_since = time.monotonic()
    elif time.monotonic() - clean_since >= 1.0:
      return
    time.sleep(0.1)


def write_manifest(directory: epath.Path) -> None:
  """Writes the checksum manifest of a step directory (`save`, and
  `python -m minr_jax.export --write_manifest` for a step that has none)."""
  paths.write_text(directory / MANIFEST, json.dumps(_digests(directory), indent=1))


_UNVERIFIED: set[str] = set()  # step directories already named, once per process


def warn_unverified(directory: epath.Path, warn: Callable[[str], None] = print) -> None:
  """The one line (once per step directory per process) for a step without a manifest."""
  if str(directory) in _UNVERIFIED:
    return
  _UNVERIFIED.add(str(directory))
  warn(
    f"warning: checkpoint {directory} has no {MANIFEST}, so its integrity cannot be "
    "verified; once you have checked it, write one with: python -m minr_jax.export "
    f"--workdir={directory} --write_manifest"
  )


def verify(
  manager: ocp.CheckpointManager, step: int, warn: Callable[[str], None] = print
) -> str | None:
  """None if checkpoint `step` matches its checksum manifest (or has none), else why not.

  An empty step folder or one without its `state` (left by a crash or a
  copy that stopped) is not intact either. A step without a manifest (saved
  by an older version, copied without it, or killed between orbax's commit and
  the manifest) is complete as far as orbax knows: `warn` gets one line saying
  its integrity cannot be verified (`warn_unverified`).
  """
  directory = step_dir(manager, step)
  try:
    names = {p.name for p in directory.iterdir()}
    state = directory / "state"
    if not names:
      return "the folder is empty"
    if "state" not in names or not state.is_dir() or not any(state.iterdir()):
      return "state is missing or empty: a half-written step"
  except OSError as e:
    return f"unreadable: {e.strerror or e}"
  manifest = directory / MANIFEST
  if not manifest.exists():
    warn_unverified(directory, warn)
    return None
  try:
    want = json.loads(manifest.read_text())
  except (OSError, ValueError) as e:
    return f"unreadable {MANIFEST}: {e}"
  have = _digests(directory)
  for name, digest in want.items():
    if name not in have:
      return f"{name} is missing"
    if have[name] != digest:
      return f"{name} does not match its checksum"
  return None


def restore(
  manager: ocp.CheckpointManager,
  step: int,
  abstract_state: PyTree,
  data_iter: grain.DatasetIterator | None,
) -> PyTree:
  """Restores checkpoint `step` into the shapes and shardings of abstract_state.

  The data iterator, if given, is moved to the saved position in place.
  """
  items = dict(state=_restore_args(abstract_state))
  if data_iter is not None:
    items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  return restored["state"]


def restore_error(error: BaseException) -> str:
  """Why a restore failed, in a few words: tensorstore's status line (DATA_LOSS,
  OUT_OF_RANGE, ...) if the error or its causes hold one, else the error's first
  line (KeyError 'Unknown key: state', RuntimeError 'Event loop is closed', ...)."""
  chain, seen = [], error
  while seen is not None and len(chain) < 8:
    chain.append(seen)
    seen = seen.__cause__ or seen.__context__
  for e in chain:
    m = re.search(r"\b([A-Z][A-Z_]{3,}: .*)", str(e))
    if m:
      return " ".join(m.group(1).split())[:200]
  text = " ".join(str(error).split())[:200]
  return f"{type(error).__name__}: {text}" if text else type(error).__name__


def intact_steps(manager: ocp.CheckpointManager, warn=print) -> list[int]:
  """The steps, newest first, whose files match their checksums; `warn` gets one
  line for each step that does not."""
  out = []
  for step in sorted(manager.all_steps(), reverse=True):
    reason = verify(manager, step, warn)
    if reason is None:
      out.append(step)
    else:
      warn(f"warning: checkpoint {step_dir(manager, step)} is corrupt ({reason}); skipping it")
  return out


def set_aside(manager: ocp.CheckpointManager, step: int, workdir: str) -> epath.Path:
  """Moves a corrupt step out of the way (to <workdir>/corrupt_checkpoints/), not deleting it."""
  target = as_path(workdir) / "corrupt_checkpoints" / f"{step}-{int(time.time())}"
  target.parent.mkdir(parents=True, exist_ok=True)
  step_dir(manager, step).rename(target)
  manager.reload()
  return target


def saved_config(manager: ocp.CheckpointManager, step: int) -> dict | None:
  """The config checkpoint `step` was trained with, or None (saved before configs were)."""
  if not (step_dir(manager, step) / "config").exists():
    return None
  return manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]


def _restore_args(abstract: PyTree, partial: bool = False) -> ocp.args.PyTreeRestore:
  """Restore into the shapes, dtypes and shardings of `abstract`'s leaves."""
  return ocp.args.PyTreeRestore(
    item=abstract,
    restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
    partial_restore=partial,
  )


def restore_params(manager: ocp.CheckpointManager, step: int, abstract_params: PyTree) -> PyTree:
  """Restores only the parameters of checkpoint `step` (no optimizer state).

  abstract_params: ShapeDtypeStructs carrying the shardings wanted here, so a
  checkpoint written on a TPU pod restores onto whatever devices are present.
  """
  args = ocp.args.Composite(state=_restore_args({"params": abstract_params}, partial=True))
  return manager.restore(step, args=args)["state"]["params"]


def _leaf_shapes(tree: PyTree) -> dict[str, tuple[int, ...]]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): tuple(getattr(leaf, "shape", ())) for path, leaf in flat}


def check_compatible(manager: ocp.CheckpointManager, step: int, abstract_params: PyTree) -> None:
  """Raises ConfigError if checkpoint `step` holds a model of another shape.

  Reads only the checkpoint's metadata, so this runs before any compile.
  """
  saved = manager.item_metadata(step)["state"].tree["params"]
  saved_shapes, want_shapes = _leaf_shapes(saved), _leaf_shapes(abstract_params)
  where = step_dir(manager, step)
  for name in sorted(set(saved_shapes) | set(want_shapes)):
    a, b = saved_shapes.get(name), want_shapes.get(name)
    if a != b:
      raise ConfigError(
        f"{where} holds a different model: parameter {name} is "
        f"{'absent' if a is None else a} there but {'absent' if b is None else b} "
        "in this config; use another --workdir or the config it was trained with"
      )


def restore_newest_intact(
  manager: ocp.CheckpointManager,
  abstract_state: PyTree,
  data_iter: grain.DatasetIterator | None,
  workdir: str,
  check_config: Callable[[dict | None, str], None] | None = None,
  set_aside_unusable: bool = True,
  warn: Callable[[str], None] = print,
) -> tuple[PyTree | None, int | None]:
  """(state, step) of the newest checkpoint that verifies and restores, else (None, None).

  Newest first: a step whose checksums fail, whose metadata cannot be read or
  whose arrays do not restore is skipped with one warning line, and the next
  older one is tried. A step that holds another model's shapes raises
  ConfigError (`check_compatible`), as does `check_config(saved_config, where)`
  when it refuses the config the step was trained with: those are the user's
  to decide, not corruption. Every step newer than the one restored is moved
  to <workdir>/corrupt_checkpoints/ (on the process that owns the files,
  `set_aside_unusable`), so the next save cannot collide with it.
  """
  state, restored = None, None
  for candidate in intact_steps(manager, warn=warn):
    where = step_dir(manager, candidate)
    try:
      check_compatible(manager, candidate, abstract_state.params)
      saved = saved_config(manager, candidate)
    except ConfigError:
      raise
    except Exception as e:  # noqa: BLE001 (unreadable metadata: an older step)
      warn(f"warning: checkpoint {where} is corrupt ({restore_error(e)}); skipping it")
      continue
    if check_config is not None:
      check_config(saved, str(where))
    try:
      state = restore(manager, candidate, abstract_state, data_iter)
      restored = candidate
      break
    except Exception as e:  # noqa: BLE001 (a truncated file: fall back to an older step)
      warn(f"warning: checkpoint {where} is corrupt ({restore_error(e)}); skipping it")
  for bad in sorted(s for s in manager.all_steps() if restored is None or s > restored):
    moved = set_aside(manager, bad, workdir) if set_aside_unusable else None
    warn(f"moved the unusable checkpoint {bad} to {moved}")
  return state, restored


def latest_step(manager: ocp.CheckpointManager) -> int | None:
  """The newest complete checkpoint's step, or None."""
  return manager.latest_step()
