"""minr_jax.export: a params-only copy of a workdir that every reader accepts."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from helpers import folder_bytes

import minr_jax
from minr_jax.config import ConfigError
from minr_jax.evaluation import runner
from minr_jax.inference import export


@pytest.fixture(scope="module")
def run(tiny_run):
  """The session's shared 2-step tiny run: (workdir, its training folder)."""
  return tiny_run.workdir, tiny_run.faces


def test_export_keeps_only_the_params_and_loads_like_the_run(run, tmp_path):
  workdir, folder = run
  out = str(tmp_path / "pretrained")
  assert export.export(workdir, out) == 2
  with open(os.path.join(out, "config.json")) as f:
    saved = json.load(f)
  assert saved["dataset"]["path"] == export.PLACEHOLDER_PATH
  assert saved["eval_datasets"] == "" and saved["eval_train_dataset"] is True  # no paths kept
  assert os.listdir(os.path.join(out, "checkpoints")) == ["2"]
  kept = set(os.listdir(os.path.join(out, "checkpoints", "2")))
  assert {"state", "config"} <= kept and "data" not in kept  # no data iterator
  images = np.random.default_rng(0).random((3, 16, 16, 3), dtype=np.float32)
  pred, _ = minr_jax.load(out).reconstruct(images)
  want, _ = minr_jax.load(workdir).reconstruct(images)
  np.testing.assert_array_equal(pred, want)

  # The optimizer state is gone: the copy is at most half the original.
  assert folder_bytes(out) < 0.6 * folder_bytes(os.path.join(workdir, "checkpoints"))
  step, results = runner.evaluate_workdir(out, datasets=f"image_folder:{folder}")
  assert step == 2 and results["image_folder:faces"]["num_images"] == 4
  with pytest.raises(ConfigError, match="already holds checkpoints"):
    export.export(workdir, out)
