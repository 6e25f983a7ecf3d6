"""`compare`: several checkpoints under the same masks (`minr_jax.compare`).

The one evaluator that scores checkpoints together: the evaluation command
runs it once over every --workdir (`run_many`) instead of once per checkpoint.
Entry fields: datasets (default the first run's evaluation datasets),
mask_ratio, mask_seed, max_images, num_images (figure rows, default 6),
figure ('pasted' or 'pred'), note. Writes compare.{csv,md,json} and the
figures to `<output>/compare` (`compare.write_report`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ml_collections

from minr_jax import compare
from minr_jax.config import ConfigError


class Compare:
  """`compare.compare_workdirs` over the checkpoints of one evaluation command."""

  FIELDS = ("mask_ratio", "mask_seed", "max_images", "num_images", "figure", "note")
  MULTI = True

  def __init__(self, name: str, cfg: ml_collections.ConfigDict, ctx):
    self.name, self.cfg, self.ctx = name, cfg, ctx

  def run(self, params, step: int):
    del params, step
    raise ConfigError(
      f"config.evals.{self.name} (type compare) compares checkpoints: give the evaluation "
      "command two or more --workdir"
    )

  @staticmethod
  def run_many(
    workdirs: Sequence[str], cfg: ml_collections.ConfigDict, out_dir: str, step: int | None
  ) -> list[dict[str, Any]]:
    """Rows (one per dataset x model) as compare.csv holds them."""
    return compare.compare_workdirs(
      workdirs,
      cfg.get("datasets") or None,
      out_dir,
      max_images=cfg.get("max_images"),
      mask_ratio=cfg.get("mask_ratio"),
      seed=cfg.get("mask_seed"),
      num_images=cfg.get("num_images") or 6,
      figure=cfg.get("figure") or "pasted",
      note=cfg.get("note") or "",
      step=step,
    )
