r"""A run's evaluation curve: psnr_pasted minus interpolation per dataset against steps.

  python benchmarks/training_curve.py --workdirs=runs/photos64 \
      [--labels=photos64] --output=docs/images/photos64_curve.png

Reads each workdir's metrics.jsonl (the last record of a step wins) and draws
one panel per evaluation dataset, one line per workdir, against the training
step. Prints each run's XLA FLOP count per training step
(`minr_jax.bench.train_step_flops`; times the step = training compute) and
the curve as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os

import matplotlib
import ml_collections

from minr_jax.training import bench

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def curves(workdir: str) -> dict[str, dict[int, float]]:
  """{dataset: {step: psnr_pasted - interpolation}} of one run."""
  out: dict[str, dict[int, float]] = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for record in map(json.loads, f):
      if record.get("split") == "eval":
        gain = record["psnr_pasted"] - record["psnr_full_interpolation"]
        out.setdefault(record["dataset"], {})[int(record["step"])] = gain
  return out


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdirs", required=True)
  p.add_argument("--labels", default="")
  p.add_argument("--output", required=True)
  args = p.parse_args()
  workdirs = args.workdirs.split(",")
  labels = args.labels.split(",") if args.labels else [os.path.basename(w) for w in workdirs]
  runs = [curves(w) for w in workdirs]
  datasets = sorted({d for r in runs for d in r})
  fig, axes = plt.subplots(1, len(datasets), figsize=(3.6 * len(datasets), 3.2), squeeze=False)
  for ax, dataset in zip(axes[0], datasets):
    ax.axhline(0.0, color="grey", lw=0.8, ls="--")
    for label, run in zip(labels, runs):
      points = sorted(run.get(dataset, {}).items())
      ax.plot([s for s, _ in points], [g for _, g in points], marker="o", ms=3, label=label)
    ax.set_title(dataset.removeprefix("image_folder:"), fontsize=9)
    ax.set_xlabel("training step")
  axes[0][0].set_ylabel("psnr_pasted - interpolation (dB)")
  axes[0][0].legend(fontsize=8)
  for workdir, label in zip(workdirs, labels):
    with open(os.path.join(workdir, "config.json")) as f:
      config = ml_collections.ConfigDict(json.load(f))
    flops = bench.train_step_flops(config)
    print(f"{label}: {flops / 1e9:.2f} GFLOP per training step (XLA's count)")
  fig.tight_layout()
  fig.savefig(args.output, dpi=110)
  for label, run in zip(labels, runs):
    print(f"\n{label}\n\n| step | " + " | ".join(datasets) + " |")
    for step in sorted({s for c in run.values() for s in c}):
      print(
        f"| {step:,} | "
        + " | ".join(f"{run[d].get(step, float('nan')):+.2f}" for d in datasets)
        + " |"
      )


if __name__ == "__main__":
  main()
