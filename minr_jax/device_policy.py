"""The config fields whose best value depends on the hardware: `resolve_auto`.

Called once where a run starts, for the devices it will use, and logged, so one config never
traces two programs invisibly.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from minr_jax import families

INR_CHUNK_CPU = 4096  # pixels per chunk of the chunked INR loss on one CPU device


def resolve_auto(
  config: ml_collections.ConfigDict, devices
) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  """A copy of config with model.attention_impl 'auto' and model.inr_chunk -1 resolved.

  Resolved once where a run starts, for the devices it will run on (a mesh's
  `devices.flat`), and logged by the caller, so one config never traces two
  programs invisibly. On exactly one CPU device, XLA's CPU backend runs loops
  over heads and pixel chunks of cache-sized products faster than the batched
  products (docs/speed.md): 'per_head' attention and INR_CHUNK_CPU pixels. With
  several devices the batch axis is sharded and a loop over it would gather it,
  and TPU / GPU want the large batched products: 'batched' and 0 there. A
  family without INR resolves inr_chunk to 0.

  Returns (config copy, {field: resolved value} for the fields that were auto).
  """
  devices = list(devices)
  one_cpu = len(devices) == 1 and devices[0].platform == "cpu"
  c = ml_collections.ConfigDict(config.to_dict())
  resolved = {}
  with c.unlocked():
    if c.model.get("attention_impl", "auto") == "auto":
      c.model.attention_impl = "per_head" if one_cpu else "batched"
      resolved["model.attention_impl"] = c.model.attention_impl
    if int(c.model.get("inr_chunk", -1)) == -1:
      c.model.inr_chunk = INR_CHUNK_CPU if one_cpu and families.get(c).has_inr else 0
      resolved["model.inr_chunk"] = c.model.inr_chunk
  return c, resolved
