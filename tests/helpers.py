"""Test helpers: tiny configs and generated image folders (no network, no ../shared)."""

from __future__ import annotations

import os
import subprocess

import numpy as np
from PIL import Image

from configs import transinr as transinr_config


def smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """A uint8 [H, W, 3] image of low-frequency colour gradients and a blob."""
  y, x = np.mgrid[0:height, 0:width] / max(height, width)
  img = np.zeros((height, width, 3))
  for c in range(3):
    a, b, p = rng.uniform(-3, 3, 3)
    img[..., c] = 0.5 + 0.35 * np.sin(a * x + b * y + p)
  cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.3)
  blob = ((y - cy) ** 2 + (x - cx) ** 2) < r**2
  img[blob] = rng.uniform(0, 1, 3)
  return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def make_image_folder(
  root: str, num_train: int = 12, num_val: int = 4, size: int = 24, seed: int = 0
) -> str:
  """`root/train/*.png` and `root/val/*.jpg` of smooth generated images."""
  rng = np.random.default_rng(seed)
  for split, n, ext in (("train", num_train, "png"), ("val", num_val, "jpg")):
    os.makedirs(os.path.join(root, split), exist_ok=True)
    for i in range(n):
      Image.fromarray(smooth_image(rng, size, size + 4)).save(
        os.path.join(root, split, f"img_{i:03d}.{ext}")
      )
  return root


def tiny_config(data_dir: str, folder: str | None = None, **overrides):
  """configs/transinr.py:tiny on a generated folder (or the demo photos)."""
  config = transinr_config.get_config("tiny")
  config.dataset.data_dir = data_dir
  if folder is not None:
    config.dataset.name = "image_folder"
    config.dataset.path = folder
  config.batch_size = 8
  config.eval_batch_size = 8
  for field, value in overrides.items():
    parent, _, name = field.replace("__", ".").rpartition(".")
    (config[parent] if parent else config)[name] = value
  return config


def run_at_once(commands: list[list[str]], timeout: float = 600, **popen) -> list:
  """Runs the commands as subprocesses at the same time; their CompletedProcess, in order.

  A command-line start is mostly one core's work (imports, parsing, compiling),
  so commands that need no watching while they run (a command's one-line-error
  cases, the processes of a two-process run) go side by side, not in turn.
  """
  procs = [
    subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    for cmd in commands
  ]
  done = []
  try:
    for cmd, proc in zip(commands, procs):
      out, err = proc.communicate(timeout=timeout)
      done.append(subprocess.CompletedProcess(cmd, proc.returncode, out, err))
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  return done


def folder_bytes(path: str) -> int:
  """Total size of the files below `path`."""
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def mean_psnr(x, target) -> float:
  """PSNR of each image of a batch against its target, averaged (dB)."""
  import jax.numpy as jnp  # noqa: PLC0415

  from minr_jax import metrics  # noqa: PLC0415

  return float(jnp.mean(metrics.psnr_from_mse(metrics.per_image_mse(x, target))))


def check_shipped(
  path: str, model, family: str, num_params: int, step: int, config: str | None = None
) -> None:
  """A shipped pretrained folder: at most 20 MB, the expected model and step, float32
  parameters only, and a checkpoint whose manifest verifies; with `config` (a
  config file spec), its stored config.json carries every field that config has."""
  import json  # noqa: PLC0415

  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  from minr_jax import checkpoint  # noqa: PLC0415
  from minr_jax import config as config_lib  # noqa: PLC0415

  size = folder_bytes(path)
  assert size <= 20 * 2**20, size
  assert (model.family, model.num_params, model.step) == (family, num_params, step)
  assert {x.dtype for x in jax.tree.leaves(model.params)} == {jnp.dtype("float32")}
  manager = checkpoint.open_read_only(path)
  try:
    assert checkpoint.verify(manager, step) is None
  finally:
    manager.close()
  if config is not None:
    with open(os.path.join(path, "config.json")) as f:
      stored = json.load(f)
    current = json.loads(config_lib.load_file(config).to_json())
    assert sorted(set(current) - set(stored)) == []
