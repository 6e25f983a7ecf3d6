"""Nothing lost, nothing silent: divergence, interrupted evaluations, changed configs,
corrupt checkpoints, the workdir lock, SIGTERM, and one-line errors for bad input."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from helpers import make_image_folder, run_at_once, tiny_config

import minr_jax
from minr_jax import checkpoint, writers
from minr_jax.config import ConfigError
from minr_jax.training import lock as lock_lib
from minr_jax.training import loop

pytestmark = pytest.mark.slow  # end-to-end: trains or runs subprocesses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return make_image_folder(str(tmp_path_factory.mktemp("reliability_images")))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def _losses(workdir: str) -> dict[int, float]:
  return {
    r["step"]: r["loss"]
    for r in writers.read_metrics(os.path.join(workdir, "metrics.jsonl"))
    if r["split"] == "train"
  }


def _checkpoints(workdir: str) -> list[int]:
  """Committed checkpoint steps (orbax writes a temp folder, then renames it to the step)."""
  folder = os.path.join(workdir, "checkpoints")
  return sorted(int(d) for d in os.listdir(folder) if d.isdigit()) if os.path.isdir(folder) else []


def _all_numbers_finite(record) -> bool:
  """Every float of a metrics record is finite, but LPIPS figures: NaN at the tiny configs'
  16 px by design (AlexNet needs 31 px a side)."""
  return all(
    math.isfinite(v) for k, v in record.items() if isinstance(v, float) and "lpips" not in k
  )


def test_a_diverging_run_never_saves_or_logs_a_bad_state(tmp_path, folder, data_dir):
  config = tiny_config(
    data_dir, folder, num_train_steps=2, log_every_steps=1, checkpoint_every_steps=2
  )
  workdir = str(tmp_path)
  loop.train_and_evaluate(config, workdir)  # checkpoint 2
  config.learning_rate, config.num_train_steps = 1e6, 8  # explodes after step 2
  with pytest.raises(loop.DivergedError, match="diverged") as e:
    loop.train_and_evaluate(config, workdir, allow_config_change=True)
  assert str(e.value).endswith(f"last good checkpoint: {workdir}/checkpoints/2")
  records = writers.read_metrics(os.path.join(workdir, "metrics.jsonl"))
  assert all(_all_numbers_finite(r) for r in records)
  assert _checkpoints(workdir) == [2]  # nothing saved after it
  params = minr_jax.load(workdir, 2).params
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
  # A lower learning rate resumes from the last good checkpoint.
  config.learning_rate, config.num_train_steps = 1e-3, 4
  final = loop.train_and_evaluate(config, workdir, allow_config_change=True)
  assert all(math.isfinite(r["psnr_full"]) for r in final.values()) and final
  assert minr_jax.load(workdir).step == 4


def test_resume_finishes_an_interrupted_evaluation(tmp_path, folder, data_dir):
  config = tiny_config(
    data_dir, folder, num_train_steps=4, eval_every_steps=2, checkpoint_every_steps=2
  )
  workdir = str(tmp_path)
  loop.train_and_evaluate(config, workdir)
  # As if killed after checkpoint 4 committed, before its evaluation was written.
  path = os.path.join(workdir, "metrics.jsonl")
  kept = [r for r in writers.read_metrics(path) if not (r["split"] == "eval" and r["step"] == 4)]
  with open(path, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in kept)
  for name in os.listdir(os.path.join(workdir, "images")):
    if "0000004" in name:
      os.remove(os.path.join(workdir, "images", name))
  config.num_train_steps = 6
  loop.train_and_evaluate(config, workdir)
  evals = [r["step"] for r in writers.read_metrics(path) if r["split"] == "eval"]
  assert evals == [2, 4, 6]
  assert any("0000004" in n for n in os.listdir(os.path.join(workdir, "images")))


def test_resuming_with_a_changed_config_is_refused_unless_allowed(tmp_path, folder, data_dir):
  config = tiny_config(data_dir, folder, num_train_steps=2)
  workdir = str(tmp_path)
  loop.train_and_evaluate(config, workdir)
  changed = tiny_config(data_dir, folder, num_train_steps=6, mask_ratio=0.5, model__ff_sigma=32.0)
  with pytest.raises(
    ConfigError,
    match=r"trained with another config: mask_ratio \(0.75 -> "
    r"0.5\), model.ff_sigma",
  ):
    loop.train_and_evaluate(changed, workdir)
  longer = tiny_config(data_dir, folder, num_train_steps=4, eval_every_steps=4)
  loop.train_and_evaluate(longer, workdir)  # step count and cadences may change
  loop.train_and_evaluate(changed, workdir, allow_config_change=True)
  with open(os.path.join(workdir, "config_changes.jsonl")) as f:
    record = json.loads(f.readline())
  assert record["changes"]["mask_ratio"] == [0.75, 0.5]
  # evaluate and load use the config each checkpoint was trained with.
  assert minr_jax.load(workdir, 2).config.mask_ratio == 0.75
  assert minr_jax.load(workdir).config.mask_ratio == 0.5


def test_a_corrupt_newest_checkpoint_falls_back_to_an_intact_one(tmp_path, folder, data_dir):
  config = tiny_config(
    data_dir, folder, num_train_steps=6, checkpoint_every_steps=2, eval_every_steps=6
  )
  straight, damaged = str(tmp_path / "a"), str(tmp_path / "b")
  loop.train_and_evaluate(config, straight)
  config.num_train_steps = 4
  loop.train_and_evaluate(config, damaged)
  state_dir = os.path.join(damaged, "checkpoints", "4", "state")
  target = max(
    (os.path.join(d, f) for d, _, fs in os.walk(state_dir) for f in fs), key=os.path.getsize
  )
  data = bytearray(open(target, "rb").read())
  data[len(data) // 2] ^= 0x01  # one flipped bit
  open(target, "wb").write(data)
  manager = checkpoint.open_read_only(damaged)
  assert "does not match its checksum" in checkpoint.verify(manager, 4)
  assert checkpoint.intact_steps(manager, warn=lambda line: None) == [2]
  config.num_train_steps = 6
  loop.train_and_evaluate(config, damaged)
  assert os.listdir(os.path.join(damaged, "corrupt_checkpoints"))  # set aside, not deleted
  a, b = _losses(straight), _losses(damaged)
  assert sorted(a) == sorted(b) == list(range(1, 7))
  for step in range(3, 7):  # retrained from checkpoint 2
    assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-7)


def test_one_training_run_per_workdir(tmp_path, folder, data_dir):
  workdir = str(tmp_path)
  lock = lock_lib.WorkdirLock(workdir)
  lock.acquire()  # held by this (living) process
  config = tiny_config(data_dir, folder, num_train_steps=2)
  with pytest.raises(
    ConfigError, match=f"in use by another training run \\(process {os.getpid()} on"
  ):
    loop.train_and_evaluate(config, workdir)
  lock.release()
  with open(os.path.join(workdir, lock_lib.LOCK), "w") as f:  # left by a dead process
    json.dump(dict(host=__import__("socket").gethostname(), pid=2**22 + 17), f)
  loop.train_and_evaluate(config, workdir)
  assert not os.path.exists(os.path.join(workdir, lock_lib.LOCK))


def test_a_full_disk_is_one_line_and_keeps_earlier_checkpoints():
  class FullDisk:
    directory = "/data/run/checkpoints"

    def save(self, *args, **kwargs):
      raise OSError(28, "No space left on device")

  with pytest.raises(
    ConfigError,
    match=r"no space left on the device of /data/run/checkpoints "
    r"while saving step 3 \(the state is 0 bytes, an unknown amount free\); "
    "the earlier checkpoints there are intact",
  ):
    checkpoint.save(FullDisk(), 3, {}, None)


def _main(workdir: str, args: list[str]):
  cmd = [
    sys.executable,
    "-m",
    "minr_jax.main",
    "--config=configs/transinr.py:tiny",
    f"--workdir={workdir}",
    *args,
  ]
  return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _logged(step: int):
  return lambda workdir: max(_losses(workdir), default=0) >= step


def _saved(step: int):
  return lambda workdir: max(_checkpoints(workdir), default=0) >= step


def test_sigterm_or_sigkill_then_resuming_gives_the_same_losses(tmp_path, folder, data_dir):
  """One run gets SIGTERM at a random step (it saves the step reached), one gets SIGKILL
  once checkpoint 4 is written (a checkpoint every 4 steps); both then resume (without
  the periodic checkpoints). Every step's loss equals the straight run's: checkpoint
  cadence does not change training.
  benchmarks/kill_trials.py kills at random moments."""
  args = [
    "--config.dataset.name=image_folder",
    f"--config.dataset.path={folder}",
    f"--config.dataset.data_dir={data_dir}",
    "--config.batch_size=8",
    "--config.eval_batch_size=8",
    "--config.num_train_steps=30",
    "--config.checkpoint_every_steps=1000",
    "--config.eval_every_steps=30",
    "--config.log_every_steps=1",
  ]
  # (signal, config overrides, when to send it)
  rng = random.Random(0)
  trials = [(signal.SIGTERM, [], _logged(rng.randint(2, 20)))]
  trials.append((signal.SIGKILL, ["--config.checkpoint_every_steps=4"], _saved(4)))
  # The straight run and the trials start at once, then the trials resume at once:
  # most of a start (imports, compiling) is one core's work.
  straight = str(tmp_path / "straight")
  workdirs = [str(tmp_path / f"stopped{i}") for i in range(len(trials))]
  reference = _main(straight, args)
  procs = [_main(w, args + extra) for w, (_, extra, _) in zip(workdirs, trials)]
  waiting, deadline = set(range(len(trials))), time.time() + 300
  while waiting and time.time() < deadline:
    for i in list(waiting):
      path = os.path.join(workdirs[i], "metrics.jsonl")
      if (os.path.exists(path) and trials[i][2](workdirs[i])) or procs[i].poll() is not None:
        procs[i].send_signal(trials[i][0])
        waiting.discard(i)
    time.sleep(0.01)
  for i in waiting:  # the deadline passed
    procs[i].send_signal(trials[i][0])
  resume_from = []
  for i, proc in enumerate(procs):
    out, err = proc.communicate(timeout=300)
    if trials[i][0] == signal.SIGKILL:
      assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
      resume_from.append(max(_checkpoints(workdirs[i])))
      assert resume_from[-1] < 30
      continue
    assert proc.returncode == 0, err[-2000:]
    assert "SIGTERM: stopped at step" in out, (i, out[-2000:])
    resume_from.append(int(out.split("SIGTERM: stopped at step ")[1].split(";")[0]))
    assert resume_from[-1] in _checkpoints(workdirs[i])
  resumed = [_main(w, args) for w in workdirs]
  for run in [reference] + resumed:
    _, err = run.communicate(timeout=600)
    assert run.returncode == 0, err[-2000:]
  a = _losses(straight)
  for i, workdir in enumerate(workdirs):
    b = _losses(workdir)
    assert sorted(b) == list(range(1, 31))
    for step in range(resume_from[i] + 1, 31):
      assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-7), (i, step)


@pytest.fixture(scope="module")
def a_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("f") / "file"
  path.write_text("not a directory")
  return str(path)


BAD_INPUT = [
  (
    ["--config=configs/transinr.py:tiny", "--config.nosuch=1"],
    "error: --config.nosuch: the config has no field 'nosuch'",
  ),
  (
    ["--config=configs/transinr.py:tiny", "--config.model.nosuch=1"],
    "error: --config.model.nosuch: the config has no field 'nosuch'",
  ),
  (["--config=configs/transinr.py:nosuch"], "error: --config: unknown variant 'nosuch'"),
  (["--config=configs/nothere.py"], "error: --config: [Errno 2] No such file"),
  (
    ["--config=configs/transinr.py:tiny", "--config.learning_rate=inf"],
    "error: config.learning_rate must be a finite number > 0, got inf",
  ),
  (
    ["--config=configs/transinr.py:tiny", "--config.lr_decay_factor=nan"],
    "error: config.lr_decay_factor must be a finite number > 0, got nan",
  ),
  (
    ["--config=configs/transinr.py:tiny", "--config.eval_datasets=nosuch"],
    "error: config.eval_datasets: dataset 'nosuch' is unknown",
  ),
  (
    [
      "--config=configs/transinr.py:tiny",
      "--config.batch_size=8",
      "--config.eval_batch_size=8",
      "WORKDIR_IS_A_FILE",
    ],
    "is a file, not a directory",
  ),
]


def test_bad_input_is_one_line_before_compiling(a_file, tmp_path):
  commands, workdirs = [], []
  for i, (args, _) in enumerate(BAD_INPUT):
    workdirs.append(a_file if "WORKDIR_IS_A_FILE" in args else str(tmp_path / f"run{i}"))
    args = [a for a in args if a != "WORKDIR_IS_A_FILE"]
    commands.append([sys.executable, "-m", "minr_jax.main", f"--workdir={workdirs[-1]}", *args])
  for (_, message), workdir, out in zip(BAD_INPUT, workdirs, run_at_once(commands, cwd=ROOT)):
    assert out.returncode != 0, message
    lines = [
      l
      for l in out.stderr.splitlines()
      if l.strip() and not l.startswith("W1") and "OpenCV" not in l
    ]
    assert lines[-1].startswith("error: ") and message in lines[-1], out.stderr[-1500:]
    assert "Traceback" not in out.stderr and "compiling" not in out.stdout
    if workdir != a_file:
      assert not os.path.exists(os.path.join(workdir, "checkpoints"))


def test_sigkill_at_random_moments_then_resume_loses_nothing(tmp_path):
  """benchmarks/kill_trials.py with one trial (docs: the 10-trial figure)."""
  out = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, "benchmarks", "kill_trials.py"),
      "--trials=1",
      "--jobs=2",
      f"--workdir={tmp_path}",
      "--seed=1",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=1800,
  )
  assert out.returncode == 0, out.stdout + out.stderr[-2000:]
  passed, failed = out.stdout.strip().splitlines()[-1].split(", ")
  assert failed == "0 failed" and int(passed.split()[0]) >= 1, out.stdout


def test_evaluate_without_a_checkpoint_is_one_line(tmp_path):
  with open(tmp_path / "config.json", "w") as f:
    f.write(tiny_config(str(tmp_path)).to_json())
  out = subprocess.run(
    [sys.executable, "-m", "minr_jax.evaluate", f"--workdir={tmp_path}"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert out.returncode == 1 and "Traceback" not in out.stderr
  assert out.stderr.strip().splitlines()[-1] == f"error: no checkpoints in {tmp_path}/checkpoints"
