r"""Ablations of the out-of-domain study: what moves TransINR-MINR against interpolation.

One factor at a time is changed from the study's TransINR-MINR model (the
64-px `:demo` hypernetwork: width 128, depth 4, 8-px patches, an INR of width
64 with 32 Fourier frequencies up to 8), trained on one training folder for the
same number of steps as the study's runs and scored on the same evaluation
folders under the same fixed masks (`ood_study.base_config`):

  python benchmarks/ood_ablations.py --workdir=runs/ood \
      --train=/path/to/imagenette96/train \
      --eval=faces:/path/to/celeba,objects:/path/to/imagenette,scenes:/path/to/scenes \
      --steps=1000 --seeds=0,1 --max_minutes=55

The baseline of each seed is the study's own run `transinr_<train_name>_seed<s>`
in the same workdir (trained here if missing). Runs go to
`<workdir>/ablation_<name>_seed<s>`; the same command resumes them (pieces of
at most --max_minutes, as the study). Each row is compared at equal steps
(equal images seen); its FLOPs per step are reported beside it, since a wider
or deeper model spends more compute per step. Writes
`<workdir>/study/ablations.md` and `ablations.json`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from typing import Any

import numpy as np
from absl import app, flags

from minr_jax.training import bench

_spec = importlib.util.spec_from_file_location(
  "ood_study", os.path.join(os.path.dirname(os.path.abspath(__file__)), "ood_study.py")
)
ood_study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ood_study)

# name -> (what changes, {config field: value}); one factor at a time.
ABLATIONS: dict[str, tuple[str, dict[str, Any]]] = {
  "narrow": (
    "hypernetwork width 64 (from 128)",
    {"model.dim": 64, "model.head_dim": 32, "model.mlp_dim": 256},
  ),
  "wide": (
    "hypernetwork width 256",
    {"model.dim": 256, "model.num_heads": 4, "model.mlp_dim": 1024},
  ),
  "shallow": ("hypernetwork depth 2 (from 4)", {"model.depth": 2}),
  "deep": ("hypernetwork depth 8", {"model.depth": 8}),
  "inr_wide": ("INR width 128 (from 64)", {"model.inr_hidden_dim": 128}),
  "inr_freq16": ("INR highest Fourier frequency 16 (from 8)", {"model.ff_sigma": 16.0}),
  "patch4": ("4-px patches, 256 tokens (from 8 px, 64)", {"model.patch_size": 4}),
  "patch16": ("16-px patches, 16 tokens", {"model.patch_size": 16}),
  # The mask grid sets the training and the evaluation masks alike: these rows are scored
  # against interpolation on their own masks, a different task from the baseline's.
  "grid4": ("mask grid 4x4: 16-px hidden blocks (from 8x8, 8 px)", {"mask_grid": 4}),
  "grid16": ("mask grid 16x16: 4-px hidden blocks", {"mask_grid": 16}),
}


def _set(config, dotted: str, value) -> None:
  *parents, leaf = dotted.split(".")
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = value


def ablation_config(
  name: str,
  train_folder: str,
  eval_folders: list[str],
  seed: int,
  steps: int,
  eval_every: int,
  data_dir: str,
  variant: str = "demo",
):
  """The study's TransINR config with ablation `name` applied ('' = the baseline)."""
  c = ood_study.base_config("transinr", variant, train_folder, eval_folders, seed, data_dir)
  for field, value in (ABLATIONS[name][1] if name else {}).items():
    _set(c, field, value)
  c.num_train_steps = steps
  c.warmup_steps = min(100, steps // 10)
  c.eval_every_steps = c.checkpoint_every_steps = eval_every
  c.keep_checkpoints = 2
  return c


def run(
  workdir: str,
  train_name: str,
  train_folder: str,
  domains: dict[str, str],
  names: list[str],
  seeds: list[int],
  steps: int,
  num_evals: int,
  data_dir: str,
  max_minutes: float = 0.0,
  variant: str = "demo",
) -> dict[str, Any]:
  """Trains the missing runs within max_minutes, then writes the report."""
  eval_every = max(steps // num_evals, 1)
  deadline = time.time() + 60 * max_minutes if max_minutes > 0 else None
  state_path = os.path.join(workdir, "ablations_state.json")
  os.makedirs(workdir, exist_ok=True)
  state = json.load(open(state_path)) if os.path.exists(state_path) else {}
  flops = state.setdefault("flops_per_step", {})
  folders = list(domains.values())
  for name in [""] + names:
    if name not in flops:
      flops[name] = bench.train_step_flops(
        ablation_config(name, train_folder, folders, 0, steps, eval_every, data_dir, variant)
      )
  ood_study.update_state(state_path, flops)
  stopped = False
  for seed in seeds:
    for name in [""] + names:
      run_dir = os.path.join(
        workdir, f"transinr_{train_name}_seed{seed}" if not name else f"ablation_{name}_seed{seed}"
      )
      if stopped or ood_study._finished(run_dir, steps):
        continue
      print(f"== ablation {name or 'baseline'}, seed {seed}: {steps} steps", flush=True)
      config = ablation_config(
        name, train_folder, folders, seed, steps, eval_every, data_dir, variant
      )
      start = time.time()
      done = ood_study._train_piece(config, run_dir, deadline)
      if name:
        ood_study.update_state(state_path, flops, run_dir, time.time() - start)
      else:  # the baseline is the study's run: its wall time goes with the study's
        study_state = os.path.join(workdir, "study_state.json")
        ood_study.update_state(study_state, {}, run_dir, time.time() - start)
      if not done:
        print("time bound reached: run the same command again to continue", flush=True)
        stopped = True
  labels = {f"image_folder:{os.path.basename(os.path.normpath(p))}": d for d, p in domains.items()}
  rows = {}
  for name in [""] + names:
    per_seed, extra = {}, {}
    for seed in seeds:
      run_dir = os.path.join(
        workdir, f"transinr_{train_name}_seed{seed}" if not name else f"ablation_{name}_seed{seed}"
      )
      curves = ood_study.read_curves(run_dir, labels)
      final = {d: c.get(steps) for d, c in curves.items()}
      if all(final.values()):
        per_seed[str(seed)] = {
          d: v["psnr_pasted"] - v["psnr_full_interpolation"] for d, v in final.items()
        }
        # Against the best classical inpainter, SSIM and LPIPS (runs that recorded them).
        extra[str(seed)] = {
          d: {m: v[m] for m in ood_study.EXTRA + ("psnr_pasted",) if m in v}
          for d, v in final.items()
        }
    rows[name or "baseline"] = {
      "what": ABLATIONS[name][0] if name else "the study's TransINR-MINR (:demo model)",
      "gflop_per_step": flops[name] / 1e9,
      "seeds": per_seed,
      "metrics": extra,
    }
  results = {
    "train": train_name,
    "steps": steps,
    "domains": list(domains),
    "rows": rows,
    "command": "python " + " ".join(sys.argv),
  }
  write_report(results, os.path.join(workdir, "study"))
  return results


def write_report(results: dict[str, Any], out_dir: str) -> None:
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "ablations.json"), "w") as f:
    json.dump(results, f, indent=1)
  domains = results["domains"]
  base = results["rows"]["baseline"]["seeds"]
  lines = [
    f"Trained on {results['train']} for {results['steps']} steps of 16 images; "
    "psnr_pasted minus Gaussian interpolation (dB) at the last step, mean "
    "[min, max] over seeds; in brackets after it, the change from the baseline of the "
    "same seeds.",
    "",
    "| ablation | GFLOP/step | seeds | " + " | ".join(domains) + " |",
    "|---|---|---|" + "---|" * len(domains),
  ]
  for name, row in results["rows"].items():
    seeds = sorted(row["seeds"])
    cells = []
    for d in domains:
      v = np.array([row["seeds"][s][d] for s in seeds])
      if not len(v):
        cells.append("not run")
        continue
      cell = f"{v.mean():+.2f} [{v.min():+.2f}, {v.max():+.2f}]"
      paired = [row["seeds"][s][d] - base[s][d] for s in seeds if s in base]
      if name != "baseline" and paired:
        cell += f" ({np.mean(paired):+.2f})"
      cells.append(cell)
    lines.append(
      f"| {name}: {row['what']} | {row['gflop_per_step']:.1f} | {len(seeds)} | "
      + " | ".join(cells)
      + " |"
    )
  lines += _extra_table(results)
  with open(os.path.join(out_dir, "ablations.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines), flush=True)


def _extra_table(results: dict[str, Any]) -> list[str]:
  """Lines of a table of the lead over the best classical inpainter, SSIM and LPIPS
  (means over seeds), for the rows whose runs recorded them; [] if none did."""
  domains, out = results["domains"], []
  for name, row in results["rows"].items():
    per_seed = list(row.get("metrics", {}).values())
    cells = []
    for d in domains:
      ms = [s[d] for s in per_seed if d in s]
      if not ms or not all(k in m for m in ms for k in ood_study.EXTRA):
        cells.append("not recorded")
        continue
      mean = {k: float(np.mean([m[k] for m in ms])) for k in ood_study.EXTRA + ("psnr_pasted",)}
      cells.append(
        f"{mean['psnr_pasted'] - mean['psnr_best_classical']:+.2f} / {mean['ssim_pasted']:.3f}"
        f" ({mean['ssim_best_classical']:.3f}) / {mean['lpips_pasted']:.3f}"
        f" ({mean['lpips_best_classical']:.3f})"
      )
    out.append(f"| {name} | " + " | ".join(cells) + " |")
  if all("not recorded" in line for line in out):
    return []
  return [
    "",
    "psnr_pasted minus the best classical inpainter's (dB) / SSIM (higher is better) / "
    "LPIPS (lower is better); the best classical inpainter's in brackets; mean over seeds:",
    "",
    "| ablation | " + " | ".join(domains) + " |",
    "|---|" + "---|" * len(domains),
    *out,
  ]


def main(argv: list[str]) -> None:
  del argv
  f = flags.FLAGS
  names = [n for n in f.ablations.split(",") if n]
  unknown = [n for n in names if n not in ABLATIONS]
  if unknown:
    sys.exit(f"error: --ablations: unknown {unknown[0]!r}; choose from {','.join(ABLATIONS)}")
  train_name, _, folder = f.train.partition(":") if ":" in f.train else ("photos", "", f.train)
  try:
    domains = ood_study.parse_named(f.eval, "--eval")
  except ValueError as e:
    sys.exit(f"error: {e}")
  run(
    f.workdir,
    train_name,
    os.path.abspath(os.path.expanduser(folder)),
    domains,
    names,
    [int(s) for s in f.seeds.split(",") if s],
    f.steps,
    f.num_evals,
    f.data_dir,
    f.max_minutes,
    f.variant,
  )


def _define_flags() -> None:
  flags.DEFINE_string(
    "workdir", None, "The study's workdir (baselines are its runs).", required=True
  )
  flags.DEFINE_string(
    "train", None, "Training folder, [name:]folder (name as in the study).", required=True
  )
  flags.DEFINE_string("eval", None, "Evaluation domains, 'name:folder,...'.", required=True)
  flags.DEFINE_string("ablations", ",".join(ABLATIONS), "Ablations, comma-separated.")
  flags.DEFINE_string("seeds", "0,1", "Seeds, comma-separated.")
  flags.DEFINE_integer("steps", 1000, "Training steps of every run (the study's budget_steps).")
  flags.DEFINE_integer("num_evals", 5, "Evaluations per run (the study's num_evals).")
  flags.DEFINE_float("max_minutes", 55.0, "Wall-time bound of this piece (0 = none).")
  flags.DEFINE_string("variant", "demo", "Config variant (tiny: tests).")
  flags.DEFINE_string("data_dir", "~/tensorflow_datasets", "Where folders are prepared.")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
