"""The command layer: console scripts and `python -m` run the same flags, importing defines none."""

import importlib
import json
import os
import shutil
import subprocess
import sys
import tomllib

import pytest
from absl import flags
from helpers import run_at_once

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
  # Libraries may define theirs on first import (grain does); no module of ours may.
  new = {name: flags.FLAGS.find_module_defining_flag(name) for name in set(flags.FLAGS) - before}
  assert not {n: m for n, m in new.items() if m is None or m.startswith("minr_jax")}, new


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


# Numeric flags without a lower bound, and why none applies. Empty: every count,
# size, step, seed and rate of every command has one (issue 32).
UNBOUNDED_FLAGS: dict[str, str] = {}

# Defines each command's flags (its main() with cli.run a no-op), reads the bounds of
# every integer / float flag it defines (not those of libraries it imports, such as
# grain's), then deletes the new flags for the next command.
_WALK_FLAGS = """
import importlib, json, sys
from absl import flags
from minr_jax import cli
cli.run = lambda body, **kw: None
out = {}
for command in sys.argv[1:]:
  before = set(flags.FLAGS)
  module = importlib.import_module("minr_jax." + command)
  (module.run if command == "main" else module.main)()  # minr-train = minr_jax.main:run
  for name in sorted(set(flags.FLAGS) - before):
    flag = flags.FLAGS[name]
    # The command's own flags and those cli's helpers define for it (not grain's).
    own = flags.FLAGS.find_module_defining_flag(name) in (module.__name__, "minr_jax.cli")
    if own and flag.flag_type() in ("int", "float", "multi_int", "multi_float"):
      parser = flag.parser
      out[command + " --" + name] = [getattr(parser, "lower_bound", None), flag.help]
    delattr(flags.FLAGS, name)
print(json.dumps(out))
"""


def test_every_numeric_flag_of_every_command_has_a_lower_bound():
  commands = ["main", *COMMANDS]
  out = subprocess.run(
    [sys.executable, "-c", _WALK_FLAGS, *commands], capture_output=True, text=True, cwd=ROOT
  )
  assert out.returncode == 0, out.stderr[-2000:]
  numeric = json.loads(out.stdout.strip().splitlines()[-1])
  assert {k.split()[0] for k in numeric} >= {"main", "evaluate", "compare", "probe", "bench"}
  unbounded = sorted(k for k, (low, _) in numeric.items() if low is None)
  assert unbounded == sorted(UNBOUNDED_FLAGS), unbounded
  for name in ("evaluate --max_images", "robustness --max_images", "compare --max_images"):
    assert numeric[name][0] == 0 and "0 = all" in numeric[name][1], name  # as the config field
  for name in ("embed --max_images", "inpaint --max_images", "probe --steps", "bench --steps"):
    assert numeric[name][0] == 1, name  # 0 is meaningless: refused


BAD_FLAGS = [
  (
    ["evaluate", "--workdir=/nonexistent", "--max_images=-1"],
    "error: flag --max_images=-1: -1 is not a non-negative integer",
  ),
  (
    ["compare", "--mask_ratio=1", "/a", "/b"],
    "error: flag --mask_ratio=1.0: must be < 1",
  ),
  (
    ["probe", "--train=/a.npz", "--test=/b.npz", "--lr=0"],
    "error: flag --lr=0.0: must be > 0",
  ),
  (
    ["embed", "--workdir=/a", "--output=/b.npz", "--max_images=0"],
    "error: flag --max_images=0: 0 is not a positive integer",
  ),
  (
    ["bench", "--config=configs/transinr.py:tiny", "--steps=0"],
    "error: flag --steps=0: 0 is not a positive integer",
  ),
]


def test_out_of_range_flags_are_one_line_before_any_work():
  commands = [[sys.executable, "-m", f"minr_jax.{c}", *args] for (c, *args), _ in BAD_FLAGS]
  for (_, line), out in zip(BAD_FLAGS, run_at_once(commands, cwd=ROOT)):
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-1500:]
    assert out.stderr.strip().splitlines()[-1] == line


def test_help_lists_every_flag_of_the_command_both_ways():
  """--help shows the command's flags, those cli's helpers define for it included, for
  `python -m` and for the console script alike (absl lists only sys.argv[0]'s key flags)."""
  script = shutil.which("minr-evaluate")
  assert script, "minr-evaluate is not installed: pip install -e ."
  outs = []
  for argv in ([sys.executable, "-m", "minr_jax.evaluate", "--help"], [script, "--help"]):
    outs.append(subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=120))
  for out in outs:
    text = out.stdout + out.stderr
    for flag in ("--workdir", "--datasets", "--evals", "--step", "--max_images", "--output"):
      assert f"  {flag}:" in text, (flag, text[-500:])
