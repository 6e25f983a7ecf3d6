r"""The paper's in-domain and cross-domain tables from your runs' `evaluate` results.

The body of `python -m minr_jax.paper_tables` (docs/results.md#reproducing-the-papers-tables).
"""

from __future__ import annotations

import json
import os

from minr_jax import paths
from minr_jax.config import ConfigError

# PSNR (dB) reported in the MINR paper (75% masking, 182 px), by source -> target.
PAPER = {
  "minr-transinr": {
    ("celeba", "celeba"): 21.865,
    ("imagenette", "imagenette"): 18.737,
    ("indoor", "indoor"): 17.756,
    ("celeba", "imagenette"): 18.058,
    ("celeba", "indoor"): 17.361,
    ("imagenette", "celeba"): 19.929,
    ("imagenette", "indoor"): 17.920,
    ("indoor", "celeba"): 18.992,
    ("indoor", "imagenette"): 18.103,
  },
  "minr-ginr": {
    ("celeba", "celeba"): 21.680,
    ("imagenette", "imagenette"): 19.358,
    ("indoor", "indoor"): 18.622,
    ("celeba", "imagenette"): 18.041,
    ("celeba", "indoor"): 17.336,
    ("imagenette", "celeba"): 19.994,
    ("imagenette", "indoor"): 18.045,
    ("indoor", "celeba"): 19.509,
    ("indoor", "imagenette"): 18.573,
  },
}
DATASET_LABELS = {"celeba": "celeb_a", "imagenette": "imagenette", "indoor": "mit_indoor67"}
SHORT = {"celeba": "CEL", "imagenette": "IMG", "indoor": "IND"}


def latest_results(workdir: str) -> dict[str, dict[str, float]]:
  """{dataset label: metrics} of a workdir's newest evaluation: `<workdir>/eval/<step>`,
  or where `evaluate` wrote it for a read-only workdir (`paths.read_only_results`)."""
  root = os.path.join(workdir, "eval")
  found = {}
  for folder in (paths.read_only_results(workdir, "eval"), root):
    if os.path.isdir(folder):
      found.update(
        {
          int(d): os.path.join(folder, d)
          for d in os.listdir(folder)
          if d.isdigit() and os.path.exists(os.path.join(folder, d, "results.json"))
        }
      )
  if not found:
    raise ConfigError(f"no evaluation in {root}: run python -m minr_jax.evaluate first")
  with open(os.path.join(found[max(found)], "results.json")) as f:
    return json.load(f)["results"]


def _cell(results, source: str, target: str, model: str) -> str:
  paper = PAPER[model][(source, target)]
  r = results.get(source, {}).get(DATASET_LABELS[target])
  if r is None:
    return f"- (paper {paper:.3f}; fill -)"
  interp = r.get("psnr_full_interpolation")
  interp = "-" if interp is None else f"{interp:.2f}"
  return (
    f"{r['psnr_full']:.2f} (paper {paper:.3f}; interpolation {interp}, "
    f"fill {r['psnr_full_mean_fill']:.2f})"
  )


def tables(results: dict[str, dict[str, dict[str, float]]], model: str) -> str:
  """Markdown: the in-domain 1x3 and cross-domain 3x2 tables."""
  keys = list(DATASET_LABELS)
  lines = [
    f"In-domain psnr_full (dB), {model}: measured (paper; interpolation, mean-colour fill)",
    "",
    "| " + " | ".join(SHORT[k] for k in keys) + " |",
    "|---" * len(keys) + "|",
    "| " + " | ".join(_cell(results, k, k, model) for k in keys) + " |",
    "",
    f"Cross-domain psnr_full (dB), {model}, source->target",
    "",
  ]
  pairs = [(s, t) for s in keys for t in keys if s != t]
  lines += [
    "| " + " | ".join(f"{SHORT[s]}->{SHORT[t]}" for s, t in pairs) + " |",
    "|---" * len(pairs) + "|",
    "| " + " | ".join(_cell(results, s, t, model) for s, t in pairs) + " |",
  ]
  return "\n".join(lines) + "\n"
