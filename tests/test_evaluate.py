"""The evaluation command: several datasets, result files, fixed masks."""

from __future__ import annotations

import csv
import json
import os
import shutil

import pytest
from helpers import make_image_folder, tiny_config

from minr_jax.config import ConfigError
from minr_jax.evaluation import runner, scoring
from minr_jax.training import loop

pytestmark = pytest.mark.slow  # end-to-end: trains or runs subprocesses


@pytest.fixture(scope="module")
def trained(tiny_run):
  """The session's shared tiny run: (workdir, faces, scenes, final evaluation)."""
  return tiny_run.workdir, tiny_run.faces, tiny_run.scenes, tiny_run.final


def test_training_logs_every_eval_dataset(trained):
  workdir, _, _, final = trained
  assert sorted(final) == ["image_folder:faces", "image_folder:scenes"]
  assert final["image_folder:scenes"]["num_images"] == 3


def test_evaluate_writes_all_result_files_for_several_datasets(trained):
  workdir, folder, other, final = trained
  step, results = runner.evaluate_workdir(
    workdir, f"image_folder:{folder},image_folder:{other},demo"
  )
  assert step == 2
  assert list(results) == ["image_folder:faces", "image_folder:scenes", "demo"]
  out = os.path.join(workdir, "eval", "2")
  with open(os.path.join(out, "results.json")) as f:
    saved = json.load(f)
  assert saved["step"] == 2 and "Bernoulli" in saved["masking"]
  for label, r in saved["results"].items():
    assert set(runner.COLUMNS) <= set(r), label
  with open(os.path.join(out, "results.csv")) as f:
    rows = list(csv.DictReader(f))
  assert [r["dataset"] for r in rows] == list(results)
  assert "| demo |" in open(os.path.join(out, "results.md")).read()
  assert len([f for f in os.listdir(out) if f.endswith(".png")]) == 3
  # Same checkpoint, same fixed masks: the numbers of training's final eval.
  assert results["image_folder:faces"]["psnr_full"] == pytest.approx(
    final["image_folder:faces"]["psnr_full"], abs=1e-5
  )


def test_evaluation_masks_are_identical_across_runs(trained):
  workdir, folder, _, _ = trained
  _, a = runner.evaluate_workdir(workdir, f"image_folder:{folder}", mask_strategy="random_exact")
  _, b = runner.evaluate_workdir(workdir, f"image_folder:{folder}", mask_strategy="random_exact")
  assert json.dumps(a) == json.dumps(b)  # NaN-aware (LPIPS is NaN at 16 px)
  assert "exact-count random" in open(os.path.join(workdir, "eval", "2", "results.md")).read()


def test_evaluate_errors_name_the_problem(trained, tmp_path):
  workdir, folder, _, _ = trained
  with pytest.raises(ConfigError, match="config.json does not exist"):
    runner.evaluate_workdir(str(tmp_path))
  with pytest.raises(ConfigError, match="no checkpoint 7"):
    runner.evaluate_workdir(workdir, f"image_folder:{folder}", step=7)
  with pytest.raises(ConfigError, match="unknown"):
    runner.evaluate_workdir(workdir, "imagenet21k")


def test_paper_tables_put_measured_numbers_beside_the_paper(trained, tmp_path):
  from minr_jax.evaluation import paper_tables

  workdir, folder, _, _ = trained
  fake = {
    "celeba": {
      "celeb_a": dict(psnr_full=20.5, psnr_full_mean_fill=13.0, psnr_full_interpolation=15.5),
      "imagenette": dict(psnr_full=17.25, psnr_full_mean_fill=12.0),
    }
  }
  text = paper_tables.tables(fake, "minr-transinr")
  assert "20.50 (paper 21.865; interpolation 15.50, fill 13.00)" in text
  assert "17.25 (paper 18.058; interpolation -, fill 12.00)" in text  # CEL->IMG
  assert "- (paper 19.929; fill -)" in text  # IMG->CEL not run
  runner.evaluate_workdir(workdir, f"image_folder:{folder}")
  assert "image_folder:faces" in paper_tables.latest_results(workdir)
  with pytest.raises(ConfigError, match="no evaluation"):
    paper_tables.latest_results(str(tmp_path))


def test_config_json_from_before_later_fields_still_evaluates(trained, tmp_path):
  """A config.json saved before mask.strategy, mesh, dtype... existed gets their defaults."""
  workdir, folder, _, final = trained
  old = tmp_path / "old_run"
  os.makedirs(old)
  os.symlink(os.path.join(workdir, "checkpoints"), old / "checkpoints")
  config = json.load(open(os.path.join(workdir, "config.json")))
  for field in ("mask", "eval_mask_strategy", "eval_datasets", "mesh", "fsdp_min_size"):
    del config[field]
  for field in ("family", "dtype", "inr_dtype", "remat"):
    config["model"].pop(field, None)
  json.dump(config, open(old / "config.json", "w"))
  step, results = runner.evaluate_workdir(str(old), f"image_folder:{folder}")
  label = "image_folder:faces"
  assert step == 2
  assert results[label]["psnr_full"] == pytest.approx(final[label]["psnr_full"], abs=1e-5)


def test_reading_commands_leave_an_in_flight_checkpoint_alone(trained, tmp_path):
  """evaluate, robustness, compare, embed and load open checkpoints read-only: a save
  still in flight in the workdir (orbax's temporary directory) is never cleaned up."""
  import minr_jax
  from minr_jax.evaluation import compare, robustness
  from minr_jax.inference import embed

  workdir = str(tmp_path / "run")  # a copy: the shared run stays untouched
  shutil.copytree(trained[0], workdir)
  folder = trained[1]
  tmp = os.path.join(workdir, "checkpoints", "3.orbax-checkpoint-tmp-1234")
  os.makedirs(os.path.join(tmp, "state"))
  with open(os.path.join(tmp, "state", "partial"), "w") as f:
    f.write("being written")
  entries = os.listdir(os.path.join(workdir, "checkpoints"))
  runner.evaluate_workdir(workdir, f"image_folder:{folder}")
  robustness.run_sweep(workdir, f"image_folder:{folder}", "random", "0.5")
  compare.compare_workdirs([workdir], f"image_folder:{folder}", str(tmp_path / "cmp"))
  embed.run(workdir, f"image_folder:{folder}", str(tmp_path / "e.npz"), progress=False)
  minr_jax.load(workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == sorted(entries)
  with open(os.path.join(tmp, "state", "partial")) as f:
    assert f.read() == "being written"


def test_every_record_carries_the_interpolation_baseline(trained):
  workdir, _, _, final = trained
  from minr_jax import writers

  for label, means in final.items():
    assert means["psnr_full_mean_fill"] < means["psnr_full_interpolation"] < 100, label
  evals = [
    r for r in writers.read_metrics(os.path.join(workdir, "metrics.jsonl")) if r["split"] == "eval"
  ]
  assert evals and all("psnr_full_interpolation" in r for r in evals)


@pytest.mark.parametrize(
  "train_too,extra,expected",
  [
    (True, "", [("image_folder", "/a")]),
    (True, "demo,image_folder:/a", [("image_folder", "/a"), ("demo", None)]),
    (False, "demo", [("demo", None)]),
  ],
)
def test_eval_datasets_list(train_too, extra, expected):
  config = tiny_config("/unused", "/a", eval_train_dataset=train_too, eval_datasets=extra)
  assert scoring.eval_datasets(config) == expected


def test_eval_train_dataset_false_needs_eval_datasets():
  config = tiny_config("/unused", "/a", eval_train_dataset=False)
  with pytest.raises(ConfigError, match=r"^config.eval_train_dataset=False needs held-out"):
    scoring.eval_datasets(config)


def test_train_only_folder_with_held_out_folders(tmp_path):
  """A training folder used whole (no val/, eval_fraction=0), scored on other folders."""
  folder = make_image_folder(str(tmp_path / "trainonly"), num_train=10, num_val=0)
  os.rmdir(os.path.join(folder, "val"))
  held_out = make_image_folder(str(tmp_path / "heldout"), seed=2, num_val=3)
  config = tiny_config(
    str(tmp_path / "tfds"),
    os.path.join(folder, "train"),
    num_train_steps=2,
    eval_train_dataset=False,
    eval_datasets=f"image_folder:{held_out}",
    dataset__eval_fraction=0.0,
  )
  final = loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert list(final) == ["image_folder:heldout"]
  assert final["image_folder:heldout"]["num_images"] == 3
