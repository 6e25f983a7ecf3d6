r"""Out-of-domain study: TransINR-MINR, GINR-MINR and MAE at equal training compute.

Trains every (model, training set, seed) run it still lacks, resumes the ones
an earlier piece left unfinished, and writes the tables and the figure of
docs/ood.md from the runs' own evaluation records:

  python benchmarks/ood_study.py --workdir=runs/ood \
      --train=faces:/path/to/celeba/train,photos:/path/to/imagenette96/train \
      --eval=faces:/path/to/celeba,objects:/path/to/imagenette,scenes:/path/to/scenes \
      --budget_steps=3000 --seeds=0,1 --max_minutes=55

Each model is its family's 64-px `:demo` model (0.86-0.94 M parameters, 8x8
mask grid, 75% masking). Training folders are used whole
(`dataset.eval_fraction=0`); every run is scored on the evaluation folders
(their val/ splits) under the same fixed exact-count masks (48 of 64 patches
hidden, seed 2023), so every model sees identical masked inputs.

Equal compute: TransINR-MINR trains `--budget_steps` steps; every other model
trains for as many steps as give the same total of XLA's FLOP count per
training step (`minr_jax.bench.train_step_flops`), rounded to a multiple of
the evaluation unit u = budget_steps / num_evals. Every run is evaluated every
u steps (thinned to at most 2 x num_evals points, always including step
budget_steps), so the curves give both equal compute and equal images seen.

`--max_minutes` bounds one piece: when it runs out, the run in progress gets
SIGTERM, saves its step and the study stops; the same command continues it.
Results go to `<workdir>/study/`: ood.md (tables), ood.json (every curve,
FLOP counts, wall times, machine) and ood.png (psnr_pasted minus Gaussian
interpolation against training compute, one panel per training set and
evaluation domain, one line per model, the band spanning the seeds).
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import matplotlib
import ml_collections
import numpy as np
from absl import app, flags

from minr_jax.config import load_file
from minr_jax.training import bench, loop

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
MODELS = ("transinr", "ginr", "mae")
NAMES = {"transinr": "TransINR-MINR", "ginr": "GINR-MINR", "mae": "MAE"}
REFERENCE = "transinr"  # the model whose step count sets the budget
METRICS = ("psnr_pasted", "psnr_masked", "psnr_full_interpolation", "psnr_full_mean_fill")
# Recorded by the reconstruction evaluator since it scores the classical inpainters and
# SSIM / LPIPS (docs/metrics.md); absent from older runs, so optional in the tables.
EXTRA = (
  "psnr_best_classical",
  "ssim_pasted",
  "ssim_best_classical",
  "lpips_pasted",
  "lpips_best_classical",
)


def parse_named(spec: str, flag: str) -> dict[str, str]:
  """'a:/x,b:/y' -> {'a': '/x', 'b': '/y'} (ValueError naming the flag if malformed)."""
  out = {}
  for entry in filter(None, (e.strip() for e in (spec or "").split(","))):
    name, sep, path = entry.partition(":")
    if not sep or not name or not path:
      raise ValueError(f"{flag}: expected name:folder, got {entry!r}")
    out[name] = os.path.abspath(os.path.expanduser(path))
  if not out:
    raise ValueError(f"{flag} is empty")
  return out


def base_config(
  model: str, variant: str, train_folder: str, eval_folders: Sequence[str], seed: int, data_dir: str
) -> ml_collections.ConfigDict:
  """`configs/<model>.py:<variant>` on a training folder used whole, scored elsewhere."""
  c = load_file(os.path.join(CONFIG_DIR, f"{model}.py") + f":{variant}")
  c.seed = seed
  c.dataset.name = "image_folder"
  c.dataset.path = train_folder
  c.dataset.data_dir = data_dir
  c.dataset.eval_fraction = 0.0
  c.dataset.flip = True
  c.eval_train_dataset = False
  c.eval_datasets = ",".join(f"image_folder:{f}" for f in eval_folders)
  c.eval_mask_strategy = "random_exact"  # one set of masks for every model
  c.num_grid_images = 4
  if variant == "tiny":  # the tests' 8 fake devices split the batch
    c.batch_size = c.eval_batch_size = 8
  if model != "mae":  # the MINR recipe of pretrained/celeba64 (MAE keeps its own,
    c.learning_rate = 5e-4  # its warm-up linked to num_train_steps)
    c.warmup_steps = min(100, c.num_train_steps // 10)
  return c


def plan(
  models: Sequence[str], flops: dict[str, float], budget: int, num_evals: int
) -> dict[str, dict[str, int]]:
  """Steps and evaluation cadence of each model at the reference's compute.

  Returns {model: {'steps', 'eval_every'}}: steps = the reference's FLOPs
  over the model's per-step FLOPs, a multiple of u = budget // num_evals;
  eval_every = u x m, m the smallest divisor of num_evals that keeps the
  evaluations at most 2 x num_evals (a divisor, so step `budget` is one; the
  trainer also evaluates the last step).
  """
  unit = max(budget // num_evals, 1)
  total = flops[REFERENCE] * budget
  out = {}
  for model in models:
    units = max(round(total / flops[model] / unit), 1)
    divisors = [d for d in range(1, num_evals + 1) if num_evals % d == 0]
    m = next((d for d in divisors if units // d <= 2 * num_evals), num_evals)
    out[model] = {"steps": units * unit, "eval_every": unit * m}
  return out


def update_state(
  state_path: str, flops: dict[str, float], run_dir: str | None = None, seconds: float = 0.0
) -> dict[str, float]:
  """Records FLOP counts and adds a piece's wall time to run_dir's total in the
  state file, re-reading it first so that studies of different --seeds can share
  a workdir at once; returns every run's total wall seconds."""
  state = json.load(open(state_path)) if os.path.exists(state_path) else {}
  state.setdefault("flops_per_step", {}).update(flops)
  walls = state.setdefault("wall_seconds", {})
  if run_dir is not None:
    walls[run_dir] = walls.get(run_dir, 0.0) + seconds
  tmp = f"{state_path}.{os.getpid()}.tmp"
  with open(tmp, "w") as f:
    json.dump(state, f, indent=1)
  os.replace(tmp, state_path)
  return walls


def _run_config(model, train_name, seed, schedule, args) -> ml_collections.ConfigDict:
  c = base_config(
    model,
    args["variant"],
    args["train"][train_name],
    list(args["eval"].values()),
    seed,
    args["data_dir"],
  )
  c.num_train_steps = schedule["steps"]
  if model != "mae":
    c.warmup_steps = min(100, c.num_train_steps // 10)
  c.eval_every_steps = schedule["eval_every"]
  c.checkpoint_every_steps = schedule["eval_every"]
  c.keep_checkpoints = 2
  return c


def _finished(workdir: str, steps: int) -> bool:
  return os.path.exists(os.path.join(workdir, "final_eval.json")) and os.path.isdir(
    os.path.join(workdir, "checkpoints", str(steps))
  )


class _TimeUp(Exception):
  """SIGTERM outside the training loop's own handler (which saves the step)."""


def _time_up(signum, frame) -> None:
  del signum, frame
  raise _TimeUp


def _train_piece(config, workdir: str, deadline: float | None) -> bool:
  """Trains (or resumes) until done or the deadline; True if the run finished.

  The deadline is a SIGTERM to this process. While the run trains, the loop's
  handler saves the step reached; while the run is being set up (or wound
  up) a handler of ours stops the piece instead of the default action,
  which would end the whole study silently with the run half begun."""
  timer = None
  if deadline is not None:
    remaining = deadline - time.time()
    if remaining <= 0:
      return False
    timer = threading.Timer(remaining, os.kill, (os.getpid(), signal.SIGTERM))
    timer.daemon = True
  previous = signal.signal(signal.SIGTERM, _time_up)
  try:
    if timer is not None:
      timer.start()
    final = loop.train_and_evaluate(config, workdir)
  except _TimeUp:
    return False  # no step of this piece was trained, or it was saved
  finally:
    if timer is not None:
      timer.cancel()
    signal.signal(signal.SIGTERM, previous)
  return bool(final)


def read_curves(workdir: str, labels: dict[str, str]) -> dict[str, dict[int, dict]]:
  """{domain: {step: {metric: value}}} from a run's metrics.jsonl (last record wins)."""
  path = os.path.join(workdir, "metrics.jsonl")
  out: dict[str, dict[int, dict]] = {name: {} for name in labels.values()}
  if not os.path.exists(path):
    return out
  with open(path) as f:
    for line in f:
      record = json.loads(line)
      domain = labels.get(record.get("dataset", ""))
      if record.get("split") == "eval" and domain is not None:
        out[domain][int(record["step"])] = {m: record[m] for m in METRICS + EXTRA if m in record}
  return out


def _train_rate(workdir: str) -> float | None:
  """Median training images/s over the run's logged steps."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    rates = [
      r["images_per_sec"]
      for r in map(json.loads, f)
      if r.get("split") == "train" and "images_per_sec" in r
    ]
  return float(np.median(rates)) if rates else None


def _stats(values: Sequence[float]) -> dict[str, float]:
  v = np.asarray(values, np.float64)
  return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()), "n": len(v)}


def summarize(results: dict[str, Any]) -> dict[str, Any]:
  """Per (train set, domain, model): seed stats at the final budget and at the
  reference's step count (equal images seen), and the mean curve against compute."""
  out = {}
  for key, runs in results["runs"].items():
    model, train_name = key.split("/")
    schedule = results["plan"][model]
    for domain in results["domains"]:
      finals, at_ref, curves = [], [], []
      for run in runs.values():
        curve = run["curves"].get(domain, {})
        if str(schedule["steps"]) in curve:
          finals.append(curve[str(schedule["steps"])])
        if str(results["budget_steps"]) in curve:
          at_ref.append(curve[str(results["budget_steps"])])
        curves.append(curve)
      cell = {}
      for name, rows in (("final", finals), ("equal_images", at_ref)):
        if rows:
          cell[name] = {m: _stats([r[m] for r in rows]) for m in METRICS}
          for m in EXTRA:
            if all(m in r for r in rows):
              cell[name][m] = _stats([r[m] for r in rows])
          if "psnr_best_classical" in cell[name]:
            cell[name]["lead"] = _stats([r["psnr_pasted"] - r["psnr_best_classical"] for r in rows])
          cell[name]["gain"] = _stats(
            [r["psnr_pasted"] - r["psnr_full_interpolation"] for r in rows]
          )
      steps = sorted({int(s) for c in curves for s in c}, key=int)
      cell["curve"] = [
        {
          "step": s,
          "tflop": s * results["flops_per_step"][model] / 1e12,
          "gain": _stats(
            [
              c[str(s)]["psnr_pasted"] - c[str(s)]["psnr_full_interpolation"]
              for c in curves
              if str(s) in c
            ]
          ),
        }
        for s in steps
      ]
      out[f"{train_name}/{domain}/{model}"] = cell
  return out


def _fmt(stat: dict | None, signed: bool | int = False) -> str:
  """mean [min, max] to 2 decimals; `signed` True adds a sign, an int sets the decimals."""
  if not stat:
    return "-"
  sign = "+" if signed is True else ""
  d = signed if isinstance(signed, int) and not isinstance(signed, bool) else 2
  if stat["n"] == 1:
    return f"{stat['mean']:{sign}.{d}f} (1 seed)"
  return f"{stat['mean']:{sign}.{d}f} [{stat['min']:{sign}.{d}f}, {stat['max']:{sign}.{d}f}]"


def write_report(results: dict[str, Any], out_dir: str) -> str:
  """ood.md, ood.json and ood.png in out_dir; returns the markdown."""
  summary = summarize(results)
  results["summary"] = summary
  lines = [
    "# Out-of-domain study (written by benchmarks/ood_study.py)",
    "",
    f"Command: `{results['command']}`",
    "",
    f"Machine: {results['machine']}. Budget: {results['budget_steps']} steps of "
    f"TransINR-MINR = {results['budget_tflop']:.1f} TFLOP of training per run.",
    "",
    "| model | GFLOP / step | steps at the budget | wall minutes per run (seeds) | "
    "train images/s |",
    "|---|---|---|---|---|",
  ]
  for model in results["models"]:
    walls = [
      r["wall_minutes"]
      for k, runs in results["runs"].items()
      if k.startswith(model + "/")
      for r in runs.values()
      if r["finished"]
    ]
    rates = [
      r["images_per_sec"]
      for k, runs in results["runs"].items()
      if k.startswith(model + "/")
      for r in runs.values()
      if r["images_per_sec"]
    ]
    rate = f"{np.median(rates):.1f}" if rates else "-"
    lines.append(
      f"| {NAMES[model]} | {results['flops_per_step'][model] / 1e9:.3f} | "
      f"{results['plan'][model]['steps']} | "
      f"{', '.join(f'{w:.1f}' for w in walls) or '-'} | {rate} |"
    )
  for title, which in (
    ("equal training compute (each model's final step)", "final"),
    (f"equal images seen ({results['budget_steps']} steps of 16)", "equal_images"),
  ):
    lines += [
      "",
      f"## At {title}",
      "",
      "psnr in dB, mean [min, max] over seeds; gain = psnr_pasted - interpolation; "
      "lead = psnr_pasted - the best classical inpainter (Telea, Navier-Stokes, "
      "biharmonic, interpolation, mean fill); LPIPS: lower is better.",
      "",
      "| trained on | evaluated on | model | psnr_pasted | psnr_masked | gain | lead | "
      "SSIM (best classical) | LPIPS (best classical) | interpolation | mean fill |",
      "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for train_name in results["train_sets"]:
      for domain in results["domains"]:
        for model in results["models"]:
          cell = summary.get(f"{train_name}/{domain}/{model}", {}).get(which)
          if not cell:
            continue
          lines.append(
            f"| {train_name} | {domain} | {NAMES[model]} | {_fmt(cell['psnr_pasted'])} | "
            f"{_fmt(cell['psnr_masked'])} | {_fmt(cell['gain'], signed=True)} | "
            f"{_fmt(cell.get('lead'), signed=True)} | {_fmt(cell.get('ssim_pasted'), 3)} "
            f"({_fmt(cell.get('ssim_best_classical'), 3)}) | "
            f"{_fmt(cell.get('lpips_pasted'), 3)} ({_fmt(cell.get('lpips_best_classical'), 3)}) | "
            f"{cell['psnr_full_interpolation']['mean']:.2f} | "
            f"{cell['psnr_full_mean_fill']['mean']:.2f} |"
          )
  text = "\n".join(lines) + "\n"
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "ood.md"), "w") as f:
    f.write(text)
  with open(os.path.join(out_dir, "ood.json"), "w") as f:
    json.dump(results, f, indent=1)
  plot(results, summary, os.path.join(out_dir, "ood.png"))
  return text


def plot(results: dict[str, Any], summary: dict[str, Any], path: str) -> None:
  """psnr_pasted - interpolation against training TFLOP: rows = training sets,
  columns = evaluation domains, a line per model (seed mean) and its seed range."""
  rows, cols = results["train_sets"], results["domains"]
  fig, axes = plt.subplots(
    len(rows), len(cols), figsize=(4 * len(cols), 3.2 * len(rows)), squeeze=False, sharex=True
  )
  for i, train_name in enumerate(rows):
    for j, domain in enumerate(cols):
      ax = axes[i][j]
      ax.axhline(0.0, color="grey", lw=0.8, ls="--")
      for model in results["models"]:
        curve = summary.get(f"{train_name}/{domain}/{model}", {}).get("curve", [])
        if not curve:
          continue
        x = [p["tflop"] for p in curve]
        ax.plot(x, [p["gain"]["mean"] for p in curve], marker="o", ms=3, label=NAMES[model])
        ax.fill_between(
          x, [p["gain"]["min"] for p in curve], [p["gain"]["max"] for p in curve], alpha=0.2
        )
      ax.set_title(f"trained on {train_name}, scored on {domain}", fontsize=9)
      if i == len(rows) - 1:
        ax.set_xlabel("training compute (TFLOP)")
      if j == 0:
        ax.set_ylabel("psnr_pasted - interpolation (dB)")
  if axes[0][0].get_legend_handles_labels()[0]:
    axes[0][0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def run_study(
  workdir: str,
  train_sets: dict[str, str],
  domains: dict[str, str],
  models: Sequence[str],
  seeds: Sequence[int],
  budget: int,
  num_evals: int,
  variant: str = "demo",
  data_dir: str = "~/tensorflow_datasets",
  max_minutes: float = 0.0,
  report_only: bool = False,
  command: str = "",
) -> dict[str, Any]:
  """Trains what is missing (within max_minutes), then writes the report."""
  if REFERENCE not in models:
    raise ValueError(f"--models must include {REFERENCE} (its steps set the budget)")
  unknown = [m for m in models if m not in MODELS]
  if unknown:
    raise ValueError(f"--models: unknown model {unknown[0]!r}; choose from {','.join(MODELS)}")
  os.makedirs(workdir, exist_ok=True)
  state_path = os.path.join(workdir, "study_state.json")
  state = json.load(open(state_path)) if os.path.exists(state_path) else {}
  flops = state.setdefault("flops_per_step", {})
  first_train = next(iter(train_sets.values()))
  for model in models:
    if model not in flops:
      config = base_config(model, variant, first_train, list(domains.values()), 0, data_dir)
      flops[model] = bench.train_step_flops(config)
      print(f"{NAMES[model]}: {flops[model] / 1e9:.2f} GFLOP per training step", flush=True)
  update_state(state_path, flops)
  schedule = plan(models, flops, budget, num_evals)
  args = {"variant": variant, "train": train_sets, "eval": domains, "data_dir": data_dir}
  deadline = time.time() + 60 * max_minutes if max_minutes > 0 else None
  stopped = report_only
  for seed in seeds:  # seed-major: every model gets its first seed before any second
    for train_name in train_sets:
      for model in models:
        run_dir = os.path.join(workdir, f"{model}_{train_name}_seed{seed}")
        if stopped or _finished(run_dir, schedule[model]["steps"]):
          continue
        print(
          f"== {NAMES[model]} on {train_name}, seed {seed}: {schedule[model]['steps']} steps",
          flush=True,
        )
        start = time.time()
        done = _train_piece(
          _run_config(model, train_name, seed, schedule[model], args), run_dir, deadline
        )
        update_state(state_path, flops, run_dir, time.time() - start)
        if not done:
          print(
            "time bound reached: the run saved its step; run the same command again to continue",
            flush=True,
          )
          stopped = True
  labels = {
    f"image_folder:{os.path.basename(os.path.normpath(p))}": name for name, p in domains.items()
  }
  walls = update_state(state_path, flops)  # every process's pieces, as of now
  runs: dict[str, dict] = {}
  for model in models:
    for train_name in train_sets:
      for seed in seeds:
        run_dir = os.path.join(workdir, f"{model}_{train_name}_seed{seed}")
        curves = read_curves(run_dir, labels)
        runs.setdefault(f"{model}/{train_name}", {})[str(seed)] = {
          "finished": _finished(run_dir, schedule[model]["steps"]),
          "wall_minutes": walls.get(run_dir, 0.0) / 60,
          "images_per_sec": _train_rate(run_dir),
          "curves": {d: {str(s): v for s, v in c.items()} for d, c in curves.items()},
        }
  results = {
    "command": command,
    "budget_steps": budget,
    "budget_tflop": flops[REFERENCE] * budget / 1e12,
    "num_evals": num_evals,
    "models": list(models),
    "train_sets": list(train_sets),
    "domains": list(domains),
    "seeds": list(seeds),
    "plan": schedule,
    "flops_per_step": flops,
    "runs": runs,
    "machine": f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
    f"Python {platform.python_version()}",
  }
  write_report(results, os.path.join(workdir, "study"))
  return results


def main(argv: list[str]) -> None:
  del argv
  if not _WORKDIR.value:
    sys.exit("error: --workdir is required")
  try:
    train_sets = parse_named(_TRAIN.value, "--train")
    domains = parse_named(_EVAL.value, "--eval")
    seeds = [int(s) for s in _SEEDS.value.split(",") if s.strip()]
    models = [m for m in _MODELS.value.split(",") if m]
    if _BUDGET.value < 1 or _NUM_EVALS.value < 1 or not math.isfinite(_MAX_MINUTES.value):
      raise ValueError("--budget_steps and --num_evals must be >= 1")
  except ValueError as e:
    sys.exit(f"error: {e}")
  results = run_study(
    _WORKDIR.value,
    train_sets,
    domains,
    models,
    seeds,
    _BUDGET.value,
    _NUM_EVALS.value,
    _VARIANT.value,
    _DATA_DIR.value,
    _MAX_MINUTES.value,
    _REPORT_ONLY.value,
    "python " + " ".join(sys.argv),
  )
  print(
    f"wrote {os.path.join(_WORKDIR.value, 'study')}/ood.md, ood.json, ood.png "
    f"({sum(r['finished'] for runs in results['runs'].values() for r in runs.values())} "
    "runs finished)",
    flush=True,
  )


def _define_flags() -> None:
  """The command's flags (defined only when run as a script, so importing is free)."""
  global _WORKDIR, _TRAIN, _EVAL, _MODELS, _SEEDS, _BUDGET, _NUM_EVALS, _MAX_MINUTES
  global _VARIANT, _DATA_DIR, _REPORT_ONLY
  _WORKDIR = flags.DEFINE_string("workdir", None, "Root of the study's runs and results.")
  _TRAIN = flags.DEFINE_string("train", None, "Training sets, 'name:folder,...' (used whole).")
  _EVAL = flags.DEFINE_string(
    "eval",
    None,
    "Evaluation domains, 'name:folder,...' (each folder's val/ split, or its hash split).",
  )
  _MODELS = flags.DEFINE_string("models", "transinr,ginr,mae", "Models, comma-separated.")
  _SEEDS = flags.DEFINE_string("seeds", "0,1", "Seeds, comma-separated.")
  _BUDGET = flags.DEFINE_integer(
    "budget_steps",
    3000,
    "TransINR-MINR's steps of 16 images; the other models get the same training FLOPs.",
  )
  _NUM_EVALS = flags.DEFINE_integer("num_evals", 8, "Evaluations per run over the budget.")
  _MAX_MINUTES = flags.DEFINE_float(
    "max_minutes",
    55.0,
    "Wall-time bound of this piece (0 = none); the run in progress saves and stops.",
  )
  _VARIANT = flags.DEFINE_string("variant", "demo", "Config variant of every model (tiny: tests).")
  _DATA_DIR = flags.DEFINE_string(
    "data_dir", "~/tensorflow_datasets", "Where the folders are prepared as TFDS datasets."
  )
  _REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only write the report from what exists.")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
