"""Declared evaluators: the training loop's schedule, the defaults, the one command, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from helpers import make_image_folder, smooth_image, tiny_config
from PIL import Image

from configs import ginr as ginr_config
from configs import mae as mae_config
from configs import transinr as transinr_config
from minr_jax import writers
from minr_jax.config import ConfigError
from minr_jax.evaluation import registry, runner
from minr_jax.training import guard, loop


class StepCounter:
  """A new evaluator, defined here: yields the step it ran at and a dict result."""

  FIELDS = ("scale",)

  def __init__(self, name, cfg, ctx):
    self.name, self.scale = name, cfg.get("scale", 1.0)
    self.ctx = ctx

  def run(self, params, step):
    del params
    yield "seen", float(step) * self.scale
    yield "extra", {"value": 1.0}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("evaluators_data")
  return make_image_folder(str(root / "faces"), num_val=3), str(root / "tfds")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, folder):
  """Two 4-step runs: one declaring the default evals plus a StepCounter every 3 steps."""
  registry.register("step_counter", StepCounter)
  root = tmp_path_factory.mktemp("evaluators")
  folder, data_dir = folder
  out = []
  for i in range(2):
    config = tiny_config(
      data_dir, folder, num_train_steps=4, eval_every_steps=2, checkpoint_every_steps=2, seed=i
    )
    if i == 0:
      config.evals = registry.default_evals(config)
      config.evals.counter = ml_collections.ConfigDict(
        dict(type="step_counter", every_steps=3, scale=2.0)
      )
    else:  # a config from before config.evals: registry.default_evals applies
      del config["evals"]
    workdir = str(root / f"run{i}")
    out.append((workdir, config, loop.train_and_evaluate(config, workdir)))
  return folder, data_dir, out


@pytest.mark.slow
def test_an_added_evaluator_runs_on_its_schedule_and_is_written(runs):
  _, _, ((workdir, _, final), _) = runs
  records = writers.read_metrics(os.path.join(workdir, "metrics.jsonl"))
  counted = [(r["step"], r.get("seen")) for r in records if r["split"] == "counter" and "seen" in r]
  assert counted == [(3, 6.0), (4, 8.0)]  # every 3 steps, and at the final step
  extra = [r for r in records if r["split"] == "counter" and r.get("dataset") == "extra"]
  assert [r["step"] for r in extra] == [3, 4]
  assert [r["step"] for r in records if r["split"] == "eval"] == [2, 4]
  assert final["counter/seen"] == 8.0 and "image_folder:faces" in final
  saved = json.load(open(os.path.join(workdir, "final_eval.json")))
  assert saved["step"] == 4 and "image_folder:faces" in saved["results"]


def test_the_paper_configs_declare_todays_evaluation():
  for get_config, variants in (
    (transinr_config.get_config, ("", "demo", "tiny", "celeba", "imagenette", "indoor")),
    (ginr_config.get_config, ("", "photos64")),
    (mae_config.get_config, ("", "photos64")),
  ):
    for variant in variants:
      c = get_config(variant)
      assert "evals" in c, (get_config, variant)  # declared, not an implicit default
      every = c.eval_every_steps
      # The classical inpainters: biharmonic only at 64 px (its solve is slow at 182 px).
      classical = "telea,navier_stokes" + (",biharmonic" if c.resolution <= 64 else "")
      assert registry.declared(c).to_dict() == {
        "reconstruction": dict(
          type="reconstruction", every_steps=every, split="eval", classical=classical
        ),
        "grids": dict(type="grids", every_steps=every),  # num_grid_images images each
      }, (get_config, variant)
      default = registry.default_evals(c).to_dict()  # what a config without evals gets
      declared = c.evals.reconstruction.to_dict()
      assert default["reconstruction"] == {k: v for k, v in declared.items() if k != "classical"}
      c.eval_every_steps = 7  # the cadence is linked, so --config.eval_every_steps moves it
      assert c.evals.reconstruction.every_steps == c.evals.grids.every_steps == 7


@pytest.mark.slow
def test_a_run_without_evals_writes_todays_evaluation(runs):
  _, _, (_, (workdir, config, final)) = runs
  # A run without config.evals: today's records, grids and final_eval.json.
  assert "evals" not in config
  records = writers.read_metrics(os.path.join(workdir, "metrics.jsonl"))
  evals = [r for r in records if r["split"] == "eval"]
  assert [(r["step"], r["dataset"]) for r in evals] == [(2, "image_folder:faces")] * 1 + [
    (4, "image_folder:faces")
  ]
  assert {"psnr_full", "psnr_full_interpolation", "psnr_full_mean_fill"} <= set(evals[-1])
  images = sorted(os.listdir(os.path.join(workdir, "images")))
  assert images == ["eval_0000002_image_folder_faces.png", "eval_0000004_image_folder_faces.png"]
  saved = json.load(open(os.path.join(workdir, "final_eval.json")))
  assert list(saved["results"]) == ["image_folder:faces"] == list(final)


@pytest.mark.slow
def test_one_command_evaluates_two_checkpoints(runs, tmp_path, capsys):
  _, _, ((w0, _, final0), (w1, _, final1)) = runs
  evals = ml_collections.ConfigDict(
    dict(
      evals=dict(
        reconstruction=dict(type="reconstruction", split="eval"),
      )
    )
  )
  out = runner.evaluate_checkpoints([w0, w1], evals, output=str(tmp_path / "out"))
  for workdir, final in ((w0, final0), (w1, final1)):
    found = out[workdir]["evals"]["reconstruction"]["image_folder:faces"]
    assert out[workdir]["step"] == 4
    assert found["psnr_full"] == pytest.approx(final["image_folder:faces"]["psnr_full"], abs=1e-5)
    saved = json.load(open(tmp_path / "out" / os.path.basename(workdir) / "results.json"))
    assert saved["step"] == 4 and "reconstruction" in saved["evals"]
  assert "eval step 4 [image_folder:faces]: psnr_full" in capsys.readouterr().out
  # Comparing checkpoints is the compare command, not an evaluator type.
  evals.evals.compare = ml_collections.ConfigDict(dict(type="compare"))
  with pytest.raises(ConfigError, match="python -m minr_jax.compare"):
    runner.evaluate_checkpoints([w0, w1], evals, output=str(tmp_path / "out2"))
  del evals.evals["compare"]
  # --evals picks declared entries by name; an unknown one is one line.
  with pytest.raises(ConfigError, match="--evals=nope: no evaluator named nope"):
    runner.evaluate_checkpoints([w0], evals, names="nope")


@pytest.mark.parametrize(
  "entry, message",
  [
    (dict(type="nope", every_steps=2), r"config\.evals\.foo\.type='nope' is not an evaluator"),
    (dict(every_steps=2), r"config\.evals\.foo\.type is missing"),
    (dict(type="reconstruction"), r"config\.evals\.foo\.every_steps is missing"),
    (dict(type="reconstruction", every_steps=0), r"config\.evals\.foo\.every_steps must be"),
    (dict(type="grids", every_steps=2, bogus=1), r"config\.evals\.foo\.bogus is not a field"),
    (
      dict(type="reconstruction", every_steps=2, datasets="no_such_dataset"),
      r"config\.evals\.foo\.datasets",
    ),
  ],
)
def test_bad_entries_are_one_line_config_errors_before_compiling(folder, tmp_path, entry, message):
  folder, data_dir = folder
  config = tiny_config(data_dir, folder)
  config.evals = ml_collections.ConfigDict(dict(foo=entry))
  with pytest.raises(ConfigError, match=message) as e:
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert "\n" not in str(e.value)
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_changing_evals_on_resume_is_allowed(folder):
  folder, data_dir = folder
  config = tiny_config(data_dir, folder)
  saved = json.loads(config.to_json_best_effort())
  config.evals = registry.default_evals(config)
  config.evals.reconstruction.every_steps = 7
  guard.check_config_change(config, saved, "ckpt", "/nonexistent", allow=False)


@pytest.mark.slow
def test_probe_evaluator_on_a_labelled_folder(runs, tmp_path):
  _, _, ((w0, _, _), _) = runs
  rng = np.random.default_rng(0)
  for split, n in (("train", 6), ("val", 4)):
    for cls in ("a", "b"):
      os.makedirs(tmp_path / "labelled" / split / cls)
      for i in range(n):
        Image.fromarray(smooth_image(rng, 24, 28)).save(
          tmp_path / "labelled" / split / cls / f"{i}.png"
        )
  evals = ml_collections.ConfigDict(
    dict(
      evals=dict(
        probe=dict(
          type="probe", datasets=f"image_folder:{tmp_path / 'labelled'}", l2=0.01, steps=20
        )
      )
    )
  )
  out = runner.evaluate_checkpoints([w0], evals, output=str(tmp_path / "out"))
  found = out[w0]["evals"]["probe"]
  assert 0.0 <= found["accuracy"] <= 1.0 and found["majority_baseline"] == 0.5


@pytest.mark.slow
def test_command_line_runs_a_config_file_of_evals(runs, tmp_path):
  _, _, ((w0, _, final0), (w1, _, _)) = runs
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  args = [
    sys.executable,
    "-m",
    "minr_jax.evaluate",
    f"--workdir={w0}",
    f"--workdir={w1}",
    "--config=configs/evals/sweep.py",
    "--evals=reconstruction,exact",
    "--config.evals.exact.mask_strategy=random",
    f"--output={tmp_path / 'out'}",
  ]
  env = dict(os.environ, PYTHONPATH=root)
  done = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  saved = json.load(open(tmp_path / "out" / os.path.basename(w0) / "results.json"))
  assert sorted(saved["evals"]) == ["exact", "reconstruction"]
  assert saved["evals"]["reconstruction"]["image_folder:faces"]["psnr_full"] == pytest.approx(
    final0["image_folder:faces"]["psnr_full"], abs=1e-5
  )
  bad = subprocess.run(
    args[:4] + ["--config=configs/evals/sweep.py", "--evals=nope"],
    cwd=root,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith("error: --evals")
