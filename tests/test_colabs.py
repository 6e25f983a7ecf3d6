"""The notebooks in colabs/ run headless, start to finish, on a tiny setting.

Each is executed in a fresh Jupyter kernel with MINR_COLAB_TINY=1 (the tiny
config, a few steps) and temporary directories; a cell that raises fails the
test. The quickstart trains into a temporary workdir; the other two load the
pretrained checkpoints of the checkout (pretrained/celeba64 for faces,
pretrained/photos64 for other photos), as on Colab.
"""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # end-to-end: trains or runs subprocesses

COLABS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "colabs")
ORDER = ["quickstart", "reconstruct_and_render", "embeddings"]


@pytest.fixture(scope="module")
def notebook_env(tmp_path_factory):
  root = tmp_path_factory.mktemp("colabs")
  env = {
    "MINR_COLAB_TINY": "1",
    "MINR_DATA_DIR": str(root / "tfds"),
    "MINR_WORKDIR": str(root / "run"),
    "MINR_EMBED_FOLDER": str(root / "folder"),
    # One CPU device in the kernels, as on a Colab CPU runtime.
    "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
    "JAX_PLATFORMS": "cpu",
    "MPLBACKEND": "Agg",
  }
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  yield root
  for k, v in saved.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v


def test_notebooks_have_no_outputs_in_git():
  for name in ORDER:
    nb = nbformat.read(os.path.join(COLABS, f"{name}.ipynb"), as_version=4)
    for cell in nb.cells:
      if cell.cell_type == "code":
        assert not cell.outputs and cell.execution_count is None, name


@pytest.mark.parametrize("name", ORDER)
def test_notebook_runs(name, notebook_env, monkeypatch):
  if name != "quickstart":
    monkeypatch.delenv("MINR_WORKDIR")  # the notebooks' defaults: pretrained/
  nb = nbformat.read(os.path.join(COLABS, f"{name}.ipynb"), as_version=4)
  NotebookClient(
    nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": COLABS}}
  ).execute()
  text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
  assert "JAX devices" in text
  if name == "quickstart":
    assert "mean-colour fill" in text and "interpolation" in text
  if name == "reconstruct_and_render":
    assert "INR render" in text and "bicubic" in text and "interpolation" in text
  if name == "embeddings":
    assert "linear probe accuracy" in text and "raw 8x8 pixels" in text


def test_executed_copies_are_of_the_current_notebooks():
  """colabs/executed/ (written by colabs/execute.py) holds outputs of today's code, not stale."""
  executed = os.path.join(COLABS, "executed")
  names = sorted(f[:-6] for f in os.listdir(executed) if f.endswith(".ipynb"))
  assert {"reconstruct_and_render", "embeddings"} <= set(names)
  for name in names:
    source = nbformat.read(os.path.join(COLABS, f"{name}.ipynb"), as_version=4)
    copy = nbformat.read(os.path.join(executed, f"{name}.ipynb"), as_version=4)
    code = lambda nb: [c.source for c in nb.cells if c.cell_type == "code"]
    assert code(copy) == code(source), f"colabs/executed/{name}.ipynb is stale: rerun execute.py"
    outputs = [o for c in copy.cells if c.cell_type == "code" for o in c.outputs]
    assert outputs and not any(o.output_type == "error" for o in outputs), name
