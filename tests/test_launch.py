"""The launch scripts' --dry-run prints the gcloud / python commands they would run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
# Variables the scripts read as defaults; the tests pass everything they mean explicitly.
_SCRIPT_ENV = (
  "NAME",
  "ZONE",
  "PROJECT",
  "ACCELERATOR",
  "VERSION",
  "PYTHON_VERSION",
  "CONFIG",
  "WORKDIR",
  "BUCKET",
  "DATASET_PATH",
  "FSDP",
  "DTYPE",
  "GPUS",
  "PORT",
  "VENV",
  "CUDA",
)
_IN_GIT = (
  shutil.which("git") is not None
  and subprocess.run(
    ["git", "-C", ROOT, "rev-parse", "--is-inside-work-tree"], capture_output=True
  ).returncode
  == 0
)
needs_git = pytest.mark.skipif(not _IN_GIT, reason="setup ships git archive HEAD: needs a checkout")
# `python` as a command word (not python3, not a path ending in /python, not --python).
_BARE_PYTHON = re.compile(r"(^|[\s'\"=;&|(])python\s")


def _script(
  script: str, *args: str, env: dict[str, str] | None = None, path: str | None = None
) -> subprocess.CompletedProcess:
  clean = {k: v for k, v in os.environ.items() if k not in _SCRIPT_ENV}
  return subprocess.run(
    ["bash", path or os.path.join(ROOT, "launch", script), *args],
    capture_output=True,
    text=True,
    timeout=60,
    env={**clean, **(env or {})},
  )


def _dry_run(script: str, *args: str, env: dict[str, str] | None = None) -> list[str]:
  out = _script(script, "--dry-run", *args, env=env)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  bare = [line for line in lines if _BARE_PYTHON.search(line)]
  assert not bare, bare  # every python is a venv's (or python3 bootstrapping uv)
  return lines


def _refused(script: str, *args: str) -> str:
  """The one-line error of a refused command."""
  out = _script(script, "--dry-run", *args)
  assert out.returncode == 2 and out.stdout == "", (out.stdout, out.stderr)
  errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, out.stderr
  return errors[0]


def _one(lines: list[str], *pieces: str) -> str:
  """The single line containing every piece."""
  found = [line for line in lines if all(p in line for p in pieces)]
  assert len(found) == 1, (pieces, lines)
  return found[0]


def _create_version(lines: list[str]) -> str:
  create = _one(lines, "gcloud compute tpus tpu-vm create")
  return [w for w in create.split() if w.startswith("--version=")][0].removeprefix("--version=")


@needs_git
def test_tpu_pod_slice_up():
  lines = _dry_run(
    "tpu_vm.sh",
    "up",
    "--name",
    "pod",
    "--zone",
    "us-central2-b",
    "--accelerator",
    "v4-32",
    "--spot",
    "--workdir",
    "gs://bucket/runs/celeba",
    "--dataset_path",
    "/mnt/celeba",
    "--fsdp",
    "4",
    "--",
    "--config.batch_size=64",
  )
  create = _one(lines, "gcloud compute tpus tpu-vm create pod")
  for piece in ("--zone=us-central2-b", "--accelerator-type=v4-32", "--spot"):
    assert piece in create
  assert _create_version(lines) == "tpu-ubuntu2204-base"
  # The committed tree only, as a tarball, to every worker.
  archive = _one(lines, "git -C", "archive")
  assert archive.endswith(" HEAD") and "--format=tar.gz" in archive
  _one(lines, "tpu-vm scp", "--worker=all")
  # A Python 3.11 venv made by uv on every worker, the project installed into it with [tpu].
  setup = _one(lines, "tpu-vm ssh pod", "--worker=all", "uv venv")
  assert "--python 3.11 ~/minr_venv" in setup
  assert re.search(r"uv pip install .*--python ~/minr_venv/bin/python -e .*\.\[tpu\]", setup)
  train = _one(lines, "tpu-vm ssh pod", "--worker=all", "minr_jax.main")
  assert "JAX_PLATFORMS=tpu nohup ~/minr_venv/bin/python -m minr_jax.main" in train
  for piece in (
    "--config=configs/transinr.py:celeba",
    "--workdir=gs://bucket/runs/celeba",
    "--distributed=on",
    "--config.mesh.fsdp=4",
    "--config.model.dtype=bfloat16",
    "--config.dataset.path=/mnt/celeba",
    "--config.batch_size=64",
    "minr_train.pid",
  ):
    assert piece in train
  order = [lines.index(x) for x in (create, archive, setup, train)]
  assert order == sorted(order)


@pytest.mark.parametrize(
  "accelerator, version",
  [
    ("v4-8", "tpu-ubuntu2204-base"),
    ("v5litepod-8", "v2-alpha-tpuv5-lite"),
    ("v5p-8", "v2-alpha-tpuv5"),
    ("v6e-8", "v2-alpha-tpuv6e"),
  ],
)
def test_tpu_runtime_version_per_generation(accelerator, version):
  assert _create_version(_dry_run("tpu_vm.sh", "create", "--accelerator", accelerator)) == version
  # --version still overrides the generation's default.
  lines = _dry_run("tpu_vm.sh", "create", "--accelerator", accelerator, "--version", "mine")
  assert _create_version(lines) == "mine"


@pytest.mark.parametrize(
  "accelerator, distributed",
  [
    ("v4-8", "off"),
    ("v4-16", "on"),
    ("v5p-8", "off"),
    ("v5p-16", "on"),
    ("v5litepod-8", "off"),
    ("v5litepod-16", "on"),
    ("v6e-8", "off"),
    ("v6e-16", "on"),
  ],
)
def test_tpu_multi_host_slices_run_distributed(accelerator, distributed):
  lines = _dry_run("tpu_vm.sh", "train", "--accelerator", accelerator, "--workdir", "gs://b/r")
  assert f"--distributed={distributed}" in _one(lines, "minr_jax.main")


def test_tpu_unknown_generation_and_old_python_are_refused():
  assert "unknown TPU generation" in _refused("tpu_vm.sh", "create", "--accelerator", "x9-8")
  assert "3.11 or newer" in _refused("tpu_vm.sh", "setup", "--python", "3.10")


@needs_git
def test_tpu_restart_resumes_from_the_bucket():
  args = (
    "--accelerator",
    "v5litepod-8",
    "--name",
    "one",
    "--spot",
    "--workdir",
    "gs://b/one",
    "--config",
    "configs/transinr.py:imagenette",
  )
  lines = _dry_run("tpu_vm.sh", "restart", *args)
  _one(lines, "tpu-vm describe one", "value(state)")
  _one(lines, "tpu-vm delete one", "--quiet")
  _one(lines, "tpu-vm create one", "--accelerator-type=v5litepod-8", "--spot")
  assert _create_version(lines) == "v2-alpha-tpuv5-lite"
  _one(lines, "git -C", "archive", "HEAD")
  _one(lines, "tpu-vm ssh one", "uv venv")
  _one(lines, "--worker=all", "kill", "minr_train.pid")  # a stale run is stopped
  train = _one(lines, "--worker=all", "minr_jax.main")
  assert "--distributed=off" in train and "--workdir=gs://b/one" in train
  # The very command `up` starts: minr_jax.main resumes from the newest checkpoint there.
  assert train == _one(_dry_run("tpu_vm.sh", "up", *args), "--worker=all", "minr_jax.main")


def test_tpu_restart_with_a_local_workdir_never_recreates():
  lines = _dry_run("tpu_vm.sh", "restart", "--accelerator", "v4-8", "--name", "one")
  assert not [line for line in lines if "tpu-vm create" in line or "tpu-vm delete" in line]
  assert "nothing to resume" in _one(lines, "# if it is PREEMPTED")
  train = _one(lines, "--worker=all", "minr_jax.main")
  assert "--workdir=$HOME/minr_runs/one" in train  # the worker's home, outside the code


@pytest.mark.parametrize("command", ["create", "up", "train", "restart"])
def test_tpu_spot_refuses_a_local_workdir(command):
  assert "gs://" in _refused("tpu_vm.sh", command, "--spot", "--name", "s")
  assert "gs://" in _refused("tpu_vm.sh", command, "--spot", "--workdir", "runs/s")


def test_tpu_pod_slice_needs_a_shared_workdir():
  assert "shared --workdir" in _refused("tpu_vm.sh", "train", "--accelerator", "v4-64")


def test_tpu_setup_refuses_a_tree_outside_git(tmp_path):
  (tmp_path / "launch").mkdir()
  script = shutil.copy(os.path.join(ROOT, "launch", "tpu_vm.sh"), tmp_path / "launch")
  out = _script(
    "tpu_vm.sh",
    "--dry-run",
    "setup",
    path=str(script),
    env={"GIT_CEILING_DIRECTORIES": str(tmp_path.parent)},
  )
  assert out.returncode == 2 and "not a git checkout" in out.stderr
  assert "archive" not in out.stdout and "scp" not in out.stdout


def test_multi_gpu_single_process():
  lines = _dry_run(
    "multi_gpu.sh",
    "--gpus",
    "0,1,2,3",
    "--fsdp",
    "2",
    "--install",
    "--workdir",
    "runs/g",
    "--",
    "--config.batch_size=32",
  )
  venv = _one(lines, "uv venv")
  assert "--python 3.11 .venv" in venv
  install = _one(lines, "uv pip install", "--python .venv/bin/python")
  assert "'.[cuda]'" in install
  assert lines.index(venv) < lines.index(install)
  train = _one(lines, "minr_jax.main")
  assert "JAX_PLATFORMS=cuda .venv/bin/python -m minr_jax.main" in train
  for piece in (
    "CUDA_VISIBLE_DEVICES=0,1,2,3",
    "--workdir=runs/g",
    "--config.mesh.fsdp=2",
    "--config.batch_size=32",
    "--config=configs/transinr.py",
  ):
    assert piece in train
  assert "--coordinator_address" not in train


def test_multi_gpu_cuda13_and_a_bucket_install_their_extras():
  lines = _dry_run(
    "multi_gpu.sh", "--install", "--cuda", "13", "--workdir", "gs://b/g", "--venv", "/opt/env"
  )
  assert "'.[cuda13,gcs]'" in _one(lines, "uv pip install", "--python /opt/env/bin/python")
  assert "/opt/env/bin/python -m minr_jax.main" in _one(lines, "minr_jax.main")
  assert "3.11 or newer" in _refused("multi_gpu.sh", "--install", "--python", "3.10")


def test_multi_gpu_one_process_per_gpu():
  lines = _dry_run("multi_gpu.sh", "--mode", "per_gpu", "--gpus", "0,1,2", "--port", "4321")
  procs = [line for line in lines if "minr_jax.main" in line]
  assert len(procs) == 3
  for i, line in enumerate(procs):
    for piece in (
      f"CUDA_VISIBLE_DEVICES={i}",
      "JAX_PLATFORMS=cuda",
      ".venv/bin/python -m",
      "--coordinator_address=127.0.0.1:4321",
      "--num_processes=3",
      f"--process_id={i}",
    ):
      assert piece in line
  assert lines[-1] == "wait"


def test_multi_gpu_without_an_environment_says_how_to_make_one(tmp_path):
  out = _script("multi_gpu.sh", "--venv", str(tmp_path / "none"), "--gpus", "0")
  assert out.returncode == 2 and "--install" in out.stderr and out.stdout == ""


def test_train_in_pieces_resumes_after_each_piece_until_the_last_step(tmp_path):
  """A piece that outlives its time gets SIGTERM and the next piece runs the same command
  again; the loop ends when checkpoints/STEPS exists, and a failing command stops it."""
  workdir, count = tmp_path / "run", tmp_path / "count"
  # The stand-in trainer: its first call runs past the piece's 0.05 minutes, its second
  # writes the final checkpoint.
  trainer = (
    f"n=$(( $(cat {count} 2>/dev/null || echo 0) + 1 )); echo $n > {count}; "
    f"if [ $n -eq 1 ]; then sleep 60; else mkdir -p {workdir}/checkpoints/7; fi"
  )
  script = os.path.join(ROOT, "launch", "train_in_pieces.sh")
  out = subprocess.run(
    [script, "0.05", "7", "--", "bash", "-c", trainer, f"--workdir={workdir}"],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert out.returncode == 0, out.stderr
  assert count.read_text().strip() == "2" and (workdir / "checkpoints" / "7").is_dir()
  assert "exit status 124" in out.stdout and "=== done" in out.stdout
  failing = subprocess.run(
    [script, "1", "7", "--", "bash", "-c", "exit 3", f"--workdir={tmp_path}/other"],
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert failing.returncode == 3
  usage = subprocess.run([script, "1", "7", "python"], capture_output=True, text=True)
  assert usage.returncode == 2 and "usage:" in usage.stderr
