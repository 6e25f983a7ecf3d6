"""Two JAX processes on localhost: train, checkpoint, resume (`minr_jax.main`)."""

from __future__ import annotations

import os
import shutil
import socket
import sys

import pytest
from helpers import make_image_folder, run_at_once

from minr_jax import main, writers

pytestmark = pytest.mark.slow  # end-to-end: trains or runs subprocesses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  try:
    import portpicker  # noqa: PLC0415

    return portpicker.pick_unused_port()
  except ImportError:
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      return s.getsockname()[1]


def _launch(workdir: str, folder: str, data_dir: str, other: str) -> list:
  """Runs the tiny config as 2 processes (1 CPU device each); their CompletedProcess.

  `other` is an extra evaluation folder that neither process has prepared:
  process 0 prepares it while the other waits.
  """
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  commands = [
    [
      sys.executable,
      "-m",
      "minr_jax.main",
      "--config=configs/transinr.py:tiny",
      f"--workdir={workdir}",
      "--config.dataset.name=image_folder",
      f"--config.dataset.path={folder}",
      f"--config.dataset.data_dir={data_dir}",
      "--config.batch_size=8",
      "--config.eval_batch_size=8",
      "--config.num_train_steps=4",
      "--config.checkpoint_every_steps=2",
      "--config.eval_every_steps=4",
      "--config.log_every_steps=1",
      f"--config.eval_datasets=image_folder:{other}",
      f"--coordinator_address=127.0.0.1:{port}",
      "--num_processes=2",
      f"--process_id={pid}",
    ]
    for pid in range(2)
  ]
  return run_at_once(commands, timeout=150, cwd=ROOT, env=env)


def _train_records(workdir: str) -> list[dict]:
  return [
    r for r in writers.read_metrics(os.path.join(workdir, "metrics.jsonl")) if r["split"] == "train"
  ]


def test_two_processes_train_checkpoint_and_resume(tmp_path):
  folder = make_image_folder(str(tmp_path / "images"))
  other = make_image_folder(str(tmp_path / "scenes"), seed=1, num_val=3)
  data_dir, workdir = str(tmp_path / "tfds"), str(tmp_path / "run")
  for p in _launch(workdir, folder, data_dir, other):
    assert p.returncode == 0, p.stderr[-3000:]
  first = _train_records(workdir)
  assert [r["step"] for r in first] == [1, 2, 3, 4]  # written once, by process 0
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  evals = [
    r for r in writers.read_metrics(os.path.join(workdir, "metrics.jsonl")) if r["split"] == "eval"
  ]
  assert [r["step"] for r in evals] == [4, 4]
  # Every val image once, summed over processes; the extra folder too.
  assert [r["num_images"] for r in evals] == [4, 3]

  # Lose the newest checkpoint (a preemption after step 2): both processes
  # resume from step 2 and retrain steps 3 and 4 with the same losses.
  shutil.rmtree(os.path.join(workdir, "checkpoints", "4"))
  results = _launch(workdir, folder, data_dir, other)
  for p in results:
    assert p.returncode == 0, p.stderr[-3000:]
  assert "resumed from" in results[0].stdout and "resumed from" in results[1].stdout
  again = _train_records(workdir)[len(first) :]
  assert [r["step"] for r in again] == [3, 4]
  for old, new in zip(first[2:], again):
    assert new["loss"] == pytest.approx(old["loss"], rel=1e-5, abs=1e-7), new["step"]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]


def test_distributed_flags_and_environment():
  assert not main.multihost_environment({})
  assert not main.multihost_environment({"TPU_WORKER_HOSTNAMES": "localhost"})
  assert main.multihost_environment({"TPU_WORKER_HOSTNAMES": "10.0.0.2,10.0.0.3"})
  assert main.multihost_environment({"SLURM_NTASKS": "4"})
  assert not main.init_distributed("auto")  # nothing asked for: single process
  assert not main.init_distributed("off", "127.0.0.1:1", 2, 0)
  with pytest.raises(main.ConfigError, match="--num_processes and --process_id"):
    main.init_distributed("auto", "127.0.0.1:1234")
  with pytest.raises(main.ConfigError, match="--process_id=2 is not in"):
    main.init_distributed("auto", "127.0.0.1:1234", 2, 2)
  with pytest.raises(main.ConfigError, match="need --coordinator_address"):
    main.init_distributed("auto", None, 2, 0)
