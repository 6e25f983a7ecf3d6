"""Reuse a trained checkpoint from Python: `minr_jax.load(...)` -> `Minr`.

  import minr_jax
  m = minr_jax.load("runs/demo")                    # newest checkpoint
  m = minr_jax.load("runs/demo/checkpoints/1500")   # one step directory
  z = m.embed(images, kind="data_mean")             # [B, dim] numpy
  pred, mask = m.reconstruct(images)                # eval masks, as eval_step
  big = m.render(images, 256, 256)                  # the INRs on a finer grid

Only the parameters are restored (no optimizer state, no data iterator), from
a read-only view of `<workdir>/checkpoints`, onto a mesh over the devices
present here, so a checkpoint written on a TPU pod or on 8 devices loads on
one CPU. The model is `train.build_model(config.json)`; anything it returns
that has the TransINR output dict (`weights`, `modulations`, `data_tokens`,
`weight_tokens`) works: TransINR and GINR. An MAE checkpoint (model.family
'mae') has no INR: `embed` gives its encoder's `data_mean` (visible patch
tokens averaged) or `cls` token, `reconstruct` gives its decoder's pixels
(MAE_KINDS); `render` raises ConfigError. MAE's encoder drops hidden patches,
so its masks must be aligned with its patch grid and hide the same number of
patches in every image of a call (mask=None runs the encoder on every patch).

Images are float [B, H, W, 3] in [0, 1] (uint8 is divided by 255) at the
run's training resolution, numpy or jax, any B: they are processed in chunks
of `batch_size` (the last chunk zero-padded), so each function compiles once
per image size. Results come back as numpy arrays.

Masks: `mask=None` shows the whole image; `mask="random"` draws the run's
fixed evaluation masks (config.eval_mask_strategy, mask_ratio, mask_grid) for
image indices `indices` (default 0..B-1) and seed `seed` (default: the run's
eval_mask_seed), exactly as `train.eval_step` does; a bool array [B, H, W]
(or [H, W] for every image) with True = hidden is used as given.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from minr_jax import checkpoint, masking, sharding, train
from minr_jax.config import ConfigError, load_saved, model_family, validate
from minr_jax.models import inr

PyTree = Any
MaskArg = str | np.ndarray | jax.Array | None

KINDS = ("data_mean", "weight_tokens", "weight_mean", "modulations", "cls")
MAE_KINDS = ("data_mean", "cls")  # an MAE encoder's: mean of visible tokens, class token
_INR_OUTPUTS = ("weights",)
DEFAULT_RENDER_CHUNK = 4096


# ------------------------------------------------------------------ paths ---

def resolve_path(workdir_or_checkpoint: str, step: int | None = None
                 ) -> tuple[str, int | None]:
  """(workdir, step) from a workdir, its `checkpoints/` or a `checkpoints/<step>`.

  Raises ConfigError if the path does not exist or a step directory
  contradicts `step`.
  """
  path = os.path.abspath(os.path.expanduser(os.fspath(workdir_or_checkpoint)))
  if not os.path.exists(path):
    raise ConfigError(f"{workdir_or_checkpoint} does not exist")
  path = os.path.normpath(path)
  base, parent = os.path.basename(path), os.path.dirname(path)
  if base.isdigit() and os.path.basename(parent) == "checkpoints":
    dir_step = int(base)
    if step is not None and step != dir_step:
      raise ConfigError(f"step={step} contradicts the checkpoint directory {path}")
    return os.path.dirname(parent), dir_step
  if base == "checkpoints" and not os.path.exists(os.path.join(path, "config.json")):
    return parent, step
  return path, step


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's config.json (`config.load_saved`). ConfigError if missing or not JSON."""
  return load_saved(workdir)


def _open_checkpoints(workdir: str):
  """A read-only orbax manager of `<workdir>/checkpoints`.

  Unlike `checkpoint.make_manager` it neither creates directories nor cleans
  up temporary ones, so loading never touches a workdir (a run may still be
  writing to it).
  """
  import grain  # noqa: PLC0415
  import orbax.checkpoint as ocp  # noqa: PLC0415
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    raise ConfigError(f"no checkpoints in {directory}")
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # orbax warns that read_only is read only
  try:
    options = ocp.CheckpointManagerOptions(
        read_only=True, create=False, enable_async_checkpointing=False)
    return ocp.CheckpointManager(directory, options=options, item_handlers=dict(
        state=ocp.PyTreeCheckpointHandler(), data=grain.checkpoint.CheckpointHandler()))
  finally:
    logging.set_verbosity(verbosity)


def _make_mesh(config: ml_collections.ConfigDict, devices: int | None):
  """A `data` mesh over `devices` devices (None: every device present)."""
  n = jax.device_count() if devices is None else devices
  if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= jax.device_count():
    raise ConfigError(f"devices={devices!r} must be in [1, {jax.device_count()}] "
                      "(the devices present)")
  c = ml_collections.ConfigDict(config.to_dict())
  c.mesh.data = n
  if "fsdp" in c.mesh:  # inference replicates the parameters: pure data parallel
    c.mesh.fsdp = 1
  return sharding.make_mesh(c)


def restore_params(workdir: str, config: ml_collections.ConfigDict, mesh,
                   step: int | None = None) -> tuple[int, Any, PyTree]:
  """Parameters only of checkpoint `step` (None: newest), replicated over mesh.

  Returns (step, model, params). ConfigError if there is no such checkpoint
  or it holds a model of another shape than config describes.
  """
  model = train.build_model(config)
  abstract = jax.eval_shape(functools.partial(train.init_params, model),
                            jax.random.key(0))
  abstract = sharding.with_shardings(abstract, sharding.state_shardings(mesh, abstract))
  manager = _open_checkpoints(workdir)
  try:
    steps = manager.all_steps()
    if step is None:
      step = max(steps) if steps else None
    if step is None or step not in steps:
      raise ConfigError(f"no checkpoint {'' if step is None else step} in "
                        f"{os.path.join(workdir, 'checkpoints')}"
                        + (f" (steps: {sorted(steps)})" if steps else ""))
    checkpoint.check_compatible(manager, step, abstract)
    params = checkpoint.restore_params(manager, step, abstract)
  finally:
    manager.close()
  return int(step), model, params


def load(workdir_or_checkpoint: str, step: int | None = None, *,
         devices: int | None = None, batch_size: int | None = None) -> Minr:
  """Loads a run's parameters for inference.

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
  workdir, step = resolve_path(workdir_or_checkpoint, step)
  config = load_config(workdir)
  validate(config)
  mesh = _make_mesh(config, devices)
  step, model, params = restore_params(workdir, config, mesh, step)
  return Minr(config=config, model=model, params=params, step=step, mesh=mesh,
              workdir=workdir, batch_size=batch_size)


# -------------------------------------------------------- pure functions ---

def embeddings_from_outputs(out: dict[str, Any], kind: str) -> jax.Array:
  """The `kind` embedding [B, D] of a hypernetwork's output dict.

  data_mean: data-token outputs [B, T, dim] averaged over T -> [B, dim];
  weight_tokens: weight-token outputs [B, G, dim] flattened -> [B, G * dim];
  weight_mean: weight-token outputs averaged over G -> [B, dim];
  modulations: every INR layer's modulation [B, fan_in, g] flattened and
    concatenated in layer order -> [B, sum fan_in * g].
  """
  if kind == "data_mean":
    return jnp.mean(out["data_tokens"].astype(jnp.float32), axis=1)
  if kind == "weight_tokens":
    w = out["weight_tokens"].astype(jnp.float32)
    return w.reshape(w.shape[0], -1)
  if kind == "weight_mean":
    return jnp.mean(out["weight_tokens"].astype(jnp.float32), axis=1)
  if kind == "modulations":
    return jnp.concatenate([m.reshape(m.shape[0], -1).astype(jnp.float32)
                            for m in out["modulations"]], axis=1)
  if kind == "cls":
    if "latent" not in out:
      raise ConfigError("kind='cls' needs a model with a class token (an MAE)")
    return out["latent"][:, 0].astype(jnp.float32)
  raise ConfigError(f"kind={kind!r} is not one of {', '.join(KINDS)}")


def render_inrs(model, weights: list[jax.Array], coords: jax.Array) -> jax.Array:
  """Per-image INRs (weights [B, ...] per layer) at coords [..., 2] -> [B, ..., 3].

  Uses the model's own `render_inr(weights, coords)` if it has one (a model
  with another INR), else the TransINR INR of `minr_jax.models.inr`.
  """
  if hasattr(model, "render_inr"):
    return model.render_inr(weights, coords)
  dtype = getattr(model, "inr_dtype", None)  # as train.reconstruct renders
  extra = {} if dtype is None else {"dtype": dtype}
  return inr.render(weights, coords, model.freqs(), model.output_bias, **extra)


def _forward(params: PyTree, images: jax.Array, masks: jax.Array, *, model,
             what: str) -> Any:
  """Masked images [B, H, W, 3] + masks [B, H, W] -> one output of the model.

  what: an embedding kind ([B, D]), "pred" (the INRs rendered at H x W, [B,
  H, W, 3], computed as train.reconstruct) or "weights" (the INR weights).
  """
  inputs = masking.apply_mask(images, masks)
  if what == "pred":
    return train.reconstruct(model, params, inputs)
  out = model.apply({"params": params}, inputs, train=False)
  if what == "weights":
    return out["weights"]
  return embeddings_from_outputs(out, what)


def _forward_patches(params: PyTree, images: jax.Array, grid_masks: jax.Array, *,
                     model, config: ml_collections.ConfigDict, what: str) -> jax.Array:
  """An MAE on images [B, H, W, 3] with patch masks [B, g, g] (same count per image).

  what: "pred" (the decoder's pixels, visible patches included, as
  train.predict gives in evaluation), "data_mean" (encoder outputs of the
  visible patches averaged, [B, dim]) or "cls" (the class token, [B, dim]).
  """
  if what == "pred":
    return train.predict(model, params, images, grid_masks, config=config)[0]
  latent = model.apply({"params": params}, images, grid_masks, train=False)["latent"]
  if what == "cls":
    return latent[:, 0].astype(jnp.float32)
  return jnp.mean(latent[:, 1:].astype(jnp.float32), axis=1)


def _render_chunk(weights: list[jax.Array], coords: jax.Array, *, model) -> jax.Array:
  """INRs [B] at coords [C, 2] -> [B, C, 3]."""
  return render_inrs(model, weights, coords)


# -------------------------------------------------------------- the class ---

class Minr:
  """A restored MINR hypernetwork with batched, jitted inference methods.

  Build it with `minr_jax.load`. Properties: `config`, `step`, `params`,
  `model`, `num_params`, `mesh`, `workdir`, `batch_size`.
  """

  def __init__(self, *, config: ml_collections.ConfigDict, model, params: PyTree,
               step: int, mesh, workdir: str | None = None,
               batch_size: int | None = None):
    self._config = config
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
    self._forward = jax.jit(functools.partial(_forward, model=model),
                            static_argnames=("what",))
    self._render_chunk = jax.jit(functools.partial(_render_chunk, model=model))
    self._output_names: tuple[str, ...] | None = None
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
    return train.count_params(self._params)

  @property
  def resolution(self) -> int:
    return int(self._config.resolution)

  @property
  def family(self) -> str:
    """config.model.family: 'transinr', 'ginr' or 'mae'."""
    return model_family(self._config)

  @property
  def kinds(self) -> tuple[str, ...]:
    """The embedding kinds this model gives."""
    if self.family == "mae":
      return MAE_KINDS
    return tuple(k for k in KINDS if k != "cls")

  def __repr__(self) -> str:
    return (f"Minr(workdir={self.workdir!r}, step={self._step}, "
            f"params={self.num_params:,}, devices={self.mesh.devices.size})")

  # ------------------------------------------------------------- methods ---

  def embed(self, images, kind: str = "data_mean", mask: MaskArg = None,
            seed: int | None = None, indices=None) -> np.ndarray:
    """Embeddings float32 [B, D] of images [B, H, W, 3] (see `KINDS`).

    data_mean and weight_mean: D = model.dim; weight_tokens: D = G * dim
    (G weight tokens); modulations: D = sum over INR layers of fan_in * g.
    Unmasked by default; mask="random" uses the fixed evaluation masks of
    `indices` (default 0..B-1) and `seed` (default config.eval_mask_seed).
    """
    if kind not in KINDS:
      raise ConfigError(f"kind={kind!r} is not one of {', '.join(KINDS)}")
    if kind not in self.kinds:
      raise ConfigError(f"kind={kind!r}: a {self.family} model gives "
                        f"{', '.join(self.kinds)}")
    if kind == "modulations" and "modulations" not in self._outputs():
      raise ConfigError(f"{type(self._model).__name__} predicts no INR modulations")
    return self._run(images, mask, seed, indices, kind)

  def reconstruct(self, images, mask: MaskArg = "random", seed: int | None = None,
                  indices=None) -> tuple[np.ndarray, np.ndarray]:
    """(pred float32 [B, H, W, 3], pixel_mask bool [B, H, W]).

    The INRs predicted from the masked images, rendered at the training
    resolution: with mask="random", indices and seed at their defaults the
    numbers `train.eval_step` gives for images with those indices.
    """
    if self.family != "mae":
      self._require_inr("reconstruct")
    images, masks = self._prepare(images, mask, seed, indices)
    return self._map_chunks(images, masks, "pred"), masks

  def render(self, images, height: int, width: int, mask: MaskArg = None,
             seed: int | None = None, indices=None,
             chunk: int = DEFAULT_RENDER_CHUNK) -> np.ndarray:
    """The INRs at a height x width pixel-centre grid -> float32 [B, height, width, 3].

    The INR weights are predicted from the (masked) images, then evaluated on
    `inr.coord_grid(height, width)` in jitted chunks of `chunk` coordinates,
    so memory stays at batch_size x chunk x INR width whatever the size. At
    the training resolution this is `reconstruct`'s prediction.
    """
    self._require_inr("render")
    for name, value in (("height", height), ("width", width), ("chunk", chunk)):
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    images, masks = self._prepare(images, mask, seed, indices)
    num = height * width
    chunk = min(chunk, num)
    coords = np.asarray(inr.coord_grid(height, width)).reshape(-1, 2)
    padded = np.zeros((-(-num // chunk) * chunk, 2), np.float32)
    padded[:num] = coords
    coord_chunks = [jax.device_put(padded[i:i + chunk], self._replicated)
                    for i in range(0, len(padded), chunk)]
    out = np.zeros((images.shape[0], height, width, 3), np.float32)
    for start, x, m in self._chunks(images, masks):
      weights = self._forward(self._params, x, m, what="weights")
      rows = min(self.batch_size, images.shape[0] - start)
      values = np.concatenate([np.asarray(self._render_chunk(weights, c))
                               for c in coord_chunks], axis=1)[:rows, :num]
      out[start:start + rows] = values.reshape(rows, height, width, -1)
    return out

  def masks(self, images, mask: MaskArg = "random", seed: int | None = None,
            indices=None) -> np.ndarray:
    """The pixel masks bool [B, H, W] a method would use for these arguments."""
    return self._prepare(images, mask, seed, indices)[1]

  # ------------------------------------------------------------ internals ---

  def _outputs(self) -> tuple[str, ...]:
    """Names of the model's outputs (from shapes only; cached)."""
    if self.family == "mae":
      return ("pred_patches", "latent", "pixels")
    if self._output_names is None:
      size = self.resolution
      out = jax.eval_shape(
          lambda p: self._model.apply({"params": p},
                                      jnp.zeros((1, size, size, 3), jnp.float32)),
          self._params)
      self._output_names = tuple(out)
    return self._output_names

  def _require_inr(self, method: str) -> None:
    if not all(name in self._outputs() for name in _INR_OUTPUTS):
      raise ConfigError(f"{type(self._model).__name__} has no INR: only embed is "
                        f"supported, not {method}")

  def _prepare(self, images, mask: MaskArg, seed: int | None,
               indices) -> tuple[np.ndarray, np.ndarray]:
    """Checked float32 images [B, R, R, 3] and bool pixel masks [B, R, R]."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
      images = images.astype(np.float32) / 255.0
    elif not np.issubdtype(images.dtype, np.floating):
      raise ConfigError(f"images must be float in [0, 1] (or uint8), got {images.dtype}")
    images = images.astype(np.float32, copy=False)
    r = self.resolution
    if images.ndim != 4 or images.shape[1:] != (r, r, 3):
      raise ConfigError(f"images must be [B, {r}, {r}, 3] (the run's resolution), "
                        f"got {list(images.shape)}")
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
    """Fixed masks [b, R, R] of image indices under seed (as train.eval_masks)."""
    config = self._config
    seed = config.eval_mask_seed if seed is None else seed
    idx = np.arange(b) if indices is None else np.asarray(indices)
    if idx.shape != (b,) or not np.issubdtype(idx.dtype, np.integer):
      raise ConfigError(f"indices must be {b} integers, got {idx.dtype} {list(idx.shape)}")
    try:
      spec = dataclasses.replace(masking.mask_spec_from_config(config),
                                 strategy=config.eval_mask_strategy)
    except ValueError as e:
      raise ConfigError(str(e)) from None
    r, n = self.resolution, self.batch_size
    out = np.zeros((b, r, r), bool)
    for start in range(0, b, n):  # fixed-size calls: one compile
      part = np.full((n,), -1, np.int32)
      rows = min(n, b - start)
      part[:rows] = idx[start:start + rows]
      grid = masking.draw_indexed(spec, int(seed), part, config.mask_ratio)
      out[start:start + rows] = np.asarray(masking.to_pixels(grid, r, r))[:rows]
    return out

  def _chunks(self, images: np.ndarray, masks: np.ndarray):
    """(start, images [n, R, R, 3], masks [n, R, R]) on the mesh, zero-padded to n."""
    n = self.batch_size
    for start in range(0, images.shape[0], n):
      x, m = images[start:start + n], masks[start:start + n]
      if x.shape[0] < n:
        pad = n - x.shape[0]
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
        m = np.concatenate([m, np.zeros((pad, *m.shape[1:]), m.dtype)])
      yield (start, jax.device_put(x, self._batch_sharding),
             jax.device_put(m, self._batch_sharding))

  def _map_chunks(self, images: np.ndarray, masks: np.ndarray, what: str) -> np.ndarray:
    """Concatenated `_forward(what)` over all chunks, padding removed."""
    if self.family == "mae":
      return self._map_patch_chunks(images, masks, what)
    parts = [np.asarray(self._forward(self._params, x, m, what=what))
             for _, x, m in self._chunks(images, masks)]
    return np.concatenate(parts)[:images.shape[0]].astype(np.float32, copy=False)

  def _patch_masks(self, masks: np.ndarray) -> np.ndarray:
    """Pixel masks [B, R, R] -> MAE patch masks [B, g, g]; ConfigError if not aligned."""
    p = int(self._config.model.patch_size)
    b, r = masks.shape[0], masks.shape[1]
    g = r // p
    blocks = masks.reshape(b, g, p, g, p)
    grid = blocks[:, :, 0, :, 0]
    if not np.array_equal(blocks, np.broadcast_to(grid[:, :, None, :, None], blocks.shape)):
      raise ConfigError(f"mask: an MAE needs masks aligned with its {g}x{g} grid of "
                        f"{p}-pixel patches")
    counts = grid.reshape(b, -1).sum(axis=1)
    if np.any(counts != counts[0]):
      raise ConfigError(f"mask: an MAE needs the same number of hidden patches in every "
                        f"image of a call, got {counts.min()} to {counts.max()}")
    if counts[0] >= g * g:
      raise ConfigError("mask: an MAE needs at least one visible patch per image")
    return grid

  def _patch_fn(self, hidden: int):
    """The jitted MAE forward for `hidden` hidden patches per image (cached)."""
    if hidden not in self._patch_fns:
      n = self._model.num_patches
      model = self._model.clone(mask_ratio=hidden / n)  # no parameter depends on it
      if model.num_hidden != hidden:
        raise AssertionError(f"exact_count({hidden}/{n}) != {hidden}")
      self._patch_fns[hidden] = jax.jit(functools.partial(
          _forward_patches, model=model, config=self._config), static_argnames=("what",))
    return self._patch_fns[hidden]

  def _map_patch_chunks(self, images: np.ndarray, masks: np.ndarray,
                        what: str) -> np.ndarray:
    grid = self._patch_masks(masks)
    fn = self._patch_fn(int(grid[0].sum()))
    n, parts = self.batch_size, []
    for start in range(0, images.shape[0], n):
      x, m = images[start:start + n], grid[start:start + n]
      if x.shape[0] < n:  # pad with copies of the first row: the same hidden count
        pad = n - x.shape[0]
        x = np.concatenate([x, np.repeat(x[:1], pad, axis=0)])
        m = np.concatenate([m, np.repeat(m[:1], pad, axis=0)])
      parts.append(np.asarray(fn(self._params, jax.device_put(x, self._batch_sharding),
                                 jax.device_put(m, self._batch_sharding), what=what)))
    return np.concatenate(parts)[:images.shape[0]].astype(np.float32, copy=False)

  def _run(self, images, mask: MaskArg, seed: int | None, indices, what: str) -> np.ndarray:
    images, masks = self._prepare(images, mask, seed, indices)
    return self._map_chunks(images, masks, what)
