"""The workdir lock: one training run per workdir (`WorkdirLock`), stale locks of dead
processes taken over.
"""

from __future__ import annotations

import datetime
import json
import os
import socket

from minr_jax.checkpoint import as_path
from minr_jax.config import ConfigError

LOCK = ".minr_lock"


class WorkdirLock:
  """One training run per workdir: `<workdir>/.minr_lock` names the holder.

  A local workdir's lock appears atomically with its content (written to a
  temporary file, then hard-linked into place, which fails if a lock exists),
  so a lock is never seen half-written. A lock left by a process of this host
  that no longer runs, and a lock file that cannot be read or does not name
  a holder (garbage, empty, another tool's), are stale: taken over with a
  one-line warning. On a bucket (gs://) the check and the write are two
  requests, so two runs started within the same second can both pass: a
  documented limit (docs/errors.md).
  """

  def __init__(self, workdir: str):
    self.path = as_path(workdir) / LOCK
    self.held = False

  def _create(self, text: str) -> None:
    """Creates the lock holding `text`; FileExistsError if there is one."""
    if "://" in os.fspath(self.path):
      if self.path.exists():
        raise FileExistsError
      self.path.write_text(text)
      return
    temp = f"{os.fspath(self.path)}.{os.getpid()}.tmp"
    try:
      with open(temp, "w") as f:
        f.write(text)
      try:
        os.link(temp, os.fspath(self.path))
      except FileExistsError:
        raise
      except OSError:  # a file system without hard links: create, then write
        fd = os.open(os.fspath(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "w") as f:
          f.write(text)
    finally:
      try:
        os.unlink(temp)
      except OSError:
        pass

  def acquire(self) -> None:
    me = dict(
      host=socket.gethostname(),
      pid=os.getpid(),
      since=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    for _ in range(3):
      try:
        self._create(json.dumps(me))
        self.held = True
        return
      except FileExistsError:
        holder, problem = self._holder()
        if holder is None:  # released meanwhile: try again
          continue
        if problem:
          print(f"warning: {self.path} {problem}; taking it over as stale", flush=True)
        elif holder["host"] == me["host"] and not _alive(holder["pid"]):
          print(
            f"warning: taking over {self.path}, left by process {holder['pid']} "
            "that no longer runs",
            flush=True,
          )
        else:
          raise ConfigError(
            f"{self.path.parent} is in use by another training run (process "
            f"{holder['pid']} on {holder['host']} since {holder.get('since')}); "
            f"use another --workdir, or delete {self.path} if that run is gone"
          ) from None
        try:
          self.path.unlink()
        except FileNotFoundError:  # another run took it over first
          pass
        except OSError as e:
          raise ConfigError(
            f"cannot remove the stale lock {self.path}: {e.strerror or e}; delete it by hand"
          ) from None
    raise ConfigError(
      f"cannot take {self.path}: other runs keep taking it; start one run per --workdir"
    )

  def _holder(self) -> tuple[dict | None, str]:
    """(holder {host, pid, since}, ''), ({}, what is wrong with the lock file), or
    (None, '') if there is no lock file any more."""
    try:
      text = self.path.read_text()
    except FileNotFoundError:
      return None, ""
    except (OSError, UnicodeDecodeError) as e:
      return {}, f"cannot be read ({getattr(e, 'strerror', None) or type(e).__name__})"
    try:
      holder = json.loads(text)
    except ValueError:
      holder = None
    if (
      not isinstance(holder, dict)
      or not isinstance(holder.get("host"), str)
      or isinstance(holder.get("pid"), bool)
      or not isinstance(holder.get("pid"), int)
    ):
      shown = " ".join(text.split())[:40]
      return {}, ("is empty" if not shown else f"does not name a training run (it holds {shown!r})")
    return holder, ""

  def release(self) -> None:
    if self.held:
      try:
        self.path.unlink()
      except OSError:
        pass
      self.held = False


def _alive(pid) -> bool:
  try:
    os.kill(int(pid), 0)
  except (TypeError, ValueError, ProcessLookupError):
    return False
  except PermissionError:
    return True
  return True
