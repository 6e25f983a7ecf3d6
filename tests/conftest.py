"""Shared test set-up: eight fake CPU devices in the test process, one shared tiny run."""

import os
from typing import Any, NamedTuple

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (after JAX_PLATFORMS)
import pytest  # noqa: E402

# Eight fake CPU devices in this process, so sharding code paths run as on a pod
# slice. Set through jax.config rather than XLA_FLAGS, so that the commands tests
# start as subprocesses run on one device unless a test asks for more: a start on
# eight fake devices compiles and steps about 1.7x longer, and those tests are
# about the command, not the mesh. An XLA_FLAGS device count already set wins.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  jax.config.update("jax_num_cpu_devices", 8)


class TinyRun(NamedTuple):
  workdir: str
  config: Any
  faces: str  # the training folder (its val split is evaluated)
  scenes: str  # a second evaluation folder
  final: dict  # the final evaluation, {dataset label: metrics}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
  """One 2-step configs/transinr.py:tiny run shared by the session's reading tests.

  Trained on a generated folder `faces` (12 train, 4 val images) and evaluated
  on it and on `scenes` (3 val images). Tests read it (evaluate, export,
  robustness write only their own result folders); a test that changes the
  workdir works on a copy. Training steps of other tests' tiny runs are
  compiled once per session anyway (`steps.steps_for_run`).
  """
  from helpers import make_image_folder, tiny_config  # noqa: PLC0415

  from minr_jax.training import loop

  root = tmp_path_factory.mktemp("tiny_run")
  faces = make_image_folder(str(root / "faces"))
  scenes = make_image_folder(str(root / "scenes"), seed=1, num_val=3)
  config = tiny_config(
    str(root / "tfds"), faces, num_train_steps=2, eval_datasets=f"image_folder:{scenes}"
  )
  workdir = str(root / "run")
  final = loop.train_and_evaluate(config, workdir)
  return TinyRun(workdir, config, faces, scenes, final)
