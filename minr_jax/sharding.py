"""The device mesh (`data` x `fsdp` axes) and the shardings of batches, parameters and
optimizer state.

Batches are split over both axes; every array with at least `fsdp_min_size` elements is split
along `fsdp` on its largest divisible axis, the rest replicated (docs/speed.md#scale-out).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from minr_jax.config import ConfigError

PyTree = Any

# Arrays smaller than this (elements) stay replicated unless the config says
# otherwise (`config.fsdp_min_size`): sharding them saves little memory and
# costs one all-gather each.
DEFAULT_FSDP_MIN_SIZE = 2**18
BATCH_AXES = ("data", "fsdp")


def mesh_shape(config, num_devices: int | None = None) -> tuple[int, int]:
  """(data, fsdp) sizes from config.mesh, with -1 resolved; ConfigError if they don't fit."""
  n = jax.device_count() if num_devices is None else num_devices
  data = config.mesh.get("data", -1)
  fsdp = config.mesh.get("fsdp", 1)
  for name, value in (("data", data), ("fsdp", fsdp)):
    if not isinstance(value, int) or isinstance(value, bool) or (value < 1 and value != -1):
      raise ConfigError(f"config.mesh.{name} must be a positive integer or -1, got {value!r}")
  if data == -1 and fsdp == -1:
    raise ConfigError("config.mesh.data and config.mesh.fsdp are both -1; set one of them")
  if data == -1:
    if n % fsdp:
      raise ConfigError(f"config.mesh.fsdp={fsdp} does not divide the {n} devices here")
    data = n // fsdp
  elif fsdp == -1:
    if n % data:
      raise ConfigError(f"config.mesh.data={data} does not divide the {n} devices here")
    fsdp = n // data
  size = data * fsdp
  if size > n or n % size:
    raise ConfigError(
      f"config.mesh.data={data} x config.mesh.fsdp={fsdp} = {size} "
      f"devices do not fit the {n} devices here"
    )
  if size != n and jax.process_count() > 1:
    raise ConfigError(
      f"config.mesh.data={data} x config.mesh.fsdp={fsdp} = {size} "
      f"devices, but a multi-process run must use all {n} devices"
    )
  return data, fsdp


def make_mesh(config) -> Mesh:
  """A (`data`, `fsdp`) mesh over data x fsdp devices (config.mesh; -1 = the rest)."""
  data, fsdp = mesh_shape(config)
  auto = jax.sharding.AxisType.Auto
  # Auto axes: XLA's partitioner propagates shardings through the model, so
  # model code needs no sharding annotations (jax 0.10's default is Explicit).
  return jax.make_mesh(
    (data, fsdp), BATCH_AXES, axis_types=(auto, auto), devices=jax.devices()[: data * fsdp]
  )


def batch_devices(mesh: Mesh) -> int:
  """How many ways a batch is split: data x fsdp."""
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def check_batch_sizes(config, mesh: Mesh) -> None:
  """ConfigError unless batch_size and eval_batch_size divide over data x fsdp."""
  n = batch_devices(mesh)
  for field in ("batch_size", "eval_batch_size"):
    if config[field] % n:
      raise ConfigError(
        f"config.{field}={config[field]} is not divisible by "
        f"config.mesh.data x config.mesh.fsdp = {mesh.shape['data']} x "
        f"{mesh.shape['fsdp']} = {n} devices"
      )


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data` and `fsdp` together."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def fsdp_spec(shape: tuple[int, ...], fsdp_size: int, min_size: int = DEFAULT_FSDP_MIN_SIZE) -> P:
  """The PartitionSpec of one parameter-like array under the FSDP rule (module doc)."""
  if fsdp_size <= 1 or not shape or int(np.prod(shape)) < min_size:
    return P()
  candidates = [(length, -axis) for axis, length in enumerate(shape) if length % fsdp_size == 0]
  if not candidates:
    return P()
  _, neg_axis = max(candidates)
  spec: list[str | None] = [None] * len(shape)
  spec[-neg_axis] = "fsdp"
  return P(*spec)


def state_shardings(mesh: Mesh, abstract_state: PyTree, min_size: int | None = None) -> PyTree:
  """NamedShardings for every leaf of a state, params or optimizer-state pytree.

  Applies the FSDP rule (docs/speed.md#scale-out) leaf by leaf (so Adam's
  moments are sharded as their parameters); min_size None means
  DEFAULT_FSDP_MIN_SIZE. Leaves without a shape (None, Python scalars) are
  replicated.
  """
  min_size = DEFAULT_FSDP_MIN_SIZE if min_size is None else min_size
  fsdp_size = mesh.shape.get("fsdp", 1)

  def one(leaf):
    shape = tuple(getattr(leaf, "shape", ()))
    return NamedSharding(mesh, fsdp_spec(shape, fsdp_size, min_size))

  return jax.tree.map(one, abstract_state)


def config_state_shardings(config, mesh: Mesh, abstract_state: PyTree) -> PyTree:
  """state_shardings with config.fsdp_min_size (ConfigError if it is not an int >= 0)."""
  min_size = config.get("fsdp_min_size", DEFAULT_FSDP_MIN_SIZE)
  if not isinstance(min_size, int) or isinstance(min_size, bool) or min_size < 0:
    raise ConfigError(f"config.fsdp_min_size must be an integer >= 0, got {min_size!r}")
  return state_shardings(mesh, abstract_state, min_size)


def with_shardings(abstract: PyTree, shardings: PyTree) -> PyTree:
  """ShapeDtypeStructs of `abstract` carrying `shardings` (restore targets)."""
  return jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
  )


def global_batch(mesh: Mesh, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
  """Assembles each process's local rows into global arrays split over data x fsdp."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}
