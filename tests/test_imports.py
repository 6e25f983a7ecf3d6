"""Import hygiene: no cycles among the package's modules, every module imports alone.

The graph is read from the source (module-level `import`/`from` statements
only; imports inside functions are deliberate lazy imports and do not run at
import time), so the check is exact and takes milliseconds. One fresh
interpreter then imports every module in turn, in the order of their names,
so a module that fails to import (a missing name, a dependency left out) is
caught even where no test touches it.
"""

import ast
import pathlib
import subprocess
import sys

import minr_jax

PACKAGE = pathlib.Path(minr_jax.__file__).parent


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
      parts = parts[:-1]
    out[".".join(parts)] = path
  return out


def _top_level_imports(name: str, path: pathlib.Path, modules) -> set[str]:
  """The package modules that `name` imports when it is imported."""
  tree = ast.parse(path.read_text())
  found = set()
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  for node in tree.body:  # module level only; also `if TYPE_CHECKING:` bodies are skipped
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base])
        base = base.rstrip(".")
      submodules = {f"{base}.{alias.name}" for alias in node.names} & set(modules)
      found.update(submodules)
      if len(submodules) < len(node.names):  # a name defined in `base` itself
        found.add(base)
  # A package is being initialised before any of its submodules runs, so an import of an
  # ancestor package from inside it is not an edge that can deadlock.
  ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
  return {m for m in found if m in modules and m != name and m not in ancestors}


def _graph():
  modules = _modules()
  return {name: _top_level_imports(name, path, modules) for name, path in modules.items()}


def _cycle(graph) -> list[str] | None:
  state: dict[str, int] = {}  # 1: on the stack, 2: done

  def visit(node, stack):
    state[node] = 1
    for nxt in sorted(graph[node]):
      if state.get(nxt) == 1:
        return stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt]
      if nxt not in state:
        found = visit(nxt, stack + [nxt])
        if found:
          return found
    state[node] = 2
    return None

  for start in sorted(graph):
    if start not in state:
      found = visit(start, [start])
      if found:
        return found
  return None


def test_the_cycle_finder_finds_a_planted_cycle():
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_level_import_cycle_in_the_package():
  graph = _graph()
  assert len(graph) > 40 and "minr_jax.train" in graph  # the walk found the package
  assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_error_type_and_config_import_no_module_that_imports_them_back():
  graph = _graph()
  assert graph["minr_jax.errors"] == set()
  assert "minr_jax.config" not in graph["minr_jax.paths"]


def test_every_module_imports_in_a_fresh_interpreter():
  names = [n for n in _modules() if n != "minr_jax.__main__"]
  code = "import importlib, sys\nfor name in sys.argv[1:]:\n  importlib.import_module(name)\n"
  result = subprocess.run(
    [sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=600
  )
  assert result.returncode == 0, result.stderr[-2000:]
