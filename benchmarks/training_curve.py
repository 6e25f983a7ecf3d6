r"""Runs' evaluation curves against training compute, beside the classical inpainters.

  python benchmarks/training_curve.py --workdirs=runs/ginr_photos64,runs/mae_photos64 \
      [--labels=GINR,MAE] [--x=tflop] --output=docs/images/photos64_runs_curve.png

Reads each workdir's metrics.jsonl (the last record of a step wins) and draws one
column per evaluation dataset, one line per workdir: top, psnr_pasted minus the best
classical inpainter on that set (Gaussian interpolation for records written before
the classical inpainters were scored); bottom, when recorded, LPIPS minus the best
classical LPIPS (below 0 = ahead). The x axis is the training step or, with
--x=tflop, the training compute (XLA's FLOP count per step,
`minr_jax.bench.train_step_flops`, times the step), which puts models of different
step costs on one axis. Prints each run's FLOPs per step and the curves as Markdown.
"""

from __future__ import annotations

import argparse
import json
import math
import os

import matplotlib
import ml_collections

from minr_jax.training import bench

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = (
  ("psnr", "psnr_pasted - best classical (dB)"),
  ("lpips", "LPIPS - best classical (lower: ahead)"),
)


def curves(workdir: str) -> dict[str, dict[str, dict[int, float]]]:
  """{panel: {dataset: {step: value}}} of one run (PANELS' quantities)."""
  out: dict[str, dict[str, dict[int, float]]] = {name: {} for name, _ in PANELS}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for record in map(json.loads, f):
      if record.get("split") != "eval":
        continue
      step, dataset = int(record["step"]), record["dataset"]
      best = record.get("psnr_best_classical", record.get("psnr_full_interpolation"))
      out["psnr"].setdefault(dataset, {})[step] = record["psnr_pasted"] - best
      lpips, best_lpips = record.get("lpips_pasted"), record.get("lpips_best_classical")
      if lpips is not None and best_lpips is not None:
        out["lpips"].setdefault(dataset, {})[step] = lpips - best_lpips
  return out


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdirs", required=True)
  p.add_argument("--labels", default="")
  p.add_argument("--x", choices=("step", "tflop"), default="step")
  p.add_argument("--output", required=True)
  args = p.parse_args()
  workdirs = args.workdirs.split(",")
  labels = args.labels.split(",") if args.labels else [os.path.basename(w) for w in workdirs]
  if len(labels) != len(workdirs):
    p.error(f"--labels has {len(labels)} names for {len(workdirs)} workdirs")
  runs = [curves(w) for w in workdirs]
  scale = []
  for workdir, label in zip(workdirs, labels):
    with open(os.path.join(workdir, "config.json")) as f:
      config = ml_collections.ConfigDict(json.load(f))
    flops = bench.train_step_flops(config)
    print(f"{label}: {flops / 1e9:.2f} GFLOP per training step (XLA's count)")
    scale.append(flops / 1e12 if args.x == "tflop" else 1.0)
  panels = [(n, t) for n, t in PANELS if any(r[n] for r in runs)]
  datasets = sorted({d for r in runs for d in r["psnr"]})
  fig, axes = plt.subplots(
    len(panels), len(datasets), figsize=(3.6 * len(datasets), 3.0 * len(panels)), squeeze=False
  )
  for row, (name, title) in enumerate(panels):
    for ax, dataset in zip(axes[row], datasets):
      ax.axhline(0.0, color="grey", lw=0.8, ls="--")
      for label, run, s in zip(labels, runs, scale):
        points = sorted(run[name].get(dataset, {}).items())
        ax.plot([k * s for k, _ in points], [v for _, v in points], marker="o", ms=3, label=label)
      ax.set_title(dataset.removeprefix("image_folder:"), fontsize=9)
      ax.set_xlabel("training TFLOP" if args.x == "tflop" else "training step")
    axes[row][0].set_ylabel(title, fontsize=8)
  axes[0][0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(args.output, dpi=110)
  for label, run in zip(labels, runs):
    for name, title in panels:
      print(f"\n{label}: {title}\n\n| step | " + " | ".join(datasets) + " |")
      print("|---|" + "---|" * len(datasets))
      for step in sorted({s for c in run[name].values() for s in c}):
        values = [run[name][d].get(step, math.nan) for d in datasets]
        fmt = "{:+.2f}" if name == "psnr" else "{:+.3f}"
        print(f"| {step:,} | " + " | ".join(fmt.format(v) for v in values) + " |")


if __name__ == "__main__":
  main()
