r"""Execute notebooks in full and save the executed copies in colabs/executed/.

  python colabs/execute.py reconstruct_and_render embeddings [quickstart]

Each notebook runs in a fresh Jupyter kernel with colabs/ as its working
directory, on whatever devices JAX finds, without the test suite's shrinking
(MINR_COLAB_TINY). The copies keep every output (printed figures, plots), so
they can be read on a repository page without running anything; the
notebooks themselves stay output-free. tests/test_colabs.py checks that each
copy's code is the notebook's current code. The first lines of each copy say
when and where it was executed.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys

import nbformat
from nbclient import NotebookClient

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "executed")


def cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    return platform.machine()


def execute(name: str) -> str:
  nb = nbformat.read(os.path.join(HERE, f"{name}.ipynb"), as_version=4)
  for key in [k for k in os.environ if k.startswith("MINR_")]:  # the notebooks' defaults
    del os.environ[key]
  NotebookClient(
    nb, timeout=3600, kernel_name="python3", resources={"metadata": {"path": HERE}}
  ).execute()
  import jax  # noqa: PLC0415 (the machine's description only)

  when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
  stamp = nbformat.v4.new_markdown_cell(
    f"*Executed copy of `colabs/{name}.ipynb`, run in full by `python colabs/execute.py` on "
    f"{when}: {cpu_name()}, {os.cpu_count()} CPU cores, "
    f"JAX {jax.__version__} on {jax.default_backend()}. Outputs are as printed then; "
    "open the notebook itself to run it.*"
  )
  nb.cells.insert(0, stamp)
  os.makedirs(OUT, exist_ok=True)
  path = os.path.join(OUT, f"{name}.ipynb")
  nbformat.write(nb, path)
  os.chmod(path, 0o644)
  return path


if __name__ == "__main__":
  for arg in sys.argv[1:] or ["reconstruct_and_render", "embeddings"]:
    print("wrote", execute(arg), flush=True)
