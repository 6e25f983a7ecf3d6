"""Figures of the robustness sweep: PSNR against mask ratio, and a gallery of the masks
(matplotlib, Agg).
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np

from minr_jax import masking, metrics, paths


def plot_psnr(path: str, rows: list[dict[str, Any]], step: int, metric: str = "psnr_full") -> None:
  """`metric` against ratio: a panel per dataset, a solid line per strategy,
  its mean-colour-fill baseline dashed and its interpolation baseline dotted in
  the same colour (a model has learned structure where it is above the dots).

  psnr_full for MINR (the whole rendered image, the paper's figure);
  psnr_pasted for an MAE, whose output in the visible patches is untrained.

  Perfect scores (the fill at ratio 0 hides nothing: 100 dB) are left off the
  y axis so they don't flatten the rest.
  """
  # Imported here: matplotlib is slow to import and only the plots need it.
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
  from matplotlib.figure import Figure  # noqa: PLC0415
  from matplotlib.lines import Line2D  # noqa: PLC0415

  datasets = list(dict.fromkeys(r["dataset"] for r in rows))
  strategies = list(dict.fromkeys(r["strategy"] for r in rows))
  cols = min(len(datasets), 3)
  nrows = -(-len(datasets) // cols)
  fig = Figure(figsize=(4.2 * cols + 2.2, 3.4 * nrows), layout="constrained")
  FigureCanvasAgg(fig)
  axes = fig.subplots(nrows, cols, squeeze=False).reshape(-1)
  for ax, label in zip(axes, datasets, strict=False):
    num_images = next(r["num_images"] for r in rows if r["dataset"] == label)
    for i, strategy in enumerate(strategies):
      sel = sorted(
        (r for r in rows if r["dataset"] == label and r["strategy"] == strategy),
        key=lambda r: r["ratio"],
      )
      x = [r["ratio"] for r in sel]
      colour = f"C{i % 10}"
      ax.plot(x, [r[metric] for r in sel], "o-", color=colour, label=strategy)
      ax.plot(x, [r["psnr_full_mean_fill"] for r in sel], "x--", color=colour, alpha=0.7)
      ax.plot(x, [r["psnr_full_interpolation"] for r in sel], "+:", color=colour, alpha=0.8)
    _clip_perfect_scores(
      ax,
      [
        r[k]
        for r in rows
        if r["dataset"] == label
        for k in (metric, "psnr_full_mean_fill", "psnr_full_interpolation")
      ],
    )
    ax.set_title(f"{label} ({num_images} images)", fontsize=10)
    ax.set_xlabel("mask ratio")
    ax.set_ylabel(f"{metric} (dB)")
    ax.grid(alpha=0.3)
  for ax in axes[len(datasets) :]:
    ax.set_visible(False)
  handles = [
    Line2D([], [], color=f"C{i % 10}", marker="o", label=s) for i, s in enumerate(strategies)
  ]
  handles += [
    Line2D([], [], color="black", label="model"),
    Line2D([], [], color="black", ls="--", alpha=0.7, label="mean-colour fill"),
    Line2D([], [], color="black", ls=":", alpha=0.8, label="interpolation"),
  ]
  fig.legend(handles=handles, loc="outside right center", fontsize=9)  # clear of the title
  fig.suptitle(f"Robustness to masking, checkpoint step {step}", fontsize=11)
  _save_figure(fig, path)


def _save_figure(fig, path: str) -> None:
  """Writes fig as a PNG to path (a local path or a URL) whole."""
  buf = io.BytesIO()
  fig.savefig(buf, dpi=100, format="png")
  paths.write_bytes(path, buf.getvalue())


def _clip_perfect_scores(ax, values: list[float]) -> None:
  """Keeps the 100 dB floor of perfect scores (mean-colour fill at ratio 0) off the axis."""
  perfect = -10.0 * np.log10(metrics.MSE_FLOOR) - 1.0
  rest = [v for v in values if v < perfect]
  if rest and len(rest) < len(values):
    low, high = min(rest), max(rest)
    ax.set_ylim(low - 0.05 * (high - low + 1.0), high + 0.15 * (high - low + 1.0))


def gallery_masks(
  config: ml_collections.ConfigDict,
  strategies: Sequence[str],
  ratios: Sequence[float],
  index: int = 0,
) -> np.ndarray:
  """The evaluation masks [S, R, grid, grid] (bool) image `index` gets in the sweep."""
  base = masking.mask_spec_from_config(config)
  out = []
  for strategy in strategies:
    spec = dataclasses.replace(base, strategy=strategy)
    out.append(
      [
        np.asarray(masking.draw_indexed(spec, config.eval_mask_seed, jnp.array([index]), ratio))[0]
        for ratio in ratios
      ]
    )
  return np.asarray(out, bool)


def plot_mask_gallery(
  path: str, config: ml_collections.ConfigDict, strategies: Sequence[str], ratios: Sequence[float]
) -> None:
  """A grid of image 0's masks: a row per strategy, a column per ratio (black = hidden)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
  from matplotlib.figure import Figure  # noqa: PLC0415

  masks = gallery_masks(config, strategies, ratios)
  g = config.mask_grid
  fig = Figure(figsize=(1.5 * len(ratios) + 1.4, 1.5 * len(strategies) + 0.8), layout="constrained")
  FigureCanvasAgg(fig)
  axes = fig.subplots(len(strategies), len(ratios), squeeze=False)
  for i, strategy in enumerate(strategies):
    for j, ratio in enumerate(ratios):
      ax = axes[i, j]
      ax.imshow(masks[i, j], cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
      ax.set_xticks(np.arange(-0.5, g, 1), minor=True)
      ax.set_yticks(np.arange(-0.5, g, 1), minor=True)
      ax.grid(which="minor", color="0.6", linewidth=0.3)
      ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
      ax.set_title(f"ratio {ratio:g}: {int(masks[i, j].sum())}/{g * g}", fontsize=8)
      if j == 0:
        ax.set_ylabel(strategy, fontsize=9)
  fig.suptitle(
    f"Evaluation mask of image 0 (seed {config.eval_mask_seed}, {g}x{g} grid; black = hidden)",
    fontsize=9,
  )
  _save_figure(fig, path)
