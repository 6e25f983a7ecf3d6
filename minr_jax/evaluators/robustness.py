"""`robustness`: the mask sweep of `minr_jax.robustness` (strategies x ratios).

Entry fields: datasets (default the run's evaluation datasets), strategies
('random,block,...'; default every one the model supports), ratios
('0.25,0.5,...'; default robustness.DEFAULT_RATIOS). Yields one record per
(dataset, strategy, ratio), keyed '<dataset>/<strategy>/<ratio>'.
"""

from __future__ import annotations

from collections.abc import Iterator

import ml_collections

from minr_jax import robustness
from minr_jax.evaluators import datasets_of


class Robustness:
  """`robustness.sweep` on the entry's datasets, strategies and ratios."""

  FIELDS = ("strategies", "ratios")

  @staticmethod
  def check(config, cfg, where: str) -> None:
    robustness.parse_ratios(cfg.get("ratios"))
    if cfg.get("strategies"):
      robustness.check_supported(config, robustness.parse_strategies(cfg.strategies))

  def __init__(self, name: str, cfg: ml_collections.ConfigDict, ctx):
    self.name, self.cfg, self.ctx = name, cfg, ctx
    self.datasets = datasets_of(ctx.config, cfg, f"config.evals.{name}")
    spec = cfg.get("strategies")
    supported = robustness.supported_strategies(ctx.config)
    self.strategies = robustness.parse_strategies(spec) if spec else list(supported)
    self.ratios = robustness.parse_ratios(cfg.get("ratios"))
    self.rows: list[dict] = []

  def run(self, params, step: int) -> Iterator[tuple[str, dict]]:
    self.rows = robustness.sweep(
      self.ctx, params, self.ctx.config, self.datasets, self.strategies, self.ratios, step
    )
    for row in self.rows:
      yield f"{row['dataset']}/{row['strategy']}/{row['ratio']:g}", row
