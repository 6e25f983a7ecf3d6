"""python -m minr_jax.compare: same masks for every model, the table, the figure, errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import make_image_folder, tiny_config
from PIL import Image

from configs import ginr as ginr_config
from configs import mae as mae_config
from minr_jax import writers
from minr_jax.config import ConfigError
from minr_jax.evaluation import compare, runner
from minr_jax.training import loop

pytestmark = pytest.mark.slow  # end-to-end: trains or runs subprocesses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _on_folder(config, folder, data_dir, steps=2):
  config.dataset.name, config.dataset.path = "image_folder", folder
  config.dataset.data_dir = data_dir
  config.batch_size = config.eval_batch_size = 8
  config.num_train_steps = steps
  return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Tiny TransINR, GINR and MAE runs on one folder, and a comparison of them."""
  root = tmp_path_factory.mktemp("compare")
  faces = make_image_folder(str(root / "faces"), num_val=5)
  scenes = make_image_folder(str(root / "scenes"), seed=1, num_val=3)
  data_dir = str(root / "tfds")
  configs = {
    "transinr": tiny_config(data_dir, faces, num_train_steps=2),
    "ginr": _on_folder(ginr_config.get_config("tiny"), faces, data_dir),
    "mae": _on_folder(mae_config.get_config("tiny"), faces, data_dir),
  }
  workdirs = []
  for name, config in configs.items():
    workdirs.append(str(root / name))
    loop.train_and_evaluate(config, workdirs[-1])
  out = str(root / "report")
  rows = compare.compare_workdirs(
    workdirs, f"image_folder:{faces},image_folder:{scenes}", out, num_images=4
  )
  return workdirs, out, rows, faces


def test_one_row_per_dataset_and_model_with_shared_baselines(runs):
  workdirs, out, rows, _ = runs
  assert [(r["dataset"], r["model"]) for r in rows] == [
    (d, m)
    for d in ("image_folder:faces", "image_folder:scenes")
    for m in ("transinr", "ginr", "mae")
  ]
  assert [r["family"] for r in rows[:3]] == ["transinr", "ginr", "mae"]
  for r in rows:
    assert r["step"] == 2 and r["num_params"] > 0
    assert r["num_images"] == (5 if r["dataset"].endswith("faces") else 3)
    for m in compare.METRICS + compare.BASELINES:
      # 16-px images: too small for LPIPS's AlexNet (31 px), which is said as NaN.
      assert np.isnan(r[m]) if m.startswith("lpips") else np.isfinite(r[m]), m
  # Same images, same masks: the baselines agree across the models.
  for group in (rows[:3], rows[3:]):
    fills = [r["psnr_full_mean_fill"] for r in group]
    assert max(fills) - min(fills) < 1e-3
  with open(os.path.join(out, "compare.csv")) as f:
    table = list(csv.DictReader(f))
  assert len(table) == 6 and set(table[0]) == set(compare.CSV_COLUMNS)
  md = open(os.path.join(out, "compare.md")).read()
  assert "exactly 12 of the 16 patches" in md and "mean-colour fill" in md
  assert md.count("| image_folder:faces |") == 3  # 3 models, the baselines as columns
  assert "psnr_full_interpolation" in md and "learned something only where" in md
  saved = json.load(open(os.path.join(out, "compare.json")))  # NaN (LPIPS at 16 px) as null
  assert saved["rows"] == json.loads(json.dumps(rows).replace("NaN", "null"))


def test_figures_show_every_model_side_by_side(runs):
  workdirs, out, _, _ = runs
  for label, rows in (("faces", 4), ("scenes", 3)):
    image = Image.open(os.path.join(out, f"compare_image_folder_{label}.png"))
    width, height = image.size
    assert width > height  # 5 columns (input, 3 models, truth) of 4 or 3 rows
    assert image.size == writers.image_grid_size(rows, 5, 16, 16, with_titles=True)


def test_numbers_equal_evaluate_with_exact_count_masks(runs):
  workdirs, _, rows, faces = runs
  for workdir, row in zip(workdirs, rows[:3], strict=True):
    _, results = runner.evaluate_workdir(
      workdir, f"image_folder:{faces}", mask_strategy="random_exact"
    )
    got = results["image_folder:faces"]
    for m in compare.METRICS:
      assert row[m] == pytest.approx(got[m], abs=1e-4, nan_ok=True), (workdir, m)


def test_bad_inputs_name_the_problem(runs, tmp_path):
  workdirs, _, _, faces = runs
  with pytest.raises(ConfigError, match="config.json does not exist"):
    compare.compare_workdirs([workdirs[0], str(tmp_path / "nothing")], None, str(tmp_path))
  with pytest.raises(ConfigError, match="--figure='raw': use pasted or pred"):
    compare.compare_workdirs(workdirs[:1], None, str(tmp_path), figure="raw")
  with pytest.raises(ConfigError, match="listed twice"):
    compare.compare_workdirs([workdirs[0], workdirs[0]], None, str(tmp_path))
  other = tmp_path / "other"
  other.mkdir()
  config = json.load(open(os.path.join(workdirs[0], "config.json")))
  config["resolution"] = 32
  json.dump(config, open(other / "config.json", "w"))
  with pytest.raises(ConfigError, match="config.resolution=32 differs"):
    compare.compare_workdirs([workdirs[0], str(other)], None, str(tmp_path))
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "minr_jax.compare",
      workdirs[0],
      str(tmp_path / "nothing"),
      f"--out={tmp_path}/r",
    ],
    capture_output=True,
    text=True,
    cwd=ROOT,
    timeout=300,
  )
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith("error: ")
  assert "nothing/config.json does not exist" in result.stderr
