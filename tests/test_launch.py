"""The launch scripts' --dry-run prints the gcloud / python commands they would run."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _dry_run(script: str, *args: str, env: dict[str, str] | None = None) -> list[str]:
  out = subprocess.run(["bash", os.path.join(ROOT, "launch", script), "--dry-run", *args],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, **(env or {})))
  assert out.returncode == 0, out.stderr
  return out.stdout.strip().splitlines()


def _one(lines: list[str], *pieces: str) -> str:
  """The single line containing every piece."""
  found = [line for line in lines if all(p in line for p in pieces)]
  assert len(found) == 1, (pieces, lines)
  return found[0]


def test_tpu_pod_slice_up():
  lines = _dry_run("tpu_vm.sh", "up", "--name", "pod", "--zone", "us-central2-b",
                   "--accelerator", "v4-32", "--spot", "--workdir", "gs://bucket/runs/celeba",
                   "--dataset_path", "/mnt/celeba", "--fsdp", "4", "--",
                   "--config.batch_size=64")
  create = _one(lines, "gcloud compute tpus tpu-vm create pod")
  for piece in ("--zone=us-central2-b", "--accelerator-type=v4-32",
                "--version=tpu-ubuntu2204-base", "--spot"):
    assert piece in create
  _one(lines, "tpu-vm scp", "--worker=all")
  _one(lines, "tpu-vm ssh pod", "--worker=all", "pip install", ".[tpu]")
  train = _one(lines, "tpu-vm ssh pod", "--worker=all", "python -m minr_jax.main")
  for piece in ("--config=configs/transinr.py:celeba", "--workdir=gs://bucket/runs/celeba",
                "--distributed=on", "--config.mesh.fsdp=4", "--config.model.dtype=bfloat16",
                "--config.dataset.path=/mnt/celeba", "--config.batch_size=64", "nohup",
                "minr_train.pid"):
    assert piece in train
  assert lines.index(create) < lines.index(train)


def test_tpu_single_host_v5e_and_restart():
  lines = _dry_run("tpu_vm.sh", "restart", "--accelerator", "v5litepod-8", "--name", "one",
                   "--config", "configs/transinr.py:imagenette")
  _one(lines, "tpu-vm describe one", "value(state)")
  _one(lines, "tpu-vm delete one", "--quiet")
  _one(lines, "tpu-vm create one", "--accelerator-type=v5litepod-8",
       "--version=v2-alpha-tpuv5-lite")
  _one(lines, "--worker=all", "kill", "minr_train.pid")  # a stale run is stopped
  train = _one(lines, "--worker=all", "python -m minr_jax.main")
  assert "--distributed=off" in train and "--workdir=runs/one" in train
  assert "--config=configs/transinr.py:imagenette" in train


def test_tpu_pod_slice_needs_a_shared_workdir():
  out = subprocess.run(["bash", os.path.join(ROOT, "launch", "tpu_vm.sh"), "--dry-run",
                        "train", "--accelerator", "v4-64"],
                       capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if k != "BUCKET"})
  assert out.returncode != 0 and "shared --workdir" in out.stderr


def test_multi_gpu_single_process():
  lines = _dry_run("multi_gpu.sh", "--gpus", "0,1,2,3", "--fsdp", "2", "--install",
                   "--workdir", "runs/g", "--", "--config.batch_size=32")
  _one(lines, "pip install", ".[cuda]")
  train = _one(lines, "python -m minr_jax.main")
  for piece in ("CUDA_VISIBLE_DEVICES=0,1,2,3", "--workdir=runs/g", "--config.mesh.fsdp=2",
                "--config.batch_size=32", "--config=configs/transinr.py"):
    assert piece in train
  assert "--coordinator_address" not in train


def test_multi_gpu_one_process_per_gpu():
  lines = _dry_run("multi_gpu.sh", "--mode", "per_gpu", "--gpus", "0,1,2", "--port", "4321")
  procs = [line for line in lines if "python -m minr_jax.main" in line]
  assert len(procs) == 3
  for i, line in enumerate(procs):
    for piece in (f"CUDA_VISIBLE_DEVICES={i}", "--coordinator_address=127.0.0.1:4321",
                  "--num_processes=3", f"--process_id={i}"):
      assert piece in line
  assert lines[-1] == "wait"
