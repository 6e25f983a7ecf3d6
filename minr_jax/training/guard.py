"""What keeps a training run safe: checks before it starts, stop requests, resumption.

`check_workdir`, `check_config_change` (RESUMABLE_CHANGES), `StopRequest` (SIGTERM/SIGINT:
save and stop) and `enable_compilation_cache`.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from minr_jax import checkpoint, paths
from minr_jax.config import ConfigError, complete_saved

# The loop's cadences and outputs, and what it evaluates on: no step function
# reads them (steps.NOT_READ_BY_STEPS) and a resumed run may change them.
LOOP_FIELDS = (
  "log_every_steps",
  "eval_every_steps",
  "checkpoint_every_steps",
  "checkpoint_every_secs",
  "keep_checkpoints",
  "keep_period",
  "tensorboard",
  "profile",
  "compilation_cache_dir",
  "num_grid_images",
  "eval_datasets",
  "evals",
  "eval_train_dataset",
)
# Fields that may change between a checkpoint and the run resuming it: step count,
# cadences, logging, evaluation-only and placement fields (the same maths).
RESUMABLE_CHANGES = (
  "num_train_steps",
  "init_from",  # read only when a run starts from step 0
  *LOOP_FIELDS,
  "eval_batch_size",
  "eval_mask_strategy",
  "eval_mask_seed",
  "dataset.eval_max_images",
  "dataset.num_workers",
  "dataset.prefetch_buffer",
  "dataset.data_dir",
  "mesh.",
  "fsdp_min_size",
  "model.attention_impl",
  "model.inr_chunk",
  "model.remat",
)


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
  return out


def check_config_change(
  config: ml_collections.ConfigDict, saved: dict | None, where: str, workdir: str, allow: bool
) -> None:
  """Refuses (ConfigError, one line listing the fields) to resume checkpoint `where` with a
  config that differs from the one it was trained with, except in RESUMABLE_CHANGES;
  with `allow`, accepts and appends the change to <workdir>/config_changes.jsonl."""
  if saved is None:
    return
  # Fields added to minr_jax since that checkpoint was saved count at the values that
  # reproduce it (config.complete_saved), so upgrading never blocks a resume.
  completed = ml_collections.ConfigDict(saved)
  complete_saved(completed)
  now = _flat(json.loads(config.to_json_best_effort()))
  then = _flat(json.loads(completed.to_json_best_effort()))
  changed = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
  risky = [k for k in changed if not k.startswith(RESUMABLE_CHANGES)]
  if risky and not allow:
    shown = ", ".join(f"{k} ({then.get(k)!r} -> {now.get(k)!r})" for k in risky[:6])
    raise ConfigError(
      f"{where} was trained with another config: {shown}"
      f"{' ...' if len(risky) > 6 else ''}; resume with the same config, "
      "use another --workdir, or pass --allow_config_change (logged in "
      "config_changes.jsonl)"
    )
  if risky and jax.process_index() == 0:
    path = checkpoint.as_path(workdir) / "config_changes.jsonl"
    old = path.read_text() if path.exists() else ""
    record = dict(
      time=time.time(), checkpoint=where, changes={k: [then.get(k), now.get(k)] for k in risky}
    )
    path.write_text(old + json.dumps(record) + "\n")
    print(
      f"warning: resuming {where} with changed {', '.join(risky)} "
      "(--allow_config_change; logged in config_changes.jsonl)",
      flush=True,
    )


class StopRequest:
  """SIGTERM (preemption notice) or SIGINT asks the loop to save and stop.

  One process: Python signal handlers set a flag the loop reads after each
  step. Several processes: JAX's preemption service turns a SIGTERM on any
  host into one agreed step (`multihost_utils.reached_preemption_sync_point`),
  so every process saves the same step.
  """

  def __init__(self):
    self.signal: int | None = None
    self._old = {}
    self._multi = jax.process_count() > 1
    if not self._multi and threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._old[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame) -> None:
    del frame
    if self.signal is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C stops at once
    self.signal = signum

  def reached(self, step: int) -> bool:
    if self._multi:
      from jax.experimental import multihost_utils  # noqa: PLC0415

      try:
        if multihost_utils.reached_preemption_sync_point(step):
          self.signal = signal.SIGTERM
      except RuntimeError:  # no preemption service in this runtime
        pass
    return self.signal is not None

  def close(self) -> None:
    for sig, old in self._old.items():
      signal.signal(sig, old)
    self._old = {}


def broadcast(value: float) -> float:
  """Process 0's value on every process."""
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils  # noqa: PLC0415

  return float(multihost_utils.broadcast_one_to_all(np.float32(value)))


def check_workdir(workdir: str) -> None:
  """ConfigError naming a workdir that is a file or cannot be written, or a URL whose
  scheme nothing serves or whose bucket is unreachable."""
  if paths.is_url(workdir):
    paths.check_reachable(workdir, "--workdir")
    return
  path = os.path.abspath(os.path.expanduser(workdir))
  if os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError(f"--workdir={workdir} is a file, not a directory")
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"--workdir={workdir} cannot be created: {e.strerror}") from None
  if not os.access(path, os.W_OK | os.X_OK):
    raise ConfigError(f"--workdir={workdir} is not writable")


def enable_compilation_cache(config: ml_collections.ConfigDict) -> None:
  """config.compilation_cache_dir ('' = off): XLA programs persist, restarts skip compiling."""
  directory = config.get("compilation_cache_dir", "")
  if directory and not jax.config.jax_compilation_cache_dir:
    jax.config.update(
      "jax_compilation_cache_dir",
      directory if "://" in directory else os.path.expanduser(directory),
    )
