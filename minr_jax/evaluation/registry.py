"""Evaluators: one interface for what training and every evaluation command score.

`config.evals` entries are built as `get(type)(name, cfg, ctx)`; a config without `evals` gets
`default_evals(config)`. The interface and how to add one: docs/evaluators.md.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import ml_collections

from minr_jax import writers
from minr_jax.config import ConfigError
from minr_jax.evaluation import scoring

Result = tuple[str, "float | dict[str, Any]"]

# type -> "module:Class" (imported on first use, so a config can name any of them
# without importing jax) or a class registered at run time.
REGISTRY: dict[str, Any] = {
  "reconstruction": "minr_jax.evaluation.reconstruction:Reconstruction",
  "grids": "minr_jax.evaluation.grids:Grids",
  "robustness": "minr_jax.evaluation.robustness:Robustness",
  "probe": "minr_jax.evaluation.probe:Probe",
}
# Fields every entry may have; an evaluator class lists its own in `FIELDS`.
COMMON_FIELDS = ("type", "every_steps", "split", "datasets")


class Evaluator(Protocol):
  """What every evaluator is: built once per run, run at each scheduled step."""

  def __init__(self, name: str, cfg: ml_collections.ConfigDict, ctx: EvalContext): ...

  def run(self, params: Any, step: int) -> Iterator[Result]: ...


@dataclasses.dataclass
class EvalContext:
  """What an evaluator is built from: the run and its compiled functions.

  score_fn / grid_fn are `scoring.make_score_fn` / `make_grid_fn` of this
  model (the training loop passes its own `Steps.eval_step` / `grid_step`);
  `writer` is the one ResultsWriter every evaluator writes through; `out_dir`
  is where files (PNG grids, tables) go: the workdir in training.
  """

  config: ml_collections.ConfigDict
  mesh: Any
  model: Any
  family: Any
  params_sharding: Any
  writer: ResultsWriter
  out_dir: str
  score_fn: Callable | None = None
  grid_fn: Callable | None = None
  workdir: str = ""

  def get_score_fn(self) -> Callable:
    if self.score_fn is None:
      self.score_fn = scoring.make_score_fn(
        self.model, self.family, self.config, self.mesh, self.params_sharding
      )
    return self.score_fn

  def get_grid_fn(self) -> Callable:
    if self.grid_fn is None:
      self.grid_fn = scoring.make_grid_fn(
        self.model, self.family, self.config, self.mesh, self.params_sharding
      )
    return self.grid_fn


class ResultsWriter:
  """The one writer of every evaluator: metrics.jsonl / TensorBoard through a
  `writers.MetricWriter`, PNG grids under `<out_dir>/<image_subdir>`, result tables
  (`scoring.write_results`). Only process 0 writes files."""

  def __init__(self, metric_writer, out_dir: str, image_subdir: str = "images"):
    import jax  # noqa: PLC0415

    self.metrics = metric_writer
    self.out_dir = os.fspath(out_dir)
    self.image_dir = os.path.join(self.out_dir, image_subdir) if image_subdir else self.out_dir
    self.is_main = jax.process_index() == 0

  def write(self, step: int, split: str, key: str, value: float | dict[str, Any]) -> None:
    """A dict is one record {step, split, dataset=key, **value}; a float {key: value}."""
    if isinstance(value, dict):
      scalars = {k: v for k, v in value.items() if isinstance(v, int | float)}
      self.metrics.write(step, split, scalars, dataset=key)
    else:
      self.metrics.write(step, split, {key: value})

  def save_grid(self, step: int, label: str, columns, titles, max_rows: int) -> str | None:
    """`<image_dir>/eval_<step>_<label>.png`, shown in TensorBoard as eval/<label>."""
    if not (self.is_main and columns):
      return None
    path = os.path.join(self.image_dir, f"eval_{step:07d}_{scoring.safe_label(label)}.png")
    writers.save_image_grid(path, columns, list(titles), max_rows=max_rows)
    self.metrics.write_images(step, f"eval/{label}", path)
    return path

  def write_table(self, out_dir: str, rows, columns, header, meta, stem: str = "results") -> None:
    if self.is_main:
      scoring.write_results(out_dir, rows, columns, header, meta, stem)

  def flush(self) -> None:
    self.metrics.flush()


def register(type_: str, cls: Any) -> None:
  """Makes `type_` name `cls` in config.evals (e.g. an evaluator defined elsewhere)."""
  REGISTRY[type_] = cls


def get(type_: str, where: str = "type") -> Any:
  """The evaluator class registered as `type_`; ConfigError naming `where` if none is."""
  if type_ not in REGISTRY:
    if type_ == "compare":  # was an evaluator type; now a command of its own
      raise ConfigError(
        f"{where}='compare' is not an evaluator: several checkpoints are compared by "
        "the command python -m minr_jax.compare WORKDIR WORKDIR ..."
      )
    raise ConfigError(f"{where}={type_!r} is not an evaluator; use one of {', '.join(REGISTRY)}")
  cls = REGISTRY[type_]
  if isinstance(cls, str):
    module, _, name = cls.partition(":")
    cls = REGISTRY[type_] = getattr(importlib.import_module(module), name)
  return cls


def default_evals(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Today's evaluation as declared evals: reconstruction (scores beside both
  baselines) on the run's datasets (training dataset + config.eval_datasets) every
  config.eval_every_steps, and PNG grids of config.num_grid_images images."""
  every = config.eval_every_steps
  evals = {"reconstruction": dict(type="reconstruction", every_steps=every, split="eval")}
  if config.get("num_grid_images", 0):
    evals["grids"] = dict(type="grids", every_steps=every, num_images=config.num_grid_images)
  return ml_collections.ConfigDict(evals)


def declared(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config.evals if the config declares any, else `default_evals(config)`."""
  evals = config.get("evals")
  if evals is None or not len(evals):
    return default_evals(config)
  return evals


def select(evals: ml_collections.ConfigDict, names: str | None) -> ml_collections.ConfigDict:
  """The entries named in `names` (comma-separated; None = all); ConfigError naming
  --evals for an unknown one."""
  if not names:
    return evals
  wanted = [n.strip() for n in names.split(",") if n.strip()]
  unknown = [n for n in wanted if n not in evals]
  if unknown:
    raise ConfigError(
      f"--evals={names}: no evaluator named {', '.join(unknown)}; declared: {', '.join(evals)}"
    )
  return ml_collections.ConfigDict({n: evals[n].to_dict() for n in wanted})


def check(
  config: ml_collections.ConfigDict,
  evals: ml_collections.ConfigDict,
  *,
  training: bool = True,
  workdir: str | None = None,
) -> dict[str, list]:
  """Checks every entry before anything compiles; returns {name: its datasets}.

  ConfigError (one line naming the field, e.g. config.evals.foo.type) for an
  entry that is not a dict, an unknown type, an unknown field, a missing or bad
  every_steps (training only) or a dataset that does not exist.
  """
  out = {}
  for name in evals:
    cfg, where = evals[name], f"config.evals.{name}"
    if not isinstance(cfg, ml_collections.ConfigDict):
      raise ConfigError(f"{where} must be a dict with a type, got {cfg!r}")
    if "type" not in cfg:
      raise ConfigError(f"{where}.type is missing; use one of {', '.join(REGISTRY)}")
    cls = get(cfg.type, f"{where}.type")
    allowed = COMMON_FIELDS + tuple(getattr(cls, "FIELDS", ()))
    for field in cfg:
      if field not in allowed:
        raise ConfigError(f"{where}.{field} is not a field of a {cfg.type} evaluator")
    every = cfg.get("every_steps")
    if training and every is None:
      raise ConfigError(f"{where}.every_steps is missing (steps between evaluations)")
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
      raise ConfigError(f"{where}.every_steps must be an integer >= 1, got {every!r}")
    entries = datasets_of(config, cfg, where)
    # An entry without datasets reads the run's: errors name the field that listed them.
    origin = f"{where}.datasets" if (cfg.get("datasets") or "").strip() else "config.eval_datasets"
    scoring.check_datasets(config, entries, origin, workdir=workdir)
    out[name] = entries
    if hasattr(cls, "check"):
      cls.check(config, cfg, where)
  return out


def datasets_of(config: ml_collections.ConfigDict, cfg: ml_collections.ConfigDict, where: str):
  """An entry's datasets: its `datasets` ('name[:path],...'), else the run's
  evaluation datasets (training dataset + config.eval_datasets)."""
  spec = cfg.get("datasets") or ""
  if spec.strip():
    return scoring.parse_datasets(spec, f"{where}.datasets")
  return scoring.eval_datasets(config)


def build(evals: ml_collections.ConfigDict, ctx: EvalContext) -> dict[str, Any]:
  """{name: evaluator} of every declared entry (checked by `check` first)."""
  return {name: get(evals[name].type)(name, evals[name], ctx) for name in evals}


def due(cfg: ml_collections.ConfigDict, step: int, final_step: int) -> bool:
  """Whether an entry runs at `step`: on its every_steps cadence, and at the final step."""
  every = cfg.get("every_steps")
  return step == final_step or (every is not None and step % every == 0)


def run_all(
  built: dict[str, Any],
  evals: ml_collections.ConfigDict,
  params: Any,
  step: int,
  writer: ResultsWriter,
  final_step: int | None = None,
) -> dict[str, dict[str, Any]]:
  """Runs each evaluator due at `step` (all of them if final_step is None), writing
  every result through `writer`; returns {name: {key: result}}."""
  results: dict[str, dict[str, Any]] = {}
  for name, evaluator in built.items():
    cfg = evals[name]
    if final_step is not None and not due(cfg, step, final_step):
      continue
    split = cfg.get("split") or name
    results[name] = {}
    for key, value in evaluator.run(params, step):
      writer.write(step, split, key, value)
      results[name][key] = value
  return results


def missing(
  built: dict[str, Any], evals: ml_collections.ConfigDict, workdir: str, step: int, final_step: int
) -> bool:
  """Whether an evaluator due at `step` left its results unwritten (a run killed
  between a save and the end of that evaluation); asks each evaluator with a
  `missing(workdir, step, split)` method."""
  for name, evaluator in built.items():
    cfg = evals[name]
    if due(cfg, step, final_step) and hasattr(evaluator, "missing"):
      if evaluator.missing(workdir, step, cfg.get("split") or name):
        return True
  return False
