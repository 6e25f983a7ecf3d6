r"""Compile the train and eval steps for a TPU slice on any host, no TPU needed: `aot_main`.

libtpu describes the slice's devices; the steps of `steps.make_steps` are compiled for them and
their memory is reported. Usage, topologies and the output: docs/tpu_compile.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from minr_jax.config import ConfigError


@dataclasses.dataclass(frozen=True)
class Slice:
  """How libtpu describes one Cloud TPU accelerator type as its TPU VMs run it."""

  topology: str  # libtpu topology name, e.g. 'v4:2x2x1'.
  chip_config: str | None = None  # libtpu chip_config_name (None: libtpu's default).
  chips_per_host: tuple[int, int, int] | None = None  # None: libtpu's default (2x2x1).


# Cloud TPU accelerator types (`gcloud compute tpus tpu-vm create --accelerator-type`).
# The chip config is the one libtpu uses on live TPU VMs (jax's own AOT tests
# match it that way): v4 runs its two TensorCores as one megacore device; v5p
# and v6e use 'megachip_tccontrol'; v5e and v6e hosts hold 8 chips (2x4).
_V4, _V5P, _V6E = "megacore", "megachip_tccontrol", "megachip_tccontrol"
SLICES: dict[str, Slice] = {
  "v4-8": Slice("v4:2x2x1", _V4),
  "v4-16": Slice("v4:2x2x2", _V4),
  "v4-32": Slice("v4:2x2x4", _V4),
  "v5litepod-1": Slice("v5e:1x1", None, (1, 1, 1)),
  "v5litepod-4": Slice("v5e:2x2", None, (2, 2, 1)),
  "v5litepod-8": Slice("v5e:2x4", None, (2, 4, 1)),
  "v5litepod-16": Slice("v5e:4x4", None, (2, 2, 1)),
  "v5p-8": Slice("v5p:2x2x1", _V5P),
  "v5p-16": Slice("v5p:2x2x2", _V5P),
  "v5p-32": Slice("v5p:2x2x4", _V5P),
  "v6e-1": Slice("v6e:1x1", _V6E, (1, 1, 1)),
  "v6e-4": Slice("v6e:2x2", _V6E, (2, 2, 1)),
  "v6e-8": Slice("v6e:2x4", _V6E, (2, 4, 1)),
  "v6e-16": Slice("v6e:4x4", _V6E, (2, 2, 1)),
}
SLICES.update(
  {f"v5e-{k.split('-')[1]}": v for k, v in list(SLICES.items()) if k.startswith("v5litepod-")}
)

# HBM per chip, by jax's device_kind: (as Google Cloud's TPU pages state it,
# what libtpu's compiler lets one program use). Stated (units as printed there):
# v4 "32 GiB" (cloud.google.com/tpu/docs/v4), v5e "16 GB" (.../tpu/docs/v5e),
# v5p "95GB" (.../tpu/docs/v5p), v6e "32 GB" (.../tpu/docs/v6e). Usable: the
# "available HBM" libtpu 0.0.42 names when a program is too big (rounded to
# 0.01 GiB by its message); the runtime keeps the rest. Compile-only devices
# have no memory_stats(), hence the table.
_GIB = 2**30
HBM_BYTES: dict[str, tuple[int, int]] = {
  "TPU v4": (32 * _GIB, int(30.75 * _GIB)),
  "TPU v5 lite": (16 * 10**9, int(15.75 * _GIB)),
  "TPU v5": (95 * 10**9, int(95.74 * _GIB)),
  "TPU v6 lite": (32 * 10**9, int(31.25 * _GIB)),
}

_LIBTPU_NAME = re.compile(r"^[a-z][a-z0-9]*:\d+x\d+(x\d+)?$")


# ----------------------------------------------------------------- topology ---


def parse_topology(name: str) -> tuple[str, Slice]:
  """--topology -> (its name, the Slice to ask libtpu for); ConfigError if neither form."""
  name = (name or "").strip()
  if name.lower() in SLICES:
    return name.lower(), SLICES[name.lower()]
  if _LIBTPU_NAME.match(name):
    # v4 as megacore, as on every v4 TPU VM: jax.make_mesh (sharding.make_mesh)
    # needs one device per chip on TPUs newer than v3.
    return name, Slice(name, _V4 if name.startswith("v4:") else None)
  raise ConfigError(
    f"--topology={name!r} is neither an accelerator type ("
    f"{', '.join(k for k in SLICES if not k.startswith('v5e-'))}) nor a "
    f"libtpu topology name such as v4:2x2x1, v5e:2x4, v5p:2x2x1, v6e:2x4"
  )


def libtpu_path() -> str | None:
  """The libtpu library JAX would load for TPUs (TPU_LIBRARY_PATH or the libtpu package)."""
  path = os.environ.get("TPU_LIBRARY_PATH")
  if path and os.path.isfile(path):
    return path
  try:
    import libtpu  # noqa: PLC0415 (optional: the [tpu] extra)
  except ImportError:
    return None
  path = libtpu.get_library_path()
  return path if os.path.isfile(path) else None


def check_libtpu() -> None:
  """ConfigError unless libtpu (jax's TPU compiler and runtime) is installed."""
  if libtpu_path() is None:
    raise ConfigError(
      "libtpu is not installed, and it is what compiles for TPUs (also on a "
      "CPU host): pip install -e '.[tpu]' (or pip install 'jax[tpu]')"
    )


def topology_devices(name: str) -> tuple[str, Slice, list]:
  """(name, Slice, the slice's compile-only TPU devices); ConfigError for unknown names."""
  name, spec = parse_topology(name)
  check_libtpu()
  from jax.experimental import topologies  # noqa: PLC0415

  kwargs: dict[str, Any] = {}
  if spec.chip_config:
    kwargs["chip_config_name"] = spec.chip_config
  if spec.chips_per_host:
    kwargs["chips_per_host_bounds"] = spec.chips_per_host
  try:
    devices = topologies.get_topology_desc(
      topology_name=spec.topology, platform="tpu", **kwargs
    ).devices
  except Exception as e:  # noqa: BLE001 (libtpu raises JaxRuntimeError / ValueError)
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ConfigError(
      f"--topology={name!r}: libtpu does not know the topology {spec.topology!r} ({first})"
    ) from None
  return name, spec, list(devices)


def devices_per_chip(devices: Sequence[Any]) -> int:
  """How many devices share a chip (2 for v4 outside megacore, else 1)."""
  chips = {(getattr(d, "slice_index", 0), tuple(d.coords)) for d in devices}
  return max(1, len(devices) // max(1, len(chips)))


def memory_per_device(devices: Sequence[Any]) -> int | None:
  """Bytes one program may use per device: HBM_BYTES' usable HBM / devices_per_chip.

  None for a chip missing from HBM_BYTES.
  """
  hbm = HBM_BYTES.get(devices[0].device_kind)
  return None if hbm is None else hbm[1] // devices_per_chip(devices)


def make_mesh(config, devices: Sequence[Any]):
  """sharding.make_mesh over an explicit device list (here: a topology's devices).

  Same rules as `sharding.make_mesh` (config.mesh, -1 = the rest); the mesh
  must cover every device when they belong to several processes (hosts).
  """
  import jax  # noqa: PLC0415

  from minr_jax import sharding  # noqa: PLC0415

  devices = list(devices)
  data, fsdp = sharding.mesh_shape(config, len(devices))
  processes = len({d.process_index for d in devices})
  if data * fsdp != len(devices) and processes > 1:
    raise ConfigError(
      f"config.mesh.data={data} x config.mesh.fsdp={fsdp} = {data * fsdp} "
      f"devices, but this {processes}-host slice has {len(devices)}; a "
      f"multi-host run must use all of them"
    )
  auto = jax.sharding.AxisType.Auto
  return jax.make_mesh(
    (data, fsdp), sharding.BATCH_AXES, axis_types=(auto, auto), devices=devices[: data * fsdp]
  )


# -------------------------------------------------------------------- steps ---


def abstract_inputs(config, mesh, steps) -> tuple[tuple, tuple]:
  """(train_step's, eval_step's) arguments as ShapeDtypeStructs carrying their shardings.

  As the training loop passes them: train_step(state, {'image': f32 [B, R, R,
  3]}, key) with a replicated typed key; eval_step(params, {'image': f32 [Be,
  R, R, 3], 'index': int32 [Be], 'valid': bool [Be]}, grid_masks [Be, g, g])
  with the masks of `masking.eval_masks`. Batches are split over the mesh.
  """
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  from minr_jax import masking, sharding  # noqa: PLC0415

  r, batch_sh = config.resolution, steps.batch_sharding

  def sharded(x, sh=batch_sh):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh)

  def batch(n: int, **fields):
    return {
      k: sharded(jax.ShapeDtypeStruct((n, *shape), dtype)) for k, (shape, dtype) in fields.items()
    }

  key = jax.eval_shape(lambda: jax.random.split(jax.random.key(0))[1])
  train_batch = batch(config.batch_size, image=((r, r, 3), jnp.float32))
  eval_batch = batch(
    config.eval_batch_size,
    image=((r, r, 3), jnp.float32),
    index=((), jnp.int32),
    valid=((), jnp.bool_),
  )
  grid_masks = jax.eval_shape(
    lambda index: masking.eval_masks(steps.config, index), eval_batch["index"]
  )
  return (
    (steps.abstract_state, train_batch, sharded(key, sharding.replicated(mesh))),
    (steps.abstract_state.params, eval_batch, sharded(grid_masks)),
  )


def step_report(compiled, memory: int | None, compile_s: float) -> dict[str, Any]:
  """Per-device flops and bytes of one compiled step, and whether it fits `memory`."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per program
    cost = cost[0] if cost else {}
  mem = compiled.memory_analysis()
  total = (
    mem.argument_size_in_bytes
    + mem.output_size_in_bytes
    + mem.temp_size_in_bytes
    - mem.alias_size_in_bytes
  )
  return dict(
    flops_per_device=float(cost.get("flops", 0.0)) if cost else None,
    argument_bytes=int(mem.argument_size_in_bytes),
    output_bytes=int(mem.output_size_in_bytes),
    alias_bytes=int(mem.alias_size_in_bytes),
    temp_bytes=int(mem.temp_size_in_bytes),
    total_bytes=int(total),
    fits=None if memory is None else bool(total <= memory),
    compile_s=round(compile_s, 1),
  )


def compile_step(fn, args: Sequence[Any], memory: int | None) -> dict[str, Any]:
  """step_report of jitted `fn` compiled for abstract `args`.

  A step libtpu finds too big for the chip (RESOURCE_EXHAUSTED) gives {fits:
  False, error, compile_s}; any other compile error is raised.
  """
  t0 = time.perf_counter()
  try:
    compiled = fn.lower(*args).compile()
  except Exception as e:  # noqa: BLE001 (JaxRuntimeError; only out-of-memory is an answer)
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    return dict(
      fits=False, error=" ".join(str(e).split())[:300], compile_s=round(time.perf_counter() - t0, 1)
    )
  return step_report(compiled, memory, time.perf_counter() - t0)


def compile_report(
  config,
  topology: str,
  log: Callable[[str], None] = print,
  which: Sequence[str] = ("train_step", "eval_step"),
) -> dict[str, Any]:
  """Compiles the steps named in `which` for `topology`; the report (docs/tpu_compile.md).

  Every check that can fail on bad input (ConfigError) runs before the first compile.
  """
  from minr_jax import families, sharding
  from minr_jax.training import steps as steps_lib

  name, spec = parse_topology(topology)
  check_libtpu()
  families.check(config)
  name, spec, devices = topology_devices(name)
  mesh = make_mesh(config, devices)
  sharding.check_batch_sizes(config, mesh)
  families.check(config, num_devices=sharding.batch_devices(mesh))
  processes = len({d.process_index for d in devices})
  memory = memory_per_device(devices)
  kind = devices[0].device_kind
  # make_steps resolves model.attention_impl / inr_chunk 'auto' for the mesh's
  # devices, here TPU devices (not this CPU host): the batched forms.
  steps = steps_lib.make_steps(config, mesh)
  report: dict[str, Any] = dict(
    topology=name,
    libtpu_topology=spec.topology,
    devices=len(devices),
    device_kind=kind,
    processes=processes,
    mesh=dict(mesh.shape),
    batch_size=config.batch_size,
    eval_batch_size=config.eval_batch_size,
    resolved=steps.resolved,
    hbm_per_chip=HBM_BYTES.get(kind, (None,))[0],
    memory_per_device=memory,
  )
  log(
    f"{name}: {len(devices)} x {kind} ({spec.topology}, {processes} host(s)), "
    f"mesh {dict(mesh.shape)}, {memory / _GIB if memory else float('nan'):.2f} GiB "
    f"usable per device; batch {config.batch_size}, eval batch {config.eval_batch_size}"
  )

  train_args, eval_args = abstract_inputs(steps.config, mesh, steps)
  for step, fn, args in (
    ("train_step", steps.train_step, train_args),
    ("eval_step", steps.eval_step, eval_args),
  ):
    if step not in which:
      continue
    log(f"compiling {step} for {name}...")
    r = report[step] = compile_step(fn, args, memory)
    if "error" in r:
      log(f"{step} does not fit ({r['compile_s']:.1f} s): {r['error']}")
    else:
      log(
        f"compiled {step} in {r['compile_s']:.1f} s: {r['flops_per_device']:.3g} flops, "
        f"{r['total_bytes'] / _GIB:.2f} GiB per device, fits: {r['fits']}"
      )
  return report


# ---------------------------------------------------------------------- CLI ---

STEP_NAMES = ("train_step", "eval_step")


def aot_main(config, topology: str, which: Sequence[str] = STEP_NAMES) -> dict[str, Any]:
  """The command: compile_report with progress lines, then the report as one JSON line."""
  unknown = set(which) - set(STEP_NAMES)
  if unknown or not which:
    raise ConfigError(f"--steps={','.join(which)}: name train_step and/or eval_step")
  # This process only compiles: JAX itself stays on the CPU and never opens a
  # TPU, so it may share libtpu with other processes (e.g. a training run on
  # the same TPU VM, or another compile: libtpu's lockfile would refuse it),
  # and libtpu is told the host's name so that it does not complain about a
  # host that is not a TPU VM.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  import jax  # noqa: PLC0415

  jax.config.update("jax_platforms", "cpu")
  report = compile_report(config, topology, log=lambda s: print(s, flush=True), which=which)
  print(json.dumps(report), flush=True)
  return report
