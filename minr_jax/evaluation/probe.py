"""`probe`: a linear probe (`inference.probe`) on embeddings of a labelled dataset.

Yields accuracy, majority_baseline and train_accuracy; entry fields: docs/evaluators.md.
"""

from __future__ import annotations

from collections.abc import Iterator

import ml_collections

from minr_jax.config import ConfigError
from minr_jax.inference import embed, probe
from minr_jax.inference import model as model_lib

RESULTS = ("accuracy", "majority_baseline", "train_accuracy")


class Probe:
  """Embeds both splits with the current parameters (`embed.embed_dataset`), then
  `probe.probe` fits on the first and scores the second."""

  FIELDS = ("kind", "train_split", "test_split", "max_images", "steps", "l2")

  @staticmethod
  def check(config, cfg, where: str) -> None:
    spec = cfg.get("datasets") or ""
    if "," in spec:
      raise ConfigError(f"{where}.datasets must name one labelled dataset, got {spec!r}")

  def __init__(self, name: str, cfg: ml_collections.ConfigDict, ctx):
    self.name, self.cfg, self.ctx = name, cfg, ctx
    self.dataset = cfg.get("datasets") or (
      ctx.config.dataset.name
      + (f":{ctx.config.dataset.path}" if ctx.config.dataset.get("path") else "")
    )
    self.results: dict = {}

  def run(self, params, step: int) -> Iterator[tuple[str, float]]:

    c, ctx = self.cfg, self.ctx
    model = model_lib.Model(
      config=ctx.config,
      family=ctx.family,
      model=ctx.model,
      params=params,
      step=step,
      mesh=ctx.mesh,
      workdir=ctx.workdir or None,
    )
    splits = (c.get("train_split") or "train", c.get("test_split") or "eval")
    found = [
      embed.embed_dataset(
        model,
        self.dataset,
        split,
        c.get("kind") or "data_mean",
        max_images=c.get("max_images"),
        progress=False,
      )
      for split in splits
    ]
    self.results = probe.probe(
      found[0],
      found[1],
      steps=c.get("steps") or probe.DEFAULT_STEPS,
      l2=c.get("l2"),
      names=splits,
    )
    print(
      f"probe step {step} [{self.dataset}]: test accuracy {self.results['accuracy']:.4f}  | "
      f"majority-class baseline {self.results['majority_baseline']:.4f}",
      flush=True,
    )
    for key in RESULTS:
      yield key, float(self.results[key])
