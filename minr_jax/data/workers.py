"""Start-up of grain's worker processes: `exit_with_parent` ends them when the trainer ends.

A daemon thread in each worker polls the parent's process id. Not `prctl(PR_SET_PDEATHSIG)`:
that fires when the *thread* that started the worker exits, and grain starts workers from
short-lived pool threads, so it would kill healthy workers.
"""

from __future__ import annotations

import os
import threading
import time

POLL_SECONDS = 0.5


def exit_with_parent(
  worker_index: int, worker_count: int, *, parent_pid: int, poll_seconds: float = POLL_SECONDS
) -> None:
  """Ends this process within `poll_seconds` of `parent_pid` ending.

  Runs in each worker before it reads any data (grain's `worker_init_fn`,
  which passes the worker's index and the worker count).

  Args:
    worker_index: unused.
    worker_count: unused.
    parent_pid: the training process's id (taken there, before the spawn).
    poll_seconds: how often the parent is checked.
  """
  del worker_index, worker_count

  def watch() -> None:
    while os.getppid() == parent_pid:
      time.sleep(poll_seconds)
    os._exit(1)  # No one reads this worker's batches any more.

  threading.Thread(target=watch, name="minr_jax-exit-with-parent", daemon=True).start()
