"""The one place where `config.model.family` meets code: `get(config)` -> `Family`.

A family is a value of plain functions (build, init, predict, train_loss, features,
make_optimizer, ...) and capability flags; every other module asks the family value, never the
name. TransINR and GINR share the MINR functions; MAE has its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from minr_jax import config as config_lib
from minr_jax import masking, metrics, similarity
from minr_jax.config import ConfigError
from minr_jax.models import ginr, inr, mae, transinr

Array = jax.Array
PRNGKey = jax.Array
PyTree = Any

DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}  # config_lib.DTYPE_NAMES
MINR_KINDS = ("data_mean", "weight_tokens", "weight_mean", "modulations")
MAE_KINDS = ("data_mean", "cls")  # encoder outputs: mean of visible tokens, class token


@dataclasses.dataclass(frozen=True)
class Family:
  """A model family: plain functions and capability flags (`get`)."""

  name: str
  build: Callable[[ml_collections.ConfigDict], Any]
  init: Callable[[Any, PRNGKey], PyTree]
  predict: Callable[..., tuple[Array, Array]]
  train_loss: Callable[..., tuple[Array, Array]]
  features: Callable[..., Array]
  make_optimizer: Callable[[ml_collections.ConfigDict], optax.GradientTransformation]
  schedule: Callable[[ml_collections.ConfigDict], optax.Schedule]
  validate: Callable[[ml_collections.ConfigDict], None]
  describe: Callable[[ml_collections.ConfigDict, int], str]
  for_ratio: Callable[[Any, float], Any]
  has_inr: bool
  patch_masks_only: bool
  embedding_kinds: tuple[str, ...]
  plot_metric: str
  # Families with an INR (has_inr) only; None otherwise.
  reconstruct: Callable[..., Array] | None = None  # (model, params, masked inputs) -> images
  inr_weights: Callable[..., list[Array]] | None = None  # (model, params, masked) -> weights
  render_inrs: Callable[..., Array] | None = None  # (model, weights, coords [..., 2]) -> RGB


# ------------------------------------------------------------ shared parts ---


def model_dtypes(config: ml_collections.ConfigDict) -> tuple[Any, Any]:
  """(transformer dtype, INR dtype) from config.model.dtype / inr_dtype; None = float32.

  model.inr_dtype '' (the default) follows model.dtype.
  """
  name, inr_name = config_lib.check_dtypes(config)
  return DTYPES[name], DTYPES[inr_name]


def _attention_impl(config: ml_collections.ConfigDict) -> str:
  """model.attention_impl; 'auto' not resolved by `device_policy.resolve_auto` means 'batched'."""
  impl = config.model.get("attention_impl", "auto")
  return "batched" if impl == "auto" else impl


def _hypernetwork_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The tokenizer, transformer and INR fields TransINR and GINR share."""
  m = config.model
  dtype, inr_dtype = model_dtypes(config)
  return dict(
    image_size=config.resolution,
    patch_size=m.patch_size,
    padding=m.padding,
    dim=m.dim,
    depth=m.depth,
    num_heads=m.num_heads,
    head_dim=m.head_dim,
    mlp_dim=m.mlp_dim,
    qkv_bias=m.qkv_bias,
    ln_epsilon=m.ln_epsilon,
    exact_gelu=m.exact_gelu,
    dropout=m.dropout,
    remat=m.get("remat", False),
    inr_hidden_dim=m.inr_hidden_dim,
    inr_num_layers=m.inr_num_layers,
    ff_num_freqs=m.ff_num_freqs,
    ff_sigma=m.ff_sigma,
    output_bias=m.output_bias,
    dtype=dtype,
    inr_dtype=inr_dtype,
    attention_impl=_attention_impl(config),
  )


# -------------------------------------------------------------------- MINR ---


def _build_transinr(config: ml_collections.ConfigDict) -> transinr.TransINR:
  return transinr.TransINR(num_groups=config.model.num_groups, **_hypernetwork_fields(config))


def _build_ginr(config: ml_collections.ConfigDict) -> ginr.GINR:
  m = config.model
  return ginr.GINR(
    rank=m.ginr_rank,
    modulated_layer=m.ginr_layer,
    normalize_shared=m.get("ginr_normalize_shared", True),
    **_hypernetwork_fields(config),
  )


def _init_minr(model, key: PRNGKey) -> PyTree:
  # Compiled whole: called outside jit (a notebook, the Model facade), op-by-op init of the
  # tiny model took 8 s on a 2-core CPU against 1 s compiled. Inside the
  # training step's jit this is inlined, as before.
  size = model.image_size
  images = jnp.zeros((1, size, size, 3), jnp.float32)
  return jax.jit(model.init)(key, images)["params"]


def _coord_noise(config: ml_collections.ConfigDict, train: bool) -> float:
  """model.coord_noise in training (GINR's coordinate jitter), 0 otherwise."""
  return float(config.model.get("coord_noise", 0.0) or 0.0) if train else 0.0


def inr_weights_and_coords(
  model,
  params: PyTree,
  inputs: Array,
  *,
  train: bool = False,
  dropout_key: PRNGKey | None = None,
  coord_noise: float = 0.0,
  coord_key: PRNGKey | None = None,
) -> tuple[list[Array], Array]:
  """(per-image INR weights, coordinates) for masked inputs [B, H, W, 3].

  The coordinates are the pixel grid [H, W, 2], or with coord_noise > 0 (needs
  coord_key) each image's jittered copy [B, H, W, 2].
  """
  rngs = {"dropout": dropout_key} if dropout_key is not None else {}
  out = model.apply({"params": params}, inputs, train=train, data_tokens=False, rngs=rngs)
  coords = inr.coord_grid(inputs.shape[1], inputs.shape[2])
  if coord_noise > 0.0:
    if coord_key is None:
      raise ValueError("coord_noise > 0 needs a coord_key")
    coords = inr.jitter_coords(coord_key, coords, inputs.shape[0], coord_noise)
  return out["weights"], coords


def reconstruct(
  model,
  params: PyTree,
  inputs: Array,
  *,
  train: bool = False,
  dropout_key: PRNGKey | None = None,
  coord_noise: float = 0.0,
  coord_key: PRNGKey | None = None,
) -> Array:
  """Masked inputs [B, H, W, 3] -> the INRs' images [B, H, W, 3] (float32).

  The Fourier features of the pixel grid are computed once per call and
  shared by all B images (`inr.render`); the INR's matmuls run in
  model.inr_dtype. With coord_noise > 0 (training only, needs coord_key) each
  image is rendered at its own jittered coordinates (`inr.jitter_coords`)
  while the targets stay the grid's pixels.
  """
  weights, coords = inr_weights_and_coords(
    model,
    params,
    inputs,
    train=train,
    dropout_key=dropout_key,
    coord_noise=coord_noise,
    coord_key=coord_key,
  )
  render = inr.render_per_image if coords.ndim == 4 else inr.render
  return render(weights, coords, model.freqs(), model.output_bias, model.inr_dtype)


def render_inrs(model, weights: list[Array], coords: Array) -> Array:
  """Per-image INRs (weights [B, ...] per layer) at coords [..., 2] -> [B, ..., 3]."""
  return inr.render(weights, coords, model.freqs(), model.output_bias, model.inr_dtype)


def _minr_predict(
  model,
  params: PyTree,
  images: Array,
  grid_masks: Array,
  *,
  config: ml_collections.ConfigDict,
  train: bool = False,
  dropout_key: PRNGKey | None = None,
  coord_key: PRNGKey | None = None,
) -> tuple[Array, Array]:
  inputs = masking.apply_mask(images, masking.to_pixels(grid_masks, *images.shape[1:3]))
  pred = reconstruct(
    model,
    params,
    inputs,
    train=train,
    dropout_key=dropout_key,
    coord_noise=_coord_noise(config, train),
    coord_key=coord_key,
  )
  return pred, jnp.mean(metrics.per_image_mse(pred, images))


def inr_chunk(config: ml_collections.ConfigDict) -> int:
  """Pixels per chunk of the MINR training loss, model.inr_chunk (0: whole images).

  -1 ('auto') must have been resolved by `device_policy.resolve_auto`; unresolved it is 0.
  """
  return max(int(config.model.get("inr_chunk", -1)), 0)


def _minr_train_loss(
  model,
  params: PyTree,
  images: Array,
  grid_masks: Array,
  *,
  config: ml_collections.ConfigDict,
  dropout_key: PRNGKey | None = None,
  coord_key: PRNGKey | None = None,
) -> tuple[Array, Array]:
  """(loss, per-image MSE [B]): `predict(train=True)`'s, scored in pixel chunks if
  model.inr_chunk > 0 (`inr.pixel_mse`: the INRs never render [B, H, W, 3]; same maths).
  """
  chunk = inr_chunk(config)
  weight = float(config.get("lpips_weight", 0.0) or 0.0)
  if weight or not chunk:  # whole images rendered (the LPIPS term needs them)
    pred, loss = _minr_predict(
      model,
      params,
      images,
      grid_masks,
      config=config,
      train=True,
      dropout_key=dropout_key,
      coord_key=coord_key,
    )
    if weight:  # config.lpips_weight: LPIPS of the pasted prediction
      pixel_masks = masking.to_pixels(grid_masks, *images.shape[1:3])
      pasted = jnp.clip(metrics.paste_visible(pred, images, pixel_masks), 0.0, 1.0)
      loss = loss + weight * jnp.mean(similarity.lpips(pasted, images))
    return loss, metrics.per_image_mse(pred, images)
  inputs = masking.apply_mask(images, masking.to_pixels(grid_masks, *images.shape[1:3]))
  weights, coords = inr_weights_and_coords(
    model,
    params,
    inputs,
    train=True,
    dropout_key=dropout_key,
    coord_noise=_coord_noise(config, True),
    coord_key=coord_key,
  )
  mse = inr.pixel_mse(
    weights, images, coords, model.freqs(), model.output_bias, model.inr_dtype, chunk
  )
  return jnp.mean(mse), mse


def _minr_features(
  model, params: PyTree, images: Array, pixel_masks: Array, grid_masks: Array | None, kind: str
) -> Array:
  """The `kind` embedding [B, D] of masked images (MINR_KINDS).

  data_mean: data-token outputs [B, T, dim] averaged over T -> [B, dim];
  weight_tokens: weight-token outputs [B, G, dim] flattened -> [B, G * dim];
  weight_mean: weight-token outputs averaged over G -> [B, dim];
  modulations: every INR layer's modulation [B, fan_in, g] flattened and
    concatenated in layer order -> [B, sum fan_in * g].
  """
  del grid_masks
  out = model.apply({"params": params}, masking.apply_mask(images, pixel_masks), train=False)
  if kind == "data_mean":
    return jnp.mean(out["data_tokens"].astype(jnp.float32), axis=1)
  if kind == "weight_tokens":
    w = out["weight_tokens"].astype(jnp.float32)
    return w.reshape(w.shape[0], -1)
  if kind == "weight_mean":
    return jnp.mean(out["weight_tokens"].astype(jnp.float32), axis=1)
  if kind == "modulations":
    return jnp.concatenate(
      [m.reshape(m.shape[0], -1).astype(jnp.float32) for m in out["modulations"]], axis=1
    )
  raise ConfigError(f"kind={kind!r} is not one of {', '.join(MINR_KINDS)}")


def _minr_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """config.learning_rate, times lr_decay_factor after lr_decay_at of the steps.

  With config.warmup_steps = W > 0 the rate first rises linearly from
  learning_rate / W at step 0 to learning_rate at step W - 1 (0, the
  default, is the paper's recipe: no warm-up).
  """
  boundary = int(config.lr_decay_at * config.num_train_steps)
  schedule = optax.piecewise_constant_schedule(
    config.learning_rate, {boundary: config.lr_decay_factor}
  )
  warmup = int(config.get("warmup_steps", 0) or 0)
  if not warmup:
    return schedule
  return lambda step: schedule(step) * jnp.minimum(1.0, (step + 1) / warmup)


def _minr_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam (the reference's) on `_minr_schedule`."""
  return optax.adam(_minr_schedule(config))


def _describe_minr(name: str):
  def describe(config: ml_collections.ConfigDict, num_params: int) -> str:
    m = config.model
    return (
      f"{name}: {num_params:,} parameters, {config.resolution} px, "
      f"patch {m.patch_size}, dim {m.dim}, depth {m.depth}, "
      f"INR {m.inr_num_layers} layers x {m.inr_hidden_dim}"
    )

  return describe


# --------------------------------------------------------------------- MAE ---


def _build_mae(config: ml_collections.ConfigDict) -> mae.MAE:
  m = config.model
  dtype, _ = model_dtypes(config)
  return mae.MAE(
    image_size=config.resolution,
    patch_size=m.patch_size,
    mask_ratio=config.mask_ratio,
    dim=m.dim,
    depth=m.depth,
    num_heads=m.num_heads,
    head_dim=m.head_dim,
    mlp_dim=m.mlp_dim,
    decoder_dim=m.decoder_dim,
    decoder_depth=m.decoder_depth,
    decoder_num_heads=m.decoder_num_heads,
    decoder_head_dim=m.decoder_head_dim,
    decoder_mlp_dim=m.decoder_mlp_dim,
    qkv_bias=m.qkv_bias,
    ln_epsilon=m.ln_epsilon,
    exact_gelu=m.exact_gelu,
    dropout=m.dropout,
    remat=m.remat,
    norm_pix=m.norm_pix,
    attention_impl=_attention_impl(config),
    dtype=dtype,
  )


def _mae_predict(
  model,
  params: PyTree,
  images: Array,
  grid_masks: Array,
  *,
  config: ml_collections.ConfigDict,
  train: bool = False,
  dropout_key: PRNGKey | None = None,
  coord_key: PRNGKey | None = None,
) -> tuple[Array, Array]:
  del coord_key
  rngs = {"dropout": dropout_key} if dropout_key is not None else {}
  out = model.apply({"params": params}, images, grid_masks, train=train, rngs=rngs)
  norm_pix = bool(config.model.get("norm_pix", False))
  loss = mae.mae_loss(out["pred_patches"], images, grid_masks, model.patch_size, norm_pix)
  return mae.to_pixels(out["pred_patches"], images, grid_masks, norm_pix), loss


def _mae_train_loss(
  model,
  params: PyTree,
  images: Array,
  grid_masks: Array,
  *,
  config: ml_collections.ConfigDict,
  dropout_key: PRNGKey | None = None,
  coord_key: PRNGKey | None = None,
) -> tuple[Array, Array]:
  pred, loss = _mae_predict(
    model,
    params,
    images,
    grid_masks,
    config=config,
    train=True,
    dropout_key=dropout_key,
    coord_key=coord_key,
  )
  return loss, metrics.per_image_mse(pred, images)


def _mae_features(
  model, params: PyTree, images: Array, pixel_masks: Array, grid_masks: Array, kind: str
) -> Array:
  """data_mean: the encoder's visible-patch outputs averaged; cls: its class token."""
  del pixel_masks
  latent = model.apply({"params": params}, images, grid_masks, train=False)["latent"]
  if kind == "cls":
    return latent[:, 0].astype(jnp.float32)
  if kind == "data_mean":
    return jnp.mean(latent[:, 1:].astype(jnp.float32), axis=1)
  raise ConfigError(f"kind={kind!r} is not one of {', '.join(MAE_KINDS)}")


def _mae_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warmup to config.learning_rate over config.warmup_steps, then cosine decay
  to config.end_learning_rate at config.num_train_steps."""
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=float(config.learning_rate),
    warmup_steps=int(config.warmup_steps),
    decay_steps=max(int(config.num_train_steps), 1),
    end_value=float(config.end_learning_rate),
  )


def _mae_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """MAE's AdamW on `_mae_schedule`, decoupled weight decay config.weight_decay on
  `mae.weight_decay_mask`'s parameters (ndim >= 2)."""
  return optax.adamw(
    _mae_schedule(config),
    b1=config.adam_b1,
    b2=config.adam_b2,
    weight_decay=config.weight_decay,
    mask=mae.weight_decay_mask,
  )


def _describe_mae(config: ml_collections.ConfigDict, num_params: int) -> str:
  m = config.model
  return (
    f"mae: {num_params:,} parameters, {config.resolution} px, patch {m.patch_size}, "
    f"dim {m.dim}, depth {m.depth}, decoder {m.decoder_depth} x {m.decoder_dim}"
  )


# ------------------------------------------------------------------- table ---

_MINR = dict(
  init=_init_minr,
  predict=_minr_predict,
  train_loss=_minr_train_loss,
  features=_minr_features,
  make_optimizer=_minr_optimizer,
  schedule=_minr_schedule,
  validate=config_lib.validate_minr,
  for_ratio=lambda model, ratio: model,
  has_inr=True,
  patch_masks_only=False,
  embedding_kinds=MINR_KINDS,
  plot_metric="psnr_full",
  reconstruct=reconstruct,
  inr_weights=lambda model, params, inputs: inr_weights_and_coords(model, params, inputs)[0],
  render_inrs=render_inrs,
)

FAMILIES: dict[str, Family] = {
  "transinr": Family(
    name="transinr", build=_build_transinr, describe=_describe_minr("transinr"), **_MINR
  ),
  "ginr": Family(name="ginr", build=_build_ginr, describe=_describe_minr("ginr"), **_MINR),
  "mae": Family(
    name="mae",
    build=_build_mae,
    init=mae.init_params,
    predict=_mae_predict,
    train_loss=_mae_train_loss,
    features=_mae_features,
    make_optimizer=_mae_optimizer,
    schedule=_mae_schedule,
    validate=config_lib.validate_mae,
    describe=_describe_mae,
    for_ratio=lambda model, ratio: model.clone(mask_ratio=float(ratio)),
    has_inr=False,
    patch_masks_only=True,
    embedding_kinds=MAE_KINDS,
    plot_metric="psnr_pasted",
  ),
}
# config.json files written before model.family existed hold TransINR runs.
LEGACY_FAMILY = "transinr"


def get(config: ml_collections.ConfigDict) -> Family:
  """The family of config.model.family (ConfigError naming the field if unknown)."""
  name = str(config.model.get("family", None) or LEGACY_FAMILY).lower()
  if name not in FAMILIES:
    raise ConfigError(f"config.model.family={name!r} is not one of {', '.join(FAMILIES)}")
  return FAMILIES[name]


def check(config: ml_collections.ConfigDict, num_devices: int | None = None) -> Family:
  """`config.validate` plus the family's own checks; returns the family.

  Every command calls this before building anything, so bad input fails in a
  second with one line naming the field.
  """
  config_lib.validate(config, num_devices=num_devices)
  family = get(config)
  family.validate(config)
  return family


def count_params(params) -> int:
  """Number of parameters in a pytree of arrays (or of shape structs)."""
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
