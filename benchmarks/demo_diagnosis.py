r"""Instrumented short training runs: does the model learn structure, or collapse to flat colour?

  python benchmarks/demo_diagnosis.py NAME [steps=300] [eval_every=100] [n_eval=48] \
      [variant=demo] [FIELD=VALUE ...]

Trains `configs/transinr.py:<variant>` with the config fields overridden
(e.g. `learning_rate=1e-4`, `warmup_steps=50`, `mask_ratio=0.0`,
`dataset.name=demo`, `model.ff_sigma=16.0`; `steps` sets num_train_steps, so
the rate still drops after lr_decay_at of them) and every `eval_every` steps
scores the first `n_eval` held-out images under the fixed evaluation masks:

  pasted     psnr_pasted of the model (visible pixels pasted back), dB
  spread     the prediction's spatial standard deviation over the images'
             (about 0.5 untrained; near 0 = flat colour, the collapse)
  cpu        process CPU seconds so far (wall time on a shared machine is noise)

beside mean-colour fill and Gaussian interpolation (normalised convolution of
the visible pixels, sigma = patch side / 4, visible pixels kept) on the same
images and masks. One JSON line per evaluation goes to
`runs/diagnosis/NAME.jsonl`. docs/demo.md shows what it measured.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.ndimage import gaussian_filter

from minr_jax import data, families, masking
from minr_jax.config import load_file
from minr_jax.training import loop
from minr_jax.training import steps as steps_lib

TRANSINR = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "transinr.py"
)


def interpolation_fill(images: np.ndarray, masks: np.ndarray, sigma: float) -> np.ndarray:
  """images [B, H, W, 3], masks [B, H, W] (True = hidden) -> hidden pixels interpolated.

  Normalised convolution G*(v x) / G*v of the visible pixels (v = visible),
  Gaussian cut at 4 sigma and at the image border; a hidden pixel with no
  visible one in reach gets the mean visible colour.
  """
  out = images.astype(np.float64).copy()
  for i in range(len(images)):
    vis = (~masks[i]).astype(np.float64)
    weight = gaussian_filter(vis, sigma, mode="constant")
    for c in range(3):
      channel = images[i, :, :, c].astype(np.float64)
      num = gaussian_filter(channel * vis, sigma, mode="constant")
      far = channel[vis > 0].mean() if vis.any() else 0.5
      fill = np.where(weight > 1e-8, num / np.maximum(weight, 1e-8), far)
      out[i, :, :, c] = np.where(masks[i], fill, channel)
  return out


def mean_fill(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
  """Hidden pixels = the image's mean visible colour (0.5 if nothing is visible)."""
  out = images.astype(np.float64).copy()
  for i in range(len(images)):
    visible = ~masks[i]
    out[i][masks[i]] = images[i][visible].mean(0) if visible.any() else 0.5
  return out


def psnr(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
  """[B] whole-image PSNR in dB (peak 1)."""
  mse = np.mean((pred.astype(np.float64) - target) ** 2, axis=(1, 2, 3))
  return -10 * np.log10(np.maximum(mse, 1e-10))


def cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def held_out(config, count: int) -> tuple[np.ndarray, np.ndarray]:
  """The first `count` evaluation images [N, R, R, 3] and their indices [N]."""
  images, indices = [], []
  for batch in data.make_eval_batches(config):
    valid = np.asarray(batch["valid"], bool)
    images.append(np.asarray(batch["image"])[valid])
    indices.append(np.asarray(batch["index"])[valid])
    if sum(len(i) for i in indices) >= count:
      break
  return np.concatenate(images)[:count], np.concatenate(indices)[:count]


def main(argv: list[str]) -> None:
  name, overrides = argv[0], {}
  for arg in argv[1:]:
    key, value = arg.split("=", 1)
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass  # a plain string
    overrides[key] = value
  steps = overrides.pop("steps", 300)
  eval_every = overrides.pop("eval_every", 100)
  n_eval = overrides.pop("n_eval", 48)
  config = load_file(f"{TRANSINR}:{overrides.pop('variant', 'demo')}")
  for key, value in overrides.items():
    parent, _, field = key.rpartition(".")
    node = config
    for part in filter(None, parent.split(".")):
      node = node[part]
    node[field] = value
  config.num_train_steps = steps

  model, tx = loop.build_model(config), loop.make_optimizer(config)
  images, indices = held_out(config, n_eval)
  masks = np.asarray(loop.eval_masks(config, jnp.asarray(indices), jnp.asarray(images)))
  sigma = config.resolution / config.mask_grid / 4
  baselines = dict(
    mean_fill=float(psnr(mean_fill(images, masks), images).mean()),
    interpolation=float(psnr(interpolation_fill(images, masks, sigma), images).mean()),
  )
  inputs = masking.apply_mask(jnp.asarray(images), jnp.asarray(masks))
  predict = jax.jit(lambda p: loop.reconstruct(model, p, inputs))

  params = loop.init_params(model, jax.random.key(config.seed))
  state = steps_lib.TrainState(
    step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params)
  )
  step_fn = jax.jit(
    functools.partial(steps_lib.train_step, model=model, tx=tx, config=config), donate_argnums=(0,)
  )
  batches = data.make_train_iterator(config)
  step_key = jax.random.split(jax.random.key(config.seed))[1]

  os.makedirs("runs/diagnosis", exist_ok=True)
  log = open(f"runs/diagnosis/{name}.jsonl", "w")  # noqa: SIM115
  head = dict(name=name, args=argv[1:], params=families.count_params(params), **baselines)
  log.write(json.dumps(head) + "\n")
  print(json.dumps(head), flush=True)
  t0, c0, losses = time.time(), cpu_seconds(), []

  def record(step: int) -> None:
    pred = np.asarray(predict(state.params))
    pasted = np.where(masks[..., None], pred, images)
    row = dict(
      step=step,
      loss=float(np.mean(losses[-eval_every:])) if losses else None,
      pasted=float(psnr(pasted, images).mean()),
      spread=float(pred.std(axis=(1, 2)).mean() / images.std(axis=(1, 2)).mean()),
      wall=round(time.time() - t0, 1),
      cpu=round(cpu_seconds() - c0, 1),
    )
    log.write(json.dumps(row) + "\n")
    log.flush()
    print(name, json.dumps(row), flush=True)

  record(0)
  for step in range(1, steps + 1):
    batch = {"image": jnp.asarray(next(batches)["image"])}
    state, metrics = step_fn(state, batch, step_key)
    losses.append(float(metrics["loss"]))
    if step % eval_every == 0 or step == steps:
      record(step)


if __name__ == "__main__":
  main(sys.argv[1:])
