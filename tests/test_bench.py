"""`python -m minr_jax.bench` prints one JSON object with the timings and counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import tiny_config

from minr_jax.config import ConfigError
from minr_jax.training import bench

pytestmark = pytest.mark.slow  # end-to-end: trains or runs subprocesses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_cli_prints_the_json_keys():
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "minr_jax.bench",
      "--config=configs/transinr.py:tiny",
      "--steps=2",
      "--peak_flops=1e11",
      "--config.mesh.data=1",
      # No looped forms (per-head attention, chunked INR loss): their flop count
      # compiles the step twice, which the in-process test below covers.
      "--config.model.inr_chunk=0",
      "--config.model.attention_impl=batched",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=180,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  for key in (
    "compile_s",
    "eval_compile_s",
    "train_step_s",
    "eval_step_s",
    "images_per_s",
    "flops_per_step",
    "achieved_flops_per_s",
    "mfu",
    "peak_memory_bytes",
    "memory_source",
    "dtype",
    "inr_dtype",
    "remat",
    "device_kind",
    "num_devices",
    "mesh",
  ):
    assert key in result, key
  for key in ("median", "min", "max", "p25", "p75"):
    assert result["train_step_s"][key] > 0
  assert len(result["train_step_s"]["all"]) == 2
  assert result["flops_per_step"] > 0 and 0 < result["mfu"]
  assert result["peak_memory_bytes"] > 0
  assert (result["dtype"], result["remat"], result["num_devices"]) == ("float32", False, 1)
  assert result["final_loss_finite"]


def test_bench_bfloat16_and_remat_in_process():
  config = tiny_config("/unused", model__dtype="bfloat16", model__remat=True)
  result = bench.run_benchmark(config, steps=1, warmup=0)
  assert (result["dtype"], result["inr_dtype"], result["remat"]) == ("bfloat16", "bfloat16", True)
  assert result["num_devices"] == 8 and result["final_loss_finite"]


def test_bench_bad_steps_is_a_config_error():
  with pytest.raises(ConfigError, match="--steps"):
    bench.run_benchmark(tiny_config("/unused"), steps=0)


def test_bench_pipeline_runs_the_real_data_like_the_training_loop(tmp_path):
  config = tiny_config(str(tmp_path))  # the demo photos, prepared into tmp_path
  result = bench.run_benchmark(config, steps=2, warmup=1, pipeline_steps=3)
  pipeline = result["pipeline"]
  assert pipeline["steps"] == 3 and pipeline["dataset"] == "demo"
  assert pipeline["step_s"] > 0 and 0 <= pipeline["host_data_wait_s"] < pipeline["step_s"]
  assert pipeline["overhead"] == pytest.approx(
    pipeline["step_s"] / result["train_step_s"]["median"] - 1
  )
  assert result["final_loss_finite"]
  with pytest.raises(ConfigError, match="--pipeline_steps"):
    bench.run_benchmark(config, steps=1, pipeline_steps=-1)


def test_bench_counts_the_looped_forms_flops_as_the_batched_forms():
  looped = bench.run_benchmark(
    tiny_config("/unused", model__attention_impl="per_head", model__inr_chunk=40, mesh__data=1),
    steps=1,
    warmup=0,
  )
  batched = bench.run_benchmark(
    tiny_config("/unused", model__attention_impl="batched", model__inr_chunk=0, mesh__data=1),
    steps=1,
    warmup=0,
  )
  assert looped["flops_per_step"] == pytest.approx(batched["flops_per_step"], rel=1e-6)
  assert looped["eval_flops_per_step"] == pytest.approx(batched["eval_flops_per_step"], rel=1e-6)
