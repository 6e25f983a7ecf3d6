"""Read-only restore of a workdir's or checkpoint's parameters onto the devices present.

`restore(path, step)` -> `Restored` (config, model, family, params, mesh); every command
that reads a workdir goes through it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import posixpath
from typing import Any

import jax
import ml_collections

from minr_jax import checkpoint, device_policy, families, paths, sharding
from minr_jax.config import ConfigError, complete_saved, load_saved

PyTree = Any


def resolve_path(workdir_or_checkpoint: str, step: int | None = None) -> tuple[str, int | None]:
  """(workdir, step) from a workdir, its `checkpoints/` or a `checkpoints/<step>`.

  A local path comes back absolute; a URL (gs://...) as given, without a
  trailing slash. Raises ConfigError if a URL's scheme or bucket is unusable
  or a step directory contradicts `step` (a path that is no workdir is named
  by the config.json check that follows).
  """
  text = os.fspath(workdir_or_checkpoint)
  if paths.is_url(text):
    paths.check_reachable(text, "path")
    path = text.rstrip("/")
  else:
    path = os.path.normpath(os.path.abspath(os.path.expanduser(text)))
  base, parent = posixpath.basename(path), posixpath.dirname(path)
  if base.isdigit() and posixpath.basename(parent) == "checkpoints":
    dir_step = int(base)
    if step is not None and step != dir_step:
      raise ConfigError(f"step={step} contradicts the checkpoint directory {path}")
    return posixpath.dirname(parent), dir_step
  if base == "checkpoints" and not paths.as_path(path).joinpath("config.json").exists():
    return parent, step
  return path, step


@dataclasses.dataclass(frozen=True)
class Restored:
  """A checkpoint's parameters on a mesh, with what they need: the one read-only
  loader of evaluate, robustness, compare, embed and `load`."""

  workdir: str
  step: int
  config: ml_collections.ConfigDict  # config.json, 'auto' fields resolved for the mesh
  family: Any  # families.Family
  model: Any
  params: PyTree
  params_sharding: Any
  mesh: Any


def inference_mesh(config: ml_collections.ConfigDict, devices: int | None = None):
  """A pure data-parallel mesh over `devices` devices (None: every device present)."""
  n = jax.device_count() if devices is None else devices
  if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= jax.device_count():
    raise ConfigError(
      f"devices={devices!r} must be in [1, {jax.device_count()}] (the devices present)"
    )
  c = ml_collections.ConfigDict(config.to_dict())
  c.mesh.data = n
  if "fsdp" in c.mesh:  # inference replicates the parameters: pure data parallel
    c.mesh.fsdp = 1
  return sharding.make_mesh(c)


def restore(path: str, step: int | None = None, *, devices: int | None = None) -> Restored:
  """Parameters only (no optimizer state, no data iterator) of a workdir's checkpoint.

  path: a workdir, its `checkpoints/` or a `checkpoints/<step>` directory;
  step: default the newest (or the directory's). Opens the checkpoints
  read-only (`checkpoint.open_read_only`): nothing in the workdir is created
  or cleaned up. The model is built from the config saved in that checkpoint
  (config.json for checkpoints saved before configs were). ConfigError
  (before any restore) if there is no such checkpoint, it fails its checksums,
  its config is missing or bad, or its parameter shapes differ from the config.
  A damaged step (empty, half-written, failing its checksums, or any orbax /
  tensorstore error while reading it) is that one-line ConfigError when
  `step` is given; without `step` it is skipped with a warning line and the
  previous step is used (nothing is moved: the workdir is only read).
  """
  workdir, step = resolve_path(path, step)
  workdir_config = load_saved(workdir)  # ConfigError for a folder that is no workdir
  manager = checkpoint.open_read_only(workdir)
  try:
    steps = manager.all_steps()
    if step is not None and step not in steps:
      raise ConfigError(
        f"no checkpoint {step} in {os.path.join(workdir, 'checkpoints')}"
        + (f" (steps: {sorted(steps)})" if steps else "")
      )
    if not steps:
      raise ConfigError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}")
    for candidate in [step] if step is not None else sorted(steps, reverse=True):
      reason = checkpoint.verify(manager, candidate, lambda line: print(line, flush=True))
      if reason is None:
        try:
          return _restore_step(manager, workdir, candidate, workdir_config, devices)
        except ConfigError:
          raise
        except Exception as e:  # noqa: BLE001 (orbax / tensorstore: a damaged step)
          reason = checkpoint.restore_error(e)
      where = checkpoint.step_dir(manager, candidate)
      if step is not None:
        raise ConfigError(f"checkpoint {where} is corrupt ({reason}); pass another step")
      print(
        f"warning: checkpoint {where} is corrupt ({reason}); using the previous one", flush=True
      )
    raise ConfigError(
      f"no intact checkpoint in {os.path.join(workdir, 'checkpoints')} "
      f"(steps: {sorted(steps)}, all corrupt)"
    )
  finally:
    manager.close()


def _restore_step(manager, workdir: str, step: int, workdir_config, devices) -> Restored:
  """`restore` of one verified step."""
  saved = checkpoint.saved_config(manager, step)  # the config this step was trained with
  if saved is None:
    config = workdir_config
  else:
    config = ml_collections.ConfigDict(saved)
    complete_saved(config)
  family = families.check(config)
  mesh = inference_mesh(config, devices)
  config, _ = device_policy.resolve_auto(config, mesh.devices.flat)
  model = family.build(config)
  abstract = jax.eval_shape(functools.partial(family.init, model), jax.random.key(0))
  params_sharding = sharding.state_shardings(mesh, abstract)
  abstract = sharding.with_shardings(abstract, params_sharding)
  checkpoint.check_compatible(manager, step, abstract)
  params = checkpoint.restore_params(manager, step, abstract)
  return Restored(
    workdir=workdir,
    step=int(step),
    config=config,
    family=family,
    model=model,
    params=params,
    params_sharding=params_sharding,
    mesh=mesh,
  )
