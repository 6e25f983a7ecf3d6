"""`config.profile = "START:STOP"`: a jax.profiler trace of steps START+1..STOP for TensorBoard.

Tracing starts after the train step has compiled; usage: docs/speed.md#profile-a-training-run.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

import jax

from minr_jax import paths, writers
from minr_jax.config import ConfigError


def parse(spec: str | None) -> tuple[int, int] | None:
  """'10:15' -> (10, 15); '' or None -> None. ConfigError naming config.profile."""
  if not spec:
    return None
  start, sep, stop = str(spec).partition(":")
  try:
    first, last = int(start), int(stop)
  except ValueError:
    first = last = -1
  if not sep or not 0 <= first < last:
    raise ConfigError(
      f"config.profile={spec!r}: give 'START:STOP' steps with "
      "0 <= START < STOP (e.g. '10:15'), or '' for no trace"
    )
  return first, last


class StepProfiler:
  """Starts a trace before step START+1 and stops it after step STOP."""

  def __init__(self, spec: str | None, workdir: str):
    self.window = parse(spec)
    self.workdir = os.fspath(workdir)
    self._local: str | None = None  # where the running trace is written
    self.trace_dir: str | None = None  # where it ends up

  def annotate(self, step: int):
    """Context for the call that computes step `step` (1-based, as logged)."""
    if self.window is None:
      return contextlib.nullcontext()
    if step == self.window[0] + 1 and self._local is None:
      remote = paths.is_url(self.workdir)
      self._local = (
        tempfile.mkdtemp(prefix="minr_jax_profile_")
        if remote
        else os.path.join(self.workdir, writers.TENSORBOARD_DIRNAME)
      )
      jax.profiler.start_trace(self._local)
    return jax.profiler.StepTraceAnnotation("train", step_num=step)

  def after(self, step: int, state) -> None:
    """Stops the trace once step STOP's results are on the device."""
    if self._local is not None and self.window is not None and step >= self.window[1]:
      jax.block_until_ready(state)
      self.stop()

  def stop(self) -> None:
    """Ends a running trace (also when training stops inside the window)."""
    if self._local is None:
      return
    jax.profiler.stop_trace()
    if paths.is_url(self.workdir):
      paths.copy_tree(self._local, os.path.join(self.workdir, writers.TENSORBOARD_DIRNAME))
    self.trace_dir = os.path.join(self.workdir, writers.TENSORBOARD_DIRNAME, "plugins", "profile")
    if jax.process_index() == 0:
      print(
        f"profile of steps {self.window[0] + 1}-{self.window[1]} written to {self.trace_dir}",
        flush=True,
      )
    self._local = None
    self.window = None
