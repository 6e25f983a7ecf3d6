"""The `Model` facade: `minr_jax.load(path)` -> reconstruct, render, embed, inpaint.

Images are float [B, H, W, 3] in [0, 1]; masks bool [B, H, W], True = hidden
(docs/reuse.md).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from minr_jax import families, masking, sharding
from minr_jax.config import ConfigError
from minr_jax.inference import inpaint as inpaint_lib
from minr_jax.inference.restore import restore
from minr_jax.models import inr

PyTree = Any


MaskArg = str | np.ndarray | jax.Array | None


KINDS = tuple(dict.fromkeys(k for f in families.FAMILIES.values() for k in f.embedding_kinds))


DEFAULT_RENDER_CHUNK = 4096


def load(
  workdir_or_checkpoint: str,
  step: int | None = None,
  *,
  devices: int | None = None,
  batch_size: int | None = None,
) -> Model:
  """Loads a run's parameters for inference (any family).

  Args:
    workdir_or_checkpoint: a training workdir (its config.json and newest
      checkpoint) or a step directory `<workdir>/checkpoints/<step>`.
    step: checkpoint step (default: the newest, or the directory's).
    devices: devices to spread batches over (default: all present; 1 gives a
      single-device mesh).
    batch_size: images per device call (default config.eval_batch_size),
      rounded up to a multiple of the devices.

  Raises:
    ConfigError: no config.json, no such checkpoint, or a checkpoint whose
      parameter shapes differ from what config.json describes.
  """
  r = restore(workdir_or_checkpoint, step, devices=devices)
  return Model(
    config=r.config,
    family=r.family,
    model=r.model,
    params=r.params,
    step=r.step,
    mesh=r.mesh,
    workdir=r.workdir,
    batch_size=batch_size,
  )


def check_pixels(images: np.ndarray) -> None:
  """ConfigError unless every value of float images is finite and in [0, 1]."""
  if images.size == 0:
    return
  bad = int(np.size(images) - np.count_nonzero(np.isfinite(images)))
  if bad:
    raise ConfigError(f"images hold {bad} NaN or infinite values; pixels must be finite, in [0, 1]")
  lo, hi = float(images.min()), float(images.max())
  if lo < 0.0 or hi > 1.0:
    hint = "; did you forget / 255?" if hi > 1.0 and hi <= 255.0 and lo >= 0.0 else ""
    raise ConfigError(f"images must be in [0, 1], got values from {lo:g} to {hi:g}{hint}")


def available_memory() -> int | None:
  """Bytes of memory available to this process (MemAvailable of /proc/meminfo, or
  sysconf), None where neither says."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  try:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError, AttributeError):
    return None


def _forward(
  params: PyTree, images: jax.Array, masks: jax.Array, *, model, family, what: str
) -> Any:
  """Images [B, H, W, 3] + pixel masks [B, H, W] -> one output of a MINR model.

  what: an embedding kind ([B, D], `family.features`), "pred" (the INRs
  rendered at H x W, [B, H, W, 3], `family.reconstruct`) or "weights"
  (the INR weights).
  """
  if what == "pred":
    return family.reconstruct(model, params, masking.apply_mask(images, masks))
  if what == "weights":
    return family.inr_weights(model, params, masking.apply_mask(images, masks))
  return family.features(model, params, images, masks, None, what)


def _forward_patches(
  params: PyTree,
  images: jax.Array,
  grid_masks: jax.Array,
  *,
  model,
  family,
  config: ml_collections.ConfigDict,
  what: str,
) -> jax.Array:
  """A patch-token model (MAE) on images [B, H, W, 3] with patch masks [B, g, g].

  what: "pred" (`family.predict` in evaluation) or an embedding kind.
  """
  if what == "pred":
    return family.predict(model, params, images, grid_masks, config=config)[0]
  return family.features(model, params, images, None, grid_masks, what)


class Model:
  """A restored checkpoint (any family) with batched, jitted inference methods.

  Build it with `minr_jax.load`. Properties: `config`, `step`, `params`,
  `model`, `family`, `kinds`, `num_params`, `mesh`, `workdir`, `batch_size`.
  """

  def __init__(
    self,
    *,
    config: ml_collections.ConfigDict,
    family,
    model,
    params: PyTree,
    step: int,
    mesh,
    workdir: str | None = None,
    batch_size: int | None = None,
  ):
    self._config = config
    self._family = family
    self._model = model
    self._params = params
    self._step = step
    self.mesh = mesh
    self.workdir = workdir
    n = mesh.devices.size  # the batch is split over every device of the mesh
    bs = config.eval_batch_size if batch_size is None else batch_size
    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
      raise ConfigError(f"batch_size must be a positive integer, got {bs!r}")
    self.batch_size = -(-bs // n) * n
    self._batch_sharding = sharding.batch_sharding(mesh)
    self._replicated = sharding.replicated(mesh)
    self._forward = jax.jit(
      functools.partial(_forward, model=model, family=family), static_argnames=("what",)
    )
    self._render_chunk = (
      jax.jit(functools.partial(family.render_inrs, model)) if family.has_inr else None
    )
    self._patch_fns: dict[int, Any] = {}  # MAE: one jitted forward per hidden count

  # ---------------------------------------------------------- properties ---

  @property
  def config(self) -> ml_collections.ConfigDict:
    return self._config

  @property
  def step(self) -> int:
    return self._step

  @property
  def params(self) -> PyTree:
    return self._params

  @property
  def model(self):
    return self._model

  @property
  def num_params(self) -> int:
    return families.count_params(self._params)

  @property
  def resolution(self) -> int:
    return int(self._config.resolution)

  @property
  def family(self) -> str:
    """The model family's name (config.model.family)."""
    return self._family.name

  @property
  def kinds(self) -> tuple[str, ...]:
    """The embedding kinds this model gives."""
    return self._family.embedding_kinds

  def __repr__(self) -> str:
    return (
      f"Model(family={self.family!r}, workdir={self.workdir!r}, step={self._step}, "
      f"params={self.num_params:,}, devices={self.mesh.devices.size})"
    )

  # ------------------------------------------------------------- methods ---

  def embed(
    self,
    images,
    kind: str = "data_mean",
    mask: MaskArg = None,
    seed: int | None = None,
    indices=None,
  ) -> np.ndarray:
    """Embeddings float32 [B, D] of images [B, H, W, 3] (see `KINDS`).

    data_mean and weight_mean: D = model.dim; weight_tokens: D = G * dim
    (G weight tokens); modulations: D = sum over INR layers of fan_in * g.
    Unmasked by default; mask="random" uses the fixed evaluation masks of
    `indices` (default 0..B-1) and `seed` (default config.eval_mask_seed).
    """
    if kind not in KINDS:
      raise ConfigError(f"kind={kind!r} is not one of {', '.join(KINDS)}")
    if kind not in self.kinds:
      raise ConfigError(f"kind={kind!r}: a {self.family} model gives {', '.join(self.kinds)}")
    return self._run(images, mask, seed, indices, kind)

  def reconstruct(
    self, images, mask: MaskArg = "random", seed: int | None = None, indices=None
  ) -> tuple[np.ndarray, np.ndarray]:
    """(pred float32 [B, H, W, 3], pixel_mask bool [B, H, W]).

    The INRs predicted from the masked images, rendered at the training
    resolution: with mask="random", indices and seed at their defaults the
    numbers the training run's evaluation gives for images with those indices.
    """
    images, masks = self._prepare(images, mask, seed, indices)
    return self._map_chunks(images, masks, "pred"), masks

  def render(
    self,
    images,
    height: int,
    width: int,
    mask: MaskArg = None,
    seed: int | None = None,
    indices=None,
    chunk: int = DEFAULT_RENDER_CHUNK,
  ) -> np.ndarray:
    """The INRs at a height x width pixel-centre grid -> float32 [B, height, width, 3].

    The INR weights are predicted from the (masked) images, then evaluated on
    `inr.coord_grid(height, width)` in jitted chunks of `chunk` coordinates,
    each written straight into the output. Memory: the output itself (B x
    height x width x 3 float32, allocated once, refused in one line if more
    than the memory available) plus, per call, batch_size x chunk x INR width
    on the device and chunk coordinates; no full coordinate grid or
    per-image copy is built. At the training resolution this is
    `reconstruct`'s prediction.
    """
    if not self._family.has_inr:
      raise ConfigError(f"a {self.family} model has no INR: render is not supported")
    for name, value in (("height", height), ("width", width), ("chunk", chunk)):
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    images, masks = self._prepare(images, mask, seed, indices)
    b, num = images.shape[0], height * width
    need, free = b * num * 3 * 4, available_memory()
    if free is not None and need > free:
      raise ConfigError(
        f"render: the output float32 [{b}, {height}, {width}, 3] needs "
        f"{need / 2**30:.1f} GiB, more than the {free / 2**30:.1f} GiB of "
        "memory available; render fewer images or a smaller size"
      )
    chunk = min(chunk, num)
    rows_c, cols_c = inr.pixel_centres(height), inr.pixel_centres(width)
    out = np.zeros((b, height, width, 3), np.float32)
    flat = out.reshape(b, num, 3)  # a view: chunks land in `out`
    for start, x, m in self._chunks(images, masks):
      weights = self._forward(self._params, x, m, what="weights")
      rows = min(self.batch_size, b - start)
      for i in range(0, num, chunk):
        index = np.minimum(np.arange(i, i + chunk), num - 1)  # last chunk: repeats
        coords = np.stack([rows_c[index // width], cols_c[index % width]], axis=-1)
        values = self._render_chunk(weights, jax.device_put(coords, self._replicated))
        n = min(chunk, num - i)
        flat[start : start + rows, i : i + n] = np.asarray(values)[:rows, :n]
    return out

  def render_each(self, images, masks, sizes, chunk: int = 8192) -> list[np.ndarray]:
    """The INR of image b of images [B, R, R, 3] under pixel masks [B, R, R] (True =
    hidden), rendered on its own sizes[b] = (height, width) pixel-centre grid
    -> B arrays float32 [height, width, 3].

    The weights are predicted in batches; each INR is then evaluated on one
    device in jitted calls of `chunk` coordinates (the last padded), so one
    compile serves every size.
    """
    if not self._family.has_inr:
      raise ConfigError(f"a {self.family} model has no INR: render is not supported")
    images, masks = self._prepare(images, masks, None, None)
    if len(sizes) != images.shape[0]:
      raise ConfigError(f"{len(sizes)} sizes for {images.shape[0]} images")
    out = []
    for start, x, m in self._chunks(images, masks):
      weights = jax.device_get(self._forward(self._params, x, m, what="weights"))
      for row in range(min(self.batch_size, images.shape[0] - start)):
        height, width = sizes[start + row]
        one = [w[row : row + 1] for w in weights]
        coords = np.asarray(inr.coord_grid(height, width)).reshape(-1, 2)
        num = coords.shape[0]
        padded = np.zeros((-(-num // chunk) * chunk, 2), np.float32)
        padded[:num] = coords
        values = np.concatenate(
          [
            np.asarray(self._render_chunk(one, padded[i : i + chunk]))
            for i in range(0, len(padded), chunk)
          ],
          axis=1,
        )
        out.append(values[0, :num].reshape(height, width, -1).astype(np.float32))
    return out

  def inpaint(self, image, mask, *, tile: int = 0) -> np.ndarray:
    """A photo of any size with its hidden pixels filled -> float32 in [0, 1], image's shape.

    image: [H, W] or [H, W, C] (C = 1, 2, 3 or 4; uint8 or float in [0, 1]);
    mask: bool [H, W] (True = hidden) or a `python -m minr_jax.inpaint`
    --mask string ("box:0.25,0.25,0.75,0.75", "random:0.75:seed=0", a PNG).
    The photo is area-resized to the model's resolution (tile=N: also
    N x N-pixel windows), the INR rendered back at H x W, and only hidden
    pixels replaced (docs/inpaint.md). `minr_jax.inpaint.inpaint` also gives
    the baselines and PSNRs.
    """

    return inpaint_lib.inpaint(self, image, mask, tile=tile, with_baselines=False).filled

  def masks(
    self, images, mask: MaskArg = "random", seed: int | None = None, indices=None
  ) -> np.ndarray:
    """The pixel masks bool [B, H, W] a method would use for these arguments."""
    return self._prepare(images, mask, seed, indices)[1]

  # ------------------------------------------------------------ internals ---

  def _prepare(
    self, images, mask: MaskArg, seed: int | None, indices
  ) -> tuple[np.ndarray, np.ndarray]:
    """Checked float32 images [B, R, R, 3] and bool pixel masks [B, R, R]."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
      images = images.astype(np.float32) / 255.0
    elif not np.issubdtype(images.dtype, np.floating):
      raise ConfigError(f"images must be float in [0, 1] (or uint8), got {images.dtype}")
    images = images.astype(np.float32, copy=False)
    check_pixels(images)
    r = self.resolution
    if images.ndim != 4 or images.shape[1:] != (r, r, 3):
      raise ConfigError(
        f"images must be [B, {r}, {r}, 3] (the run's resolution), got {list(images.shape)}"
      )
    b = images.shape[0]
    if b == 0:
      raise ConfigError("images holds no image")
    if mask is None:
      return images, np.zeros((b, r, r), bool)
    if isinstance(mask, str):
      if mask != "random":
        raise ConfigError(f"mask={mask!r}: use None, 'random' or a bool array [B, H, W]")
      return images, self._eval_masks(b, seed, indices)
    masks = np.asarray(mask)
    if masks.ndim == 2:
      masks = np.broadcast_to(masks, (b, *masks.shape))
    if masks.shape != (b, r, r):
      raise ConfigError(f"mask must be bool [B, H, W] = {[b, r, r]}, got {list(masks.shape)}")
    return images, masks.astype(bool)

  def _eval_masks(self, b: int, seed: int | None, indices) -> np.ndarray:
    """Fixed masks [b, R, R] of image indices under seed (as masking.eval_masks)."""
    config = self._config
    seed = config.eval_mask_seed if seed is None else seed
    idx = np.arange(b) if indices is None else np.asarray(indices)
    if idx.shape != (b,) or not np.issubdtype(idx.dtype, np.integer):
      raise ConfigError(f"indices must be {b} integers, got {idx.dtype} {list(idx.shape)}")
    try:
      spec = dataclasses.replace(
        masking.mask_spec_from_config(config), strategy=config.eval_mask_strategy
      )
    except ValueError as e:
      raise ConfigError(str(e)) from None
    r, n = self.resolution, self.batch_size
    out = np.zeros((b, r, r), bool)
    for start in range(0, b, n):  # fixed-size calls: one compile
      part = np.full((n,), -1, np.int32)
      rows = min(n, b - start)
      part[:rows] = idx[start : start + rows]
      grid = masking.draw_indexed(spec, int(seed), part, config.mask_ratio)
      out[start : start + rows] = np.asarray(masking.to_pixels(grid, r, r))[:rows]
    return out

  def _chunks(self, images: np.ndarray, masks: np.ndarray):
    """(start, images [n, R, R, 3], masks [n, R, R]) on the mesh, zero-padded to n."""
    n = self.batch_size
    for start in range(0, images.shape[0], n):
      x, m = images[start : start + n], masks[start : start + n]
      if x.shape[0] < n:
        pad = n - x.shape[0]
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
        m = np.concatenate([m, np.zeros((pad, *m.shape[1:]), m.dtype)])
      yield (
        start,
        jax.device_put(x, self._batch_sharding),
        jax.device_put(m, self._batch_sharding),
      )

  def _map_chunks(self, images: np.ndarray, masks: np.ndarray, what: str) -> np.ndarray:
    """Concatenated `_forward(what)` over all chunks, padding removed."""
    if self._family.patch_masks_only:
      return self._map_patch_chunks(images, masks, what)
    parts = [
      np.asarray(self._forward(self._params, x, m, what=what))
      for _, x, m in self._chunks(images, masks)
    ]
    return np.concatenate(parts)[: images.shape[0]].astype(np.float32, copy=False)

  def _patch_masks(self, masks: np.ndarray) -> np.ndarray:
    """Pixel masks [B, R, R] -> MAE patch masks [B, g, g]; ConfigError if not aligned."""
    p = int(self._config.model.patch_size)
    b, r = masks.shape[0], masks.shape[1]
    g = r // p
    blocks = masks.reshape(b, g, p, g, p)
    grid = blocks[:, :, 0, :, 0]
    if not np.array_equal(blocks, np.broadcast_to(grid[:, :, None, :, None], blocks.shape)):
      raise ConfigError(
        f"mask: an MAE needs masks aligned with its {g}x{g} grid of {p}-pixel patches"
      )
    counts = grid.reshape(b, -1).sum(axis=1)
    if np.any(counts != counts[0]):
      raise ConfigError(
        f"mask: an MAE needs the same number of hidden patches in every "
        f"image of a call, got {counts.min()} to {counts.max()}"
      )
    if counts[0] >= g * g:
      raise ConfigError("mask: an MAE needs at least one visible patch per image")
    return grid

  def _patch_fn(self, hidden: int):
    """The jitted MAE forward for `hidden` hidden patches per image (cached)."""
    if hidden not in self._patch_fns:
      n = self._model.num_patches
      model = self._family.for_ratio(self._model, hidden / n)  # parameters do not change
      if model.num_hidden != hidden:
        raise AssertionError(f"exact_count({hidden}/{n}) != {hidden}")
      self._patch_fns[hidden] = jax.jit(
        functools.partial(_forward_patches, model=model, family=self._family, config=self._config),
        static_argnames=("what",),
      )
    return self._patch_fns[hidden]

  def _map_patch_chunks(self, images: np.ndarray, masks: np.ndarray, what: str) -> np.ndarray:
    grid = self._patch_masks(masks)
    fn = self._patch_fn(int(grid[0].sum()))
    n, parts = self.batch_size, []
    for start in range(0, images.shape[0], n):
      x, m = images[start : start + n], grid[start : start + n]
      if x.shape[0] < n:  # pad with copies of the first row: the same hidden count
        pad = n - x.shape[0]
        x = np.concatenate([x, np.repeat(x[:1], pad, axis=0)])
        m = np.concatenate([m, np.repeat(m[:1], pad, axis=0)])
      parts.append(
        np.asarray(
          fn(
            self._params,
            jax.device_put(x, self._batch_sharding),
            jax.device_put(m, self._batch_sharding),
            what=what,
          )
        )
      )
    return np.concatenate(parts)[: images.shape[0]].astype(np.float32, copy=False)

  def _run(self, images, mask: MaskArg, seed: int | None, indices, what: str) -> np.ndarray:
    images, masks = self._prepare(images, mask, seed, indices)
    return self._map_chunks(images, masks, what)
