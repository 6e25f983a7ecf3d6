"""Patch masks drawn on device, inside jit, with static shapes (True = hidden).

`MaskSpec` (from `mask_spec_from_config`) is the static part; `draw`, `draw_batch` and
`draw_indexed` draw one mask, a batch, and fixed evaluation masks (a function of seed and image
index only). Strategies: `STRATEGIES` (docs/results.md#masking-strategies).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
PRNGKey = jax.Array
Ratio = Any  # a Python float or a float scalar Array (possibly traced)

STRATEGIES = ("random", "random_exact", "block", "center", "outpaint", "noise_filtered")
FILTERS = ("lowpass", "highpass", "bandpass", "bandstop")

# Default cutoffs (fractions of the Nyquist radius) when a spec leaves them None.
_DEFAULT_CUTOFFS = {
  "lowpass": (0.0, 0.5),
  "highpass": (0.75, math.sqrt(2.0)),
  "bandpass": (0.25, 0.75),
  "bandstop": (0.25, 0.75),
}


# ------------------------------------------------------------------ counts ---


def _half_tolerance(num_patches: int) -> float:
  """Slack added before flooring so float32 and float64 agree on halves.

  ratio * N computed in float32 is off by at most ~3 * 2**-24 * (N + 1); a
  slack of 2**-22 * (N + 1) (0.00024 for N = 1024) absorbs that, so values
  meant to be exact halves (0.58 * 25 = 14.5) round up in both precisions.
  """
  return (num_patches + 1) * 2.0**-22


def exact_count(ratio: float, num_patches: int) -> int:
  """round(ratio * num_patches), halves rounded up (not Python's banker's)."""
  return int(math.floor(ratio * num_patches + 0.5 + _half_tolerance(num_patches)))


def _is_static(ratio: Ratio) -> bool:
  return isinstance(ratio, (int, float, np.integer, np.floating))


def _count(ratio: Ratio, num_patches: int) -> int | Array:
  """k = exact_count(ratio, N): a Python int for a static ratio, else int32 []."""
  if _is_static(ratio):
    return exact_count(float(ratio), num_patches)
  r = jnp.asarray(ratio, jnp.float32)
  half = np.float32(0.5 + _half_tolerance(num_patches))
  k = jnp.floor(r * np.float32(num_patches) + half).astype(jnp.int32)
  return jnp.clip(k, 0, num_patches)


def _ranks(priority: Array) -> Array:
  """Rank [g, g] (int32, 0 = first hidden) of each patch by priority [g, g].

  Ascending with a stable sort, so equal priorities go in row-major order.
  """
  flat = priority.reshape(-1)
  return jnp.argsort(jnp.argsort(flat)).reshape(priority.shape).astype(jnp.int32)


# -------------------------------------------------------------------- spec ---


@dataclasses.dataclass(frozen=True)
class MaskSpec:
  """Static, hashable description of a mask distribution (the ratio is not in it).

  Attributes:
    strategy: one of `STRATEGIES`.
    grid: masks are [grid, grid] patches.
    block_min_patches: `block`: smallest rectangle area proposed, in patches.
    block_aspect_min: `block`: rectangle aspect ratios (rows / columns) are
      log-uniform in [block_aspect_min, 1 / block_aspect_min].
    filter: `noise_filtered`: one of `FILTERS`.
    cutoff_low, cutoff_high: `noise_filtered`: band edges as fractions of the
      Nyquist radius (radius sqrt(fy**2 + fx**2) / 0.5 of the frequency in
      cycles per patch, so 1 = Nyquist, sqrt(2) = the corner). lowpass keeps
      radius <= cutoff_high, highpass keeps >= cutoff_low, bandpass keeps
      [cutoff_low, cutoff_high], bandstop keeps the rest. None = the filter's
      default, filled in at construction: lowpass keeps <= 0.5; highpass
      keeps >= 0.75 (most bins lie at large radii, so a 0.5 highpass is close
      to white noise); bandpass keeps and bandstop removes [0.25, 0.75].
  """

  strategy: str = "random"
  grid: int = 14
  block_min_patches: int = 4
  block_aspect_min: float = 0.3
  filter: str = "lowpass"
  cutoff_low: float | None = None
  cutoff_high: float | None = None

  def __post_init__(self):
    if self.filter in FILTERS:
      low, high = _DEFAULT_CUTOFFS[self.filter]
      if self.cutoff_low is None:
        object.__setattr__(self, "cutoff_low", low)
      if self.cutoff_high is None:
        object.__setattr__(self, "cutoff_high", high)
    _check_fields(dataclasses.asdict(self), lambda field: f"MaskSpec.{field}")

  @property
  def num_patches(self) -> int:
    return self.grid * self.grid

  @property
  def exact(self) -> bool:
    """True when every mask hides exactly exact_count(ratio, N) patches."""
    return self.strategy != "random"


def _check_fields(values: dict[str, Any], name: Callable[[str], str]) -> None:
  """Raises ValueError naming (via `name`) the first MaskSpec field that cannot work."""
  spec = types.SimpleNamespace(**values)
  if spec.strategy not in STRATEGIES:
    raise ValueError(f"{name('strategy')} must be one of {STRATEGIES}, got {spec.strategy!r}")
  if not isinstance(spec.grid, int) or isinstance(spec.grid, bool) or spec.grid <= 0:
    raise ValueError(f"{name('grid')} must be a positive integer, got {spec.grid!r}")
  n = spec.grid * spec.grid
  if (
    not isinstance(spec.block_min_patches, int)
    or isinstance(spec.block_min_patches, bool)
    or not 1 <= spec.block_min_patches <= n
  ):
    raise ValueError(
      f"{name('block_min_patches')} must be an integer in [1, {n}], got {spec.block_min_patches!r}"
    )
  if (
    not isinstance(spec.block_aspect_min, (int, float))
    or isinstance(spec.block_aspect_min, bool)
    or not 0.0 < spec.block_aspect_min <= 1.0
  ):
    raise ValueError(f"{name('block_aspect_min')} must be in (0, 1], got {spec.block_aspect_min!r}")
  if spec.filter not in FILTERS:
    raise ValueError(f"{name('filter')} must be one of {FILTERS}, got {spec.filter!r}")
  for field in ("cutoff_low", "cutoff_high"):
    value = getattr(spec, field)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
      raise ValueError(f"{name(field)} must be a number >= 0, got {value!r}")
  if spec.filter in ("bandpass", "bandstop") and not spec.cutoff_low < spec.cutoff_high:
    raise ValueError(
      f"{name('cutoff_low')}={spec.cutoff_low} must be below "
      f"{name('cutoff_high')}={spec.cutoff_high} for a {spec.filter} filter"
    )
  if spec.strategy == "noise_filtered":
    passed = _passband(spec.grid, spec.filter, spec.cutoff_low, spec.cutoff_high)
    if not passed.reshape(-1)[1:].any():  # index 0 is the constant (DC) term
      field = "cutoff_low" if spec.filter == "highpass" else "cutoff_high"
      raise ValueError(
        f"{name(field)}: the {spec.filter} band [{spec.cutoff_low}, {spec.cutoff_high}] "
        f"keeps no non-constant frequency of a {spec.grid}x{spec.grid} grid "
        f"(radii there are multiples of {2 / spec.grid:.3g} of Nyquist)"
      )


def mask_spec_from_config(config) -> MaskSpec:
  """The training MaskSpec of a run config.

  Reads `config.mask_grid` (default 14) and, from the optional sub-config
  `config.mask`: strategy ("random"), block_min_patches (4), block_aspect_min (0.3),
  filter ("lowpass"), cutoff_low, cutoff_high (the filter's defaults, see
  `MaskSpec`). A missing field or a None value means the default. Raises
  ValueError naming the config field (e.g. `config.mask.filter`) that cannot
  work. The ratio is not part of the spec: pass it (or per-image ratios from
  `sample_ratios`) to `draw_batch`. For evaluation masks with another
  strategy use `dataclasses.replace(spec, strategy=...)`.
  """

  def get(obj, field, default):
    value = getattr(obj, field, None) if obj is not None else None
    return default if value is None else value

  sub = getattr(config, "mask", None)
  values = dict(
    strategy=get(sub, "strategy", "random"),
    grid=get(config, "mask_grid", 14),
    block_min_patches=get(sub, "block_min_patches", 4),
    block_aspect_min=get(sub, "block_aspect_min", 0.3),
    filter=get(sub, "filter", "lowpass"),
    cutoff_low=get(sub, "cutoff_low", None),
    cutoff_high=get(sub, "cutoff_high", None),
  )
  name = lambda field: "config.mask_grid" if field == "grid" else f"config.mask.{field}"
  if values["filter"] in FILTERS:
    low, high = _DEFAULT_CUTOFFS[values["filter"]]
    values["cutoff_low"] = low if values["cutoff_low"] is None else values["cutoff_low"]
    values["cutoff_high"] = high if values["cutoff_high"] is None else values["cutoff_high"]
  _check_fields(values, name)  # with config field names; MaskSpec's own check then passes
  return MaskSpec(**values)


# -------------------------------------------------------------- strategies ---


def _random(spec: MaskSpec, key: PRNGKey, ratio: Ratio) -> Array:
  """Each patch hidden independently with probability ratio."""
  p = ratio if _is_static(ratio) else jnp.asarray(ratio, jnp.float32)
  # Drawn flat: the same bits as shape (grid, grid), and 2-D random bits
  # compile about twice as slowly on CPU.
  return jax.random.bernoulli(key, p, (spec.num_patches,)).reshape(spec.grid, spec.grid)


def _random_exact(spec: MaskSpec, key: PRNGKey, k: int | Array) -> Array:
  """The k patches with the lowest uniform noise."""
  noise = jax.random.uniform(key, (spec.num_patches,)).reshape(spec.grid, spec.grid)
  return _ranks(noise) < k


def _num_block_proposals(spec: MaskSpec) -> int:
  """Fixed number of rectangles proposed per `block` mask (a static loop length)."""
  return max(16, 2 * math.ceil(spec.num_patches / spec.block_min_patches))


def _block(spec: MaskSpec, key: PRNGKey, k: int | Array) -> Array:
  """BEiT-style blockwise mask with exactly k hidden patches.

  A `lax.fori_loop` makes P = `_num_block_proposals(spec)` rectangle
  proposals (static, so shapes and compile time do not depend on the ratio).
  With `count` patches covered so far and `remaining = k - count`, proposal t
  draws an area uniform in [block_min_patches, max(remaining,
  block_min_patches)], a log-uniform aspect ratio in [block_aspect_min,
  1 / block_aspect_min], rows = round(sqrt(area * aspect)), columns =
  round(sqrt(area / aspect)) (clipped to [1, grid]) and a uniform position.
  As in BEiT it is accepted only if it covers at least one new patch and at
  most `remaining` new ones, so the union never exceeds k; accepted patches
  remember t (their rectangle-membership order).

  The union usually stops a few patches short of k (small remainders are
  hard to hit with rectangles), so patches are then ranked by the priority
    covered:     t                              (all of them are hidden);
    uncovered:   P + (4 - hidden 4-neighbours) + uniform noise in [0, 1),
  and the k first are hidden: the top-up prefers patches touching the blocks
  (most hidden neighbours first), so the count is always exactly k and the
  shape stays blocky.
  """
  g, lo = spec.grid, spec.block_min_patches
  num = _num_block_proposals(spec)
  uniform = jax.random.uniform(key, (num * 4 + g * g,))  # one draw: compiles faster
  draws = uniform[: num * 4].reshape(num, 4)
  log_aspect_min = math.log(spec.block_aspect_min)
  rows = jnp.arange(g)[:, None]
  cols = jnp.arange(g)[None, :]

  def propose(t, state):
    order, count = state  # order [g, g] int32 (num = uncovered); count int32 []
    remaining = k - count
    u = draws[t]
    top_area = jnp.maximum(remaining, lo).astype(jnp.float32)
    area = lo + u[0] * (top_area - lo)
    aspect = jnp.exp(log_aspect_min * (1.0 - 2.0 * u[1]))
    h = jnp.clip(jnp.round(jnp.sqrt(area * aspect)), 1, g).astype(jnp.int32)
    w = jnp.clip(jnp.round(jnp.sqrt(area / aspect)), 1, g).astype(jnp.int32)
    top = jnp.minimum(jnp.floor(u[2] * (g - h + 1)).astype(jnp.int32), g - h)
    left = jnp.minimum(jnp.floor(u[3] * (g - w + 1)).astype(jnp.int32), g - w)
    rect = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
    new = rect & (order == num)
    delta = jnp.sum(new, dtype=jnp.int32)
    accept = (delta > 0) & (delta <= remaining)
    order = jnp.where(new & accept, t, order)
    return order, count + jnp.where(accept, delta, 0)

  init = (jnp.full((g, g), num, jnp.int32), jnp.zeros((), jnp.int32))
  order, _ = jax.lax.fori_loop(0, num, propose, init)
  covered = order < num
  padded = jnp.pad(covered, 1).astype(jnp.int32)
  neighbours = padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
  noise = uniform[num * 4 :].reshape(g, g)
  priority = jnp.where(
    covered, order.astype(jnp.float32), num + (4 - neighbours).astype(jnp.float32) + noise
  )
  return _ranks(priority) < k


@functools.cache
def _centre_ranks(grid: int) -> np.ndarray:
  """Rank [grid, grid] (int32) of each patch in a centre-out, near-square order.

  Grows a rectangle from the patch at ((grid - 1) // 2, (grid - 1) // 2) one
  side at a time: of the four one-row/column extensions that stay on the
  grid, the one with the smallest (longer side, squared distance of its
  centre from the grid centre, down < right < up < left) wins; the new strip's
  patches follow, nearest to the grid centre first (ties row-major). So the
  first k patches are always a near-square, near-centred rectangle (sides
  differing by at most one) plus a partial strip centred on one of its sides:
  exact for every k, and a centred square when k is a square of grid's parity.
  """
  c = (grid - 1) / 2
  r0 = r1 = c0 = c1 = (grid - 1) // 2  # inclusive bounds
  order = [(r0, c0)]
  while len(order) < grid * grid:
    best = None
    for index, (dr0, dr1, dc0, dc1) in enumerate(
      ((0, 1, 0, 0), (0, 0, 0, 1), (-1, 0, 0, 0), (0, 0, -1, 0))
    ):
      a0, a1, b0, b1 = r0 + dr0, r1 + dr1, c0 + dc0, c1 + dc1
      if a0 < 0 or b0 < 0 or a1 >= grid or b1 >= grid:
        continue
      key = (max(a1 - a0, b1 - b0) + 1, ((a0 + a1) / 2 - c) ** 2 + ((b0 + b1) / 2 - c) ** 2, index)
      if best is None or key < best[0]:
        best = (key, (a0, a1, b0, b1))
    a0, a1, b0, b1 = best[1]
    strip = [
      (i, j)
      for i in range(a0, a1 + 1)
      for j in range(b0, b1 + 1)
      if not (r0 <= i <= r1 and c0 <= j <= c1)
    ]
    strip.sort(key=lambda p: ((p[0] - c) ** 2 + (p[1] - c) ** 2, p))
    order.extend(strip)
    r0, r1, c0, c1 = a0, a1, b0, b1
  ranks = np.empty((grid, grid), np.int32)
  for rank, (i, j) in enumerate(order):
    ranks[i, j] = rank
  return ranks


def _center(spec: MaskSpec, k: int | Array) -> Array:
  """The k first patches of `_centre_ranks`: a central near-square hidden."""
  return jnp.asarray(_centre_ranks(spec.grid)) < k


def _outpaint(spec: MaskSpec, k: int | Array) -> Array:
  """Only the N - k first patches of `_centre_ranks` visible: the k farthest hidden."""
  return jnp.asarray(_centre_ranks(spec.grid)) >= spec.num_patches - k


@functools.cache
def _passband(grid: int, filter: str, low: float, high: float) -> np.ndarray:
  """Ideal radial filter [grid, grid] (float32 0/1) in numpy's FFT layout."""
  f = np.fft.fftfreq(grid)  # cycles per patch, Nyquist = 0.5
  radius = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2) / 0.5
  eps = 1e-6  # radii on a cutoff count as inside the band
  if filter == "lowpass":
    keep = radius <= high + eps
  elif filter == "highpass":
    keep = radius >= low - eps
  else:
    inside = (radius >= low - eps) & (radius <= high + eps)
    keep = inside if filter == "bandpass" else ~inside
  return keep.astype(np.float32)


def _noise_filtered(spec: MaskSpec, key: PRNGKey, k: int | Array) -> Array:
  """ColorMAE-style mask: the k patches of highest filtered white noise.

  White Gaussian noise [grid, grid] is multiplied in the 2-D Fourier domain
  by an ideal radial filter (`_passband`, symmetric so the result is real)
  and transformed back. Lowpass noise varies slowly, so its top k form a few
  large blobs ("red noise"); highpass noise alternates from patch to patch,
  giving scattered, evenly spread patches ("blue noise"); bandpass gives blobs
  of a characteristic size ("green noise"). Only the ranks of the values
  matter, so the constant term does not. Values are continuous, so ties have
  probability 0 (they would go row-major).
  """
  noise = jax.random.normal(key, (spec.num_patches,)).reshape(spec.grid, spec.grid)
  passband = _passband(spec.grid, spec.filter, spec.cutoff_low, spec.cutoff_high)
  filtered = jnp.fft.ifft2(jnp.fft.fft2(noise) * passband).real
  return _ranks(-filtered) < k


# -------------------------------------------------------------------- draw ---


def draw(spec: MaskSpec, key: PRNGKey, ratio: Ratio) -> Array:
  """One image's mask [grid, grid] (bool, True = hidden).

  `ratio` is a Python float or a float scalar (traced is fine: no
  recompilation across values). All strategies but `random` hide exactly
  exact_count(ratio, grid**2) patches; `center` and `outpaint` ignore `key`.
  """
  if spec.strategy == "random":
    return _random(spec, key, ratio)
  k = _count(ratio, spec.num_patches)
  if spec.strategy == "random_exact":
    return _random_exact(spec, key, k)
  if spec.strategy == "block":
    return _block(spec, key, k)
  if spec.strategy == "center":
    return _center(spec, k)
  if spec.strategy == "outpaint":
    return _outpaint(spec, k)
  if spec.strategy == "noise_filtered":
    return _noise_filtered(spec, key, k)
  raise ValueError(f"unknown mask strategy {spec.strategy!r}")


def _draw_keys(spec: MaskSpec, keys: Array, ratio: Ratio) -> Array:
  """Masks [B, grid, grid] for keys [B] and a ratio that is a scalar or [B]."""
  if _is_static(ratio):
    return jax.vmap(lambda key: draw(spec, key, ratio))(keys)
  ratios = jnp.broadcast_to(jnp.asarray(ratio, jnp.float32), keys.shape)
  return jax.vmap(lambda key, r: draw(spec, key, r))(keys, ratios)


@functools.partial(jax.jit, static_argnums=(0, 2))
def draw_batch(spec: MaskSpec, key: PRNGKey, batch: int, ratio: Ratio) -> Array:
  """Independent masks [batch, grid, grid]; ratio is a scalar or per-image [batch].

  Jitted (spec and batch static, ratio traced), so calling it outside jit
  compiles once per (spec, batch, ratio shape), not per ratio value.
  """
  return _draw_keys(spec, jax.random.split(key, batch), ratio)


def draw_indexed(spec: MaskSpec, seed: int, indices: Array, ratio: Ratio) -> Array:
  """Fixed masks [B, grid, grid] for images `indices` [B]: evaluation masks.

  Image i's mask depends on (seed, i, ratio) only; ratio is a scalar or [B].
  Jitted like `draw_batch` (spec static; indices and ratio traced).
  """
  return _draw_indexed(spec, jax.random.key(seed), jnp.asarray(indices), ratio)


@functools.partial(jax.jit, static_argnums=(0,))
def _draw_indexed(spec: MaskSpec, base: PRNGKey, indices: Array, ratio: Ratio) -> Array:
  keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(indices)
  return _draw_keys(spec, keys, ratio)


def sample_ratios(key: PRNGKey, batch: int, ratio_min: Ratio, ratio_max: Ratio) -> Array:
  """Per-image mask ratios [batch] (float32), uniform in [ratio_min, ratio_max]."""
  return jax.random.uniform(key, (batch,), jnp.float32, ratio_min, ratio_max)


# -------------------------------------------------- a run's two mask kinds ---


def train_masks(config, key: PRNGKey, batch: int) -> Array:
  """Training patch masks [batch, g, g] of a run config: config.mask's strategy at
  config.mask_ratio, or per-image ratios from [mask.ratio_min, mask.ratio_max]."""
  spec = mask_spec_from_config(config)
  ratio_key, mask_key = jax.random.split(key)
  ratio = config.mask_ratio
  if config.mask.ratio_min is not None and config.mask.ratio_max is not None:
    ratio = sample_ratios(ratio_key, batch, config.mask.ratio_min, config.mask.ratio_max)
  return draw_batch(spec, mask_key, batch, ratio)


def eval_masks(config, indices: Array) -> Array:
  """Fixed evaluation patch masks [B, g, g] for image indices [B]: a function of
  (config.eval_mask_seed, index, config.eval_mask_strategy, config.mask_ratio) only."""
  spec = dataclasses.replace(mask_spec_from_config(config), strategy=config.eval_mask_strategy)
  return draw_indexed(spec, config.eval_mask_seed, indices, config.mask_ratio)


def to_pixels(masks: Array, height: int, width: int) -> Array:
  """Patch masks [B, g, g] -> pixel masks [B, height, width]."""
  g = masks.shape[-1]
  if height % g or width % g:
    raise ValueError(f"image {height}x{width} is not divisible by mask grid {g}")
  return jnp.repeat(jnp.repeat(masks, height // g, axis=-2), width // g, axis=-1)


def apply_mask(images: Array, pixel_masks: Array) -> Array:
  """Images [B, H, W, C] with masked pixels set to 0 (no mask channel)."""
  return jnp.where(pixel_masks[..., None], jnp.zeros_like(images), images)
