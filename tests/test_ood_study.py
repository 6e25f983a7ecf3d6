"""benchmarks/ood_study.py: the equal-compute plan, and a whole tiny study."""

from __future__ import annotations

import importlib.util
import json
import os
import time

import pytest
from helpers import make_image_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
  "ood_study", os.path.join(ROOT, "benchmarks", "ood_study.py")
)
ood_study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ood_study)


def test_plan_gives_equal_compute_and_the_reference_step():
  flops = {"transinr": 8.0, "ginr": 7.0, "mae": 1.0}
  plan = ood_study.plan(["transinr", "ginr", "mae"], flops, budget=800, num_evals=8)
  assert plan["transinr"] == {"steps": 800, "eval_every": 100}
  assert plan["ginr"]["steps"] == 900  # 800 x 8/7 = 914, rounded to the unit of 100
  assert plan["mae"]["steps"] == 6400
  # At most 2 x num_evals evaluations, and step 800 (equal images seen) is one of them.
  assert plan["mae"]["steps"] // plan["mae"]["eval_every"] <= 16
  assert 800 % plan["mae"]["eval_every"] == 0
  # An odd num_evals (5): MAE's 39 units are evaluated every 5th, not each one.
  plan = ood_study.plan(["transinr", "mae"], flops, budget=1000, num_evals=5)
  assert plan["mae"] == {"steps": 8000, "eval_every": 1000}


@pytest.mark.parametrize("spec", ["a", "a:", ":x", ""])
def test_parse_named_refuses_malformed(spec):
  with pytest.raises(ValueError, match="--eval"):
    ood_study.parse_named(spec, "--eval")


@pytest.mark.slow
def test_tiny_study_trains_resumes_and_reports(tmp_path):
  a = make_image_folder(str(tmp_path / "A"), num_train=8, num_val=3)
  b = make_image_folder(str(tmp_path / "B"), num_train=8, num_val=2, seed=1)
  kwargs = dict(
    workdir=str(tmp_path / "study"),
    train_sets={"a": os.path.join(a, "train")},
    domains={"A": a, "B": b},
    models=["transinr", "mae"],
    seeds=[0, 1],
    budget=4,
    num_evals=2,
    variant="tiny",
    data_dir=str(tmp_path / "tfds"),
  )
  # A piece with no time left trains nothing and still reports.
  first = ood_study.run_study(**kwargs, max_minutes=1e-9)
  assert not any(r["finished"] for runs in first["runs"].values() for r in runs.values())
  results = ood_study.run_study(**kwargs)
  runs = results["runs"]
  assert all(r["finished"] for v in runs.values() for r in v.values())
  # MAE's steps are cheaper: more of them at the same compute, and the curve has step 4.
  assert results["plan"]["mae"]["steps"] > results["plan"]["transinr"]["steps"] == 4
  assert "4" in runs["mae/a"]["0"]["curves"]["B"]
  out = tmp_path / "study" / "study"
  text = (out / "ood.md").read_text()
  assert "| a | B | MAE |" in text and "| a | A | TransINR-MINR |" in text
  saved = json.loads((out / "ood.json").read_text())
  cell = saved["summary"]["a/B/transinr"]["final"]
  assert cell["gain"]["n"] == 2
  assert cell["gain"]["min"] <= cell["gain"]["mean"] <= cell["gain"]["max"]
  # Beside PSNR: SSIM and LPIPS of the model and of the best classical inpainter
  # (LPIPS is nan on the tiny variant's images: it needs 31 px a side).
  for metric in ("ssim_pasted", "ssim_best_classical"):
    assert cell[metric]["n"] == 2 and 0 < cell[metric]["mean"] <= 1
  assert cell["lpips_pasted"]["n"] == cell["lpips_best_classical"]["n"] == 2
  assert (out / "ood.png").stat().st_size > 1000


@pytest.mark.slow
def test_tiny_ablations_train_resume_and_report_against_the_baseline(tmp_path):
  spec = importlib.util.spec_from_file_location(
    "ood_ablations", os.path.join(ROOT, "benchmarks", "ood_ablations.py")
  )
  ablations = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(ablations)
  a = make_image_folder(str(tmp_path / "A"), num_train=8, num_val=3)
  kwargs = dict(
    workdir=str(tmp_path / "study"),
    train_name="a",
    train_folder=os.path.join(a, "train"),
    domains={"A": a},
    names=["inr_wide"],
    seeds=[0],
    steps=4,
    num_evals=2,
    data_dir=str(tmp_path / "tfds"),
    variant="tiny",
  )
  first = ablations.run(**kwargs, max_minutes=1e-9)  # no time: nothing trained, a report
  assert first["rows"]["inr_wide"]["seeds"] == {}
  results = ablations.run(**kwargs)
  rows = results["rows"]
  assert set(rows) == {"baseline", "inr_wide"}
  assert all(set(r["seeds"]) == {"0"} for r in rows.values())
  # A wider INR costs more per step; the baseline is the study's own run directory.
  assert rows["inr_wide"]["gflop_per_step"] > rows["baseline"]["gflop_per_step"]
  assert os.path.isdir(tmp_path / "study" / "transinr_a_seed0" / "checkpoints" / "4")
  text = (tmp_path / "study" / "study" / "ablations.md").read_text()
  assert "| inr_wide: INR width 128 (from 64) |" in text and "not run" not in text
  # Beside interpolation: the lead over the best classical inpainter, SSIM and LPIPS.
  assert "psnr_pasted minus the best classical inpainter's" in text
  extra = rows["inr_wide"]["metrics"]["0"]["A"]
  assert {"psnr_best_classical", "ssim_pasted", "ssim_best_classical", "lpips_pasted"} <= set(extra)
  assert 0 < extra["ssim_pasted"] <= 1


def test_update_state_keeps_every_writers_wall_time(tmp_path):
  # Two studies of different --seeds share a workdir: each re-reads the state
  # before adding its piece, so neither loses the other's runs or FLOP counts.
  path = str(tmp_path / "study_state.json")
  ood_study.update_state(path, {"transinr": 1.0})
  ood_study.update_state(path, {"transinr": 1.0}, "a_seed0", 60.0)
  ood_study.update_state(path, {"mae": 2.0}, "a_seed1", 30.0)
  walls = ood_study.update_state(path, {}, "a_seed0", 15.0)
  assert walls == {"a_seed0": 75.0, "a_seed1": 30.0}
  with open(path) as f:
    assert json.load(f)["flops_per_step"] == {"transinr": 1.0, "mae": 2.0}


@pytest.mark.slow
def test_a_deadline_during_set_up_stops_the_piece_not_the_study(tmp_path):
  # The deadline's SIGTERM lands while the run is still being built, before the
  # loop's own handler is in place: the piece reports "not finished" and the
  # process lives on; the next piece trains the run to the end.
  a = make_image_folder(str(tmp_path / "A"), num_train=8, num_val=2)
  args = {
    "variant": "tiny",
    "train": {"a": os.path.join(a, "train")},
    "eval": {"A": a},
    "data_dir": str(tmp_path / "tfds"),
  }
  config = ood_study._run_config("transinr", "a", 0, {"steps": 2, "eval_every": 2}, args)
  run_dir = str(tmp_path / "run")
  assert ood_study._train_piece(config, run_dir, time.time() + 0.05) is False
  assert not ood_study._finished(run_dir, 2)
  assert ood_study._train_piece(config, run_dir, None) is True
  assert ood_study._finished(run_dir, 2)
