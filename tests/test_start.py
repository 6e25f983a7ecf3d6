"""Before the first step: the workdir lock, the config-age warning and command-line
errors, each one line and never false."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import ml_collections
import pytest

from configs import ginr as ginr_config
from configs import mae as mae_config
from configs import transinr as transinr_config
from minr_jax import config as config_lib
from minr_jax.config import ConfigError
from minr_jax.training import guard
from minr_jax.training import lock as lock_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------ the lock


@pytest.mark.parametrize(
  "content, problem",
  [
    (b"\x00\xff garbage \x13", "cannot be read (UnicodeDecodeError)"),
    (b"", "is empty"),
    (b"not json at all", "does not name a training run (it holds 'not json at all')"),
    (b"[1, 2]", "does not name a training run (it holds '[1, 2]')"),
    (b'{"host": "h"}', 'does not name a training run (it holds \'{"host": "h"}\')'),
  ],
)
def test_a_garbage_lock_is_stale_and_taken_over(tmp_path, capsys, content, problem):
  path = tmp_path / lock_lib.LOCK
  path.write_bytes(content)
  lock = lock_lib.WorkdirLock(str(tmp_path))
  lock.acquire()
  assert capsys.readouterr().out == (f"warning: {path} {problem}; taking it over as stale\n")
  holder = json.loads(path.read_text())
  assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
  lock.release()
  assert not path.exists()


def test_a_live_lock_is_still_refused_and_a_dead_one_taken_over(tmp_path, capsys):
  path = tmp_path / lock_lib.LOCK
  first = lock_lib.WorkdirLock(str(tmp_path))
  first.acquire()
  with pytest.raises(
    ConfigError,
    match=f"^{tmp_path} is in use by another training run "
    f"\\(process {os.getpid()} on {socket.gethostname()} since ",
  ):
    lock_lib.WorkdirLock(str(tmp_path)).acquire()
  first.release()
  path.write_text(json.dumps(dict(host=socket.gethostname(), pid=2**22 + 17)))
  lock_lib.WorkdirLock(str(tmp_path)).acquire()
  assert "left by process 4194321 that no longer runs" in capsys.readouterr().out
  assert [p.name for p in tmp_path.iterdir()] == [lock_lib.LOCK]  # no temp file left


# ------------------------------------------------------------ config age


@pytest.mark.parametrize(
  "module", [transinr_config, ginr_config, mae_config], ids=["transinr", "ginr", "mae"]
)
@pytest.mark.parametrize("variant", ["", "tiny"])
def test_a_current_config_predates_no_field(module, variant):
  """A fresh config.json of every family (MAE has no model.inr_dtype) is complete."""
  saved = ml_collections.ConfigDict(json.loads(module.get_config(variant).to_json_best_effort()))
  assert config_lib.complete_saved(saved) == []


def test_an_old_config_gets_the_fields_of_its_family_only():
  mae = ml_collections.ConfigDict(json.loads(mae_config.get_config("tiny").to_json()))
  del mae.model["dtype"]
  assert config_lib.complete_saved(mae) == ["model.dtype"]
  assert "inr_dtype" not in mae.model
  legacy = ml_collections.ConfigDict(json.loads(transinr_config.get_config("tiny").to_json()))
  del legacy.model["family"], legacy.model["inr_dtype"]  # before model.family existed
  assert config_lib.complete_saved(legacy) == ["model.inr_dtype"]


@pytest.mark.parametrize("module", [transinr_config, mae_config], ids=["transinr", "mae"])
def test_a_checkpoint_saved_before_a_field_existed_resumes_without_a_flag(module):
  """Upgrading minr_jax mid-run: the fields it added count at their old behaviour's
  values; a real change of one of them is still refused."""
  config = module.get_config("tiny")
  saved = json.loads(config.to_json_best_effort())
  for field in ("lpips_weight", "init_from"):
    del saved[field]
  guard.check_config_change(config, saved, "ckpt", "/nonexistent", allow=False)
  if module is transinr_config:
    config.lpips_weight = 0.5
    with pytest.raises(ConfigError, match=r"lpips_weight \(0.0 -> 0.5\)"):
      guard.check_config_change(config, saved, "ckpt", "/nonexistent", allow=False)


# --------------------------------------------------------- the command line


def _main(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, "-m", "minr_jax.main", *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )


def test_a_stray_argument_is_one_line(tmp_path):
  out = _main("--config=configs/transinr.py:tiny", f"--workdir={tmp_path / 'run'}", "extra")
  assert out.returncode == 1
  assert out.stderr == (
    "error: unexpected argument 'extra': this command takes flags "
    "only, as --name=value (see --help)\n"
  )
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
  "text, reason",
  [
    ("def get_config(:\n", "invalid syntax (line 1)"),
    ("import nosuchmodule_x\n", "ModuleNotFoundError: No module named 'nosuchmodule_x' (line 1)"),
    ("def get_config():\n  return 1 / 0\n", "ZeroDivisionError: division by zero (line 2)"),
  ],
)
def test_a_config_file_that_does_not_load_is_one_line_naming_the_flag(tmp_path, text, reason):
  path = tmp_path / "broken.py"
  path.write_text(text)
  out = _main(f"--config={path}", f"--workdir={tmp_path / 'run'}")
  assert out.returncode == 1
  assert out.stderr == f"error: --config: {path} does not load: {reason}\n"
