"""Import hygiene: the layer contract of pyproject.toml holds, fails on a planted
upward import, and every module imports alone in a fresh interpreter."""

import os
import pathlib
import shutil
import subprocess
import sys

import minr_jax

PACKAGE = pathlib.Path(minr_jax.__file__).parent
ROOT = PACKAGE.parent


def _modules() -> list[str]:
  out = []
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = path.relative_to(ROOT).with_suffix("").parts
    out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
  return out


def _lint(root: pathlib.Path) -> subprocess.CompletedProcess:
  # `lint-imports` is importlinter.cli:lint_imports_command; run it on `root`'s package.
  code = (
    "import sys; from importlinter.cli import lint_imports_command as c; "
    "sys.exit(c.main(['--config', 'pyproject.toml', '--no-cache'], standalone_mode=False))"
  )
  env = dict(os.environ, PYTHONPATH=str(root))
  return subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env=env, timeout=300
  )


def test_the_import_contract_holds_and_fails_on_an_upward_or_circular_import(tmp_path):
  assert _lint(ROOT).returncode == 0
  copy = tmp_path / "repo"
  shutil.copytree(PACKAGE, copy / "minr_jax", ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
  model = copy / "minr_jax" / "inference" / "model.py"
  original = model.read_text()
  # An import inside a function counts too: inference may not reach up into training.
  model.write_text(original + "\n\ndef _planted():\n  from minr_jax.training import steps\n")
  broken = _lint(copy)
  assert broken.returncode != 0 and "minr_jax.inference.model -> minr_jax.training" in broken.stdout
  # A cycle between two base modules of one layer is refused as well.
  model.write_text(original)
  paths = copy / "minr_jax" / "paths.py"
  paths.write_text(paths.read_text() + "\n\ndef _planted():\n  from minr_jax import metrics\n")
  metrics = copy / "minr_jax" / "metrics.py"
  metrics.write_text(metrics.read_text() + "\n\ndef _planted():\n  from minr_jax import paths\n")
  assert _lint(copy).returncode != 0


def test_every_module_imports_in_a_fresh_interpreter():
  names = _modules()
  assert len(names) > 40 and "minr_jax.training.loop" in names  # the walk found the package
  code = "import importlib, sys\nfor name in sys.argv[1:]:\n  importlib.import_module(name)\n"
  result = subprocess.run(
    [sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=600
  )
  assert result.returncode == 0, result.stderr[-2000:]
