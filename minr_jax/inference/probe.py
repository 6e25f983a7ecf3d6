r"""Linear probe: multinomial logistic regression on embedding files (`probe`, `run`).

The body of `python -m minr_jax.probe`; how l2 is chosen without the test set:
docs/baselines.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from minr_jax.config import ConfigError
from minr_jax.inference.embed import read_embeddings

DEFAULT_STEPS = 1000
DEFAULT_LR = 0.01
DEFAULT_L2 = 1e-4  # `fit_logistic`'s default; `probe` chooses its l2 from the sweep.
# l2 strengths tried on the validation split, log-spaced.
DEFAULT_L2_SWEEP = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
DEFAULT_VAL_FRACTION = 0.2
DEFAULT_SPLIT_SEED = 0


def standardize(train_x: np.ndarray, test_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Both [N, D] sets scaled by the training mean and std (constant dims: std 1)."""
  mean = train_x.mean(0, dtype=np.float64)
  std = train_x.std(0, dtype=np.float64)
  std = np.where(std < 1e-8, 1.0, std)
  return (((train_x - mean) / std).astype(np.float32), ((test_x - mean) / std).astype(np.float32))


def fit_logistic_sweep(
  x: np.ndarray,
  y: np.ndarray,
  num_classes: int,
  l2s: Sequence[float],
  steps: int = DEFAULT_STEPS,
  lr: float = DEFAULT_LR,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """One probe per l2 in `l2s` [K], fitted side by side (vmapped) on the same data.

  x: float32 [N, D]; y: int [N] in [0, num_classes). Full-batch Adam on
  softmax cross-entropy + l2 ||W||^2 from zeros, one jitted `lax.scan` over
  the steps. Returns ({'w': [K, D, C], 'b': [K, C]}, final losses [K]).
  """
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import optax  # noqa: PLC0415

  tx = optax.adam(lr)

  def loss_fn(params, l2, x, y):
    logits = x @ params["w"] + params["b"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return ce + l2 * jnp.sum(params["w"] ** 2)

  def fit_one(l2, x, y):
    params = {
      "w": jnp.zeros((x.shape[1], num_classes), jnp.float32),
      "b": jnp.zeros((num_classes,), jnp.float32),
    }

    def step(carry, _):
      params, opt_state = carry
      grads = jax.grad(loss_fn)(params, l2, x, y)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
    return params, loss_fn(params, l2, x, y)

  fit = jax.jit(jax.vmap(fit_one, in_axes=(0, None, None)))
  params, losses = fit(jnp.asarray(l2s, jnp.float32), jnp.asarray(x), jnp.asarray(y, jnp.int32))
  return jax.tree.map(np.asarray, params), np.asarray(losses)


def fit_logistic(
  x: np.ndarray,
  y: np.ndarray,
  num_classes: int,
  steps: int = DEFAULT_STEPS,
  lr: float = DEFAULT_LR,
  l2: float = DEFAULT_L2,
) -> tuple[dict[str, np.ndarray], float]:
  """One probe: x float32 [N, D], y int [N] -> ({'w': [D, C], 'b': [C]}, final loss)."""
  params, losses = fit_logistic_sweep(x, y, num_classes, [l2], steps, lr)
  return {name: value[0] for name, value in params.items()}, float(losses[0])


def validation_split(
  labels: np.ndarray, fraction: float = DEFAULT_VAL_FRACTION, seed: int = DEFAULT_SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
  """Stratified split of rows [N] into (fit indices, validation indices), both sorted.

  Each class with n >= 2 rows sends round(fraction * n) of them, at least 1
  and at most n - 1, to validation, picked by a permutation seeded with
  `seed` (classes in sorted order); a single-row class stays in the fit
  part. The two parts are disjoint and cover every row; every class keeps a
  row in the fit part.
  """
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  val = []
  for label in np.unique(labels):
    rows = np.flatnonzero(labels == label)
    if len(rows) < 2:
      continue
    k = min(len(rows) - 1, max(1, int(np.floor(fraction * len(rows) + 0.5))))
    val.append(rng.permutation(rows)[:k])
  val_idx = np.sort(np.concatenate(val)) if val else np.zeros((0,), np.int64)
  fit_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
  return fit_idx, val_idx


def choose_l2(
  x: np.ndarray,
  y: np.ndarray,
  num_classes: int,
  l2_sweep: Sequence[float],
  val_fraction: float = DEFAULT_VAL_FRACTION,
  seed: int = DEFAULT_SPLIT_SEED,
  steps: int = DEFAULT_STEPS,
  lr: float = DEFAULT_LR,
) -> tuple[float, list[dict[str, float]], int]:
  """Picks l2 on a validation split of the (unstandardized) training rows x [N, D], y [N].

  Fits one probe per l2 on the fit part (standardized with its own
  statistics) and scores each on the validation part. Returns (the l2 with
  the best validation accuracy, ties going to the larger l2; [{'l2',
  'val_accuracy'}] per sweep value in the given order; validation rows).
  """
  fit_idx, val_idx = validation_split(y, val_fraction, seed)
  if len(val_idx) == 0:
    raise ConfigError(
      f"too few training embeddings ({len(y)}) to hold out a validation "
      "split for the l2 sweep; pass --l2"
    )
  x_fit, x_val = standardize(x[fit_idx], x[val_idx])
  params, _ = fit_logistic_sweep(x_fit, y[fit_idx], num_classes, l2_sweep, steps, lr)
  logits = np.einsum("nd,kdc->knc", x_val, params["w"]) + params["b"][:, None, :]
  correct = (np.argmax(logits, axis=-1) == y[val_idx]).sum(axis=1)  # [K]
  sweep = [
    {"l2": float(l2), "val_accuracy": float(c / len(val_idx))} for l2, c in zip(l2_sweep, correct)
  ]
  best = max(range(len(l2_sweep)), key=lambda k: (correct[k], l2_sweep[k]))
  return float(l2_sweep[best]), sweep, int(len(val_idx))


def probe(
  train: dict[str, Any],
  test: dict[str, Any],
  steps: int = DEFAULT_STEPS,
  lr: float = DEFAULT_LR,
  l2: float | None = None,
  l2_sweep: Sequence[float] = DEFAULT_L2_SWEEP,
  val_fraction: float = DEFAULT_VAL_FRACTION,
  split_seed: int = DEFAULT_SPLIT_SEED,
  names: tuple[str, str] = ("train", "test"),
) -> dict[str, Any]:
  """Fits on `train` and scores `test` (dicts as `embed.read_embeddings` returns).

  l2 None: chosen by `choose_l2` from `l2_sweep` on a validation split of
  `train`, then the probe is refitted on all of `train`; a number: used as
  is (no sweep). Returns {'accuracy', 'majority_baseline', 'train_accuracy',
  'final_loss', 'num_train', 'num_test', 'num_classes', 'dim',
  'unseen_test_labels', 'steps', 'lr', 'l2' (the value used), 'l2_chosen_by'
  ('validation' or 'given'), 'l2_sweep' ([{'l2', 'val_accuracy'}], empty
  when given), 'num_val', 'val_fraction', 'split_seed', 'kind'}.
  ConfigError: no labels, unlabelled rows, non-finite embeddings, different dims or kinds, fewer
  than 2 classes, bad hyperparameters, no room for a validation split.
  """
  for name, value, least in (("steps", steps, 1), ("split_seed", split_seed, 0)):
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
      raise ConfigError(f"--{name} must be an integer >= {least}, got {value!r}")
  if not lr > 0:
    raise ConfigError(f"--lr must be > 0, got {lr}")
  if l2 is not None and not (l2 >= 0 and math.isfinite(l2)):
    raise ConfigError(f"--l2 must be >= 0, got {l2}")
  l2_sweep = tuple(float(v) for v in l2_sweep)
  if l2 is None and (not l2_sweep or not all(v >= 0 and math.isfinite(v) for v in l2_sweep)):
    raise ConfigError(f"--l2_sweep must be one or more values >= 0, got {list(l2_sweep)}")
  if l2 is None and not 0 < val_fraction < 1:
    raise ConfigError(f"--val_fraction must be in (0, 1), got {val_fraction}")
  for name, d in zip(names, (train, test)):
    if d.get("labels") is None:
      raise ConfigError(f"{name} has no labels (embed a dataset with class labels)")
    unlabelled = int((np.asarray(d["labels"]) < 0).sum())
    if unlabelled:
      raise ConfigError(f"{name}: {unlabelled} of {len(d['labels'])} embeddings have no label (-1)")
    values = np.asarray(d["embeddings"])
    if not np.issubdtype(values.dtype, np.number):
      raise ConfigError(f"{name}: embeddings must be numbers, got {values.dtype}")
    rows = int((~np.isfinite(values.reshape(len(values), -1))).any(axis=1).sum())
    if rows:
      raise ConfigError(
        f"{name}: {rows} of {len(values)} embeddings hold NaN or infinite "
        "values (a diverged model, or images with NaN pixels?)"
      )
  dim_train, dim_test = train["embeddings"].shape[1], test["embeddings"].shape[1]
  if dim_train != dim_test:
    raise ConfigError(
      f"embedding dims differ: {names[0]} has {dim_train}, {names[1]} has {dim_test}"
    )
  kinds = (train.get("kind"), test.get("kind"))
  if None not in kinds and kinds[0] != kinds[1]:
    raise ConfigError(f"embedding kinds differ: {names[0]} is {kinds[0]}, {names[1]} is {kinds[1]}")
  classes, y_train = np.unique(train["labels"], return_inverse=True)
  if len(classes) < 2:
    raise ConfigError(f"{names[0]} holds a single class ({classes[0]}): nothing to probe")
  lookup = {int(c): i for i, c in enumerate(classes)}
  y_test = np.asarray([lookup.get(int(l), -1) for l in test["labels"]], np.int64)
  if l2 is None:
    l2, sweep, num_val = choose_l2(
      np.asarray(train["embeddings"]),
      y_train,
      len(classes),
      l2_sweep,
      val_fraction,
      split_seed,
      steps,
      lr,
    )
    chosen_by = "validation"
  else:
    sweep, num_val, chosen_by = [], 0, "given"
  x_train, x_test = standardize(train["embeddings"], test["embeddings"])
  params, loss = fit_logistic(x_train, y_train, len(classes), steps, lr, l2)
  predict = lambda x: np.argmax(x @ params["w"] + params["b"], axis=1)
  majority = int(np.argmax(np.bincount(y_train, minlength=len(classes))))
  return {
    "accuracy": float(np.mean(predict(x_test) == y_test)),
    "majority_baseline": float(np.mean(y_test == majority)),
    "train_accuracy": float(np.mean(predict(x_train) == y_train)),
    "final_loss": loss,
    "num_train": int(len(y_train)),
    "num_test": int(len(y_test)),
    "num_classes": int(len(classes)),
    "dim": int(dim_train),
    "unseen_test_labels": int((y_test < 0).sum()),
    "steps": steps,
    "lr": lr,
    "l2": float(l2),
    "l2_chosen_by": chosen_by,
    "l2_sweep": sweep,
    "num_val": num_val,
    "val_fraction": val_fraction,
    "split_seed": split_seed,
    "kind": kinds[0] or kinds[1],
  }


def describe_l2(results: dict[str, Any]) -> str:
  """How the probe's l2 was chosen, for the printed line: the value and the sweep's accuracies."""
  if results["l2_chosen_by"] != "validation":
    return f"l2 {results['l2']:g} (given)"
  sweep = ", ".join(f"{r['l2']:g}: {r['val_accuracy']:.3f}" for r in results["l2_sweep"])
  return (
    f"l2 {results['l2']:g} chosen on a {results['num_val']}-image validation split "
    f"of train (validation accuracy per l2: {sweep})"
  )


def run(
  train_path: str,
  test_path: str,
  steps: int = DEFAULT_STEPS,
  lr: float = DEFAULT_LR,
  l2: float | None = None,
  output: str | None = None,
  l2_sweep: Sequence[float] = DEFAULT_L2_SWEEP,
  val_fraction: float = DEFAULT_VAL_FRACTION,
  split_seed: int = DEFAULT_SPLIT_SEED,
) -> dict[str, Any]:
  """The command: read both files, probe, print, write JSON; returns the results."""

  train, test = read_embeddings(train_path), read_embeddings(test_path)
  results = probe(
    train, test, steps, lr, l2, l2_sweep, val_fraction, split_seed, names=(train_path, test_path)
  )
  results.update(train=train_path, test=test_path)
  unseen = (
    f"; {results['unseen_test_labels']} test labels unseen in training"
    if results["unseen_test_labels"]
    else ""
  )
  print(
    f"linear probe: test accuracy {results['accuracy']:.4f}  | majority-class "
    f"baseline {results['majority_baseline']:.4f}  (train accuracy "
    f"{results['train_accuracy']:.4f}; {results['num_train']} train / "
    f"{results['num_test']} test, {results['num_classes']} classes, dim "
    f"{results['dim']}, {steps} Adam steps{unseen}); {describe_l2(results)}",
    flush=True,
  )
  if output:
    with open(output, "w") as f:
      json.dump(results, f, indent=2)
  return results
