r"""Linear probe: multinomial logistic regression on embedding files.

  python -m minr_jax.probe --train=train.npz --test=test.npz \
      [--steps=1000] [--lr=0.01] [--l2=1e-4] [--output=probe.json]

Reads two files written by `python -m minr_jax.embed` (.npz or
.array_record; both need labels), standardizes every dimension with the
training set's mean and standard deviation, and fits W [D, C], b [C] by
full-batch Adam (optax) on the mean cross-entropy plus l2 * ||W||^2, from
zeros (the problem is convex, so the result does not depend on a seed).
Prints the test accuracy beside the majority-class baseline (always predict
the most frequent training class), and writes them as JSON with `--output`.
Classes are the training set's labels; a test image whose label never occurs
in training counts as an error (and is reported).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

from minr_jax.config import ConfigError

DEFAULT_STEPS = 1000
DEFAULT_LR = 0.01
DEFAULT_L2 = 1e-4


def standardize(train_x: np.ndarray, test_x: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
  """Both [N, D] sets scaled by the training mean and std (constant dims: std 1)."""
  mean = train_x.mean(0, dtype=np.float64)
  std = train_x.std(0, dtype=np.float64)
  std = np.where(std < 1e-8, 1.0, std)
  return (((train_x - mean) / std).astype(np.float32),
          ((test_x - mean) / std).astype(np.float32))


def fit_logistic(x: np.ndarray, y: np.ndarray, num_classes: int,
                 steps: int = DEFAULT_STEPS, lr: float = DEFAULT_LR,
                 l2: float = DEFAULT_L2) -> tuple[dict[str, np.ndarray], float]:
  """Full-batch Adam on softmax cross-entropy + l2 ||W||^2.

  x: float32 [N, D]; y: int [N] in [0, num_classes). Returns ({'w': [D, C],
  'b': [C]}, final loss). One jitted `lax.scan` over the steps.
  """
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import optax  # noqa: PLC0415

  tx = optax.adam(lr)

  def loss_fn(params, x, y):
    logits = x @ params["w"] + params["b"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return ce + l2 * jnp.sum(params["w"] ** 2)

  @jax.jit
  def fit(x, y):
    params = {"w": jnp.zeros((x.shape[1], num_classes), jnp.float32),
              "b": jnp.zeros((num_classes,), jnp.float32)}

    def step(carry, _):
      params, opt_state = carry
      loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss

    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
    return params, loss_fn(params, x, y)

  params, loss = fit(jnp.asarray(x), jnp.asarray(y, jnp.int32))
  return jax.tree.map(np.asarray, params), float(loss)


def probe(train: dict[str, Any], test: dict[str, Any], steps: int = DEFAULT_STEPS,
          lr: float = DEFAULT_LR, l2: float = DEFAULT_L2,
          names: tuple[str, str] = ("train", "test")) -> dict[str, Any]:
  """Fits on `train` and scores `test` (dicts as `embed.read_embeddings` returns).

  Returns {'accuracy', 'majority_baseline', 'train_accuracy', 'final_loss',
  'num_train', 'num_test', 'num_classes', 'dim', 'unseen_test_labels',
  'steps', 'lr', 'l2', 'kind'}. ConfigError: no labels, unlabelled rows,
  different dims or kinds, fewer than 2 classes, bad hyperparameters.
  """
  for name, value in (("steps", steps),):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ConfigError(f"--{name} must be a positive integer, got {value!r}")
  if not lr > 0:
    raise ConfigError(f"--lr must be > 0, got {lr}")
  if not l2 >= 0:
    raise ConfigError(f"--l2 must be >= 0, got {l2}")
  for name, d in zip(names, (train, test)):
    if d.get("labels") is None:
      raise ConfigError(f"{name} has no labels (embed a dataset with class labels)")
    unlabelled = int((np.asarray(d["labels"]) < 0).sum())
    if unlabelled:
      raise ConfigError(f"{name}: {unlabelled} of {len(d['labels'])} embeddings have "
                        "no label (-1)")
  dim_train, dim_test = train["embeddings"].shape[1], test["embeddings"].shape[1]
  if dim_train != dim_test:
    raise ConfigError(f"embedding dims differ: {names[0]} has {dim_train}, "
                      f"{names[1]} has {dim_test}")
  kinds = (train.get("kind"), test.get("kind"))
  if None not in kinds and kinds[0] != kinds[1]:
    raise ConfigError(f"embedding kinds differ: {names[0]} is {kinds[0]}, "
                      f"{names[1]} is {kinds[1]}")
  classes, y_train = np.unique(train["labels"], return_inverse=True)
  if len(classes) < 2:
    raise ConfigError(f"{names[0]} holds a single class ({classes[0]}): nothing to probe")
  lookup = {int(c): i for i, c in enumerate(classes)}
  y_test = np.asarray([lookup.get(int(l), -1) for l in test["labels"]], np.int64)
  x_train, x_test = standardize(train["embeddings"], test["embeddings"])
  params, loss = fit_logistic(x_train, y_train, len(classes), steps, lr, l2)
  predict = lambda x: np.argmax(x @ params["w"] + params["b"], axis=1)
  majority = int(np.argmax(np.bincount(y_train, minlength=len(classes))))
  return {"accuracy": float(np.mean(predict(x_test) == y_test)),
          "majority_baseline": float(np.mean(y_test == majority)),
          "train_accuracy": float(np.mean(predict(x_train) == y_train)),
          "final_loss": loss, "num_train": int(len(y_train)),
          "num_test": int(len(y_test)), "num_classes": int(len(classes)),
          "dim": int(dim_train), "unseen_test_labels": int((y_test < 0).sum()),
          "steps": steps, "lr": lr, "l2": l2, "kind": kinds[0] or kinds[1]}


def run(train_path: str, test_path: str, steps: int = DEFAULT_STEPS,
        lr: float = DEFAULT_LR, l2: float = DEFAULT_L2,
        output: str | None = None) -> dict[str, Any]:
  """The command: read both files, probe, print, write JSON; returns the results."""
  from minr_jax.embed import read_embeddings  # noqa: PLC0415
  train, test = read_embeddings(train_path), read_embeddings(test_path)
  results = probe(train, test, steps, lr, l2, names=(train_path, test_path))
  results.update(train=train_path, test=test_path)
  unseen = (f"; {results['unseen_test_labels']} test labels unseen in training"
            if results["unseen_test_labels"] else "")
  print(f"linear probe: test accuracy {results['accuracy']:.4f}  | majority-class "
        f"baseline {results['majority_baseline']:.4f}  (train accuracy "
        f"{results['train_accuracy']:.4f}; {results['num_train']} train / "
        f"{results['num_test']} test, {results['num_classes']} classes, dim "
        f"{results['dim']}, {steps} Adam steps{unseen})", flush=True)
  if output:
    with open(output, "w") as f:
      json.dump(results, f, indent=2)
  return results


def main(argv: list[str]) -> None:
  from absl import app, flags  # noqa: PLC0415
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  try:
    run(f.train, f.test, f.steps, f.lr, f.l2, f.output)
  except ConfigError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  from absl import app, flags

  # Flags are defined only for the command line: importing defines none.
  flags.DEFINE_string("train", None, "Embeddings to fit on (.npz or .array_record).",
                      required=True)
  flags.DEFINE_string("test", None, "Embeddings to score.", required=True)
  flags.DEFINE_integer("steps", DEFAULT_STEPS, "Full-batch Adam steps.")
  flags.DEFINE_float("lr", DEFAULT_LR, "Adam learning rate.")
  flags.DEFINE_float("l2", DEFAULT_L2, "Weight of l2 * ||W||^2.")
  flags.DEFINE_string("output", None, "Write the results as JSON here.")
  app.run(main)
