r"""Declared evaluators for `python -m minr_jax.evaluate --config=configs/evals/sweep.py`.

Today's scores and grids, the same scores under exact-count masks, and the
robustness sweep at four ratios (docs/evaluators.md):

  python -m minr_jax.evaluate --workdir=runs/demo --config=configs/evals/sweep.py \
      [--evals=reconstruction,sweep] [--config.evals.sweep.ratios=0.5,0.9]
"""

from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """config.evals only; every_steps is for training (a command runs every entry once)."""
  del arg
  return ml_collections.ConfigDict(
    dict(
      evals=dict(
        reconstruction=dict(type="reconstruction", split="eval"),
        grids=dict(type="grids", num_images=8),
        exact=dict(type="reconstruction", mask_strategy="random_exact"),
        sweep=dict(
          type="robustness", strategies="random,random_exact,block", ratios="0.25,0.5,0.75,0.9"
        ),
      )
    )
  )
