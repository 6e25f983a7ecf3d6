r"""The one evaluation command: declared evaluators on one or more checkpoints, read-only.

  python -m minr_jax.eval_only --workdir=runs/x
  python -m minr_jax.eval_only --workdir=runs/x --workdir=runs/y \
      --evals=reconstruction,robustness [--config=configs/evals/sweep.py] [--step=N]

Each `--workdir` (a workdir or one of its `checkpoints/<step>` directories)
is restored with `api.restore` (parameters only, read-only) and scored by the
evaluators its config declares (`config.evals`, else today's default:
reconstruction and grids, `evaluators.default_evals`), or by those of
`--config` (a file whose get_config() returns a ConfigDict with `evals`; its
fields can be changed as `--config.evals.NAME.FIELD=...`). `--evals` picks
entries by name. A `compare` entry scores every --workdir together. Results:
`results.json` ({step, evals: {name: {key: result}}}), `metrics.jsonl` and PNG
grids in `<workdir>/eval/<step>/` (or `--output`, one subfolder per model with
several workdirs; a read-only workdir's go to ~/.cache/minr_jax/results/...).
`minr_jax.evaluate` and `minr_jax.robustness` run through `run_checkpoint`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections

from minr_jax import api, evaluators, families, metrics, paths
from minr_jax.config import ConfigError


def run_checkpoint(
  r: api.Restored,
  config: ml_collections.ConfigDict,
  evals: ml_collections.ConfigDict,
  out_dir: str,
  *,
  write_metrics: bool = True,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
  """Runs every entry of `evals` (checked first) on restored checkpoint `r` with
  `config`; writes metrics.jsonl and PNG grids to out_dir (metrics.jsonl only with
  write_metrics). Returns ({name: evaluator}, {name: {key: result}})."""
  evaluators.check(config, evals, training=False)
  enabled = write_metrics and jax.process_index() == 0
  with metrics.MetricWriter(out_dir, tensorboard=False, enabled=enabled) as writer:
    ctx = evaluators.EvalContext(
      config=config,
      mesh=r.mesh,
      model=r.model,
      family=r.family,
      params_sharding=r.params_sharding,
      writer=evaluators.ResultsWriter(writer, out_dir, image_subdir=""),
      out_dir=out_dir,
      workdir=r.workdir,
    )
    built = evaluators.build(evals, ctx)
    results = evaluators.run_all(built, evals, r.params, r.step, ctx.writer)
  return built, results


def _load_evals(config: ml_collections.ConfigDict | None, names: str | None, run_config):
  """The entries to run: --config's evals (else the run's declared ones), by --evals."""
  if config is not None:
    if "evals" not in config or not isinstance(config.evals, ml_collections.ConfigDict):
      raise ConfigError("--config must declare config.evals = {name: {type: ..., ...}}")
    evals = config.evals
  else:
    evals = evaluators.declared(run_config)
  return evaluators.select(evals, names)


def evaluate_checkpoints(
  workdirs: Sequence[str],
  evals_config: ml_collections.ConfigDict | None = None,
  names: str | None = None,
  step: int | None = None,
  output: str | None = None,
) -> dict[str, dict[str, Any]]:
  """Runs the declared evaluators on every workdir's checkpoint; returns
  {workdir: {'step', 'evals': {name: {key: result}}}} (and 'compare': rows)."""
  workdirs = [os.fspath(w) for w in workdirs]
  if not workdirs:
    raise ConfigError("give at least one --workdir")
  if output:
    paths.check_reachable(output, "--output")
  # One subfolder of --output per workdir: its base name, numbered if two clash.
  bases = [os.path.basename(w.rstrip("/")) or "run" for w in workdirs]
  folders = [b if bases.count(b) == 1 else f"{i}_{b}" for i, b in enumerate(bases)]
  out: dict[str, dict[str, Any]] = {}
  multi: list[tuple[str, Any, ml_collections.ConfigDict]] = []
  for workdir in workdirs:
    r = api.restore(workdir, step)
    config = r.config
    families.check(config, num_devices=r.mesh.size)
    evals = _load_evals(evals_config, names, config)
    single = ml_collections.ConfigDict()
    for name in evals:
      cls = evaluators.get(evals[name].get("type", ""), f"config.evals.{name}.type")
      if getattr(cls, "MULTI", False):
        if not any(n == name for n, _, _ in multi):
          evaluators.check(config, ml_collections.ConfigDict({name: evals[name]}), training=False)
          multi.append((name, cls, evals[name]))
      else:
        single[name] = evals[name]
    if not len(single):
      continue
    sub = output and os.path.join(output, folders[workdirs.index(workdir)])
    out_dir = paths.results_dir(r.workdir, "eval", r.step, sub if len(workdirs) > 1 else output)
    _, results = run_checkpoint(r, config, single, out_dir)
    out[workdir] = dict(step=r.step, evals=results)
    if jax.process_index() == 0:
      paths.makedirs(paths.as_path(out_dir))
      text = json.dumps(dict(step=r.step, evals=results), indent=2, default=float)
      paths.write_text(paths.as_path(out_dir) / "results.json", text)
      print(f"wrote {out_dir}/results.json", flush=True)
  for name, cls, cfg in multi:
    if len(workdirs) < 2:
      raise ConfigError(f"config.evals.{name} (type compare) needs two or more --workdir")
    where = os.path.join(output, name) if output else name
    out[name] = dict(rows=cls.run_many(workdirs, cfg, where, step))
  return out


if __name__ == "__main__":  # the flags live in minr_jax.commands.eval_only
  from minr_jax.commands import eval_only as _command

  _command.main()
