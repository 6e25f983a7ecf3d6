"""The device mesh and the shardings of batches and parameters.

One mesh axis for now, `data`: batches are split along it and parameters and
optimizer state are replicated (FSDP-style parameter sharding comes with the
scale-out work). The same code runs on 1 CPU, 8 fake CPU devices, a GPU host
or a TPU pod slice; only the mesh changes.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from minr_jax.config import ConfigError

PyTree = Any


def make_mesh(config) -> Mesh:
  """A mesh with one `data` axis over config.mesh.data devices (-1 = all)."""
  n = jax.device_count() if config.mesh.data == -1 else config.mesh.data
  if n < 1 or n > jax.device_count() or jax.device_count() % n:
    raise ConfigError(f"config.mesh.data={config.mesh.data} does not fit the "
                      f"{jax.device_count()} devices here")
  # Auto axes: XLA's partitioner propagates shardings through the model, so
  # model code needs no sharding annotations (jax 0.10's default is Explicit).
  return jax.make_mesh((n,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:n])


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`."""
  return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def state_shardings(mesh: Mesh, abstract_state: PyTree) -> PyTree:
  """Every leaf of the train state replicated over the mesh."""
  return jax.tree.map(lambda _: replicated(mesh), abstract_state)


def with_shardings(abstract: PyTree, shardings: PyTree) -> PyTree:
  """ShapeDtypeStructs of `abstract` carrying `shardings` (restore targets)."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shardings)


def global_batch(mesh: Mesh, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
  """Assembles each process's local rows into global arrays split over `data`."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in local_batch.items()}
