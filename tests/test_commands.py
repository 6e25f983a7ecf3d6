"""The command layer: console scripts and `python -m` run the same flags, importing defines none."""

import importlib
import os
import shutil
import subprocess
import sys
import tomllib

import pytest
from absl import flags

from minr_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = (
  "embed",
  "probe",
  "inpaint",
  "export",
  "bench",
  "aot",
  "evaluate",
  "robustness",
  "compare",
  "paper_tables",
  "app",
)


def _scripts() -> dict[str, str]:
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)["project"]["scripts"]


def test_every_console_script_names_a_callable_and_every_command_has_one():
  scripts = _scripts()
  for name, target in scripts.items():
    module, func = target.split(":")
    assert callable(getattr(importlib.import_module(module), func)), name
  for command in COMMANDS:
    script = "minr-" + command.replace("_", "-")
    assert scripts[script] == f"minr_jax.{command}:main"
  assert "minr-eval" not in scripts  # one evaluation command: minr-evaluate


def test_importing_a_command_defines_no_flag():
  before = set(flags.FLAGS)
  for command in COMMANDS:
    importlib.import_module(f"minr_jax.{command}")
  assert set(flags.FLAGS) == before


def test_missing_required_flags_are_named_in_one_line():
  error = flags.IllegalFlagValueError(
    "flag --workdir=None: Flag --workdir must have a value other than None.\n"
    "flag --output=None: Flag --output must have a value other than None."
  )
  assert cli.flag_error(error, []) == "--workdir, --output are required"


@pytest.mark.parametrize("how", ["module", "script"])
def test_both_ways_of_running_a_command_give_the_same_one_line_error(how, tmp_path):
  if how == "script":
    script = shutil.which("minr-probe")
    assert script, "minr-probe is not installed: pip install -e ."
    argv = [script]
  else:
    argv = [sys.executable, "-m", "minr_jax.probe"]
  missing = str(tmp_path / "missing.npz")
  out = subprocess.run(
    argv + [f"--train={missing}", f"--test={missing}"], capture_output=True, text=True, cwd=ROOT
  )
  assert out.returncode == 1
  assert out.stderr.strip().splitlines()[-1] == f"error: {missing} does not exist"
