"""`grids`: PNG grids (masked input, prediction, pasted, ground truth) per dataset.

Writes `<out>/images/eval_<step>_<label>.png` (and TensorBoard images); entry fields:
docs/evaluators.md.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import ml_collections

from minr_jax import masking, paths
from minr_jax.config import ConfigError
from minr_jax.evaluation import scoring
from minr_jax.evaluation.reconstruction import Reconstruction, mask_config
from minr_jax.evaluation.registry import datasets_of


class Grids:
  """`scoring.grid_images` of the first evaluation images of each dataset."""

  FIELDS = ("num_images", "write_png") + Reconstruction.FIELDS

  @staticmethod
  def check(config, cfg, where: str) -> None:
    n = cfg.get("num_images")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
      raise ConfigError(f"{where}.num_images must be an integer >= 0, got {n!r}")
    Reconstruction.check(config, cfg, where)

  def __init__(self, name: str, cfg: ml_collections.ConfigDict, ctx):
    self.name, self.cfg, self.ctx = name, cfg, ctx
    self.datasets = datasets_of(ctx.config, cfg, f"config.evals.{name}")
    num = cfg.get("num_images")
    self.num_images = ctx.config.get("num_grid_images", 0) if num is None else num
    self.write_png = cfg.get("write_png", True)
    self.columns: dict[str, list] = {}  # the last run's columns per dataset label
    self.config = mask_config(ctx.config, cfg)
    if self.config is ctx.config:
      self.grid_fn = ctx.get_grid_fn() if self.num_images else None
    else:
      model = ctx.model
      if ctx.family.patch_masks_only:
        model = ctx.family.for_ratio(ctx.model, self.config.mask_ratio)
      self.grid_fn = scoring.make_grid_fn(
        model, ctx.family, self.config, ctx.mesh, ctx.params_sharding
      )

  def run(self, params, step: int) -> Iterator[tuple[str, float]]:
    if not self.num_images:
      return
    masks_fn = functools.partial(masking.eval_masks, self.config)
    for dataset in self.datasets:
      columns = scoring.grid_images(
        self.grid_fn, params, self.config, self.ctx.mesh, dataset, self.num_images, masks_fn
      )
      label = scoring.dataset_label(*dataset)
      self.columns[label] = columns
      if self.write_png:
        self.ctx.writer.save_grid(
          step, label, columns, scoring.GRID_TITLES, max_rows=self.num_images
        )
    yield from ()

  def missing(self, workdir: str, step: int, split: str) -> bool:
    """Whether any dataset's PNG grid of `step` is missing."""
    del split
    if not self.num_images:
      return False
    return not all(
      (
        paths.as_path(self.ctx.writer.image_dir)
        / f"eval_{step:07d}_{scoring.safe_label(scoring.dataset_label(*d))}.png"
      ).exists()
      for d in self.datasets
    )
