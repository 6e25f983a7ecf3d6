"""The robustness sweep: result files, plots, fixed masks, bad flags."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import ml_collections
import pytest
from absl import flags
from helpers import tiny_config
from PIL import Image

from minr_jax import families, masking
from minr_jax.config import ConfigError
from minr_jax.evaluation import plots, robustness

pytestmark = pytest.mark.slow  # end-to-end: trains or runs subprocesses

STRATEGIES = "random,random_exact,center"
RATIOS = "0.3,0.75"  # 0.3 x 16 patches = 4.8 -> 5 hidden; 0.75 is the run's own ratio


@pytest.fixture(scope="module")
def swept(tiny_run):
  """The session's shared 2-step tiny run (evaluated on faces and scenes), one sweep of it."""
  step, rows = robustness.run_sweep(tiny_run.workdir, strategies=STRATEGIES, ratios=RATIOS)
  return tiny_run.workdir, tiny_run.config, tiny_run.final, step, rows


def test_sweep_writes_every_file_and_one_row_per_cell(swept):
  workdir, config, _, step, rows = swept
  assert step == 2
  out = os.path.join(workdir, "robustness", "2")
  for name in ("results.json", "results.csv", "results.md", "robustness.png", "mask_gallery.png"):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  labels = ["image_folder:faces", "image_folder:scenes"]
  cells = [(d, s, r) for d in labels for s in STRATEGIES.split(",") for r in (0.3, 0.75)]
  assert [(r["dataset"], r["strategy"], r["ratio"]) for r in rows] == cells
  for r in rows:
    assert r["num_images"] == (4 if r["dataset"] == labels[0] else 3)
  with open(os.path.join(out, "results.json")) as f:
    saved = json.load(f)
  assert saved["step"] == 2 and saved["eval_mask_seed"] == config.eval_mask_seed
  assert saved["rows"] == json.loads(json.dumps(rows).replace("NaN", "null"))  # LPIPS at 16 px
  with open(os.path.join(out, "results.csv")) as f:
    table = list(csv.DictReader(f))
  assert len(table) == len(cells)
  assert set(robustness.KEYS + robustness.COLUMNS) == set(table[0])
  md = open(os.path.join(out, "results.md")).read()
  assert os.path.join(workdir, "checkpoints", "2") in md
  assert f"seed {config.eval_mask_seed}" in md and "transinr" in md
  assert md.count("| image_folder:scenes | center |") == 2
  for name in ("robustness.png", "mask_gallery.png"):
    with Image.open(os.path.join(out, name)) as image:
      assert image.format == "PNG" and min(image.size) > 100


def test_exact_strategies_hide_the_requested_ratio(swept):
  _, config, _, _, rows = swept
  n = config.mask_grid**2
  for r in rows:
    if r["strategy"] == "random":
      continue
    assert r["mask_fraction"] == masking.exact_count(r["ratio"], n) / n
    assert abs(r["mask_fraction"] - r["ratio"]) <= 1 / n


def test_sweep_is_deterministic_and_agrees_with_training_eval(swept):
  workdir, _, final, _, rows = swept
  _, again = robustness.run_sweep(workdir, strategies=STRATEGIES, ratios=RATIOS)
  assert json.dumps(again) == json.dumps(rows)  # NaN-aware: LPIPS is NaN at 16 px
  # The run's own masks (random, 0.75): the number training's final evaluation logged.
  for label, means in final.items():
    cell = next(
      r for r in rows if (r["dataset"], r["strategy"], r["ratio"]) == (label, "random", 0.75)
    )
    for name in robustness.METRICS:
      assert cell[name] == pytest.approx(means[name], abs=1e-4, nan_ok=True), (label, name)


def test_gallery_shows_the_sweeps_masks(swept):
  _, config, _, _, _ = swept
  masks = plots.gallery_masks(config, ["center", "random_exact"], [0.3, 0.75])
  g = config.mask_grid
  assert masks.shape == (2, 2, g, g)
  assert masks.reshape(2, 2, -1).sum(-1).tolist() == [[5, 12], [5, 12]]


@pytest.mark.parametrize(
  "kwargs,message",
  [
    (dict(strategies="random,checkerboard"), "--strategies: unknown strategy 'checkerboard'"),
    (dict(strategies=" , "), "--strategies is empty"),
    (dict(strategies=[]), "--strategies is empty"),
    (dict(ratios="0.5,1.0"), r"--ratios: 1.0 is outside \[0, 1\)"),
    (dict(ratios="-0.1"), r"--ratios: -0.1 is outside \[0, 1\)"),
    (dict(ratios="0.5,half"), "--ratios: 'half' is not a number"),
    (dict(ratios=""), "--ratios is empty"),
    (dict(datasets=","), "--datasets is empty"),
    (dict(max_images=-1), "--max_images must be >= 0"),
    (dict(step=7), "no checkpoint 7"),
  ],
)
def test_bad_flags_raise_config_errors_naming_the_flag(swept, kwargs, message):
  workdir = swept[0]
  with pytest.raises(ConfigError, match=message):
    robustness.run_sweep(workdir, **kwargs)


def test_not_a_workdir(tmp_path):
  with pytest.raises(ConfigError, match="config.json does not exist"):
    robustness.run_sweep(str(tmp_path), strategies="random", ratios="0.5")


def test_parsers_keep_order_and_drop_duplicates():
  assert robustness.parse_strategies("block, random,block") == ["block", "random"]
  assert robustness.parse_strategies(None) == list(masking.STRATEGIES)
  assert robustness.parse_ratios("0.9,0,0.25,0.9") == [0.9, 0.0, 0.25]
  assert robustness.parse_ratios([0.5]) == [0.5]
  assert robustness.parse_ratios(None) == list(robustness.DEFAULT_RATIOS)


def test_mae_hook_limits_strategies_to_patch_aligned_grids(tmp_path):
  config = tiny_config(str(tmp_path))
  assert families.get(config).name == "transinr"
  assert robustness.supported_strategies(config) == masking.STRATEGIES
  mae = ml_collections.ConfigDict(config.to_dict())
  mae.model.family = "MAE"
  # tiny: 16 px, patch 4 -> a 4x4 patch grid, the same as mask_grid=4; exact counts only.
  assert robustness.supported_strategies(mae) == tuple(
    s for s in masking.STRATEGIES if s != "random"
  )
  mae.model.patch_size = 2  # an 8x8 patch grid: no strategy is patch-aligned
  assert robustness.supported_strategies(mae) == ()
  with pytest.raises(ConfigError, match="--strategies: 'block' is not supported by a mae"):
    robustness.check_supported(mae, ["block"])


def test_import_defines_no_flags_and_cli_prints_one_line_errors(tmp_path):
  assert "ratios" not in flags.FLAGS and "strategies" not in flags.FLAGS
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "minr_jax.robustness",
      f"--workdir={tmp_path}",
      "--strategies=random,checkerboard",
    ],
    capture_output=True,
    text=True,
    timeout=120,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )
  assert proc.returncode == 1
  assert (
    proc.stderr.strip()
    .splitlines()[-1]
    .startswith("error: --strategies: unknown strategy 'checkerboard'")
  )
