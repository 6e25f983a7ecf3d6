"""`reconstruction`: PSNR, SSIM and LPIPS of each dataset beside the classical inpainters.

Yields (dataset label, metric means) under fixed masks; entry fields: docs/evaluators.md.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator

import jax
import ml_collections

from minr_jax import masking, paths, writers
from minr_jax.config import ConfigError
from minr_jax.evaluation import scoring
from minr_jax.evaluation.registry import datasets_of


def mask_config(config: ml_collections.ConfigDict, cfg: ml_collections.ConfigDict):
  """config with the entry's mask settings (mask_strategy, mask_ratio, mask_seed)."""
  if not any(cfg.get(k) is not None for k in ("mask_strategy", "mask_ratio", "mask_seed")):
    return config
  c = ml_collections.ConfigDict(config.to_dict())
  if cfg.get("mask_strategy") is not None:
    c.eval_mask_strategy = cfg.mask_strategy
  if cfg.get("mask_ratio") is not None:
    c.mask_ratio = float(cfg.mask_ratio)
  if cfg.get("mask_seed") is not None:
    c.eval_mask_seed = int(cfg.mask_seed)
  return c


class Reconstruction:
  """Scores under fixed, seeded evaluation masks (`scoring.evaluate`)."""

  # classical (default True = all): also the host-side classical inpainters, computed once
  # per dataset and mask set (scoring.classical_means); False skips them, a comma-separated
  # subset names some (scoring.classical_names).
  FIELDS = ("mask_strategy", "mask_ratio", "mask_seed", "quiet", "classical")

  @staticmethod
  def check(config, cfg, where: str) -> None:
    ratio = cfg.get("mask_ratio")
    if ratio is not None and not (isinstance(ratio, float | int) and 0 <= ratio <= 1):
      raise ConfigError(f"{where}.mask_ratio must be in [0, 1], got {ratio!r}")
    scoring.classical_names(cfg.get("classical", True), f"{where}.classical")
    strategy = cfg.get("mask_strategy")
    if strategy is not None and strategy not in masking.STRATEGIES:
      raise ConfigError(
        f"{where}.mask_strategy={strategy!r}: use one of {', '.join(masking.STRATEGIES)}"
      )

  def __init__(self, name: str, cfg: ml_collections.ConfigDict, ctx):
    self.name, self.cfg, self.ctx = name, cfg, ctx
    self.datasets = datasets_of(ctx.config, cfg, f"config.evals.{name}")
    self.config = mask_config(ctx.config, cfg)
    if self.config is ctx.config:
      self.score_fn = ctx.get_score_fn()
    else:  # a patch-token model compiles per mask ratio (family.for_ratio)
      model = ctx.model
      if ctx.family.patch_masks_only:
        model = ctx.family.for_ratio(ctx.model, self.config.mask_ratio)
      self.score_fn = scoring.make_score_fn(
        model, ctx.family, self.config, ctx.mesh, ctx.params_sharding
      )

  def run(self, params, step: int) -> Iterator[tuple[str, dict[str, float]]]:
    masks_fn = functools.partial(masking.eval_masks, self.config)
    for dataset in self.datasets:
      label = scoring.dataset_label(*dataset)
      means = scoring.evaluate(
        self.score_fn,
        params,
        self.config,
        self.ctx.mesh,
        dataset,
        [masks_fn],
        with_classical=scoring.classical_names(self.cfg.get("classical", True)) or False,
      )[0]
      if jax.process_index() == 0 and not self.cfg.get("quiet", False):
        print(scoring.summary_line(f"eval step {step} [{label}]", means), flush=True)
      yield label, means

  def missing(self, workdir: str, step: int, split: str) -> bool:
    """Whether any dataset's record of `step` is missing from workdir's metrics.jsonl."""
    path = paths.as_path(workdir) / writers.METRICS_FILENAME
    records = writers.read_metrics(os.fspath(path)) if path.exists() else []
    done = {r.get("dataset") for r in records if r["split"] == split and r["step"] == step}
    return bool({scoring.dataset_label(*d) for d in self.datasets} - done)
