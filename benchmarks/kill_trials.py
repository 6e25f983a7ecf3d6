r"""SIGKILL a tiny training run at random moments, resume it, compare with a straight run.

  python benchmarks/kill_trials.py --trials=10 --workdir=/path/to/scratch [--seed=0] [--jobs=2]

A straight run of configs/transinr.py:tiny (40 steps, a checkpoint every 4
steps, an evaluation every 8) gives the reference train losses and eval
records. Each trial starts the same run in its own workdir, SIGKILLs it at a
random moment (0 to 0.5 s after a step was logged: when that step's
checkpoint save or evaluation runs, if it has one; every other trial picks an
evaluation step, which is also a checkpoint step), then runs the same command
again until it finishes. A trial passes when every step's train loss equals
the straight run's (rel 1e-5) and every evaluation step's record is present
with the straight run's psnr_full (abs 1e-4). Prints one line per trial and
a summary line `N passed, M failed`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, SAVE, EVAL = 40, 4, 8


def _args(data_dir: str) -> list[str]:
  # The tiny config's own data (crops of scikit-image's photos): nothing to generate.
  return [
    "--config=configs/transinr.py:tiny",
    f"--config.dataset.data_dir={data_dir}",
    "--config.batch_size=8",
    "--config.eval_batch_size=8",
    f"--config.num_train_steps={STEPS}",
    f"--config.checkpoint_every_steps={SAVE}",
    f"--config.eval_every_steps={EVAL}",
    "--config.log_every_steps=1",
    "--config.checkpoint_every_secs=0",
  ]


def run(workdir: str, args: list[str], kill_at: tuple[int, float] | None = None) -> int | None:
  """Runs the training command to the end, or SIGKILLs it `delay` seconds after the
  train record of step `step` appears (kill_at = (step, delay)); None if killed."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
  proc = subprocess.Popen(
    [sys.executable, "-m", "minr_jax.main", f"--workdir={workdir}", *args],
    cwd=ROOT,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
  )
  if kill_at is not None:
    step, delay = kill_at
    path = os.path.join(workdir, "metrics.jsonl")
    while proc.poll() is None:
      if os.path.exists(path) and max(records(workdir)[0], default=0) >= step:
        time.sleep(delay)
        if proc.poll() is None:
          proc.send_signal(signal.SIGKILL)
          proc.wait()
          return None
      time.sleep(0.005)
  proc.wait()
  if proc.returncode != 0:
    raise RuntimeError(proc.stderr.read()[-2000:])
  return proc.returncode


def records(workdir: str) -> tuple[dict[int, float], dict[int, float]]:
  """(train loss by step, eval psnr_full by step): the last record of each step."""
  train, evals = {}, {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      if not line.strip():
        continue
      try:
        r = json.loads(line)
      except json.JSONDecodeError:
        continue  # a line cut by the kill
      (train if r["split"] == "train" else evals)[r["step"]] = (
        r["loss"] if r["split"] == "train" else r["psnr_full"]
      )
  return train, evals


def trial_ok(straight, resumed) -> str | None:
  (a_train, a_eval), (b_train, b_eval) = straight, resumed
  if sorted(b_train) != sorted(a_train):
    return f"train steps {sorted(set(a_train) - set(b_train))} missing"
  for step, loss in a_train.items():
    if abs(b_train[step] - loss) > 1e-5 * abs(loss) + 1e-7:
      return f"loss at step {step}: {b_train[step]} vs {loss}"
  for step, psnr in a_eval.items():
    if step not in b_eval:
      return f"eval record of step {step} missing"
    if abs(b_eval[step] - psnr) > 1e-4:
      return f"psnr_full at step {step}: {b_eval[step]} vs {psnr}"
  return None


def _trial(root: str, args: list[str], i: int, kill_at: tuple[int, float]):
  """Trial i: the run SIGKILLed at kill_at, then resumed; (checkpoints at the kill, workdir),
  or None if the run ended before its kill."""
  workdir = os.path.join(root, f"trial{i}")
  shutil.rmtree(workdir, ignore_errors=True)
  if run(workdir, args, kill_at=kill_at) is not None:
    return None
  ckpt_dir = os.path.join(workdir, "checkpoints")
  ckpts = (
    sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit()) if os.path.isdir(ckpt_dir) else []
  )
  run(workdir, args)
  return ckpts, workdir


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--trials", type=int, default=10)
  parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
    "--jobs",
    type=int,
    default=1,
    help="runs at once (the straight run and the trials); a start is mostly one core's work",
  )
  opts = parser.parse_args()
  root = opts.workdir or tempfile.mkdtemp(prefix="kill_trials_")
  os.makedirs(root, exist_ok=True)
  args = _args(os.path.join(root, "tfds"))
  rng = random.Random(opts.seed)
  kills = []  # drawn up front: the same seed kills at the same moments whatever --jobs is
  for i in range(opts.trials):
    # Every other trial at an evaluation step (which is also a checkpoint step).
    step = rng.randrange(EVAL, STEPS, EVAL) if i % 2 == 0 else rng.randint(1, STEPS - 1)
    kills.append((step, rng.uniform(0.0, 0.5)))
  passed = failed = 0
  with concurrent.futures.ThreadPoolExecutor(max(opts.jobs, 1)) as pool:
    reference = pool.submit(run, os.path.join(root, "straight"), args)
    trials = {pool.submit(_trial, root, args, i, kill): i for i, kill in enumerate(kills)}
    for future in concurrent.futures.as_completed(trials):
      i, (step, delay) = trials[future], kills[trials[future]]
      if future.result() is None:
        print(f"trial {i}: the run ended before its kill; not counted", flush=True)
        continue
      ckpts, workdir = future.result()
      reference.result()
      problem = trial_ok(records(os.path.join(root, "straight")), records(workdir))
      passed, failed = passed + (problem is None), failed + (problem is not None)
      print(
        f"trial {i}: killed {delay:.2f} s after step {step} was logged "
        f"(checkpoints then: {ckpts}); "
        f"{'ok' if problem is None else 'FAILED: ' + problem}",
        flush=True,
      )
  print(f"{passed} passed, {failed} failed", flush=True)
  sys.exit(1 if failed else 0)


if __name__ == "__main__":
  main()
