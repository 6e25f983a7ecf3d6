"""Orbax checkpoints holding the train state and the grain iterator's position.

Layout: `<workdir>/checkpoints/<step>/{state, data}`. Orbax writes each step
into a temporary directory and renames it only when complete, so a run killed
mid-save (even with SIGKILL) leaves the previous checkpoint intact and the
half-written one is ignored. Every process calls save/restore together.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from minr_jax.config import ConfigError

PyTree = Any


def make_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  """A manager of `<workdir>/checkpoints` keeping the newest `keep` steps."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=True, enable_async_checkpointing=False,
      cleanup_tmp_directories=True)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                               options=options,
                               item_handlers=dict(
                                   state=ocp.PyTreeCheckpointHandler(),
                                   data=grain.checkpoint.CheckpointHandler()))


def open_read_only(workdir: str) -> ocp.CheckpointManager:
  """A read-only manager of `<workdir>/checkpoints`, for inference.

  Unlike `make_manager` it neither creates directories nor cleans up
  temporary ones, so evaluating, embedding or loading never touches a
  workdir whose run may still be saving. ConfigError if there is no such
  directory.
  """
  from absl import logging  # noqa: PLC0415

  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    raise ConfigError(f"no checkpoints in {directory}")
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # orbax warns that read_only is read only
  try:
    options = ocp.CheckpointManagerOptions(
        read_only=True, create=False, enable_async_checkpointing=False)
    return ocp.CheckpointManager(directory, options=options, item_handlers=dict(
        state=ocp.PyTreeCheckpointHandler(), data=grain.checkpoint.CheckpointHandler()))
  finally:
    logging.set_verbosity(verbosity)


def save(manager: ocp.CheckpointManager, step: int, state: PyTree,
         data_iter: grain.DatasetIterator | None) -> None:
  """Saves state (and the data iterator, if any) as checkpoint `step`."""
  items = dict(state=ocp.args.PyTreeSave(state))
  if data_iter is not None:
    items["data"] = grain.checkpoint.CheckpointSave(data_iter)
  manager.save(step, args=ocp.args.Composite(**items), force=True)
  manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: PyTree,
            data_iter: grain.DatasetIterator | None) -> PyTree:
  """Restores checkpoint `step` into the shapes and shardings of abstract_state.

  The data iterator, if given, is moved to the saved position in place.
  """
  items = dict(state=_restore_args(abstract_state))
  if data_iter is not None:
    items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  return restored["state"]


def _restore_args(abstract: PyTree, partial: bool = False) -> ocp.args.PyTreeRestore:
  """Restore into the shapes, dtypes and shardings of `abstract`'s leaves."""
  return ocp.args.PyTreeRestore(
      item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
      partial_restore=partial)


def restore_params(manager: ocp.CheckpointManager, step: int,
                   abstract_params: PyTree) -> PyTree:
  """Restores only the parameters of checkpoint `step` (no optimizer state).

  abstract_params: ShapeDtypeStructs carrying the shardings wanted here, so a
  checkpoint written on a TPU pod restores onto whatever devices are present.
  """
  args = ocp.args.Composite(state=_restore_args({"params": abstract_params}, partial=True))
  return manager.restore(step, args=args)["state"]["params"]


def _leaf_shapes(tree: PyTree) -> dict[str, tuple[int, ...]]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): tuple(getattr(leaf, "shape", ()))
          for path, leaf in flat}


def check_compatible(manager: ocp.CheckpointManager, step: int,
                     abstract_params: PyTree) -> None:
  """Raises ConfigError if checkpoint `step` holds a model of another shape.

  Reads only the checkpoint's metadata, so this runs before any compile.
  """
  saved = manager.item_metadata(step)["state"].tree["params"]
  saved_shapes, want_shapes = _leaf_shapes(saved), _leaf_shapes(abstract_params)
  where = os.path.join(str(manager.directory), str(step))
  for name in sorted(set(saved_shapes) | set(want_shapes)):
    a, b = saved_shapes.get(name), want_shapes.get(name)
    if a != b:
      raise ConfigError(
          f"{where} holds a different model: parameter {name} is "
          f"{'absent' if a is None else a} there but {'absent' if b is None else b} "
          "in this config; use another --workdir or the config it was trained with")


def latest_step(manager: ocp.CheckpointManager) -> int | None:
  """The newest complete checkpoint's step, or None."""
  return manager.latest_step()
